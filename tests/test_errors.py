import pytest
from ray.exceptions import ActorDiedError, RayTaskError
from ray.serve.exceptions import BackPressureError

from serve_app.errors import from_unavailable
from serve_app.protocol import EngineDeadError


def _raised_through_a_handle(cause: Exception) -> Exception:
    """What a deployment handle raises when the remote call failed with ``cause``."""
    return RayTaskError("chat", "Traceback ...", cause).as_instanceof_cause()


@pytest.mark.parametrize(("error", "names"), [
    (_raised_through_a_handle(EngineDeadError("engine core died")), "the LLM engine"),
    (ActorDiedError(), "a part of the service"),
    (BackPressureError(num_queued_requests=10, max_queued_requests=10), "a part of the service"),
])  # fmt: skip
def test_a_part_that_is_down_is_a_503(error, names):
    api_error = from_unavailable(error)
    assert api_error.status == 503 and api_error.type == "service_unavailable"
    assert api_error.message.startswith(f"{names} is unavailable")
