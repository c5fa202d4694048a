"""`bcos-clip serve`: every error answer is one line of JSON, `{"detail": "..."}` (malformed requests,
deeply nested JSON, image bombs, foreign hosts, unknown routes, and a bug inside a handler)."""
from __future__ import annotations

import base64
import json

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

import bcos_clip  # noqa: E402
from bcos_clip.apps.serve.api import create_app  # noqa: E402
from bcos_clip.apps.serve.engine import ExplainEngine  # noqa: E402
from bcos_clip.apps.serve.io import Limits  # noqa: E402
from bcos_clip.apps.serve.server import ServeConfig, build_methods  # noqa: E402
from tests._bad_cases import record  # noqa: E402
from tests._bad_world import bomb_png, png_bytes  # noqa: E402

GOOD = png_bytes(0)
B64 = base64.b64encode(GOOD).decode()
NESTED = b"[" * 20_000 + b"]" * 20_000  # 40 kB, far deeper than the recursion limit
JSON = {"content-type": "application/json"}


def _json(body: bytes) -> dict:
    return {"content": body, "headers": JSON}


def _upload(data: bytes, prompts=("a dog",), **fields) -> dict:
    return {"files": {"image": ("x.png", data, "image/png")}, "data": {"prompts": list(prompts), **fields}}


# (what, method, path, request kwargs, status, piece of the detail)
REQUESTS = [
    ("deeply nested JSON body", "post", "/explain", _json(NESTED), 400, "nested too deeply"),
    ("deeply nested prompts", "post", "/explain", _json(b'{"image": "%s", "prompts": %s}' % (B64.encode(), NESTED)),
     400, "nested too deeply"),
    ("invalid JSON", "post", "/explain", _json(b"{oops"), 400, "not valid JSON"),
    ("JSON that is not an object", "post", "/explain", _json(b"[1, 2]"), 400, "must be an object"),
    ("JSON without image", "post", "/explain", {"json": {"prompts": ["a"]}}, 400, "no image"),
    ("image not base64", "post", "/explain", {"json": {"image": "%%%", "prompts": ["a"]}}, 400, "not valid base64"),
    ("image not a string", "post", "/explain", {"json": {"image": 5, "prompts": ["a"]}}, 400, "base64 string"),
    ("prompts a string", "post", "/explain", {"json": {"image": B64, "prompts": "a"}}, 400, "list of strings"),
    ("prompts not strings", "post", "/explain", {"json": {"image": B64, "prompts": [1, 2]}}, 400, "must be a string"),
    ("method not a string", "post", "/explain", {"json": {"image": B64, "prompts": ["a"], "method": 3}}, 400,
     "'method' must be a string"),
    ("upload not an image", "post", "/explain", _upload(b"hello"), 415, "not an image"),
    ("upload image bomb", "post", "/explain", _upload(bomb_png()), 413, "too many pixels"),
    ("upload truncated image", "post", "/explain", _upload(GOOD[: len(GOOD) // 2]), 415, "could not be decoded"),
    ("upload empty", "post", "/explain", _upload(b""), 400, "empty"),
    ("image field not a file", "post", "/explain", {"data": {"image": "abc", "prompts": ["a"]}}, 400,
     "file upload"),
    ("unknown method", "post", "/explain", _upload(GOOD, method="lime"), 400, "unknown method"),
    ("too many prompts", "post", "/explain", _upload(GOOD, prompts=list("abcde")), 400, "limit is 4"),
    ("template without {}", "post", "/sheet", _upload(GOOD, template="plain"), 400, "'template' must contain"),
    ("unsupported content type", "post", "/explain", {"content": b"x", "headers": {"content-type": "text/csv"}},
     415, "unsupported content type"),
    ("body over the cap", "post", "/explain", _json(b"0" * 200_000), 413, "request body exceeds"),
    ("invalid Content-Length", "post", "/explain", {"content": b"{}", "headers": {**JSON, "content-length": "x"}},
     400, "Content-Length"),
    ("unknown route", "get", "/nothing", {}, 404, "Not Found"),
    ("wrong HTTP method", "get", "/explain", {}, 405, "Method Not Allowed"),
    ("unknown example", "get", "/examples/x.png", {}, 404, "no example"),
    ("unknown static file", "get", "/static/../x", {}, 404, ""),
    ("foreign Host header", "get", "/health", {"headers": {"host": "attacker.example"}}, 400, "Invalid host header"),
]


@pytest.fixture(scope="module")
def engine(tiny_rn_bcos, tmp_path_factory):
    model_dir = str(bcos_clip.save(tiny_rn_bcos, tmp_path_factory.mktemp("serve_bad") / "student"))
    return ExplainEngine(build_methods(ServeConfig(model=model_dir, device="cpu"), torch.device("cpu")))


@pytest.fixture(scope="module")
def client(engine):
    app = create_app(engine, Limits(max_upload_bytes=60_000, max_image_side=512, max_prompts=4),
                     hosts=["testserver", "127.0.0.1"])
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def check_one_json_line(response, status: int, piece: str, what: str) -> None:
    record("serve", f"HTTP: {what}", response.status_code, response.text)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert "\n" not in response.text.strip() and "Traceback" not in response.text
    detail = json.loads(response.text)["detail"]
    assert isinstance(detail, str) and piece in detail, detail


@pytest.mark.parametrize("what, method, path, kwargs, status, piece", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_every_error_is_one_json_line(client, what, method, path, kwargs, status, piece):
    check_one_json_line(getattr(client, method)(path, **kwargs), status, piece, what)


def test_a_bug_in_a_handler_is_a_json_500(client, engine, monkeypatch):
    def broken(*args, **kwargs):
        raise AttributeError("a bug")

    monkeypatch.setattr(engine, "explain", broken)
    response = client.post("/explain", **_upload(GOOD))
    check_one_json_line(response, 500, "internal error (AttributeError)", "a bug inside the handler")
    assert "a bug" not in response.text  # internals stay in the server log
