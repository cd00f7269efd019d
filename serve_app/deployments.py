"""The Serve shells: deployment options and handles only; the logic lives in the plain classes they wrap."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.llm import LLMServer

from rag.config import EmbedderConfig, MilvusConfig, RagConfig, RetrievalConfig
from rag.embedder import SentenceTransformersEmbedder
from serve_app.ingress import RagService, build_fastapi
from serve_app.llm import settle_cpu_engine, throttled
from serve_app.metrics import EmbedderMetrics
from serve_app.prompt import PromptBuilder
from serve_app.protocol import RetrievalFilter, SearchMode, Source
from serve_app.retriever import MilvusRetriever, Search, answer_or_raise


class _Batching:
    """Sizes a ``@serve.batch`` method from the config and keeps the recent batch sizes (tests read them)."""

    def _batch(self, method, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        method.set_max_batch_size(max_batch_size)
        method.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.recent_batch_sizes: deque[int] = deque(maxlen=1000)

    def batch_sizes(self) -> list[int]:
        return list(self.recent_batch_sizes)


class QueryEmbedder(_Batching):
    """Embeds queries with Serve's dynamic batching: concurrent requests share one forward pass."""

    def __init__(self, cfg: dict[str, Any], max_batch_size: int, batch_wait_timeout_s: float, num_threads: int = 1,
                 device: str = "cpu"):  # fmt: skip
        import torch

        from rag.embedder import load_sentence_transformer

        torch.set_num_threads(num_threads)
        config = EmbedderConfig.model_validate(cfg)
        self.embedder = SentenceTransformersEmbedder(config, model=load_sentence_transformer(config, device))
        self._batch(self.embed_one, max_batch_size, batch_wait_timeout_s)
        self.metrics = EmbedderMetrics()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def embed_one(self, texts: list[str]) -> list[list[float]]:
        self.recent_batch_sizes.append(len(texts))
        self.metrics.batch_size.observe(len(texts))
        vectors = await asyncio.to_thread(self.embedder.embed_queries, texts)
        return vectors.tolist()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return list(await asyncio.gather(*(self.embed_one(t) for t in texts)))


class Retriever(_Batching):
    """Searches with Serve's dynamic batching: concurrent questions share one Milvus call per search kind."""

    def __init__(self, cfg: dict[str, Any], dim: int, retrieval: dict[str, Any], max_batch_size: int,
                 batch_wait_timeout_s: float):  # fmt: skip
        self.retriever = MilvusRetriever(MilvusConfig.model_validate(cfg), dim, RetrievalConfig.model_validate(retrieval))
        self._batch(self.search, max_batch_size, batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def search(self, searches: list[Search]) -> list[list[Source] | Exception]:
        self.recent_batch_sizes.append(len(searches))
        return await asyncio.to_thread(self.retriever.retrieve_many, searches)

    async def retrieve(self, query: str, vector: list[float] | None, mode: SearchMode, top_k: int,
                       flt: RetrievalFilter | None) -> list[Source]:  # fmt: skip
        return answer_or_raise(await self.search(Search(query, vector, mode, top_k, flt)))


@serve.ingress()
class RagIngress:
    """FastAPI ingress; ``__serve_build_asgi_app__`` hands Serve the app built over ``RagService``."""

    def __init__(self, cfg: dict[str, Any], model_source: str, embedder: DeploymentHandle,
                 retriever: DeploymentHandle, llm: DeploymentHandle):  # fmt: skip
        from transformers import AutoTokenizer

        config = RagConfig.model_validate(cfg)
        llm_stream = llm.options(stream=True)  # LLMServer.chat is a generator: without stream=True it raises
        self.service = RagService(
            config,
            embed=lambda texts: embedder.embed.remote(texts),
            retrieve=lambda q, v, mode, k, flt: retriever.retrieve.remote(q, v, mode, k, flt),
            generate=lambda request: llm_stream.chat.remote(request),
            prompt=PromptBuilder(AutoTokenizer.from_pretrained(model_source), max_model_len=config.llm.max_model_len),
        )

    async def __serve_build_asgi_app__(self):
        return build_fastapi(self.service)


class RagLLMServer(LLMServer):
    """LLMServer with two changes for this app. On CPU its engine is settled after it starts (``settle_cpu_engine``):
    vLLM's CPU engine keeps a scheduler process spinning on a core of its own, which on a small host starves the
    proxy, ingress, embedder and Milvus. And its token stream is ``throttled``: Ray's batcher holds even the first
    token until its next tick."""

    async def __init__(self, llm_config, *, cpu_engine: dict[str, Any] | None = None, **kwargs):
        await super().__init__(llm_config, **kwargs)
        if cpu_engine is not None:
            settle_cpu_engine(**cpu_engine)

    def _batch_output_stream(self, generator):
        return throttled(generator, self._get_batch_interval_ms() / 1000)
