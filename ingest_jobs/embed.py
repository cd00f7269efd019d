"""embed: the Ray Data actor that turns chunk text into vectors with the shared embedder, loaded once per actor."""

from __future__ import annotations

import numpy as np

from ingest_jobs.rows import CHUNK
from rag.config import EmbedderConfig
from rag.embedder import SentenceTransformersEmbedder


class ChunkEmbedder:
    """Callable class for ``map_batches``: adds a ``vector`` column; rows that are not chunks get zeros."""

    def __init__(self, cfg: EmbedderConfig):
        self.embedder = SentenceTransformersEmbedder(cfg)
        self.dim = cfg.dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        is_chunk = batch["status"] == CHUNK
        vectors = np.zeros((len(is_chunk), self.dim), dtype=np.float32)
        if is_chunk.any():
            vectors[is_chunk] = self.embedder.embed_documents(batch["embed_text"][is_chunk].tolist())
        batch["vector"] = vectors
        return batch
