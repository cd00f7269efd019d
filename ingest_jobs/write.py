"""write: the Ray Data actor that upserts embedded chunks into Milvus in batches."""

from __future__ import annotations

import time

import numpy as np

from ingest_jobs.rows import CHUNK, RESULT_COLUMNS
from rag.config import MilvusConfig
from rag.schema import STORED_FIELDS, VECTOR_FIELD
from rag.store import MilvusChunkStore


class MilvusWriter:
    """Callable class for ``map_batches``: upserts the chunk rows and passes on only what the driver tallies."""

    def __init__(self, cfg: MilvusConfig, dim: int):
        self.store = MilvusChunkStore(cfg, dim)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        is_chunk = batch["status"] == CHUNK
        columns = {name: batch[name][is_chunk].tolist() for name in (*STORED_FIELDS, VECTOR_FIELD)}
        now = int(time.time())
        self.store.upsert([{**dict(zip(columns, values)), "ingest_time": now} for values in zip(*columns.values())])
        return {name: batch[name] for name in RESULT_COLUMNS}
