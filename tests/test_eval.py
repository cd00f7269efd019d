"""Each evaluation mode really runs against Milvus: the FAQ questions over a collection the ingest job wrote."""

import json

from entrypoints.cli import main as rag_main
from evaluation.faq import extract_faq
from evaluation.retrieval import evaluate_retrieval, format_table, question_set
from ingest_jobs.ingest import run_ingest
from rag.config import RagConfig
from rag.prepare import prepare
from tests.conftest import MILVUS_DOCS, copy_pages, eval_argv, faq_questions_file

PAGES = ["faq/performance_faq.html", "faq/operational_faq.html", "adminGuide/rbac.html", "about/limitations.html"]


def test_retrieval_eval_on_faq_questions(ray_cluster, milvus_uri, collection, tmp_path, capsys):
    corpus = copy_pages(tmp_path / "corpus", PAGES)
    cfg = RagConfig.load(
        overrides={"corpus": {"path": str(corpus)}, "milvus": {"uri": milvus_uri, "collection": collection}}
    )
    run_ingest(prepare(cfg, corpus=True))
    questions = [
        q
        for q in extract_faq(MILVUS_DOCS)
        if "performance_faq" in q["source_url"] or "operational_faq" in q["source_url"]
    ]
    results = evaluate_retrieval(cfg, question_set(questions))
    assert set(results) == {"dense", "bm25", "hybrid"}
    for mode, row in results.items():
        assert 0.5 < row["recall@5"] <= row["recall@10"] <= 1.0, (mode, row)
        assert 0 < row["mrr@10"] <= 1 and 0 < row["ndcg@10"] <= 1
    assert "hybrid" in format_table(results)

    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(q) for q in questions[:5]))
    assert (
        rag_main(
            [
                "eval",
                "--questions",
                str(path),
                "--collection",
                collection,
                "--modes",
                "bm25",
                "--set",
                f"milvus.uri={milvus_uri}",
            ]
        )
        == 0
    )
    assert "bm25" in capsys.readouterr().out
    assert (
        rag_main(["eval", "--questions", str(path), "--collection", "missing", "--set", f"milvus.uri={milvus_uri}"])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    path.write_text('{"question": "no label"}\n')
    assert rag_main(["eval", "--questions", str(path), "--set", f"milvus.uri={milvus_uri}"]) == 2


def test_exclude_question_indexes_the_pages_without_their_questions(
    ray_cluster, milvus_uri, collection, tmp_path, capsys
):
    from rag.store import MilvusChunkStore

    corpus = copy_pages(tmp_path / "corpus", PAGES)
    path = faq_questions_file(tmp_path / "q.jsonl")
    questions = [json.loads(line) for line in path.read_text().splitlines()]
    argv = eval_argv(
        "--questions",
        str(path),
        "--corpus",
        str(corpus),
        "--exclude-question",
        collection=collection,
        milvus_uri=milvus_uri,
        work_dir=tmp_path / "work",
    )
    assert rag_main(argv) == 0
    results = json.loads(capsys.readouterr().out)["retrieval"]
    assert all(0 < row["recall@10"] <= 1 for row in results.values())
    cfg = RagConfig.load(overrides={"milvus": {"uri": milvus_uri, "collection": collection}})
    rows = list(MilvusChunkStore(cfg.milvus, cfg.embedder.dim).iter_rows(["text", "heading", "url"]))
    assert {r["url"] for r in rows} >= {q["source_url"] for q in questions}
    for q in questions:
        assert not any(q["question"] in r["text"] or q["question"] in r["heading"] for r in rows), q["question"]
    assert rag_main(["eval", "--questions", str(path), "--exclude-question"]) == 2  # needs --corpus
    assert "--corpus" in capsys.readouterr().err
