"""Retrieval quality of a collection: each labelled question through the real retriever, in every search mode.

The label is a page (its canonical URL, or a BEIR doc id); passages are mapped to their page, and a page keeps
its best rank.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from evaluation.metrics import MEASURES, score
from rag.config import RagConfig, RetrievalConfig
from rag.embedder import SentenceTransformersEmbedder
from rag.search import MilvusRetriever, SearchMode

SEARCH_MODES: tuple[SearchMode, ...] = ("dense", "bm25", "hybrid")
CANDIDATES = 50  # passages per question, enough to fill the top 10 pages


@dataclass
class QuestionSet:
    name: str
    queries: dict[str, str]  # query id -> question
    qrels: dict[str, set[str]]  # query id -> relevant page URLs


def load_questions(path: str | Path) -> list[dict[str, str]]:
    """JSONL with ``question``, ``answer`` and ``source_url`` per line."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for i, row in enumerate(rows):
        missing = {"question", "source_url"} - set(row)
        if missing:
            raise ValueError(f"{path}:{i + 1}: missing {sorted(missing)}")
    return rows


def question_set(rows: list[dict[str, str]], name: str = "questions") -> QuestionSet:
    return QuestionSet(
        name,
        {str(i): r["question"] for i, r in enumerate(rows)},
        {str(i): {r["source_url"]} for i, r in enumerate(rows)},
    )


def evaluate_retrieval(
    cfg: RagConfig,
    questions: QuestionSet,
    modes: tuple[SearchMode, ...] = SEARCH_MODES,
    *,
    variants: Mapping[str, tuple[SearchMode, RetrievalConfig]] | None = None,
) -> dict[str, dict[str, float]]:
    """A row per search mode, then one per labelled (mode, retrieval settings); the queries are embedded once.
    Hybrid goes no deeper than its candidate lists, so the ranking is the one Serve's top_k passages take."""
    retriever = MilvusRetriever(  # ValueError if there is no collection
        cfg.milvus, cfg.embedder.dim, cfg.retrieval, embedder=cfg.embedder.identity()
    )
    embedder = SentenceTransformersEmbedder(cfg.embedder)
    ids = list(questions.queries)
    vectors = dict(zip(ids, embedder.embed_queries([questions.queries[i] for i in ids]).tolist()))

    def run(r: MilvusRetriever, mode: SearchMode) -> dict[str, float]:
        top_k = min(CANDIDATES, r.retrieval.candidates) if mode == "hybrid" else CANDIDATES
        runs = {
            i: [s.document_url for s in r.retrieve(questions.queries[i], vectors[i], mode=mode, top_k=top_k)]
            for i in ids
        }
        return score(questions.qrels, runs)

    results: dict[str, dict[str, float]] = {mode: run(retriever, mode) for mode in modes}
    for label, (mode, retrieval) in (variants or {}).items():
        results[label] = run(MilvusRetriever(cfg.milvus, cfg.embedder.dim, retrieval, store=retriever.store), mode)
    return results


def format_table(results: dict[str, dict[str, float]], label: str = "mode") -> str:
    names = list(MEASURES)
    width = max(len(label), *(len(k) for k in results))
    lines = [f"{label:{width}s} " + "  ".join(f"{n:>9s}" for n in names)]
    lines += [f"{mode:{width}s} " + "  ".join(f"{row[n]:9.3f}" for n in names) for mode, row in results.items()]
    return "\n".join(lines)
