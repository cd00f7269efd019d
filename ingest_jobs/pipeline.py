"""The lazy Ray Data pipeline: read → parse → chunk → embed → write. Nothing runs until the driver consumes it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import ray.data
from ray.data import ActorPoolStrategy, TaskPoolStrategy

from ingest_jobs.bulk_import import ParquetStager
from ingest_jobs.chunk import chunk_document, doc_id_of, sha256_hex
from ingest_jobs.embed import ChunkEmbedder
from ingest_jobs.parse import ParseSkip, parse_document
from ingest_jobs.read import Corpus, CorpusFile, FileChanged, ManifestEntry
from ingest_jobs.rows import CHUNK, ROW_COLUMNS, SKIPPED, UNCHANGED, status_row
from ingest_jobs.write import MilvusWriter
from rag.config import RagConfig
from rag.store import DocState

PARSE_BATCH_SIZE = 8
DOCUMENT_EXTENSIONS = (".pdf", ".docx", ".pptx")


# Parse settings that bound the work or place it, and never change a document's chunks: changing one re-ingests
# nothing.
PARSE_BOUNDS = {
    "max_html_depth",
    "max_pages",
    "max_unzipped_bytes",
    "max_memory_bytes",
    "max_text_chars",
    "timeout_s",
    "document_concurrency",
    "document_num_cpus",
}


def fingerprint_salt(cfg: RagConfig) -> str:
    """What besides the bytes decides a document's chunks and vectors; a change re-ingests everything."""
    parse = cfg.parse.model_dump_json(exclude=PARSE_BOUNDS)
    return "|".join([parse, cfg.chunking.model_dump_json(), cfg.embedder.identity(), cfg.embedder.document_prefix])


def is_unchanged(state: DocState | None, doc_hash: str) -> bool:
    """All stored chunks carry this fingerprint and none is missing (a crashed run leaves a mix, or too few)."""
    return state is not None and state.hashes == {doc_hash} and state.rows == state.chunk_count


def _rows_for_file(
    file: CorpusFile,
    corpus: Corpus,
    cfg: RagConfig,
    manifest: dict[str, ManifestEntry],
    states: dict[str, DocState],
    salt: str,
) -> list[dict[str, Any]]:
    doc_id = doc_id_of(file.source)
    try:
        data = corpus.read(file)
    except FileChanged as e:
        return [status_row(SKIPPED, source=file.source, doc_id=doc_id, reason=str(e))]
    except OSError as e:
        return [status_row(SKIPPED, source=file.source, doc_id=doc_id, reason=f"unreadable: {e}")]
    doc_hash = sha256_hex(salt, data)
    if is_unchanged(states.get(doc_id), doc_hash):
        return [status_row(UNCHANGED, source=file.source, doc_id=doc_id)]
    entry = manifest.get(file.source, ManifestEntry(None, None))
    try:
        doc = parse_document(data, file.source, cfg.parse, url=entry.url, title=entry.title)
        chunks = chunk_document(doc, source=file.source, doc_hash=doc_hash, cfg=cfg.chunking)
        return [{**chunk, "status": CHUNK, "reason": ""} for chunk in chunks]
    except ParseSkip as e:
        reason = str(e)
    except Exception as e:  # one malformed file must never stop the job
        reason = f"parse error: {type(e).__name__}: {e}"
    return [status_row(SKIPPED, source=file.source, doc_id=doc_id, reason=reason)]


def read_parse_chunk(batch: dict[str, np.ndarray], **kwargs: Any) -> dict[str, list]:
    """Ray Data task: a batch of file rows in, chunk rows (and status rows) out."""
    rows = [
        row
        for source, location, size in zip(batch["source"], batch["location"], batch["size"])
        for row in _rows_for_file(CorpusFile(str(source), str(location), int(size)), **kwargs)
    ]
    return {name: [row[name] for row in rows] for name in ROW_COLUMNS}


def build_pipeline(
    cfg: RagConfig,
    corpus: Corpus,
    files: list[CorpusFile],
    *,
    manifest: dict[str, ManifestEntry],
    states: dict[str, DocState],
    run_id: str = "",
) -> ray.data.Dataset:
    kwargs = dict(corpus=corpus, cfg=cfg, manifest=manifest, states=states, salt=fingerprint_salt(cfg))
    pages: list[CorpusFile] = []
    documents: list[CorpusFile] = []
    for file in files:
        (documents if PurePosixPath(file.source).suffix.lower() in DOCUMENT_EXTENSIONS else pages).append(file)

    def parse_stage(group: list[CorpusFile], **options: Any) -> ray.data.Dataset:
        blocks = max(1, min(len(group), cfg.corpus.max_parse_tasks))
        items = ray.data.from_items([asdict(f) for f in group], override_num_blocks=blocks)
        return items.map_batches(read_parse_chunk, fn_kwargs=kwargs, **options)

    stages = []
    if pages:  # HTML, Markdown, text: light, in batches
        stages.append(parse_stage(pages, batch_size=PARSE_BATCH_SIZE, num_cpus=cfg.corpus.parse_num_cpus))
    if documents:  # PDF, DOCX, PPTX: heavy and uneven, one file per task, in a stage of their own
        strategy = TaskPoolStrategy(size=cfg.parse.document_concurrency)
        stages.append(parse_stage(documents, batch_size=1, num_cpus=cfg.parse.document_num_cpus, compute=strategy))
    ds: ray.data.Dataset = stages[0].union(*stages[1:]) if len(stages) > 1 else stages[0]
    ds = ds.map_batches(
        ChunkEmbedder,
        fn_constructor_kwargs={"cfg": cfg.embedder},
        batch_size=cfg.embedder.rows_per_call,
        compute=ActorPoolStrategy(size=cfg.embedder.concurrency),
        num_cpus=cfg.embedder.num_cpus,
        num_gpus=cfg.embedder.num_gpus,
    )
    if cfg.milvus.sink == "bulk_import":
        return ds.map_batches(
            ParquetStager,
            fn_constructor_kwargs={"cfg": cfg.milvus, "run_id": run_id},
            batch_size=cfg.milvus.write_batch_size,
            compute=ActorPoolStrategy(size=1),
            num_cpus=cfg.milvus.writer_num_cpus,
        )
    return ds.map_batches(
        MilvusWriter,
        fn_constructor_kwargs={"cfg": cfg.milvus, "dim": cfg.embedder.dim},
        batch_size=cfg.milvus.write_batch_size,
        compute=ActorPoolStrategy(size=1),
        num_cpus=cfg.milvus.writer_num_cpus,
    )
