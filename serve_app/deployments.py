"""The Serve shells of the embedder and the retriever: deployment options and batching only; the logic lives in
the plain classes they wrap. Each takes the one config and says, in ``get_deployment_options``, what Serve should
give it, as Ray's LLMServer does. The ingress shell has a module of its own (``serve_app/ingress.py``): it needs
vLLM's OpenAI models, and a replica imports its shell's whole module, so these replicas never load vLLM."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from ray import serve

from rag.config import RagConfig
from rag.embedder import SentenceTransformersEmbedder
from rag.search import MilvusRetriever, RetrievalFilter, Search, SearchMode, Source, answer_or_raise
from serve_app.deployment_options import deployment_options
from serve_app.metrics import EmbedderMetrics


class _Batching:
    """Sizes a ``@serve.batch`` method from the config and keeps the recent batch sizes (tests read them)."""

    def _batch(self, method: Any, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        method.set_max_batch_size(max_batch_size)
        method.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.recent_batch_sizes: deque[int] = deque(maxlen=1000)

    def batch_sizes(self) -> list[int]:
        return list(self.recent_batch_sizes)


class QueryEmbedder(_Batching):
    """Embeds queries with Serve's dynamic batching: concurrent requests share one forward pass."""

    @staticmethod
    def get_deployment_options(cfg: RagConfig) -> dict[str, Any]:
        return {"name": "QueryEmbedder", **deployment_options(cfg.serve.embedder, cfg.serve.retry_after_s)}

    def __init__(self, cfg: RagConfig):
        device = "cuda" if cfg.serve.embedder.num_gpus > 0 else "cpu"
        self.embedder = SentenceTransformersEmbedder(
            cfg.embedder, device=device, num_threads=cfg.serve.embed_num_threads
        )
        self._batch(self._embed_batch, cfg.serve.embed_max_batch_size, cfg.serve.embed_batch_wait_timeout_s)
        self.metrics = EmbedderMetrics()

    @serve.batch  # sized from the config in __init__
    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        """Called with one text; Serve gathers the concurrent calls into ``texts``."""
        self.recent_batch_sizes.append(len(texts))
        self.metrics.batch_size.observe(len(texts))
        vectors = await asyncio.to_thread(self.embedder.embed_queries, texts)
        return vectors.tolist()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return list(await asyncio.gather(*(self._embed_batch(t) for t in texts)))

    async def count_tokens(self, texts: list[str]) -> int:
        return await asyncio.to_thread(self.embedder.count_tokens, texts)


class Retriever(_Batching):
    """Searches with Serve's dynamic batching: concurrent questions share one Milvus call per search kind."""

    @staticmethod
    def get_deployment_options(cfg: RagConfig) -> dict[str, Any]:
        return {"name": "Retriever", **deployment_options(cfg.serve.retriever, cfg.serve.retry_after_s)}

    def __init__(self, cfg: RagConfig):
        self.retriever = MilvusRetriever(cfg.milvus, cfg.embedder.dim, cfg.retrieval, embedder=cfg.embedder.identity())
        self._batch(self.search, cfg.serve.retrieve_max_batch_size, cfg.serve.retrieve_batch_wait_timeout_s)

    @serve.batch  # sized from the config in __init__
    async def search(self, searches: list[Search]) -> list[list[Source] | Exception]:
        self.recent_batch_sizes.append(len(searches))
        return await asyncio.to_thread(self.retriever.retrieve_many, searches)

    async def retrieve(
        self, query: str, vector: list[float] | None, mode: SearchMode, top_k: int, flt: RetrievalFilter | None
    ) -> list[Source]:
        return answer_or_raise(await self.search(Search(query, vector, mode, top_k, flt)))
