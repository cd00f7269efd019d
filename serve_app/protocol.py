"""The API's types. OpenAI request/response models come from vLLM through Ray's re-exports, imported here
only, because vLLM moves them between releases; our own extras (retrieval options, sources) live beside them."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray.serve.llm.openai_api_models import ChatCompletionRequest, ChatCompletionResponse
from vllm.entrypoints.serve.engine.protocol import ErrorResponse as EngineErrorResponse
from vllm.exceptions import VLLMClientError
from vllm.v1.engine.exceptions import EngineDeadError

from rag.search import RetrievalFilter, SearchMode, Source

# vLLM's StreamOptions, found through the request's own field rather than the module it lives in this release.
StreamOptions = next(
    t for t in get_args(ChatCompletionRequest.model_fields["stream_options"].annotation) if t is not type(None)
)


def is_engine_error(item: Any) -> bool:
    """An ErrorResponse value from LLMServer. Ray's are its internal classes; both they and the public ones
    subclass vLLM's, which this checks against."""
    return isinstance(item, EngineErrorResponse)


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
    "VLLMClientError",
    "ChatRequest",
    "ChatResponse",
    "is_engine_error",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "RetrieveResponse",
]


class RetrievalFields(BaseModel):
    """The retrieval extras an OpenAI body may carry (``top_k`` here counts passages, not vLLM's sampling)."""

    top_k: int | None = Field(None, ge=1, description="Passages to retrieve (at most serve.limits.max_top_k).")
    search: SearchMode | None = Field(None, description="dense, bm25 or hybrid.")
    filter: RetrievalFilter | None = None


class RetrievalOptions(RetrievalFields):
    model_config = ConfigDict(extra="forbid")


class ChatRequest(ChatCompletionRequest, RetrievalFields):
    """vLLM's OpenAI chat request plus the retrieval extras: the typed body of /v1/chat/completions."""

    @model_validator(mode="wrap")
    @classmethod
    def _malformed_is_invalid(cls, data: Any, handler: Any) -> Any:
        # Some of vLLM's validators run before the fields are checked and fail on a malformed body (`messages:
        # null` raises TypeError): that is a bad request, so say it as pydantic's error and answer a 400.
        try:
            return handler(data)
        except (TypeError, AttributeError, KeyError) as e:
            raise ValueError(f"malformed request: {type(e).__name__}: {e}") from None


class RetrieveRequest(RetrievalOptions):
    query: str = Field(min_length=1, description="The question to retrieve passages for.")


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    input: str | list[str] = Field(description="Text or texts to embed.")
    model: str | None = Field(None, description="The embedding model's id, as /v1/models lists it.")


class ChatResponse(ChatCompletionResponse):
    """vLLM's chat response plus the passages it was given; a stream carries them in its first event."""

    sources: list[Source]


class RetrieveResponse(BaseModel):
    object: str = "list"
    search: SearchMode
    data: list[Source]


class Embedding(BaseModel):
    object: str = "embedding"
    index: int
    embedding: list[float]


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: str = "list"
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage
