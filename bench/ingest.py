"""Ingest throughput on the whole Milvus docs corpus, against its limit and against a seed-style script.

    python bench/ingest.py [--corpus ../shared/corpus/milvus-docs] [--config configs/local.yaml]
                           [--backends torch/fp32 openvino/fp32] [--backends-only N]

Prints, in one run:
  pipeline   the Ray Data job (read → parse → chunk → embed → write) into a fresh collection, with the config's
             embedder backend and precision
  encode     plain SentenceTransformer.encode (torch fp32) on the same chunk texts
  backends   the embedder alone on the same texts, for each backend and precision: its ceiling
  query      one question's embedding in process, per backend (median of 50)
  seed       the origin post's single process, fp32 torch as it wrote it: load, split, encode, insert
and the ratios pipeline/seed (target ≥ 2.0) and pipeline/encode of the same backend (target ≥ 0.9).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest_jobs.chunk import chunk_document  # noqa: E402
from ingest_jobs.ingest import run_ingest  # noqa: E402
from ingest_jobs.parse import ParseSkip, parse_document  # noqa: E402
from ingest_jobs.read import Corpus  # noqa: E402
from rag.config import EmbedderConfig, RagConfig  # noqa: E402
from rag.embedder import SentenceTransformersEmbedder, load_sentence_transformer, prepare_embedder  # noqa: E402
from rag.milvus_server import start_local, stop_local  # noqa: E402
from rag.prepare import prepare  # noqa: E402

BACKENDS = ["torch/fp32", "torch/bf16", "openvino/fp32", "openvino/bf16"]  # torch/fp32 first: the reference


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chunk_texts(cfg: RagConfig) -> list[str]:
    corpus = Corpus(cfg.corpus)
    files, _ = corpus.list()
    manifest = corpus.manifest()
    texts = []
    for f in files:
        entry = manifest.get(f.source)
        try:
            doc = parse_document(
                corpus.read(f), f.source, cfg.parse, url=entry and entry.url, title=entry and entry.title
            )
        except ParseSkip:
            continue
        texts += [r["embed_text"] for r in chunk_document(doc, source=f.source, doc_hash="", cfg=cfg.chunking)]
    return texts


def bench_encode(cfg: RagConfig, texts: list[str], batch_size: int | None) -> float:
    """One ``encode`` call over every chunk, model loaded and warm: no I/O, no Ray, the texts sorted by length
    across the whole corpus. ``batch_size=None`` is the library's default (32)."""
    model = load_sentence_transformer(cfg.embedder)
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    model.encode(texts[:64], **kwargs)  # warm-up
    started = time.perf_counter()
    model.encode(texts, normalize_embeddings=True, show_progress_bar=False, **kwargs)
    return time.perf_counter() - started


def bench_backend(cfg: EmbedderConfig, texts: list[str]) -> tuple[float, float, np.ndarray]:
    """The project's embedder with one backend and precision, as the ingest actor runs it (every core, the
    config's batch size): seconds for every chunk, and the median milliseconds of one question."""
    threads = os.cpu_count() or 1
    embedder = SentenceTransformersEmbedder(prepare_embedder(cfg), num_threads=threads)
    embedder.embed_documents(texts[:64])  # warm-up
    started = time.perf_counter()
    vectors = embedder.embed_documents(texts)
    seconds = time.perf_counter() - started
    query = []
    for _ in range(50):
        started = time.perf_counter()
        embedder.embed_queries(["How do I configure the chunk cache?"])
        query.append(time.perf_counter() - started)
    return seconds, 1000 * sorted(query)[len(query) // 2], vectors


def compare_backends(cfg: RagConfig, texts: list[str], backends: list[str]) -> dict[tuple[str, str], float]:
    """Chunks/s of each backend and precision on the same texts, with its cosine to torch fp32's vectors."""
    rates, reference = {}, None
    for backend, precision in (b.split("/") for b in backends):
        embedder = cfg.embedder.model_copy(update={"backend": backend, "precision": precision})
        seconds, query_ms, vectors = bench_backend(embedder, texts)
        reference = vectors if reference is None else reference
        cosine = (vectors * reference).sum(axis=1)
        rates[backend, precision] = len(texts) / seconds
        print(
            f"{backend:>8} {precision}: {len(texts)} chunks, {seconds:.1f} s, {len(texts) / seconds:.1f} chunks/s "
            f"(batch {cfg.embedder.batch_size}); one query {query_ms:.1f} ms; cosine to torch fp32 mean "
            f"{cosine.mean():.5f} min {cosine.min():.5f}",
            flush=True,
        )
    return rates


def bench_seed(cfg: RagConfig) -> tuple[int, float]:
    """The origin post's shape: one process loads every page, splits, encodes and inserts."""
    from bs4 import BeautifulSoup
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from pymilvus import MilvusClient

    started = time.perf_counter()
    pages = [p.read_text(errors="replace") for p in sorted(Path(cfg.corpus.path).rglob("*.html"))]
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=cfg.chunking.chunk_size, chunk_overlap=cfg.chunking.chunk_overlap
    )
    texts = [t for page in pages for t in splitter.split_text(BeautifulSoup(page, "html.parser").get_text())]
    model = load_sentence_transformer(cfg.embedder)
    vectors = model.encode(texts, normalize_embeddings=True)
    client = MilvusClient(uri=cfg.milvus.uri)
    client.create_collection("seed_bench", dimension=cfg.embedder.dim, auto_id=True)
    rows = [{"vector": v.tolist(), "text": t[:60000]} for v, t in zip(vectors, texts)]
    for start in range(0, len(rows), 512):
        client.insert("seed_bench", rows[start : start + 512])
    return len(texts), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus" / "milvus-docs"))
    parser.add_argument("--config", default=str(REPO / "configs" / "local.yaml"))
    parser.add_argument(
        "--backends-only", type=int, metavar="N", help="only the backends, on every (chunks/N)-th chunk: N of them"
    )
    parser.add_argument(
        "--backends", nargs="+", default=BACKENDS, metavar="BACKEND/PRECISION", help="torch/fp32 first: the reference"
    )
    args = parser.parse_args()
    if args.backends[0] != "torch/fp32":
        parser.error("--backends starts with torch/fp32, the vectors the others are compared with")
    if args.backends_only:
        cfg = RagConfig.load(args.config, {"corpus": {"path": args.corpus}})
        texts = chunk_texts(cfg)
        compare_backends(cfg, texts[:: max(1, len(texts) // args.backends_only)][: args.backends_only], args.backends)
        return

    data_dir = tempfile.mkdtemp(prefix="bench-milvus-")
    cfg = RagConfig.load(
        args.config,
        {
            "corpus": {"path": args.corpus},
            "milvus": {"uri": f"http://127.0.0.1:{free_port()}", "local_data_dir": data_dir, "collection": "bench"},
        },
    )
    start_local(cfg.milvus)
    try:
        ray.init(num_cpus=os.cpu_count(), log_to_driver=False)
        summary = run_ingest(prepare(cfg, corpus=True), force=True)
        ray.shutdown()
        pipeline_rate = summary.chunks_per_s
        print(
            f"pipeline: {summary.documents} pages, {summary.chunks_written} chunks, "
            f"{summary.seconds:.1f} s, {pipeline_rate:.1f} chunks/s, {len(summary.skipped)} skipped",
            flush=True,
        )

        texts = chunk_texts(cfg)
        encode_s = bench_encode(cfg, texts, None)
        encode_rate = len(texts) / encode_s
        print(
            f"encode:   {len(texts)} chunks, {encode_s:.1f} s, {encode_rate:.1f} chunks/s "
            "(plain SentenceTransformer.encode, default batch size 32)",
            flush=True,
        )
        rates = compare_backends(cfg, texts, args.backends)

        seed_chunks, seed_s = bench_seed(cfg)
        seed_rate = seed_chunks / seed_s
        print(f"seed:     {seed_chunks} chunks, {seed_s:.1f} s, {seed_rate:.1f} chunks/s", flush=True)

        same = rates[cfg.embedder.backend, cfg.embedder.precision]
        print(f"ratio pipeline/seed:   {pipeline_rate / seed_rate:.2f} (target >= 2.00)")
        print(
            f"ratio pipeline/encode of {cfg.embedder.backend} {cfg.embedder.precision}: {pipeline_rate / same:.2f} "
            "(target >= 0.90)"
        )
        print(f"ratio pipeline/plain torch encode: {pipeline_rate / encode_rate:.2f}")
        print(
            f"machine: {os.cpu_count()} CPUs, embedder {cfg.embedder.model} on {cfg.embedder.backend} "
            f"{cfg.embedder.precision}, {cfg.embedder.concurrency} actors x {cfg.embedder.num_cpus} CPU, "
            f"batch {cfg.embedder.batch_size}"
        )
    finally:
        stop_local(cfg.milvus)


if __name__ == "__main__":
    main()
