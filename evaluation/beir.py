"""BEIR datasets (SciFact) as a corpus the real ingest job reads, and their test queries and qrels.

Each abstract becomes one text file, its title on the first line, with a manifest that gives the BEIR doc id
as the document's URL; retrieval results map back to doc ids through that URL.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from evaluation.retrieval import QuestionSet

DOCS_FOLDER = "docs"


def write_beir_corpus(beir_dir: str | Path, out_dir: str | Path) -> Path:
    """Writes ``out_dir/docs/<id>.txt`` and ``out_dir/manifest.jsonl``; unchanged files are left alone, so the
    ingest job's fingerprints skip them on a re-run."""
    out = Path(out_dir)
    (out / DOCS_FOLDER).mkdir(parents=True, exist_ok=True)
    manifest = []
    with open(Path(beir_dir) / "corpus.jsonl") as f:
        for line in f:
            doc = json.loads(line)
            path = f"{DOCS_FOLDER}/{doc['_id']}.txt"
            text = f"{doc['title'].strip()}\n\n{doc['text']}\n"
            target = out / path
            if not target.is_file() or target.read_text() != text:
                target.write_text(text)
            manifest.append(json.dumps({"path": path, "url": doc["_id"], "title": doc["title"].strip()}))
    (out / "manifest.jsonl").write_text("\n".join(manifest) + "\n")
    return out


def load_beir(beir_dir: str | Path, split: str = "test") -> QuestionSet:
    """The queries that have judgements in ``qrels/<split>.tsv``, with their relevant doc ids."""
    beir_dir = Path(beir_dir)
    qrels: dict[str, set[str]] = {}
    with open(beir_dir / "qrels" / f"{split}.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(row["query-id"], set()).add(row["corpus-id"])
    queries = {}
    with open(beir_dir / "queries.jsonl") as f:
        for line in f:
            query = json.loads(line)
            if query["_id"] in qrels:
                queries[query["_id"]] = query["text"]
    return QuestionSet(beir_dir.name, queries, qrels)
