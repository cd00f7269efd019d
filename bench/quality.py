"""Retrieval quality on BEIR SciFact and on the Milvus FAQ, per search mode and fusion, with the local embedder.

    python bench/quality.py [--scifact ../shared/eval/scifact] [--corpus ../shared/corpus/milvus-docs]
                            [--chunking 1024/102 512/51:plain] [--with-question]

Each set goes through the real ingest job into a freshly dropped milvus-lite collection, then every question
through the real retriever. Per set it prints dense, BM25, hybrid under each fusion and candidate pool
tried (BM25 given the query as it is), BM25 and hybrid with the query's stop words dropped, and the
shipped default. SciFact prints the published nDCG@10 beside ours; the FAQ set runs with each question's
heading left out of the index (``--exclude-question``) and, with ``--with-question``, as extracted.
``--chunking`` re-ingests the FAQ corpus per chunk size/overlap (``:plain``: without the title and heading
path in the embedded text) and prints one block per setting, after the shipped default.
``--backends torch/fp32 openvino/bf16 ...`` instead ingests both sets once per embedder backend and precision and
prints SciFact nDCG@10 and FAQ recall@5, dense and hybrid, each beside the first backend's (parity: within 0.005).
Targets: SciFact nDCG@10 >= 0.70 for the default mode; FAQ hybrid recall@5 >= 0.85 without the question;
hybrid >= dense and >= BM25 on MRR@10 on both sets.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluation.cli import load_evaluation  # noqa: E402
from evaluation.faq import extract_faq  # noqa: E402
from evaluation.retrieval import evaluate_retrieval, format_table  # noqa: E402
from rag.config import RagConfig  # noqa: E402
from rag.milvus_server import ensure_milvus  # noqa: E402

PUBLISHED_NDCG10 = {"dense": 0.645, "bm25": 0.665}  # SciFact: all-MiniLM-L6-v2 (SBERT/MTEB) and BM25 (BEIR paper)
FUSIONS = {
    "hybrid rrf k=60": {"fusion": "rrf", "rrf_k": 60},
    "hybrid rrf k=20": {"fusion": "rrf", "rrf_k": 20},
    "hybrid minmax w=0.5": {"fusion": "minmax", "dense_weight": 0.5},
    "hybrid minmax w=0.6": {"fusion": "minmax", "dense_weight": 0.6},
    "hybrid minmax w=0.7": {"fusion": "minmax", "dense_weight": 0.7},
    "hybrid minmax w=0.6 c=100": {"fusion": "minmax", "dense_weight": 0.6, "candidates": 100},
    "hybrid minmax w=0.6 c=20": {"fusion": "minmax", "dense_weight": 0.6, "candidates": 20},
    "hybrid minmax w=0.6 c=10": {"fusion": "minmax", "dense_weight": 0.6, "candidates": 10},
}
# The rows above, and the dense and bm25 rows, send BM25 the query as it is (Milvus' own tokenizing):
# comparable with the published BM25 figure and with the runs made before stop words were dropped.
KEEP_STOP_WORDS = {"bm25_stop_words": False}


def table(cfg: RagConfig, questions) -> dict[str, dict[str, float]]:
    started = time.perf_counter()
    default = RagConfig().retrieval
    kept = cfg.model_copy(update={"retrieval": cfg.retrieval.model_copy(update=KEEP_STOP_WORDS)})
    variants = {label: ("hybrid", kept.retrieval.model_copy(update=fusion)) for label, fusion in FUSIONS.items()}
    variants["bm25 without stop words"] = ("bm25", kept.retrieval.model_copy(update={"bm25_stop_words": True}))
    variants["hybrid minmax w=0.6 c=20 without stop words"] = (
        "hybrid",
        default.model_copy(update={"candidates": 20, "bm25_stop_words": True}),
    )
    variants[f"default (hybrid, {default.fusion}{', without stop words' if default.bm25_stop_words else ''})"] = (
        "hybrid",
        default,
    )
    rows = evaluate_retrieval(kept, questions, ("dense", "bm25"), variants=variants)
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return rows


def verdict(rows: dict[str, dict[str, float]]) -> str:
    default = next(v for k, v in rows.items() if k.startswith("default"))
    others = [rows[k]["mrr@10"] for k in ("dense", "bm25", "bm25 without stop words")]
    beats = default["mrr@10"] >= max(others)
    return f"default mode MRR@10 >= dense and >= bm25 (either query): {'yes' if beats else 'NO'}"


PARITY = 0.005


def compare_backends(args: argparse.Namespace, backends: list[tuple[str, str]]) -> None:
    """Each set ingested and searched once per embedder: the same questions, chunks and fusion, only the vectors
    differ. The first backend is the reference."""
    with tempfile.TemporaryDirectory() as tmp:
        faq = Path(tmp) / "faq.jsonl"
        faq.write_text("".join(json.dumps(q) + "\n" for q in extract_faq(args.corpus)))
        results: dict[tuple[str, str], dict[str, float]] = {}
        for backend, precision in backends:
            overrides = {"embedder": {"backend": backend, "precision": precision}}
            name = f"{backend}_{precision}"
            cfg, questions, _ = load_evaluation(
                beir=args.scifact, collection=f"eval_scifact_{name}", overrides=overrides, fresh=True
            )
            scifact = evaluate_retrieval(cfg, questions, ("dense", "hybrid"))
            cfg, questions, _ = load_evaluation(
                questions_path=str(faq),
                corpus=args.corpus,
                exclude_question=True,
                collection=f"eval_noq_{name}",
                overrides=overrides,
                fresh=True,
            )
            faq_rows = evaluate_retrieval(cfg, questions, ("dense", "hybrid"))
            results[backend, precision] = {
                **{f"SciFact {mode} nDCG@10": scifact[mode]["ndcg@10"] for mode in ("dense", "hybrid")},
                **{f"FAQ {mode} recall@5": faq_rows[mode]["recall@5"] for mode in ("dense", "hybrid")},
            }
    reference = results[backends[0]]
    print(f"\n## Embedder backends (reference: {'/'.join(backends[0])}; parity: within {PARITY})")
    for key, row in results.items():
        cells = [f"{name} {value:.3f} ({value - reference[name]:+.3f})" for name, value in row.items()]
        kept = all(abs(value - reference[name]) <= PARITY for name, value in row.items())
        print(f"{'/'.join(key):>14}: " + ", ".join(cells) + f"  parity: {'yes' if kept else 'NO'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", default=str(REPO.parent / "shared" / "eval" / "scifact"))
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus" / "milvus-docs"))
    parser.add_argument("--chunking", nargs="*", default=[], metavar="SIZE/OVERLAP[+headings]")
    parser.add_argument("--with-question", action="store_true", help="also the FAQ set with questions indexed")
    parser.add_argument("--skip-scifact", action="store_true")
    parser.add_argument("--backends", nargs="*", default=[], metavar="BACKEND/PRECISION")
    args = parser.parse_args()
    ensure_milvus(RagConfig().milvus)
    if args.backends:
        compare_backends(args, [tuple(b.split("/")) for b in args.backends])
        return 0

    if not args.skip_scifact:
        cfg, questions, _ = load_evaluation(beir=args.scifact, fresh=True)
        rows = table(cfg, questions)
        print(f"\n## SciFact: {len(questions.queries)} test queries, {cfg.milvus.collection}, one chunk per abstract")
        print(format_table(rows, "method"))
        print("published nDCG@10: " + ", ".join(f"{k} {v:.3f}" for k, v in PUBLISHED_NDCG10.items()))
        print(verdict(rows))

    with tempfile.TemporaryDirectory() as tmp:
        faq = Path(tmp) / "faq.jsonl"
        faq.write_text("".join(json.dumps(q) + "\n" for q in extract_faq(args.corpus)))
        default = RagConfig().chunking
        settings = [(default.chunk_size, default.chunk_overlap, default.embed_headings)]
        for setting in args.chunking:
            sizes, _, plain = setting.partition(":")
            size, overlap = (int(x) for x in sizes.split("/"))
            settings.append((size, overlap, plain != "plain"))
        for size, overlap, headings in dict.fromkeys(settings):
            name = f"eval_noq_{size}_{overlap}{'' if headings else '_plain'}"
            chunk = {"chunking": {"chunk_size": size, "chunk_overlap": overlap, "embed_headings": headings}}
            cfg, questions, _ = load_evaluation(
                questions_path=str(faq),
                corpus=args.corpus,
                exclude_question=True,
                collection=name,
                overrides=chunk,
                fresh=True,
            )
            rows = table(cfg, questions)
            print(
                f"\n## Milvus FAQ without the questions: {len(questions.queries)} questions, chunks {size}/{overlap}"
                f"{', title + headings embedded' if headings else ', text only embedded'}, {name}"
            )
            print(format_table(rows, "method"))
            print(verdict(rows))
        if args.with_question:
            cfg, questions, _ = load_evaluation(
                questions_path=str(faq), corpus=args.corpus, collection="eval_faq", fresh=True
            )
            rows = table(cfg, questions)
            print(
                f"\n## Milvus FAQ as extracted (question headings in the heading path): {len(questions.queries)} "
                "questions"
            )
            print(format_table(rows, "method"))
            print(verdict(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
