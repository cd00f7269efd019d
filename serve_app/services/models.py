"""The models this endpoint serves, for /v1/models: the chat model and the embedding model."""

from __future__ import annotations

from typing import Any

from rag.config import RagConfig


def served_models(cfg: RagConfig) -> dict[str, Any]:
    chat = {"id": cfg.llm.model_id, "max_model_len": cfg.llm.max_model_len}
    embedder = {"id": cfg.embedder.model}
    return {
        "object": "list",
        "data": [{**model, "object": "model", "created": 0, "owned_by": "rag"} for model in (chat, embedder)],
    }
