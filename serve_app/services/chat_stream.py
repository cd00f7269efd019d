"""The engine's chat stream as the client gets it: each SSE event parsed once, the retrieved sources on the first
chunk, the engine's usage counted (and passed on only to a client that asked for it), engine errors as events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from serve_app.errors import from_engine_error, from_stream_failure
from serve_app.metrics import ServingMetrics
from serve_app.protocol import is_engine_error

DONE = "[DONE]"


def sse_data(text: str) -> Iterator[str]:
    """The ``data:`` payloads of a text of whole SSE events, one or many."""
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data:"):
                yield line[len("data:") :].strip()


def sse(payload: str) -> str:
    return f"data: {payload}\n\n"


class SourcedStream:
    """Rewrites one chat stream. The first event that is a chat chunk (it has ``choices``) carries ``sources``,
    whatever batch it arrives in; the final usage event (``usage`` with no choices) is counted, and dropped unless
    the client asked for usage. Every other event passes as the engine wrote it."""

    def __init__(self, sources: list[dict[str, Any]], *, client_wants_usage: bool, metrics: ServingMetrics):
        self.sources, self.client_wants_usage, self.metrics = sources, client_wants_usage, metrics
        self.sources_sent = False

    def rewrite(self, items: list[Any] | str) -> str:
        """One batch of the engine's stream (SSE strings, or ErrorResponse values) as the text to send. Ray's
        batcher yields lists; a bare string (an engine stream without it) is one batch of its own, never walked
        character by character."""
        out = []
        for item in [items] if isinstance(items, str) else items:
            if is_engine_error(item):
                error = from_engine_error(item)
                self.metrics.error(error.type)
                out.append(error.sse())
                continue
            for payload in sse_data(item):
                out.append(self._event(payload))
        return "".join(out)

    def _event(self, payload: str) -> str:
        if payload == DONE:
            return sse(payload)
        event = json.loads(payload)
        if not isinstance(event, dict):
            return sse(payload)
        if "choices" in event and not event["choices"] and event.get("usage"):  # the final usage event
            usage = event["usage"]
            self.metrics.usage(usage["prompt_tokens"], usage.get("completion_tokens") or 0)
            return sse(payload) if self.client_wants_usage else ""
        if not self.sources_sent and event.get("choices"):
            self.sources_sent = True
            return sse(json.dumps({**event, "sources": self.sources}))
        return sse(payload)

    async def stream(self, first: list[Any] | str, rest: AsyncIterator[list[Any] | str]) -> AsyncIterator[str]:
        """One write per engine batch (``llm.stream_batching_interval_ms``), not per token: each write is a message
        from this replica to the proxy, and on a small host that relaying competes with the engine."""
        yield self.rewrite(first)
        try:
            async for items in rest:
                if text := self.rewrite(items):
                    yield text
        except Exception as e:  # the status line is already sent: end the stream with an error event
            error = from_stream_failure(e)
            self.metrics.error(error.type)
            yield error.sse()
