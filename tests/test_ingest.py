"""The ingest job end to end against a real Ray cluster, a real milvus-lite server and the real MiniLM model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import boto3
import numpy as np
import pytest

from entrypoints.cli import main as rag_main
from ingest_jobs.chunk import embed_text_of
from ingest_jobs.ingest import run_ingest
from rag.config import RagConfig
from rag.embedder import SentenceTransformersEmbedder
from rag.prepare import prepare
from rag.store import MilvusChunkStore
from tests.conftest import LIBTASN1_PDF, MILVUS_DOCS, REPO, copy_pages, free_port

PAGES = [
    "about/limitations.html",
    "adminGuide/chunk_cache.html",
    "adminGuide/rbac.html",
    "embeddings/embed-with-bm25.html",
    "embeddings/embed-with-openai.html",
    "faq/performance_faq.html",
]


def make_cfg(corpus_path, milvus_uri: str, collection: str, **sections) -> RagConfig:
    overrides = {"corpus": {"path": str(corpus_path)}, "milvus": {"uri": milvus_uri, "collection": collection}}
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return RagConfig.load(overrides=overrides)


def rows_by_id(cfg: RagConfig) -> dict[str, dict]:
    store = MilvusChunkStore(cfg.milvus, cfg.embedder.dim)
    return {r["id"]: r for r in store.iter_rows(["id", "doc_id", "source", "url", "title", "heading", "text"])}


@pytest.fixture
def corpus(tmp_path):
    return copy_pages(tmp_path / "corpus", PAGES)


def test_ingest_writes_chunks_with_metadata_and_unit_vectors(ray_cluster, milvus_uri, collection, corpus):
    cfg = make_cfg(corpus, milvus_uri, collection)
    summary = run_ingest(prepare(cfg, corpus=True))
    assert summary.documents == len(PAGES) and summary.documents_written == len(PAGES)
    assert summary.skipped == [] and summary.chunks_written == summary.collection_rows > 3 * len(PAGES)

    store = MilvusChunkStore(cfg.milvus, cfg.embedder.dim)
    rows = list(store.iter_rows(["source", "url", "title", "heading", "doc_type", "text", "vector", "ingest_time"]))
    assert len(rows) == summary.chunks_written
    assert {r["url"] for r in rows if r["source"] == "adminGuide/rbac.html"} == {"https://milvus.io/docs/rbac.md"}
    assert {r["title"] for r in rows if r["source"] == "adminGuide/rbac.html"} == {"Enable RBAC"}
    assert all(r["doc_type"] == "html" and 0 < len(r["text"]) <= 512 and r["ingest_time"] > 0 for r in rows)
    assert sum(1 for r in rows if " > " in r["heading"]) > len(rows) / 2
    vectors = np.array([r["vector"] for r in rows], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)  # per row, not per matrix

    # The stored vector is what the shared embedder gives for that text, led by its title and headings.
    embedder = SentenceTransformersEmbedder(cfg.embedder)
    first = rows[0]
    embedded = embed_text_of(first["title"], first["heading"], first["text"], cfg.chunking)
    assert embedded.endswith(first["text"]) and embedded != first["text"]
    np.testing.assert_allclose(embedder.embed_documents([embedded])[0], vectors[0], atol=1e-4)

    query = embedder.embed_queries(["How do I enable role-based access control and create users?"])[0].tolist()
    hits = store.client.search(collection, data=[query], anns_field="vector", limit=3, output_fields=["source"])
    assert hits[0][0]["entity"]["source"] == "adminGuide/rbac.html"
    bm25 = store.client.search(
        collection, data=["chunk cache warmup"], anns_field="sparse", limit=3, output_fields=["source"]
    )
    assert bm25[0][0]["entity"]["source"] == "adminGuide/chunk_cache.html"


def test_rerun_edit_and_prune(ray_cluster, milvus_uri, collection, corpus):
    cfg = make_cfg(corpus, milvus_uri, collection)
    first = run_ingest(prepare(cfg, corpus=True))
    before = rows_by_id(cfg)
    assert len(before) == first.chunks_written

    again = run_ingest(prepare(cfg, corpus=True))
    assert again.unchanged == len(PAGES) and again.chunks_written == 0
    assert rows_by_id(cfg).keys() == before.keys()

    forced = run_ingest(prepare(cfg, corpus=True), force=True)
    assert forced.chunks_written == len(before) and forced.chunks_deleted_stale == 0
    assert rows_by_id(cfg).keys() == before.keys()

    edited = corpus / "adminGuide/rbac.html"
    html = edited.read_text()
    marker = "<h2>"
    edited.write_text(html.replace(marker, "<h2>Brand new section</h2><p>" + "Fresh words. " * 60 + "</p>" + marker, 1))
    after_edit = run_ingest(prepare(cfg, corpus=True))
    assert after_edit.documents_written == 1 and after_edit.unchanged == len(PAGES) - 1
    assert after_edit.chunks_deleted_stale > 0
    after = rows_by_id(cfg)
    others_before = {k for k, r in before.items() if r["source"] != "adminGuide/rbac.html"}
    others_after = {k for k, r in after.items() if r["source"] != "adminGuide/rbac.html"}
    assert others_before == others_after
    rbac_after = {k for k, r in after.items() if r["source"] == "adminGuide/rbac.html"}
    assert len(rbac_after) == after_edit.chunks_written
    assert any("Brand new section" in after[k]["heading"] for k in rbac_after)
    rbac_before = {k for k, r in before.items() if r["source"] == "adminGuide/rbac.html"}
    assert rbac_after - rbac_before  # new chunks came in ...
    assert len(rbac_before - rbac_after) == after_edit.chunks_deleted_stale  # ... and the stale ones left

    (corpus / "about/limitations.html").unlink()
    kept = run_ingest(prepare(cfg, corpus=True))
    assert kept.documents_pruned == 0
    assert any(r["source"] == "about/limitations.html" for r in rows_by_id(cfg).values())
    pruned = run_ingest(prepare(cfg, corpus=True), prune=True)
    assert pruned.documents_pruned == 1 and pruned.chunks_pruned > 0
    remaining = rows_by_id(cfg)
    assert not any(r["source"] == "about/limitations.html" for r in remaining.values())
    assert len(remaining) == pruned.collection_rows == len(after) - pruned.chunks_pruned


def test_bad_inputs_are_skipped_and_good_ones_written(ray_cluster, milvus_uri, collection, tmp_path):
    root = copy_pages(tmp_path / "corpus", PAGES[:2])
    (root / "binary.html").write_bytes(b"\x00\x01\x02PK\x03\x04" * 100)
    (root / "empty.md").write_bytes(b"")
    (root / "blank.txt").write_bytes(b"\n \n")
    (root / "huge.txt").write_text("word " * 400_000)
    (root / "latin1.txt").write_bytes("caf\u00e9".encode("latin-1"))
    (root / "chrome.html").write_text("<nav>menu</nav><script>alert(1)</script><footer>f</footer>")
    (root / "broken.html").write_text("<html><body><h1>Broken</h2><p>still <b>readable</i> text</div></span><p>more")
    outside = tmp_path / "secret.md"
    outside.write_text("# secret")
    (root / "link.md").symlink_to(outside)
    os.mkfifo(root / "fifo.txt")

    cfg = make_cfg(root, milvus_uri, collection, corpus={"max_file_bytes": 1_000_000})
    summary = run_ingest(prepare(cfg, corpus=True))
    reasons = {s.source: s.reason for s in summary.skipped}
    assert reasons == {
        "binary.html": "binary file",
        "empty.md": "empty file",
        "blank.txt": "empty file",
        "huge.txt": "oversized: 2000000 bytes > corpus.max_file_bytes=1000000",
        "latin1.txt": reasons["latin1.txt"],
        "chrome.html": "no text after parsing",
        "link.md": "outside the corpus root (symlink)",
        "fifo.txt": "not a regular file",
    }
    assert reasons["latin1.txt"].startswith("bad encoding")
    sources = {r["source"] for r in rows_by_id(cfg).values()}
    assert sources == {*PAGES[:2], "broken.html"}
    assert summary.documents == len(PAGES[:2]) + 9
    assert "skipped fifo.txt: not a regular file" in summary.format()


def test_s3_corpus(ray_cluster, milvus_uri, collection, s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="corpus")
    for page in PAGES[:3]:
        s3.put_object(Bucket="corpus", Key=f"milvus/{page}", Body=(MILVUS_DOCS / page).read_bytes())
    s3.put_object(Bucket="corpus", Key="milvus/manuals/libtasn1.pdf", Body=LIBTASN1_PDF.read_bytes())  # binary too
    cfg = make_cfg("s3://corpus/milvus", milvus_uri, collection, corpus={"s3_endpoint": s3_endpoint})
    summary = run_ingest(prepare(cfg, corpus=True))
    assert summary.documents_written == 4 and summary.skipped == []
    rows = rows_by_id(cfg).values()
    assert {r["source"] for r in rows} == {*PAGES[:3], "manuals/libtasn1.pdf"}
    assert "https://milvus.io/docs/limitations.md" in {r["url"] for r in rows}  # canonical link, no manifest


def test_ray_job_submit(ray_cluster, milvus_uri, collection, corpus):
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(f"http://{ray_cluster.dashboard_url}")
    job_id = client.submit_job(
        entrypoint=f"{sys.executable} -m ingest_jobs.ingest --corpus {corpus} --milvus-uri {milvus_uri} "
        f"--collection {collection} --config configs/local.yaml",
        runtime_env={"working_dir": str(REPO), "excludes": [".venv", ".git", ".rag", "*.db"]},
    )
    deadline = time.monotonic() + 300
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert f"documents read: {len(PAGES)}" in logs
    cfg = make_cfg(corpus, milvus_uri, collection)
    assert len(rows_by_id(cfg)) > 3 * len(PAGES)


def rag_cli(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_cli_missing_corpus_and_unreachable_milvus_exit_2(tmp_path, capsys):
    missing = rag_cli("ingest", str(tmp_path / "nope"))  # the command as a user runs it
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error: corpus folder not found")
    assert "Traceback" not in missing.stderr

    def rag(*args: str) -> tuple[int, str, str]:  # the same CLI in this process: no interpreter start per case
        code = rag_main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = rag("demo", "--corpus", str(tmp_path / "nope"))  # stops before Milvus, Ray or its log start
    assert code == 2 and "demo: logs in" not in out
    assert err.strip() == f"error: corpus folder not found: {tmp_path / 'nope'}"

    (tmp_path / "a.txt").write_text("hello")
    port = free_port()
    code, _, err = rag(
        "ingest", str(tmp_path), "--milvus-uri", f"http://127.0.0.1:{port}", "--set", "milvus.manage_local=false"
    )
    assert code == 2 and err.strip() == f"error: cannot reach Milvus at http://127.0.0.1:{port}"

    code, _, err = rag("ingest", str(tmp_path), "--set", "chunking.chunk_sise=10")
    assert code == 2 and "chunking.chunk_sise: Extra inputs are not permitted" in err


@pytest.mark.integration
def test_cli_manages_local_milvus(tmp_path):
    port = free_port()
    opts = ["--set", f"milvus.uri=http://127.0.0.1:{port}", "--set", f"milvus.local_data_dir={tmp_path / 'm'}"]
    assert rag_cli("milvus", "status", *opts).returncode == 1
    started = rag_cli("milvus", "start", *opts)
    assert started.returncode == 0, started.stderr
    try:
        assert rag_cli("milvus", "status", *opts).returncode == 0
        cfg = RagConfig.load(overrides={"milvus": {"uri": f"http://127.0.0.1:{port}"}})
        assert MilvusChunkStore(cfg.milvus, 384).client.list_collections() == []
    finally:
        assert "stopped" in rag_cli("milvus", "stop", *opts).stdout
    assert rag_cli("milvus", "status", *opts).returncode == 1
    shutil.rmtree(tmp_path / "m")
