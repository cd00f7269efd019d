"""The FastAPI app: every router over the services, the error handlers and the middleware, in one place. A new API
area is a router in ``routers/`` over a service in ``services/``, included here."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from serve_app.errors import APIError, ErrorResponse, install_error_handlers
from serve_app.middleware import CountRequests, LimitBody, RequireApiKey
from serve_app.routers import chat, embeddings, health, page, retrieve
from serve_app.services import Services

ROUTERS = (chat.router, embeddings.router, retrieve.router, health.router, page.router)
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "A request this endpoint refuses: invalid, unsupported, or past one of serve.limits."),
        (401, "A missing or wrong API key (when serve.api_keys_file is set)."),
        (404, "An unknown model."),
        (413, "A body past serve.limits.max_body_bytes."),
        (503, "A full queue or a part that is down: retry after Retry-After seconds."),
    )
}


class RagAPI(FastAPI):
    """FastAPI whose schema has no 422: a body that does not validate gets OpenAI's 400 here."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            for operation in (op for path in schema["paths"].values() for op in path.values()):
                operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(name, None)
        return self.openapi_schema or {}


def build_api(services: Services, api_keys: list[str] | None = None) -> FastAPI:
    """The HTTP app over ``services``; ``api_keys``: the keys a request needs (none: an open endpoint)."""
    serve_cfg = services.cfg.serve
    app = RagAPI(title="RAG on Ray", version="0.1.0", responses=OPENAI_ERRORS)
    app.state.services = services

    def on_error(error: APIError) -> None:
        services.metrics.error(error.kind)

    install_error_handlers(app, retry_after_s=serve_cfg.retry_after_s, on_error=on_error)
    # add_middleware wraps what is there, so the last added runs first: count every request, then the key, then the
    # body size; the body is read only for a caller with a key, and parsed only when it is within the limit.
    app.add_middleware(
        LimitBody, max_bytes=serve_cfg.limits.max_body_bytes, on_error=on_error, retry_after_s=serve_cfg.retry_after_s
    )
    if api_keys:
        app.add_middleware(RequireApiKey, keys=api_keys, on_error=on_error, retry_after_s=serve_cfg.retry_after_s)
    app.add_middleware(CountRequests, metrics=services.metrics)
    for router in ROUTERS:
        app.include_router(router)
    page.mount_assets(app)
    return app
