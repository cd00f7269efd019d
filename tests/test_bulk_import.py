"""The bulk-import sink: Parquet staged in a real S3-compatible bucket (moto), then a Milvus import job.

No Milvus cluster can run here, so its import REST endpoint is a stand-in: a small HTTP server that does what
the cluster's data nodes do with a job, reading the staged files from the bucket and *inserting* the rows into
the real milvus-lite collection (insert, not upsert, as an import does, so a duplicate would show).
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from ingest_jobs.bulk_import import ImportFailed
from ingest_jobs.ingest import run_ingest
from rag.config import MilvusConfig, RagConfig
from rag.prepare import prepare
from rag.store import MilvusChunkStore, connect
from tests.conftest import LIBTASN1_PDF, copy_pages

PAGES = ["adminGuide/rbac.html", "about/limitations.html", "faq/performance_faq.html"]
BUCKET = "milvus-bulk"


class FakeImportEndpoint:
    """Milvus' /v2/vectordb/jobs/import/{create,describe}, carried out against milvus-lite."""

    def __init__(self, milvus_uri: str, s3_endpoint: str):
        self.client = connect(MilvusConfig(uri=milvus_uri))  # the project's keepalive settings
        self.fs = pafs.S3FileSystem(endpoint_override=s3_endpoint, region="us-east-1")
        self.jobs: list[dict] = []
        self.fail_next = False
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's name for it
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(endpoint.handle(self.path, body)).encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, path: str, body: dict) -> dict:
        if path.endswith("/import/create"):
            job = {"id": f"job-{len(self.jobs) + 1}", "body": body, "failed": self.fail_next}
            self.jobs.append(job)
            if not job["failed"]:
                for [key] in body["files"]:
                    rows = pq.read_table(f"{BUCKET}/{key}", filesystem=self.fs).to_pylist()
                    self.client.insert(body["collectionName"], rows)
            return {"code": 0, "data": {"jobId": job["id"]}}
        job = next(j for j in self.jobs if j["id"] == body["jobId"])
        if job["failed"]:
            return {"code": 0, "data": {"state": "Failed", "reason": "row 3: vector dimension mismatch"}}
        return {"code": 0, "data": {"state": "Completed", "progress": 100}}


@pytest.fixture
def fake_import(milvus_uri, s3_endpoint):
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=BUCKET)
    endpoint = FakeImportEndpoint(milvus_uri, s3_endpoint)
    yield endpoint
    endpoint.server.shutdown()
    endpoint.client.close()


def bulk_cfg(corpus, milvus_uri: str, collection: str, s3_endpoint: str, endpoint: FakeImportEndpoint) -> RagConfig:
    return RagConfig.load(
        overrides={
            "corpus": {"path": str(corpus)},
            "milvus": {
                "uri": milvus_uri,
                "collection": collection,
                "sink": "bulk_import",
                "bulk_stage_uri": f"s3://{BUCKET}/stage",
                "bulk_s3_endpoint": s3_endpoint,
                "bulk_import_url": endpoint.url,
            },
        }
    )


def test_bulk_import_stages_imports_and_never_duplicates(
    ray_cluster, milvus_uri, s3_endpoint, collection, fake_import, tmp_path
):
    corpus = copy_pages(tmp_path / "corpus", PAGES)
    shutil.copy(LIBTASN1_PDF, corpus / "libtasn1.pdf")  # a paged document: its pages travel in the Parquet too
    cfg = bulk_cfg(corpus, milvus_uri, collection, s3_endpoint, fake_import)
    store = MilvusChunkStore(cfg.milvus, cfg.embedder.dim)

    first = run_ingest(prepare(cfg, corpus=True))
    assert first.import_job == "job-1" and first.documents_written == len(PAGES) + 1
    pages = {r["page"] for r in store.iter_rows(["source", "page"]) if r["source"] == "libtasn1.pdf"}
    assert min(pages) == 1 and max(pages) >= 30
    assert first.collection_rows == first.chunks_written > 3 * len(PAGES)
    keys = [key for [key] in fake_import.jobs[0]["body"]["files"]]
    assert keys and all(k.startswith("stage/") and k.endswith(".parquet") for k in keys)
    assert fake_import.jobs[0]["body"]["collectionName"] == collection
    staged = sum(pq.read_metadata(f"{BUCKET}/{k}", filesystem=fake_import.fs).num_rows for k in keys)
    assert staged == first.chunks_written

    again = run_ingest(prepare(cfg, corpus=True))  # nothing changed: nothing staged, no job
    assert again.unchanged == len(PAGES) + 1 and again.import_job == "" and len(fake_import.jobs) == 1

    page = corpus / "about" / "limitations.html"
    page.write_text(page.read_text().replace("</body>", "<p>One more limit: bulk imports insert.</p></body>"))
    edited = run_ingest(prepare(cfg, corpus=True))
    assert edited.documents_written == 1 and edited.import_job == "job-2"
    ids = [r["id"] for r in store.iter_rows(["id"])]
    assert len(ids) == len(set(ids)) == edited.collection_rows  # the old chunks went before the import
    assert edited.chunks_deleted_stale > 0
    hits = store.client.query(collection, filter='text like "%bulk imports insert%"', output_fields=["source"])
    assert [h["source"] for h in hits] == ["about/limitations.html"]


def test_a_failed_import_is_reported(ray_cluster, milvus_uri, s3_endpoint, collection, fake_import, tmp_path):
    corpus = copy_pages(tmp_path / "corpus", PAGES[:1])
    cfg = bulk_cfg(corpus, milvus_uri, collection, s3_endpoint, fake_import)
    fake_import.fail_next = True
    with pytest.raises(ImportFailed, match="vector dimension mismatch"):
        run_ingest(prepare(cfg, corpus=True))


def test_bulk_import_needs_a_stage():
    from rag.config import ConfigError

    with pytest.raises(ConfigError, match="bulk_stage_uri"):
        RagConfig.load(overrides={"milvus": {"sink": "bulk_import"}})
