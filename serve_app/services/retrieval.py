"""Retrieval: a question's passages from the QueryEmbedder and the Retriever, for /v1/retrieve and for chat."""

from __future__ import annotations

import time
from typing import Any

from rag.config import RagConfig
from serve_app.metrics import ServingMetrics
from serve_app.protocol import RetrievalFields, RetrieveRequest, Source
from serve_app.services.checks import check_retrieval, check_text
from serve_app.services.parts import EmbedFn, RetrieveFn


class RetrievalService:
    def __init__(
        self,
        cfg: RagConfig,
        *,
        embed: EmbedFn,
        retrieve: RetrieveFn,
        metrics: ServingMetrics,
    ):
        self.cfg, self.embed, self.retrieve_fn, self.metrics = cfg, embed, retrieve, metrics

    async def sources_for(self, query: str, options: RetrievalFields) -> list[Source]:
        """One Retriever call per question: for hybrid it runs both searches and fuses them, so concurrent
        questions share its Milvus calls and only the top_k passages travel back."""
        mode = options.search or self.cfg.serve.search
        top_k = options.top_k or self.cfg.serve.top_k
        started = time.perf_counter()
        vector = None if mode == "bm25" else (await self.embed([query]))[0]  # BM25 needs no query vector
        sources = await self.retrieve_fn(query, vector, mode, top_k, options.filter)
        self.metrics.retrieval(mode, time.perf_counter() - started)
        return sources

    async def retrieve(self, request: RetrieveRequest) -> dict[str, Any]:
        check_text(self.cfg.serve.limits, request.query, "query")
        check_retrieval(self.cfg.serve.limits, request)
        sources = await self.sources_for(request.query, request)
        return {
            "object": "list",
            "search": request.search or self.cfg.serve.search,
            "data": [s.model_dump() for s in sources],
        }
