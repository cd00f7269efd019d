"""Retrieval quality of a collection: each labelled question through the real retriever, in every search mode.

The label is a page (its canonical URL); passages are mapped to their page, and a page keeps its best rank.
"""

from __future__ import annotations

import json
from pathlib import Path

from evaluation.metrics import MEASURES, score
from rag.config import RagConfig
from rag.embedder import SentenceTransformersEmbedder
from serve_app.retriever import MilvusRetriever

SEARCH_MODES = ("dense", "bm25", "hybrid")
CANDIDATES = 50  # passages per question, enough to fill the top 10 pages


def load_questions(path: str | Path) -> list[dict[str, str]]:
    """JSONL with ``question``, ``answer`` and ``source_url`` per line."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for i, row in enumerate(rows):
        missing = {"question", "source_url"} - set(row)
        if missing:
            raise ValueError(f"{path}:{i + 1}: missing {sorted(missing)}")
    return rows


def evaluate_retrieval(
    cfg: RagConfig, questions: list[dict[str, str]], modes: tuple[str, ...] = SEARCH_MODES
) -> dict[str, dict[str, float]]:
    retriever = MilvusRetriever(cfg.milvus, cfg.embedder.dim, cfg.retrieval)
    if not retriever.client.has_collection(cfg.milvus.collection):
        raise ValueError(f"collection {cfg.milvus.collection!r} does not exist at {cfg.milvus.uri}: run `rag ingest`")
    embedder = SentenceTransformersEmbedder(cfg.embedder)
    vectors = embedder.embed_queries([q["question"] for q in questions])
    qrels = {str(i): {q["source_url"]} for i, q in enumerate(questions)}
    results = {}
    for mode in modes:
        runs = {
            str(i): [s.url for s in retriever.retrieve(q["question"], vector.tolist(), mode=mode, top_k=CANDIDATES)]
            for i, (q, vector) in enumerate(zip(questions, vectors))
        }
        results[mode] = score(qrels, runs)
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    names = list(MEASURES)
    lines = ["mode    " + "  ".join(f"{n:>9s}" for n in names)]
    lines += [f"{mode:7s} " + "  ".join(f"{row[n]:9.3f}" for n in names) for mode, row in results.items()]
    return "\n".join(lines)
