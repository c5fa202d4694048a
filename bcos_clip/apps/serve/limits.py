"""ASGI middleware for `bcos-clip serve`: a request-body cap, JSON error answers, defensive headers.

The body cap runs before any parsing: a request announcing (Content-Length) or streaming (chunked) more
than `max_bytes` gets a 413 JSON answer, so an oversized upload is never spooled in full. `JsonErrors`
turns the plain-text error answers of other middleware (e.g. Starlette's "Invalid host header") into the
API's one-line `{"detail": ...}`.
"""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Dict

Scope = Dict[str, Any]
Message = Dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The page loads its own script and style only; images are data:/blob: URLs made by the page.
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                b"script-src 'self'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
}


class _BodyTooLarge(Exception):
    pass


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Reject request bodies over `max_bytes` with 413 (declared length or bytes actually received)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"the request body exceeds {self.max_bytes} bytes (image limit: --max-upload-mb)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _send_json(send, 400, "invalid Content-Length header")
                return
            if length > self.max_bytes:
                await _send_json(send, 413, self._too_large())
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, self._too_large())


class _ResponseFilter:
    """Middleware that passes every HTTP answer through :meth:`wrap` (other scopes go through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def wrap(self, send: Send) -> Send:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, self.wrap(send) if scope["type"] == "http" else send)


class JsonErrors(_ResponseFilter):
    """Rewrite error answers (status >= 400) that are not JSON as ``{"detail": <their text>}``."""

    def wrap(self, send: Send) -> Send:
        held: Dict[str, Any] = {}

        async def send_json_errors(message: Message) -> None:
            if message["type"] == "http.response.start":
                ctype = dict(message.get("headers") or []).get(b"content-type", b"")
                if message["status"] >= 400 and not ctype.startswith(b"application/json"):
                    held.update(status=message["status"], body=b"")
                    return
            elif message["type"] == "http.response.body" and held:
                held["body"] += message.get("body", b"")
                if not message.get("more_body", False):
                    text = " ".join(held["body"].decode("utf-8", errors="replace").split())
                    await _send_json(send, held["status"], text or f"HTTP {held['status']}")
                return
            await send(message)

        return send_json_errors


class SecurityHeaders(_ResponseFilter):
    """Add SECURITY_HEADERS to every HTTP response."""

    def wrap(self, send: Send) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS.items() if k not in present]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        return send_with_headers
