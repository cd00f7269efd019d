"""embed: the Ray Data actor that turns chunk text into vectors with the shared embedder, loaded once per actor."""

from __future__ import annotations

import os

import numpy as np

from ingest_jobs.rows import CHUNK
from rag.config import EmbedderConfig
from rag.embedder import SentenceTransformersEmbedder
from rag.schema import VECTOR_FIELD


class ChunkEmbedder:
    """Callable class for ``map_batches``: adds a ``vector`` column; rows that are not chunks get zeros."""

    def __init__(self, cfg: EmbedderConfig):
        threads = None
        if cfg.num_gpus == 0:
            # Ray caps a fractional-CPU actor at one thread; one actor using every core pads less and has no
            # straggler at the end, which measured faster than several single-thread actors on 2 cores.
            threads = cfg.num_threads or max(1, (os.cpu_count() or 1) // cfg.concurrency)
        self.embedder = SentenceTransformersEmbedder(cfg, num_threads=threads)
        self.dim = cfg.dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        is_chunk = batch["status"] == CHUNK
        vectors = np.zeros((len(is_chunk), self.dim), dtype=np.float32)
        if is_chunk.any():
            vectors[is_chunk] = self.embedder.embed_documents(batch["embed_text"][is_chunk].tolist())
        batch[VECTOR_FIELD] = vectors
        return batch
