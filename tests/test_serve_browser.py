"""`bcos-clip serve` in a real browser: headless Debian chromium driven by Playwright, against uvicorn on a
loopback port. Needs `apt-get install chromium` and `pip install playwright` (no `playwright install`:
the system binary is used). The screenshot lands in the test's tmp_path (BCOS_CLIP_SCREENSHOT=path to
keep a copy)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("BCOS_CLIP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _browser_available() -> str:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    return ""


_MISSING = _browser_available()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tiny_rn_bcos, tiny_rn, tmp_path_factory):
    if _MISSING:
        pytest.skip(_MISSING)
    import uvicorn

    import bcos_clip
    from bcos_clip.apps.serve.server import ServeConfig, build_app, build_engine
    from bcos_clip.apps.serve.engine import ExplainEngine
    from bcos_clip.apps.serve.methods import baseline_methods
    from bcos_clip.models import PlainCLIP

    model_dir = bcos_clip.save(tiny_rn_bcos, tmp_path_factory.mktemp("browser") / "student")
    config = ServeConfig(model=str(model_dir), device="cpu", port=_free_port())
    student = build_engine(config).methods["bcos"]
    teacher = PlainCLIP.from_clip(tiny_rn[0], tiny_rn[2]).eval()
    engine = ExplainEngine([student, *baseline_methods(teacher, ["gradcam"])])
    server = uvicorn.Server(uvicorn.Config(build_app(config, engine), host=config.host, port=config.port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://{config.host}:{config.port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def picture(tmp_path) -> Path:
    img = Image.new("RGB", (96, 96), (200, 200, 190))
    draw = ImageDraw.Draw(img)
    draw.ellipse([8, 8, 44, 44], fill=(220, 30, 30))
    draw.rectangle([52, 50, 88, 86], fill=(30, 40, 220))
    path = tmp_path / "shapes.png"
    img.save(path)
    return path


def test_page_explains_two_prompts(server_url, picture, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    errors = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(server_url)
            expect(page.locator("#method option")).to_have_count(2)
            page.set_input_files("#image-input", str(picture))
            page.locator(".prompt-input").nth(0).fill("a red circle")
            page.click("#add-prompt")
            page.locator(".prompt-input").nth(1).fill("a blue square")
            page.click("#explain")
            expect(page.locator(".result-card img.explanation")).to_have_count(2, timeout=30_000)
            expect(page.locator(".result-card img.heatmap")).to_have_count(2)
            expect(page.locator(".result-card h3")).to_have_text(["a red circle", "a blue square"])
            expect(page.locator("#status")).to_contain_text("new image")
            for img in page.locator(".result-card img").all():  # the PNGs decoded
                assert img.evaluate("el => el.complete && el.naturalWidth") > 0
            page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
            page.locator(".prompt-input").nth(1).fill("grass")  # a new prompt: the cached image
            page.click("#explain")
            expect(page.locator(".result-card h3").nth(1)).to_have_text("grass", timeout=30_000)
            expect(page.locator("#status")).to_contain_text("cached image")
            with page.expect_download() as download:
                page.click("#download-sheet")
            with open(download.value.path(), "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
            page.select_option("#method", "gradcam")  # switching method re-explains
            expect(page.locator(".result-card img.overlay")).to_have_count(2, timeout=30_000)
        finally:
            browser.close()
    keep = os.environ.get("BCOS_CLIP_SCREENSHOT")
    if keep:
        shutil.copy(tmp_path / "serve.png", keep)
    assert not errors, errors
    assert (tmp_path / "serve.png").stat().st_size > 10_000
