"""The FastAPI app of `bcos-clip serve`: the page, `POST /explain`, `POST /sheet`, `GET /health`, examples.

FastAPI + uvicorn rather than Gradio: two small dependencies instead of a large front-end stack, a plain
JSON API that scripts can call and tests can drive in-process (TestClient / httpx), and a plain HTML page
we control (no build step, no CDN, works offline).

Nothing in a request is used as a file-system path: images arrive as bytes, examples are addressed by
names listed at start-up.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.middleware.trustedhost import TrustedHostMiddleware

from bcos_clip.apps.serve.engine import DEFAULT_TEMPLATE, ExplainEngine, ExplainRequest
from bcos_clip.apps.serve.io import Limits, RequestError, decode_base64
from bcos_clip.apps.serve.limits import BodySizeLimit, JsonErrors, SecurityHeaders
from bcos_clip.apps.serve.render import result_json, sheet_png
from bcos_clip.runtime.contained import regular_file_inside
from bcos_clip.runtime.resources import SERVE_STATIC, resource_text

log = logging.getLogger(__name__)

EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}


def list_examples(directory: Optional[Path], limit: int = 200) -> Dict[str, Path]:
    """name -> path of the images directly inside `directory` (sorted, at most `limit`): regular files
    inside the folder only (a link leading out of it is not offered)."""
    if directory is None:
        return {}
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"--examples {directory} is not a directory")
    files = []
    for p in sorted(directory.iterdir()):
        if p.suffix.lower() not in EXAMPLE_SUFFIXES:
            continue
        if regular_file_inside(directory, p.name) is None:
            log.warning("--examples: skipping %s (a link out of %s, or not a regular file)", p, directory)
        else:
            files.append(p)
    return {p.name: p for p in files[:limit]}


def read_example(directory: Path, path: Path) -> Optional[bytes]:
    """The bytes of example `path`, checked again when read (a file swapped for a link since start-up is
    refused): None unless it is still a regular file inside `directory`."""
    target = regular_file_inside(directory, path.name)
    return target.read_bytes() if target is not None else None


def _static(name: str) -> str:
    return resource_text(SERVE_STATIC, name)


def _clean_prompts(values: Sequence[Any], limits: Limits) -> List[str]:
    prompts = []
    for value in values:
        if not isinstance(value, str):
            raise RequestError(400, "every prompt must be a string")
        value = " ".join(value.split())
        if len(value) > limits.max_prompt_chars:
            raise RequestError(400, f"a prompt has {len(value)} characters; the limit is {limits.max_prompt_chars}")
        if value:
            prompts.append(value)
    if not prompts:
        raise RequestError(400, "no prompts: give at least one non-empty prompt")
    if len(prompts) > limits.max_prompts:
        raise RequestError(400, f"{len(prompts)} prompts; the limit is {limits.max_prompts} (--max-prompts)")
    return prompts


def _text_field(value: Any, name: str, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise RequestError(400, f"'{name}' must be a string")
    return value


async def _parse_form(request: Request, limits: Limits) -> Dict[str, Any]:
    form = await request.form(max_files=1, max_fields=limits.max_prompts + 8)
    image = form.get("image")
    if image is None:
        raise RequestError(400, "no image: send the file in a multipart field named 'image'")
    if not isinstance(image, UploadFile):
        raise RequestError(400, "'image' must be a file upload")
    data = await image.read(limits.max_upload_bytes + 1)
    return {"image": data, "prompts": form.getlist("prompts") + form.getlist("prompt"),
            "method": form.get("method"), "template": form.get("template")}


async def _parse_json(request: Request) -> Dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "the request body is not valid JSON") from None
    except RecursionError:
        raise RequestError(400, "the JSON body is nested too deeply") from None
    if not isinstance(body, dict):
        raise RequestError(400, "the JSON body must be an object with 'image' and 'prompts'")
    if "image" not in body:
        raise RequestError(400, "no image: give 'image' as a base64 string")
    prompts = body.get("prompts")
    if prompts is None:
        raise RequestError(400, "no prompts: give 'prompts' as a list of strings")
    if isinstance(prompts, str) or not isinstance(prompts, list):
        raise RequestError(400, "'prompts' must be a list of strings")
    return {"image": decode_base64(body["image"]), "prompts": prompts, "method": body.get("method"),
            "template": body.get("template")}


async def parse_request(request: Request, engine: ExplainEngine, limits: Limits) -> ExplainRequest:
    """multipart/form-data (image file + `prompts` fields) or JSON (base64 image + prompts list)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields = await _parse_form(request, limits)
    elif ctype == "application/json":
        fields = await _parse_json(request)
    else:
        raise RequestError(415, f"unsupported content type '{ctype or 'none'}': send multipart/form-data "
                                "(image file + prompts fields) or application/json (base64 image + prompts)")
    method = _text_field(fields["method"], "method", engine.default_method)
    if method not in engine.methods:
        raise RequestError(400, f"unknown method '{method}'; available: {', '.join(engine.methods)}")
    template = _text_field(fields["template"], "template", DEFAULT_TEMPLATE)
    if "{}" not in template or len(template) > limits.max_prompt_chars:
        raise RequestError(400, "'template' must contain '{}' (where the prompt goes) and be at most "
                                f"{limits.max_prompt_chars} characters")
    return ExplainRequest(image=fields["image"], prompts=tuple(_clean_prompts(fields["prompts"], limits)),
                          method=method, template=template)


def allowed_hosts(host: str) -> List[str]:
    """Host headers accepted: anything for a wildcard bind, else the loopback names and the bound host
    (guards a loopback server against DNS rebinding)."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return sorted({host, "127.0.0.1", "localhost", "::1", "[::1]"})


def create_app(engine: ExplainEngine, limits: Limits = Limits(), examples: Optional[Dict[str, Path]] = None,
               hosts: Sequence[str] = ("*",)) -> FastAPI:
    """The explorer app around an ExplainEngine. `examples`: name -> image path (from list_examples)."""
    examples = dict(examples or {})
    app = FastAPI(title="bcos-clip serve", description="B-cos CLIP explanation explorer",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=limits.body_bytes())
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))
    app.add_middleware(JsonErrors)
    app.add_middleware(SecurityHeaders)
    _add_error_handlers(app)
    _add_pages(app, engine, limits, examples)
    _add_explain_routes(app, engine, limits)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Bad requests as their 4xx JSON line; anything else as a 500 JSON line (the traceback stays in the log)."""

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
        # A bug, not a bad request: the client gets one JSON line; Starlette re-raises the exception after
        # this answer, so the server logs its traceback.
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the server log has the details"},
                            status_code=500)


def _add_pages(app: FastAPI, engine: ExplainEngine, limits: Limits, examples: Dict[str, Path]) -> None:
    """The page, its static files, /health and the example images."""
    page = {name: _static(name) for name in ("index.html", *STATIC_FILES)}

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page["index.html"])

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC_FILES:
            return JSONResponse({"detail": f"no static file '{name}'"}, status_code=404)
        return Response(page[name], media_type=STATIC_FILES[name])

    @app.get("/health")
    async def health() -> Dict[str, Any]:
        return {"status": "ok", **engine.info(), "limits": limits.__dict__, "examples": len(examples)}

    @app.get("/examples")
    async def example_list() -> Dict[str, Any]:
        return {"examples": list(examples)}

    @app.get("/examples/{name}")
    async def example(name: str) -> Response:
        path = examples.get(name)
        data = read_example(path.parent, path) if path is not None else None
        if data is None:
            return JSONResponse({"detail": f"no example named '{name}'"}, status_code=404)
        media = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else f"image/{path.suffix.lower()[1:]}"
        return Response(data, media_type=media)


def _add_explain_routes(app: FastAPI, engine: ExplainEngine, limits: Limits) -> None:
    """POST /explain (JSON) and POST /sheet (a PNG) of one image and its prompts."""

    @app.post("/explain")
    async def explain(request: Request) -> Dict[str, Any]:
        req = await parse_request(request, engine, limits)
        result = await run_in_threadpool(engine.explain, req, limits)
        return await run_in_threadpool(result_json, result)

    @app.post("/sheet")
    async def sheet(request: Request) -> Response:
        req = await parse_request(request, engine, limits)
        result = await run_in_threadpool(engine.explain, req, limits)
        png = await run_in_threadpool(sheet_png, result)
        return Response(png, media_type="image/png",
                        headers={"content-disposition": f'attachment; filename="bcos-clip-{result.image_id[:12]}.png"'})
