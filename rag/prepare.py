"""``prepare(cfg)``: what every entry path needs before it starts work, done once and in one way. The CLI, the
ingest job, the demo, the Serve app's builder and the evaluation all call it, each saying which parts it needs."""

from __future__ import annotations

from dataclasses import dataclass

from rag.config import RagConfig
from rag.corpus import CorpusLocation
from rag.embedder import prepare_embedder
from rag.milvus_server import ensure_milvus


@dataclass(frozen=True)
class Prepared:
    """The config with its embedder ready (models folder absolute, an OpenVINO export built), the corpus it names
    (when asked for), and whether this call started the local milvus-lite server (its caller then stops it)."""

    cfg: RagConfig
    corpus: CorpusLocation | None = None
    started_milvus: bool = False


def prepare(cfg: RagConfig, *, corpus: bool = False, milvus: bool = True) -> Prepared:
    """Checks the corpus first (``corpus``: CorpusNotFound, before anything starts), then makes Milvus answer
    (``milvus``: the local milvus-lite server started when the config manages one, else MilvusUnavailable), then
    readies the embedder. The Serve app's builder passes ``milvus=False``: it runs in a Ray worker, where a server
    it started would not outlive the build, and its searches answer 503 until Milvus is there."""
    location = CorpusLocation.of(cfg.corpus) if corpus else None
    started = ensure_milvus(cfg.milvus) if milvus else False
    cfg = cfg.model_copy(update={"embedder": prepare_embedder(cfg.embedder)})
    return Prepared(cfg, location, started)
