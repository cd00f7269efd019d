"""The parts a service calls, as async callables: deployment handles in a replica, plain functions in tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from serve_app.protocol import ChatCompletionRequest, RetrievalFilter, SearchMode, Source

EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]
CountTokensFn = Callable[[list[str]], Awaitable[int]]
RetrieveFn = Callable[[str, list[float] | None, SearchMode, int, RetrievalFilter | None], Awaitable[list[Source]]]
# LLMServer.chat: for a stream, batches (lists) of SSE strings and ErrorResponse values; else one response or error.
GenerateFn = Callable[[ChatCompletionRequest], AsyncIterator[Any]]
