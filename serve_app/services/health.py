"""Readiness: each part of the app answers a real call, or /readyz says which does not."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from rag.config import RagConfig
from serve_app.errors import remote_cause, unavailable
from serve_app.protocol import ChatCompletionRequest, is_engine_error
from serve_app.services.parts import EmbedFn, GenerateFn, RetrieveFn

READY_QUESTION = "ready?"


class HealthService:
    def __init__(
        self,
        cfg: RagConfig,
        *,
        embed: EmbedFn,
        retrieve: RetrieveFn,
        generate: GenerateFn,
    ):
        self.cfg, self.embed, self.retrieve, self.generate = cfg, embed, retrieve, generate

    async def _probe(self, call: Callable[[], Awaitable[Any]]) -> tuple[str, Any]:
        """ "ok" and the answer, or why the part did not answer within ``serve.ready_timeout_s``."""
        try:
            result = await asyncio.wait_for(call(), self.cfg.serve.ready_timeout_s)
        except Exception as e:  # any failure means not ready, and the message says which
            cause = remote_cause(e)
            return (f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__)[:200], None
        if is_engine_error(result):
            return f"engine error: {result.error.message}"[:200], None
        return "ok", result

    async def _embed_then_search(self) -> tuple[str, str]:
        embedded, vectors = await self._probe(lambda: self.embed([READY_QUESTION]))
        if embedded != "ok":
            return embedded, "not tried (no query vector)"
        searched, _ = await self._probe(lambda: self.retrieve(READY_QUESTION, vectors[0], "dense", 1, None))
        return embedded, searched

    def _generate_one_token(self) -> Awaitable[Any]:
        request = ChatCompletionRequest(
            model=self.cfg.llm.model_id,
            max_tokens=1,
            stream=False,
            messages=[{"role": "user", "content": READY_QUESTION}],
        )
        return anext(self.generate(request))

    async def ready(self) -> dict[str, Any]:
        """Each part answers a real call within ``serve.ready_timeout_s``: the embedder a query, Milvus a search of
        the collection with that query's vector, the engine one generated token; else a 503 naming the parts that
        did not."""
        (embedder, milvus), (engine, _) = await asyncio.gather(
            self._embed_then_search(), self._probe(self._generate_one_token)
        )
        parts = {"embedder": embedder, "milvus": milvus, "engine": engine}
        if any(r != "ok" for r in parts.values()):
            raise unavailable("not ready: " + "; ".join(f"{n}: {r}" for n, r in parts.items() if r != "ok"))
        return {"status": "ready", "parts": parts}
