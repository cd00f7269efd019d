"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from serve_app.errors import unavailable_as_api_error
from serve_app.protocol import ChatRequest, ChatResponse
from serve_app.services import ServicesDep

router = APIRouter()
STREAMED = {"text/event-stream": {"schema": {"type": "string"}, "example": "data: {...}\n\n"}}


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={200: {"model": ChatResponse, "content": STREAMED, "description": "The answer, or its SSE stream."}},
)
@unavailable_as_api_error
async def chat_completions(request: ChatRequest, services: ServicesDep) -> JSONResponse | StreamingResponse:
    """OpenAI's chat completions over the retrieved passages; the answer (or the stream's first chunk) carries
    them as ``sources``. Extras: ``top_k``, ``search``, ``filter``."""
    result = await services.chat.chat(request)
    if isinstance(result, dict):
        return JSONResponse(result)
    return StreamingResponse(result, media_type="text/event-stream")
