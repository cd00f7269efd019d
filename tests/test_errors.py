import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient
from ray.exceptions import ActorDiedError, RayTaskError
from ray.serve.exceptions import BackPressureError

from serve_app.errors import from_stream_failure, from_unavailable, install_error_handlers, unavailable_as_api_error
from serve_app.protocol import EngineDeadError


def _raised_through_a_handle(cause: Exception) -> Exception:
    """What a deployment handle raises when the remote call failed with ``cause``."""
    return RayTaskError("chat", "Traceback ...", cause).as_instanceof_cause()


@pytest.mark.parametrize(
    ("error", "names"),
    [
        (_raised_through_a_handle(EngineDeadError("engine core died")), "the LLM engine is unavailable"),
        (ActorDiedError(), "a part of the service is unavailable"),
        (BackPressureError(num_queued_requests=10, max_queued_requests=10), "the service is at capacity"),
    ],
)
def test_a_part_that_is_down_is_a_503(error, names):
    for api_error in (from_unavailable(error), from_stream_failure(error)):
        assert api_error.status == 503 and api_error.type == "server_error" and api_error.code == "service_unavailable"
        assert api_error.message.startswith(names)


def test_a_full_queue_is_openais_503_even_under_serves_own_handler():
    """Serve registers a plain-text handler for BackPressureError on the app after it is built (as here); the
    route's wrapper answers first, as OpenAI's 503 with Retry-After."""
    app = FastAPI()
    install_error_handlers(app, retry_after_s=5)

    @app.get("/wrapped")
    @unavailable_as_api_error
    async def wrapped():
        raise BackPressureError(num_queued_requests=4, max_queued_requests=4)

    @app.get("/bare")
    async def bare():
        raise BackPressureError(num_queued_requests=4, max_queued_requests=4)

    app.add_exception_handler(BackPressureError, lambda _, exc: PlainTextResponse(exc.message, status_code=503))
    client = TestClient(app)
    response = client.get("/wrapped")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "service_unavailable"
    assert client.get("/bare").text.startswith("Request dropped")  # what a route without the wrapper answers


def test_handlers_tell_a_dead_engine_from_a_bug():
    """Starlette picks a handler by the exception's MRO: a handle's RayTaskError(EngineDeadError) must reach the 503
    handler, and a RayTaskError(ValueError) the generic 500."""
    app = FastAPI()
    install_error_handlers(app, retry_after_s=7)

    @app.get("/dead")
    async def dead():
        raise _raised_through_a_handle(EngineDeadError("engine core died"))

    @app.get("/bug")
    async def bug():
        raise _raised_through_a_handle(ValueError("oops"))

    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/dead")
    assert response.status_code == 503 and response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "service_unavailable"
    response = client.get("/bug")
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    assert from_stream_failure(ValueError("oops")).status == 500


def test_unknown_routes_and_methods_are_openai_errors():
    app = FastAPI()
    install_error_handlers(app, retry_after_s=7)

    @app.post("/v1/chat/completions")
    async def chat():
        return {}

    client = TestClient(app)
    response = client.get("/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Not Found: GET /v1/nope"
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_error_types_are_openais():
    """OpenAI's two types, whatever the source: ours, vLLM's (it says BadRequestError), a server fault."""
    from types import SimpleNamespace

    from serve_app.errors import APIError, from_engine_error

    engine_error = SimpleNamespace(error=SimpleNamespace(code=400, message="bad", type="BadRequestError", param=None))
    assert from_engine_error(engine_error).type == "invalid_request_error"
    assert APIError(404, "no such model", code="model_not_found").type == "invalid_request_error"
    assert APIError(401, "no key", code="invalid_api_key").type == "invalid_request_error"
    assert APIError(500, "oops").type == APIError(503, "down").type == "server_error"
