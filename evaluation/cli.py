"""``rag eval``: recall@1/5/10, MRR@10 and nDCG@10 per search mode, side by side, over the real retriever.

rag eval --questions faq.jsonl                         # a collection already ingested
rag eval --questions faq.jsonl --corpus DOCS [--exclude-question]   # ingest DOCS first, then evaluate
rag eval --beir ../shared/eval/scifact                 # ingest a BEIR dataset (one document per abstract)
rag eval --questions faq.jsonl --chat http://127.0.0.1:8000/v1      # answers through the chat endpoint
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from pathlib import Path
from typing import Any

from evaluation.beir import load_beir, write_beir_corpus
from evaluation.chat import evaluate_chat
from evaluation.faq import write_corpus_without_questions
from evaluation.retrieval import (
    SEARCH_MODES,
    QuestionSet,
    evaluate_retrieval,
    format_table,
    load_questions,
    question_set,
)
from rag.api_keys import read_api_keys
from rag.config import ConfigError, RagConfig, parse_overrides
from rag.corpus import CorpusNotFound
from rag.store import MilvusUnavailable

WORK_DIR = ".rag/eval"  # corpora the evaluation writes: BEIR as files, FAQ pages without questions
BEIR_CHUNKING = {"chunk_size": 20_000, "chunk_overlap": 0}  # one chunk per abstract, as BEIR scores documents


def ingest(cfg: RagConfig, *, fresh: bool = False) -> None:
    """``fresh`` drops the collection first: milvus-lite keeps BM25 statistics per segment, so a collection
    grown by incremental re-runs scores BM25 differently from one written in one go."""
    import ray

    from ingest_jobs.ingest import run_ingest
    from rag.prepare import prepare
    from rag.store import MilvusChunkStore

    prepared = prepare(cfg, corpus=True)
    store = MilvusChunkStore(cfg.milvus, cfg.embedder.dim)
    if fresh:
        store.drop()
    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING)
    print(run_ingest(prepared, store=store).format(), file=sys.stderr)


def load_evaluation(
    *,
    questions_path: str | None = None,
    beir: str | None = None,
    split: str = "test",
    corpus: str | None = None,
    exclude_question: bool = False,
    collection: str | None = None,
    config: str | None = None,
    overrides: dict[str, Any] | None = None,
    work_dir: str = WORK_DIR,
    fresh: bool = False,
) -> tuple[RagConfig, QuestionSet, list[dict[str, str]]]:
    """The config, the question set and (for --chat) the raw questions; ingests a corpus when given one."""
    overrides = copy.deepcopy(overrides or {})
    milvus = overrides.setdefault("milvus", {})
    rows: list[dict[str, str]] = []
    if beir:
        questions = load_beir(beir, split)
        corpus = str(write_beir_corpus(beir, Path(work_dir) / questions.name))
        milvus.setdefault("collection", f"eval_{questions.name}")
        for key, value in BEIR_CHUNKING.items():
            overrides.setdefault("chunking", {}).setdefault(key, value)
    else:
        if questions_path is None:
            raise ValueError("give a question set (--questions) or a BEIR dataset (--beir)")
        rows = load_questions(questions_path)
        questions = question_set(rows, Path(questions_path).stem)
        if exclude_question:
            if not corpus:
                raise ValueError("--exclude-question needs --corpus: the evaluation writes a copy without them")
            corpus = str(
                write_corpus_without_questions(
                    corpus, Path(work_dir) / f"{Path(corpus).name}-noq", {r["question"] for r in rows}
                )
            )
            milvus.setdefault("collection", "eval_noq")
    if collection:
        milvus["collection"] = collection
    if corpus:
        overrides.setdefault("corpus", {})["path"] = corpus
    cfg = RagConfig.load(config, overrides)
    if corpus:
        ingest(cfg, fresh=fresh)
    return cfg, questions, rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rag eval", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--questions", help="JSONL with question, answer, source_url (python -m evaluation.faq)")
    source.add_argument("--beir", help="a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="test", help="BEIR qrels split")
    parser.add_argument("--corpus", help="ingest this corpus into the collection first")
    parser.add_argument(
        "--exclude-question",
        action="store_true",
        help="index the corpus with each FAQ question's heading left out (needs --corpus)",
    )
    parser.add_argument("--fresh", action="store_true", help="drop the collection before ingesting the corpus")
    parser.add_argument(
        "--chat",
        metavar="BASE_URL",
        help="also send the questions through this chat endpoint (with the first key of serve.api_keys_file)",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=128, help="cap on each --chat answer's tokens (the figures use 128)"
    )
    parser.add_argument("--work-dir", default=WORK_DIR, help="where the evaluation writes the corpora it derives")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--collection", help="Milvus collection (milvus.collection)")
    parser.add_argument("--modes", nargs="+", choices=SEARCH_MODES, default=list(SEARCH_MODES))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    try:
        if args.chat and not args.questions:
            raise ValueError("--chat needs --questions with reference answers")
        if args.max_tokens < 1:
            raise ValueError(f"--max-tokens must be at least 1, got {args.max_tokens}")
        cfg, questions, rows = load_evaluation(
            questions_path=args.questions,
            beir=args.beir,
            split=args.split,
            corpus=args.corpus,
            exclude_question=args.exclude_question,
            collection=args.collection,
            config=args.config,
            overrides=parse_overrides(args.set),
            work_dir=args.work_dir,
            fresh=args.fresh,
        )
        results = evaluate_retrieval(cfg, questions, tuple(args.modes))
        chat = None
        if args.chat:  # the endpoint's key: the config's first, as `rag ready` sends it
            api_key = next(iter(read_api_keys(cfg.serve.api_keys_file)), "unused")
            chat = evaluate_chat(args.chat, rows, model=cfg.llm.model_id, api_key=api_key, max_tokens=args.max_tokens)
    except (ConfigError, CorpusNotFound, MilvusUnavailable, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"retrieval": results, "chat": chat}))
        return 0
    print(f"{questions.name}: {len(questions.queries)} questions, collection {cfg.milvus.collection}")
    print(format_table(results))
    if chat:
        print("chat: " + "  ".join(f"{k} {v:.3f}" for k, v in chat.items()))
    return 0
