import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ray.exceptions import ActorDiedError, RayTaskError
from ray.serve.exceptions import BackPressureError

from serve_app.errors import from_stream_failure, from_unavailable, install_error_handlers
from serve_app.protocol import EngineDeadError


def _raised_through_a_handle(cause: Exception) -> Exception:
    """What a deployment handle raises when the remote call failed with ``cause``."""
    return RayTaskError("chat", "Traceback ...", cause).as_instanceof_cause()


@pytest.mark.parametrize(
    ("error", "names"),
    [
        (_raised_through_a_handle(EngineDeadError("engine core died")), "the LLM engine"),
        (ActorDiedError(), "a part of the service"),
        (BackPressureError(num_queued_requests=10, max_queued_requests=10), "a part of the service"),
    ],
)
def test_a_part_that_is_down_is_a_503(error, names):
    for api_error in (from_unavailable(error), from_stream_failure(error)):
        assert api_error.status == 503 and api_error.type == "service_unavailable"
        assert api_error.message.startswith(f"{names} is unavailable")


def test_handlers_tell_a_dead_engine_from_a_bug():
    """Starlette picks a handler by the exception's MRO: a handle's RayTaskError(EngineDeadError) must reach the 503
    handler, and a RayTaskError(ValueError) the generic 500."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/dead")
    async def dead():
        raise _raised_through_a_handle(EngineDeadError("engine core died"))

    @app.get("/bug")
    async def bug():
        raise _raised_through_a_handle(ValueError("oops"))

    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/dead")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"]["type"] == "service_unavailable"
    response = client.get("/bug")
    assert response.status_code == 500 and response.json()["error"]["type"] == "internal_error"
    assert from_stream_failure(ValueError("oops")).status == 500


def test_unknown_routes_and_methods_are_openai_errors():
    app = FastAPI()
    install_error_handlers(app)

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
