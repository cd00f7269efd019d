"""Question/answer pairs written by the Milvus team, extracted from the FAQ pages of the Milvus docs.

    python -m evaluation.faq ../shared/corpus/milvus-docs > faq.jsonl

Each FAQ heading that ends in "?" is a question; the text under it is the answer; the page's canonical URL
is the label. The project's own HTML parser does the work, so the pairs match what the ingest job indexes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ingest_jobs.parse import parse_document
from ingest_jobs.read import Corpus
from rag.config import CorpusConfig, ParseConfig

FAQ_FOLDER = "faq/"
NOT_QUESTIONS = ("Still have questions?",)


def extract_faq(corpus_root: str | Path) -> list[dict[str, str]]:
    corpus = Corpus(CorpusConfig(path=str(corpus_root)))
    files, _ = corpus.list()
    manifest = corpus.manifest()
    pairs = []
    for file in files:
        if not file.source.startswith(FAQ_FOLDER):
            continue
        entry = manifest.get(file.source)
        doc = parse_document(corpus.read(file), file.source, ParseConfig(), url=entry and entry.url)
        for section in doc.sections:
            question = section.heading_path[-1] if section.heading_path else ""
            if question.endswith("?") and question not in NOT_QUESTIONS and section.text:
                pairs.append({"question": question, "answer": section.text, "source_url": doc.url})
    return pairs


if __name__ == "__main__":
    for pair in extract_faq(sys.argv[1] if len(sys.argv) > 1 else "../shared/corpus/milvus-docs"):
        print(json.dumps(pair))
