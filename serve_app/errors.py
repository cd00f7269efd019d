"""Errors in one place: every failure leaves the app as an OpenAI-shaped body with the right status."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from pymilvus import MilvusException
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from starlette.exceptions import HTTPException

from rag.store import MilvusUnavailable
from serve_app.prompt import ContextTooLong
from serve_app.protocol import EngineDeadError

M = TypeVar("M", bound=BaseModel)
logger = logging.getLogger(__name__)
RETRY_AFTER_S = "5"
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
    """An error the client should see, with its HTTP status and OpenAI error type."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def sse(self) -> str:
        return f"data: {json.dumps(self.body())}\n\n"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unavailable(message: str) -> APIError:
    return APIError(503, message, type="service_unavailable", code="service_unavailable")


def from_validation_error(error: ValidationError | RequestValidationError) -> APIError:
    first = error.errors()[0]
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
    return APIError(status, info.message, type=info.type, param=info.param)


def from_milvus_error(error: MilvusException) -> APIError:
    # pymilvus marks caller mistakes and transient faults itself; map those rather than guess.
    if getattr(error, "is_input_error", False):
        return bad_request(f"retrieval failed: {error.message}")
    return unavailable(f"Milvus is unavailable: {error.message}")


def from_unavailable(error: Exception) -> APIError:
    part = "the LLM engine" if isinstance(error, EngineDeadError) else "a part of the service"
    return unavailable(f"{part} is unavailable ({type(error).__name__}); retry shortly")


def from_stream_failure(error: Exception) -> APIError:
    """An exception after the stream's status line went out: it ends the stream as an error event."""
    if isinstance(error, UNAVAILABLE_ERRORS):
        return from_unavailable(error)
    logger.error("generation failed", exc_info=error)
    return APIError(500, f"generation failed: {type(error).__name__}", type="internal_error")


def install_error_handlers(app: FastAPI, on_error: Callable[[APIError], None] | None = None) -> None:
    """Every failure as an OpenAI-shaped body; ``on_error`` sees each one (the error metrics)."""

    def respond(error: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
        if on_error is not None:
            on_error(error)
        if error.status == 503:
            headers = {**(headers or {}), "Retry-After": RETRY_AFTER_S}
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own: an unknown route (404) or method (405), as OpenAI words them.
        message = f"{exc.detail}: {request.method} {request.url.path}"
        return respond(APIError(exc.status_code, message), headers=exc.headers)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return respond(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(from_validation_error(exc))

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return respond(from_validation_error(exc))

    @app.exception_handler(ContextTooLong)
    async def _context(_: Request, exc: ContextTooLong) -> JSONResponse:
        return respond(bad_request(str(exc), param="messages", code="context_length_exceeded"))

    @app.exception_handler(MilvusException)
    async def _milvus(_: Request, exc: MilvusException) -> JSONResponse:
        return respond(from_milvus_error(exc))

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
        return respond(APIError(500, f"internal error: {type(exc).__name__}", type="internal_error"))
