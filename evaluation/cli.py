"""``rag eval --questions Q.jsonl [--config F] [--collection C]``: recall@1/5/10, MRR@10 and nDCG@10 per mode."""

from __future__ import annotations

import argparse
import sys

from evaluation.retrieval import SEARCH_MODES, evaluate_retrieval, format_table, load_questions
from rag.config import ConfigError, RagConfig, parse_overrides
from rag.store import MilvusUnavailable


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rag eval", description=__doc__.splitlines()[0])
    parser.add_argument("--questions", required=True, help="JSONL with question, answer, source_url")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--collection", help="Milvus collection (milvus.collection)")
    parser.add_argument("--modes", nargs="+", choices=SEARCH_MODES, default=list(SEARCH_MODES))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
        if args.collection:
            overrides.setdefault("milvus", {})["collection"] = args.collection
        cfg = RagConfig.load(args.config, overrides)
        results = evaluate_retrieval(cfg, load_questions(args.questions), tuple(args.modes))
    except (ConfigError, MilvusUnavailable, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(results))
    return 0
