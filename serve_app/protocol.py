"""The API's types. OpenAI request/response models come from vLLM through Ray's re-exports, imported here
only, because vLLM moves them between releases; our own extras (retrieval options, sources) live beside them."""

from __future__ import annotations

from typing import get_args

from pydantic import BaseModel, ConfigDict, Field
from ray.serve.llm.openai_api_models import ChatCompletionRequest, ChatCompletionResponse
from vllm.entrypoints.serve.engine.protocol import ErrorResponse as EngineErrorResponse
from vllm.v1.engine.exceptions import EngineDeadError

from rag.search import RetrievalFilter, SearchMode, Source

# vLLM's StreamOptions, found through the request's own field rather than the module it lives in this release.
StreamOptions = next(
    t for t in get_args(ChatCompletionRequest.model_fields["stream_options"].annotation) if t is not type(None)
)

__all__ = [
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "EngineDeadError",
    "EngineErrorResponse",
    "RetrievalFilter",
    "RetrievalOptions",
    "RetrieveRequest",
    "SearchMode",
    "Source",
    "StreamOptions",
    "EmbeddingsRequest",
]


class RetrievalOptions(BaseModel):
    """The request extras we accept in an OpenAI body; ChatCompletionRequest lets unknown fields pass silently."""

    model_config = ConfigDict(extra="forbid")

    top_k: int | None = Field(None, ge=1, le=100, description="Passages to retrieve.")
    search: SearchMode | None = Field(None, description="dense, bm25 or hybrid.")
    filter: RetrievalFilter | None = None


class RetrieveRequest(RetrievalOptions):
    query: str = Field(min_length=1, description="The question to retrieve passages for.")


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    input: str | list[str] = Field(description="Text or texts to embed.")
    model: str | None = None
