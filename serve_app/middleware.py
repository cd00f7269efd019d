"""The app's middleware, all plain ASGI (not Starlette's BaseHTTPMiddleware), so streams pass through untouched and a
client that leaves still cancels its generation: the request counter, then the API key, then the body size. The
two gates answer before a byte of the body is parsed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from serve_app.errors import APIError, error_response
from serve_app.metrics import ServingMetrics

# Liveness answers without a key, so a load balancer's or kubelet's probe needs no secret; it says nothing else.
# The chat page and its files are public too (they hold no data): the page asks for a key when the API wants one.
PUBLIC_PATHS = frozenset({"/healthz", "/"})
PUBLIC_PREFIXES = ("/static/",)
OnError = Callable[[APIError], None]
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that went away, as the request counter records it


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


class RequireApiKey:
    """Every route but ``PUBLIC_PATHS`` needs ``Authorization: Bearer <key>``; else a 401 shaped as OpenAI's
    (``invalid_api_key``), which the openai client raises as AuthenticationError. Keys are held as SHA-256
    digests and every one is compared in constant time, so neither the time taken nor the error says which part
    of a key was right; no key is logged or echoed."""

    def __init__(self, app: Any, keys: list[str], *, on_error: OnError, retry_after_s: int):
        self.app, self.on_error, self.retry_after_s = app, on_error, retry_after_s
        self.digests = [_digest(k.encode()) for k in keys]

    def accepts(self, presented: bytes) -> bool:
        candidate = _digest(presented)
        matched = False
        for digest in self.digests:  # no early exit: the time does not depend on which key matched
            matched |= hmac.compare_digest(candidate, digest)
        return matched

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["path"].startswith(PUBLIC_PREFIXES):
            return await self.app(scope, receive, send)
        scheme, _, presented = (_header(scope, b"authorization") or b"").partition(b" ")
        if scheme.lower() == b"bearer" and presented.strip() and self.accepts(presented.strip()):
            return await self.app(scope, receive, send)
        if presented.strip():
            message = "Incorrect API key provided."
        else:
            message = "You didn't provide an API key: send it as `Authorization: Bearer <key>`."
        error = APIError(401, message, code="invalid_api_key")
        self.on_error(error)
        response = error_response(error, self.retry_after_s, {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class LimitBody:
    """Refuses a body past ``max_bytes`` with a 413 naming the limit: from its Content-Length before reading,
    else (chunked, or a length that lies) as soon as the bytes read pass it. The app then reads the body from
    memory, so nothing it parses was ever larger than the limit."""

    def __init__(self, app: Any, max_bytes: int, *, on_error: OnError, retry_after_s: int):
        self.app, self.max_bytes, self.on_error, self.retry_after_s = app, max_bytes, on_error, retry_after_s

    async def reject(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = f"the request body is over {self.max_bytes:,} bytes, the limit serve.limits.max_body_bytes"
        error = APIError(413, message, code="limit_exceeded")
        self.on_error(error)
        await error_response(error, self.retry_after_s, {"Connection": "close"})(scope, receive, send)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self.reject(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before sending it all
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self.reject(scope, receive, send)
            more = message.get("more_body", False)
        body_sent = False

        async def replay() -> dict[str, Any]:
            nonlocal body_sent
            if body_sent:
                return await receive()  # after the body: a disconnect, which cancels a stream
            body_sent = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


class CountRequests:
    """Counts requests by route template and status."""

    def __init__(self, app: Any, metrics: ServingMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # an exception that escapes every handler

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST if status == 500 else status  # the client left before an answer
            raise
        finally:
            route = scope.get("route")  # FastAPI's matched route: its template, never the raw path
            self.metrics.request(getattr(route, "path", "unmatched"), status)
