"""Question/answer pairs written by the Milvus team, extracted from the FAQ pages of the Milvus docs.

    python -m evaluation.faq ../shared/corpus/milvus-docs > faq.jsonl

Each FAQ heading that ends in "?" is a question; the text under it is the answer; the page's canonical URL
is the label. The project's own HTML parser does the work, so the pairs match what the ingest job indexes.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from bs4 import BeautifulSoup

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
        doc = parse_document(corpus.read(file), file.source, ParseConfig(), url=entry.url if entry else None)
        for section in doc.sections:
            question = section.heading_path[-1] if section.heading_path else ""
            if question.endswith("?") and question not in NOT_QUESTIONS and section.text:
                pairs.append({"question": question, "answer": section.text, "source_url": doc.url})
    return pairs


def write_corpus_without_questions(corpus_root: str | Path, out_dir: str | Path, questions: set[str]) -> Path:
    """A copy of the corpus whose FAQ question headings are emptied, so a question cannot retrieve its own
    wording. The empty heading still ends the previous answer, so each answer stays its own section, as it
    would be under a heading that does not give the question away. Unchanged files stay byte-identical, so
    the ingest job's fingerprints skip them on a re-run."""
    out = Path(out_dir)
    shutil.copytree(corpus_root, out, dirs_exist_ok=True)
    for page in sorted((out / FAQ_FOLDER).glob("*.html")):
        soup = BeautifulSoup(page.read_bytes(), "lxml")
        headings = [h for h in soup.find_all(re.compile(r"^h[1-6]$")) if h.get_text(" ", strip=True) in questions]
        for heading in headings:
            heading.clear()
        if headings:
            page.write_text(str(soup))
    return out


if __name__ == "__main__":
    for pair in extract_faq(sys.argv[1] if len(sys.argv) > 1 else "../shared/corpus/milvus-docs"):
        print(json.dumps(pair))
