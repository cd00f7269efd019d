"""Errors in one place: every failure leaves the app as an OpenAI-shaped body with the right status."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from pymilvus import MilvusException
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from starlette.exceptions import HTTPException

from rag.store import CollectionOutdated, EmbedderMismatch, MilvusUnavailable
from serve_app.prompt import ContextTooLong
from serve_app.protocol import EngineDeadError, VLLMClientError

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")
logger = logging.getLogger(__name__)
# A part of the app that is down, restarting or full: Serve replaces a dead replica (and LLMServer one whose engine
# died), so the client should come back later, not read a 500. Ray raises a handle call's remote exception as a
# class that is both RayTaskError and its cause, so EngineDeadError matches through any number of hops.
UNAVAILABLE_ERRORS = (
    EngineDeadError,
    RayActorError,
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)


def remote_cause(error: Exception) -> Exception:
    """The exception a replica raised, not Ray's wrapper around it, whose text is the remote traceback."""
    return getattr(error, "cause", None) or error


class APIError(Exception):
    """An error the client should see: its HTTP status and OpenAI's body. The type is OpenAI's for the status
    (``invalid_request_error`` for a 4xx, ``server_error`` for a 5xx); the code says which error it is."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = "invalid_request_error" if status < 500 else "server_error"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def sse(self) -> str:
        return f"data: {json.dumps(self.body())}\n\n"

    @property
    def kind(self) -> str:
        """What the error metric counts it as."""
        return self.code or self.type


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error (4xx) or server_error (5xx), as OpenAI's.")
    param: str | None = Field(description="The request field at fault, if one is.")
    code: str | None = Field(description="Which error: invalid_api_key, model_not_found, limit_exceeded, ...")


class ErrorResponse(BaseModel):
    """Every error body, as OpenAI's."""

    error: ErrorDetail


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def over_limit(limit: str, value: int, allowed: int, param: str | None, status: int = 400) -> APIError:
    """A request past one of ``serve.limits``, naming the limit."""
    message = f"{param or 'the request'} is {value:,}; the limit serve.limits.{limit} is {allowed:,}"
    return APIError(status, message, param=param, code="limit_exceeded")


def unavailable(message: str) -> APIError:
    return APIError(503, message, code="service_unavailable")


def from_validation_error(error: ValidationError | RequestValidationError) -> APIError:
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return bad_request(f"invalid JSON body: {first.get('ctx', {}).get('error', first['msg'])}")
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return bad_request(f"{param}: {first['msg']}" if param else first["msg"], param=param)


def validated(model: type[M], data: Any) -> M:
    """``model`` from request data, or an OpenAI-shaped 400 naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise from_validation_error(e) from None


def from_engine_error(error: Any) -> APIError:
    """vLLM's ErrorResponse value (returned, not raised, by LLMServer) as our error."""
    info = error.error
    status = int(info.code) if 400 <= int(info.code or 500) < 600 else 500
    return APIError(status, info.message, param=info.param)


def from_milvus_error(error: MilvusException) -> APIError:
    # pymilvus marks caller mistakes and transient faults itself; map those rather than guess.
    if getattr(error, "is_input_error", False):
        return bad_request(f"retrieval failed: {error.message}")
    return unavailable(f"Milvus is unavailable: {error.message}")


def from_unavailable(error: Exception) -> APIError:
    if isinstance(error, BackPressureError):
        return unavailable("the service is at capacity: every replica is busy and the queue is full; retry shortly")
    part = "the LLM engine" if isinstance(error, EngineDeadError) else "a part of the service"
    return unavailable(f"{part} is unavailable ({type(error).__name__}); retry shortly")


def unavailable_as_api_error(route: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """A route whose unavailable parts answer as OpenAI's 503. Ray Serve installs its own plain-text handlers for
    BackPressureError and DeploymentUnavailableError over the app's, so they must not leave the route as they are."""

    @functools.wraps(route)
    async def wrapped(*args: Any, **kwargs: Any) -> R:
        try:
            return await route(*args, **kwargs)
        except UNAVAILABLE_ERRORS as e:
            raise from_unavailable(e) from e

    return wrapped


def from_stream_failure(error: Exception) -> APIError:
    """An exception after the stream's status line went out: it ends the stream as an error event."""
    if isinstance(error, UNAVAILABLE_ERRORS):
        return from_unavailable(error)
    logger.error("generation failed", exc_info=error)
    return APIError(500, f"generation failed: {type(error).__name__}", code="internal_error")


def error_response(error: APIError, retry_after_s: int, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error as a response; a 503 says when to come back."""
    if error.status == 503:
        headers = {**(headers or {}), "Retry-After": str(retry_after_s)}
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def install_error_handlers(
    app: FastAPI, *, retry_after_s: int, on_error: Callable[[APIError], None] | None = None
) -> None:
    """Every failure as an OpenAI-shaped body; ``on_error`` sees each one (the error metrics)."""

    def respond(error: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
        if on_error is not None:
            on_error(error)
        return error_response(error, retry_after_s, headers)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own: an unknown route (404) or method (405), as OpenAI words them.
        message = f"{exc.detail}: {request.method} {request.url.path}"
        return respond(APIError(exc.status_code, message), headers=dict(exc.headers or {}))

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return respond(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(from_validation_error(exc))

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return respond(from_validation_error(exc))

    @app.exception_handler(VLLMClientError)
    async def _vllm_validation(_: Request, exc: VLLMClientError) -> JSONResponse:
        # vLLM's request validators raise their own error (not pydantic's) for a combination they refuse.
        return respond(bad_request(str(exc.args[0]) if exc.args else str(exc), param=getattr(exc, "parameter", None)))

    @app.exception_handler(ContextTooLong)
    async def _context(_: Request, exc: ContextTooLong) -> JSONResponse:
        return respond(bad_request(str(exc), param="messages", code="context_length_exceeded"))

    @app.exception_handler(MilvusException)
    async def _milvus(_: Request, exc: MilvusException) -> JSONResponse:
        return respond(from_milvus_error(exc))

    @app.exception_handler(EmbedderMismatch)
    async def _embedder_mismatch(_: Request, exc: EmbedderMismatch) -> JSONResponse:
        # The deployment's config, not the request, is wrong: retrying will not help until it is redeployed.
        return respond(APIError(500, str(remote_cause(exc)), code="embedder_mismatch"))

    @app.exception_handler(CollectionOutdated)
    async def _collection_outdated(_: Request, exc: CollectionOutdated) -> JSONResponse:
        return respond(APIError(500, str(remote_cause(exc)), code="collection_outdated"))

    @app.exception_handler(MilvusUnavailable)
    async def _milvus_down(_: Request, exc: MilvusUnavailable) -> JSONResponse:
        return respond(unavailable(str(remote_cause(exc))))

    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        logger.warning("unavailable: %r", exc)
        return respond(from_unavailable(exc))

    for error_type in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_type, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return respond(APIError(500, f"internal error: {type(exc).__name__}", code="internal_error"))
