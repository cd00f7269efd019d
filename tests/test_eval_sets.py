"""The evaluation's own corpora: a BEIR set through the real ingest job, and FAQ pages without their questions."""

import json

import pytest

from entrypoints.cli import main as rag_main
from evaluation.beir import load_beir, write_beir_corpus
from evaluation.faq import extract_faq, write_corpus_without_questions
from ingest_jobs.parse import parse_document
from rag.config import ParseConfig
from tests.conftest import MILVUS_DOCS, SCIFACT, copy_pages, eval_argv

BEIR_DOCS = [
    {
        "_id": "d1",
        "title": "Aspirin and heart attacks",
        "text": "Daily aspirin lowers the risk of myocardial infarction.",
    },
    {"_id": "d2", "title": "Coffee and sleep", "text": "Caffeine taken late in the day delays the onset of sleep."},
    {"_id": "d3", "title": "Vitamin D", "text": "Vitamin D deficiency is common in northern latitudes in winter."},
]
BEIR_QUERIES = [
    {"_id": "q1", "text": "Does aspirin prevent heart attacks?"},
    {"_id": "q2", "text": "Caffeine delays sleep onset."},
    {"_id": "q3", "text": "A query without judgements."},
]


@pytest.fixture
def tiny_beir(tmp_path):
    root = tmp_path / "tinybeir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in BEIR_DOCS))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in BEIR_QUERIES))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq2\td3\t0\n")
    return root


def test_beir_corpus_is_one_titled_document_per_abstract(tiny_beir, tmp_path):
    out = write_beir_corpus(tiny_beir, tmp_path / "out")
    assert (out / "docs" / "d1.txt").read_text().startswith("Aspirin and heart attacks\n\nDaily aspirin")
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert manifest[1] == {"path": "docs/d2.txt", "url": "d2", "title": "Coffee and sleep"}
    questions = load_beir(tiny_beir)
    assert questions.queries == {"q1": "Does aspirin prevent heart attacks?", "q2": "Caffeine delays sleep onset."}
    assert questions.qrels == {"q1": {"d1"}, "q2": {"d2"}}  # score 0 is not relevant


def test_scifact_test_split_loads():
    questions = load_beir(SCIFACT)
    assert len(questions.queries) == 300 and sum(len(d) for d in questions.qrels.values()) == 339


@pytest.mark.integration
def test_rag_eval_ingests_a_beir_set_and_scores_every_mode(
    ray_cluster, milvus_uri, collection, tiny_beir, tmp_path, capsys
):
    argv = eval_argv("--beir", str(tiny_beir), collection=collection, milvus_uri=milvus_uri, work_dir=tmp_path / "work")
    assert rag_main(argv) == 0
    results = json.loads(capsys.readouterr().out)["retrieval"]
    assert set(results) == {"dense", "bm25", "hybrid"}
    for mode in ("dense", "hybrid"):  # two easy queries, each with its document in the corpus
        assert results[mode]["recall@1"] == 1.0 and results[mode]["ndcg@10"] == 1.0, mode
    assert results["bm25"]["recall@10"] == 1.0


def test_faq_corpus_without_questions(tmp_path):
    corpus = copy_pages(tmp_path / "docs", ["faq/performance_faq.html", "about/limitations.html"])
    pairs = [p for p in extract_faq(MILVUS_DOCS) if "performance_faq" in p["source_url"]]
    out = write_corpus_without_questions(corpus, tmp_path / "noq", {p["question"] for p in pairs})
    assert (out / "about" / "limitations.html").read_bytes() == (corpus / "about" / "limitations.html").read_bytes()
    doc = parse_document((out / "faq/performance_faq.html").read_bytes(), "faq/performance_faq.html", ParseConfig())
    text = "\n".join(s.text for s in doc.sections)
    headings = {h for s in doc.sections for h in s.heading_path}
    for pair in pairs:
        assert pair["question"] not in text and pair["question"] not in headings
    answers = {s.text for s in doc.sections}
    for pair in pairs:
        assert pair["answer"] in answers  # each answer stays its own section, without its question
    assert not extract_faq(out)  # nothing left that reads as a question
