"""The ingest job: ``python -m ingest_jobs.ingest --corpus PATH_OR_URI [--config F] [--prune]``.

The same entry point runs from the ``rag ingest`` CLI and under ``ray job submit``. It lists the
corpus, runs the Ray Data pipeline, then deletes chunks the run made stale and, with ``--prune``,
documents gone from the corpus.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections import defaultdict

import ray

from ingest_jobs.bulk_import import FILE_COLUMN, ImportFailed, run_import
from ingest_jobs.chunk import doc_id_of
from ingest_jobs.metrics import IngestMetrics
from ingest_jobs.pipeline import build_pipeline
from ingest_jobs.read import Corpus, Skipped
from ingest_jobs.rows import CHUNK, SKIPPED, UNCHANGED
from ingest_jobs.summary import IngestSummary
from rag.config import ConfigError, RagConfig, parse_overrides
from rag.corpus import CorpusNotFound
from rag.prepare import Prepared, prepare
from rag.store import CollectionOutdated, EmbedderMismatch, MilvusChunkStore, MilvusUnavailable

EXIT_USAGE = 2


def run_ingest(
    prepared: Prepared, *, prune: bool = False, force: bool = False, store: MilvusChunkStore | None = None
) -> IngestSummary:
    """Runs one ingest of a prepared config (``prepare(cfg, corpus=True)``) on a Ray cluster that is already
    initialised; raises CorpusNotFound, MilvusUnavailable, CollectionOutdated, or EmbedderMismatch (the collection
    was embedded otherwise, and ``force`` is not set)."""
    started = time.perf_counter()
    metrics = IngestMetrics()
    cfg = prepared.cfg
    corpus = Corpus(cfg.corpus, prepared.corpus)
    store = store or MilvusChunkStore(cfg.milvus, cfg.embedder.dim)
    store.ensure_collection()
    if not force:  # --force re-embeds every document under this config's embedder
        store.check_embedder(cfg.embedder.identity())
    store.record_embedder(cfg.embedder.identity())

    files, skipped = corpus.list()
    summary = IngestSummary(documents=len(files) + len(skipped), skipped=list(skipped))
    states = {} if force else store.document_states()

    written_ids: dict[str, list[str]] = defaultdict(list)
    staged: set[str] = set()
    if files:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
        ds = build_pipeline(cfg, corpus, files, manifest=corpus.manifest(), states=states, run_id=run_id)
        for batch in ds.iter_batches(batch_size=4096, batch_format="numpy"):
            staged.update(str(key) for key in batch.get(FILE_COLUMN, ()) if key)
            metrics.chunks_written(int((batch["status"] == CHUNK).sum()))
            for chunk_id, doc_id, source, status, reason in zip(
                batch["id"], batch["doc_id"], batch["source"], batch["status"], batch["reason"]
            ):
                if status == CHUNK:
                    written_ids[str(doc_id)].append(str(chunk_id))
                elif status == SKIPPED:
                    summary.skipped.append(Skipped(str(source), str(reason)))
                elif status == UNCHANGED:
                    summary.unchanged += 1
    summary.documents_written = len(written_ids)
    summary.chunks_written = sum(len(ids) for ids in written_ids.values())

    if cfg.milvus.sink == "bulk_import":
        # An import inserts: a re-ingested document's old chunks go first, identical ids included.
        summary.chunks_deleted_stale = store.delete_documents({d for d in written_ids if d in states})
        if staged:
            summary.import_job = run_import(cfg.milvus, sorted(staged))
    else:
        for doc_id, ids in written_ids.items():
            if doc_id in states:
                summary.chunks_deleted_stale += store.delete_stale_chunks(doc_id, ids)
    if prune:
        # Skipped files are still in the corpus: their earlier chunks stay rather than vanish on a bad read.
        present = {doc_id_of(f.source) for f in files} | {doc_id_of(s.source) for s in summary.skipped}
        gone = set(states) - present
        summary.chunks_pruned = store.delete_documents(gone)
        summary.documents_pruned = len(gone)
    store.flush()
    summary.collection_rows = store.count()
    summary.seconds = time.perf_counter() - started
    metrics.run_finished(summary)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: built-in embedded default)")
    parser.add_argument("--prune", action="store_true", help="delete documents no longer in the corpus")
    parser.add_argument("--force", action="store_true", help="re-embed documents even when unchanged")
    parser.add_argument("--collection", help="Milvus collection (milvus.collection)")
    parser.add_argument("--milvus-uri", help="Milvus URI (milvus.uri)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="any config field")


def config_from_args(args: argparse.Namespace, corpus: str | None) -> RagConfig:
    overrides = parse_overrides(args.set)
    for value, section, name in (
        (corpus, "corpus", "path"),
        (args.collection, "milvus", "collection"),
        (args.milvus_uri, "milvus", "uri"),
    ):
        if value:
            overrides.setdefault(section, {})[name] = value
    return RagConfig.load(args.config, overrides)


def main(argv: list[str] | None = None, prog: str = "python -m ingest_jobs.ingest") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", help="corpus folder or s3://, gs:// URI (corpus.path)")
    parser.add_argument("--corpus", dest="corpus_option", metavar="CORPUS", help="the same, as an option")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        # A bad path or an unreachable Milvus fails here, before Ray starts.
        prepared = prepare(config_from_args(args, args.corpus_option or args.corpus), corpus=True)
        if not ray.is_initialized():
            ray.init()
        summary = run_ingest(prepared, prune=args.prune, force=args.force)
    except (ConfigError, CorpusNotFound, MilvusUnavailable, EmbedderMismatch, CollectionOutdated) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ImportFailed as e:  # the staged files stay; a re-run stages and imports the documents again
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
