"""`bcos-clip serve`: the JSON API in-process (FastAPI TestClient), caches, limits and bad requests."""
from __future__ import annotations

import base64
import copy
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

import bcos_clip  # noqa: E402
from bcos_clip.apps.serve.api import create_app  # noqa: E402
from bcos_clip.apps.serve.engine import ExplainEngine  # noqa: E402
from bcos_clip.apps.serve.io import Limits  # noqa: E402
from bcos_clip.apps.serve.methods import BcosMethod, baseline_methods  # noqa: E402
from bcos_clip.apps.serve.server import ServeConfig, build_app, build_engine, build_methods  # noqa: E402
from bcos_clip.models import PlainCLIP, model_source  # noqa: E402


def png(seed: int = 0, size=(80, 96), fmt: str = "PNG") -> bytes:
    """A small picture: noise background, a red disc and a blue square (seeded)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray((rng.random((size[1], size[0], 3)) * 80 + 100).astype("uint8"))
    draw = ImageDraw.Draw(img)
    draw.ellipse([5, 5, 35, 35], fill=(220, 30, 30))
    draw.rectangle([45, 40, 75, 70], fill=(30, 40, 220))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def upload(data: bytes, prompts, **fields):
    return {"files": {"image": ("img.png", data, "image/png")}, "data": {"prompts": prompts, **fields}}


def decode_png(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


class Counter:
    """Counts forward calls of a module (a hook removed by `close`)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.calls += 1

    def close(self) -> None:
        self.handle.remove()


@pytest.fixture(scope="module")
def model_dir(tiny_rn_bcos, tmp_path_factory):
    return str(bcos_clip.save(tiny_rn_bcos, tmp_path_factory.mktemp("serve") / "student"))


@pytest.fixture(scope="module")
def teacher(tiny_rn):
    return PlainCLIP.from_clip(tiny_rn[0], tiny_rn[2]).eval()


@pytest.fixture(scope="module")
def engine(model_dir, teacher):
    methods = build_methods(ServeConfig(model=model_dir, device="cpu"), torch.device("cpu"))
    return ExplainEngine(methods + baseline_methods(teacher, ["gradcam"]), cache_entries=4)


@pytest.fixture(scope="module")
def client(engine):
    limits = Limits(max_upload_bytes=60_000, max_image_side=512, max_prompts=4)
    with TestClient(create_app(engine, limits)) as c:
        yield c


def test_health_lists_methods_and_limits(client):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert [m["name"] for m in body["methods"]] == ["bcos", "gradcam"]
    assert body["default_method"] == "bcos" and body["limits"]["max_prompts"] == 4


def test_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="image-input"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/..%2Fserve.py").status_code == 404


def test_explain_matches_the_library(client, engine):
    data, prompts = png(1), ["a red circle", "a blue square"]
    r = client.post("/explain", **upload(data, prompts))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["prompt"] for x in body["results"]] == prompts and body["method"] == "bcos"
    model = engine.methods["bcos"].model
    image = model.preprocess(Image.open(io.BytesIO(data)).convert("RGB"))[None]
    ref = bcos_clip.explain(model, image, prompts)
    for k, res in enumerate(body["results"]):
        assert res["score"] == pytest.approx(float(ref.scores[0, k]), abs=1e-5)
        assert res["contribution_sum"] + res["bias"] == pytest.approx(res["score"], abs=1e-5)
        assert res["explanation_kind"] == "colour"
        assert decode_png(res["explanation_png"]).mode == "RGBA"
        assert decode_png(res["heatmap_png"]).size == (model.image_size, model.image_size)
    assert decode_png(body["image_png"]).size == (model.image_size, model.image_size)
    assert set(body["timings_ms"]) >= {"image_tower", "text", "explain", "render", "total"}


def test_json_body_equals_multipart(client):
    data, prompts = png(2), ["a red circle"]
    a = client.post("/explain", **upload(data, prompts)).json()
    b = client.post("/explain", json={"image": "data:image/png;base64," + base64.b64encode(data).decode(),
                                      "prompts": prompts})
    assert b.status_code == 200, b.text
    assert b.json()["cache_hit"] and b.json()["results"][0]["score"] == a["results"][0]["score"]


def test_new_prompt_on_a_cached_image_does_not_run_the_image_tower(client, engine):
    tower = Counter(engine.methods["bcos"].model.visual)
    try:
        data = png(3)
        first = client.post("/explain", **upload(data, ["a red circle"])).json()
        after_first = tower.calls
        second = client.post("/explain", **upload(data, ["a green star", "grass"])).json()
        assert after_first > 0 and tower.calls == after_first
        assert not first["cache_hit"] and second["cache_hit"]
        assert second["timings_ms"]["image_tower"] == 0.0
        third = client.post("/explain", **upload(png(4), ["a green star"])).json()
        assert not third["cache_hit"] and tower.calls > after_first
    finally:
        tower.close()


def test_baseline_scores_are_the_teachers_and_maps_are_cached_per_prompt(client, teacher, engine):
    data = png(5)
    counter = Counter(teacher.clip.visual)
    try:
        r = client.post("/explain", **upload(data, ["a red circle", "sky"], method="gradcam"))
        assert r.status_code == 200, r.text
        calls = counter.calls
        again = client.post("/explain", **upload(data, ["sky", "a red circle"], method="gradcam")).json()
        assert counter.calls == calls and again["cache_hit"]
    finally:
        counter.close()
    body = r.json()
    image = teacher.preprocess(Image.open(io.BytesIO(data)).convert("RGB"))[None]
    with torch.no_grad():
        u = torch.nn.functional.normalize(teacher.encode_image(image), dim=-1)
        t = bcos_clip.models.encode_prompts(teacher, ["a red circle", "sky"])
    assert [x["score"] for x in body["results"]] == pytest.approx((u @ t.T)[0].tolist(), abs=1e-5)
    assert all(x["bias"] is None and x["explanation_kind"] == "overlay" for x in body["results"])
    assert [x["score"] for x in again["results"]] == pytest.approx([x["score"] for x in body["results"]][::-1])


def test_sheet_is_a_png_with_a_row_per_prompt(client):
    one = client.post("/sheet", **upload(png(1), ["a red circle"]))
    two = client.post("/sheet", **upload(png(1), ["a red circle", "a blue square"]))
    assert two.status_code == 200 and two.headers["content-type"] == "image/png"
    assert "attachment" in two.headers["content-disposition"]
    h1, h2 = Image.open(io.BytesIO(one.content)).height, Image.open(io.BytesIO(two.content)).height
    assert h2 > h1 * 1.5


@pytest.mark.parametrize("request_kw, status, message", [
    (upload(b"this is not an image", ["a"]), 415, "not an image"),
    (upload(b"GIF89a" + b"\0" * 40, ["a"]), 415, "not an image"),
    (upload(png(0), []), 400, "no prompts"),
    (upload(png(0), ["   ", ""]), 400, "no prompts"),
    (upload(png(0), ["a", "b", "c", "d", "e"]), 400, "limit is 4"),
    (upload(png(0), ["x" * 201]), 400, "limit is 200"),
    (upload(png(0), ["a"], method="lime"), 400, "unknown method 'lime'"),
    (upload(png(0), ["a"], template="no placeholder"), 400, "'template' must contain"),
    (upload(png(0, size=(600, 20)), ["a"]), 413, "600x20 pixels"),
    ({"data": {"prompts": ["a"]}}, 400, "no image"),
    ({"json": {"image": "%%%", "prompts": ["a"]}}, 400, "not valid base64"),
    ({"json": {"image": base64.b64encode(png(0)).decode(), "prompts": "a"}}, 400, "list of strings"),
    ({"json": {"image": base64.b64encode(png(0)).decode()}}, 400, "no prompts"),
    ({"content": b"{oops", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
])
def test_bad_requests_get_a_clear_4xx(client, request_kw, status, message):
    r = client.post("/explain", **request_kw)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_too_large_uploads_are_rejected(client):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 150, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, format="PNG")
    big = buf.getvalue()
    assert 60_000 < len(big) < 60_000 * 4 // 3  # passes the body cap, fails the image cap
    r = client.post("/explain", **upload(big, ["a"]))
    assert r.status_code == 413 and "the limit is 60000 bytes" in r.json()["detail"]
    huge = b"\0" * 200_000  # over the body cap: rejected before parsing, announced or streamed
    r = client.post("/explain", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "request body exceeds" in r.json()["detail"]
    r = client.post("/explain", content=iter([huge[:50_000]] * 4), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "request body exceeds" in r.json()["detail"]


def test_examples_by_name_only(engine, tmp_path):
    (tmp_path / "red.png").write_bytes(png(7))
    (tmp_path / "notes.txt").write_text("not an example")
    config = ServeConfig(model="unused", examples=str(tmp_path))
    with TestClient(build_app(config, engine), base_url="http://localhost:8000") as c:
        assert c.get("/examples").json() == {"examples": ["red.png"]}
        r = c.get("/examples/red.png")
        assert r.status_code == 200 and r.content == png(7)
        assert c.get("/examples/notes.txt").status_code == 404
        assert c.get("/examples/..%2Fred.png").status_code == 404


def test_loopback_server_refuses_foreign_host_headers(engine):
    with TestClient(build_app(ServeConfig(model="unused"), engine), base_url="http://127.0.0.1") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"host": "attacker.example"}).status_code == 400


def test_lru_evicts_the_least_recent_image(model_dir):
    engine = build_engine(ServeConfig(model=model_dir, device="cpu", cache_entries=1))
    with TestClient(create_app(engine)) as c:
        hits = [c.post("/explain", **upload(png(s), ["a"])).json()["cache_hit"] for s in (10, 10, 11, 10)]
    assert hits == [False, True, False, False]
    assert engine.info()["cache"]["entries"] == 1


def test_teacher_from_config_and_weights(model_dir, tiny_rn, tmp_path):
    cfg = tmp_path / "teacher.json"
    cfg.write_text(json.dumps(model_source(tiny_rn[0])["model_cfg"]))
    torch.save(tiny_rn[0].state_dict(), tmp_path / "teacher.pt")
    config = ServeConfig(model=model_dir, teacher=str(cfg), teacher_pretrained=str(tmp_path / "teacher.pt"),
                         baselines=("gradient",), device="cpu")
    methods = build_methods(config, torch.device("cpu"))
    assert [m.name for m in methods] == ["bcos", "gradient"]
    with pytest.raises(ValueError, match="unknown baseline lime"):
        build_methods(ServeConfig(model=model_dir, teacher=str(cfg), baselines=("lime",)), torch.device("cpu"))
    with pytest.raises(ValueError, match="--baseline needs --teacher"):
        build_methods(ServeConfig(model=model_dir, baselines=("gradcam",)), torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_methods(ServeConfig(model=str(tmp_path / "nope")), torch.device("cpu"))


def test_bcos_method_without_color_serves_overlays(model_dir):
    engine = ExplainEngine([BcosMethod(bcos_clip.load(model_dir).eval(), color=False)])
    with TestClient(create_app(engine)) as c:
        body = c.post("/explain", **upload(png(1), ["a red circle"])).json()
    assert body["results"][0]["explanation_kind"] == "overlay" and body["is_bcos"]


def test_a_zero_embedding_is_a_clear_422_not_nans(tiny_rn_bcos):
    broken = copy.deepcopy(tiny_rn_bcos)
    with torch.no_grad():
        for p in broken.visual.parameters():
            p.zero_()
    with TestClient(create_app(ExplainEngine([BcosMethod(broken)]))) as c:
        r = c.post("/explain", **upload(png(1), ["a red circle"]))
    assert r.status_code == 422 and "embedding is zero or not finite" in r.json()["detail"]


def test_prompts_strategy_agrees_with_the_tensor_and_caches_per_prompt(model_dir, client):
    engine = build_engine(ServeConfig(model=model_dir, device="cpu", strategy="prompts"))
    tower = Counter(engine.methods["bcos"].model.visual)
    try:
        with TestClient(create_app(engine)) as c:
            a = c.post("/explain", **upload(png(1), ["a red circle", "a blue square"])).json()
            calls = tower.calls
            again = c.post("/explain", **upload(png(1), ["a blue square"])).json()
            assert tower.calls == calls and again["cache_hit"]
            c.post("/explain", **upload(png(1), ["grass"]))
            assert tower.calls > calls  # a new prompt costs a tower pass with this strategy
    finally:
        tower.close()
    b = client.post("/explain", **upload(png(1), ["a red circle", "a blue square"])).json()
    for x, y in zip(a["results"], b["results"]):
        assert x["score"] == pytest.approx(y["score"], abs=1e-5)
        assert x["max_abs_contribution"] == pytest.approx(y["max_abs_contribution"], rel=1e-3)
        assert x["explanation_kind"] == y["explanation_kind"] == "colour"
    assert again["results"][0]["score"] == a["results"][1]["score"]
