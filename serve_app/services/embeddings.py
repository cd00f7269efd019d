"""Embeddings: /v1/embeddings over the QueryEmbedder, with the request limits."""

from __future__ import annotations

import asyncio
from typing import Any

from rag.config import RagConfig
from serve_app.errors import bad_request, over_limit
from serve_app.protocol import EmbeddingsRequest
from serve_app.services.checks import check_model, check_text
from serve_app.services.parts import CountTokensFn, EmbedFn


class EmbeddingsService:
    def __init__(
        self,
        cfg: RagConfig,
        *,
        embed: EmbedFn,
        count_tokens: CountTokensFn,
    ):
        self.cfg, self.embed, self.count_tokens = cfg, embed, count_tokens

    async def embeddings(self, request: EmbeddingsRequest) -> dict[str, Any]:
        limits = self.cfg.serve.limits
        check_model(request.model, self.cfg.embedder.model)
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts or not all(texts):
            raise bad_request("input must be a non-empty string or list of non-empty strings", param="input")
        if len(texts) > limits.max_embedding_inputs:
            raise over_limit("max_embedding_inputs", len(texts), limits.max_embedding_inputs, "input")
        for i, text in enumerate(texts):
            check_text(limits, text, f"input.{i}")
        vectors, tokens = await asyncio.gather(self.embed(texts), self.count_tokens(texts))
        return {
            "object": "list",
            "model": self.cfg.embedder.model,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
