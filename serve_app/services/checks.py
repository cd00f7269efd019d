"""The checks every API area applies to a request before any work is paid for: the model it names and
``serve.limits``. Each failure is an OpenAI-shaped 400 (404 for a model) naming the field."""

from __future__ import annotations

from rag.config import RequestLimits
from serve_app.errors import APIError, over_limit
from serve_app.protocol import RetrievalFields


def check_model(model: str | None, served: str) -> None:
    if model is not None and model != served:
        raise APIError(
            404,
            f"The model `{model}` does not exist; this endpoint serves `{served}`.",
            param="model",
            code="model_not_found",
        )


def check_text(limits: RequestLimits, text: str, param: str) -> None:
    if len(text) > limits.max_message_chars:
        raise over_limit("max_message_chars", len(text), limits.max_message_chars, param)


def check_retrieval(limits: RequestLimits, options: RetrievalFields) -> None:
    if options.top_k is not None and options.top_k > limits.max_top_k:
        raise over_limit("max_top_k", options.top_k, limits.max_top_k, "top_k")
    if options.filter is not None:
        size = len(options.filter.model_dump_json(exclude_none=True))
        if size > limits.max_filter_chars:
            raise over_limit("max_filter_chars", size, limits.max_filter_chars, "filter")
