"""MilvusRetriever without Ray: a real milvus-lite server, the real embedder, hand-written rows."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pymilvus import MilvusException

from rag.config import EmbedderConfig, MilvusConfig
from rag.embedder import SentenceTransformersEmbedder
from rag.store import MilvusChunkStore
from serve_app.errors import from_milvus_error
from serve_app.protocol import RetrievalFilter
from serve_app.retriever import MilvusRetriever, filter_expr
from tests.conftest import free_port, wait_for_port

pytestmark = pytest.mark.integration

DOCS = [
    ("guide/install.md", "markdown", "https://x/install", "Install Milvus with Docker Compose and start the containers."),
    ("guide/index.html", "html", "https://x/index", "An HNSW index builds a graph; M sets the number of neighbours."),
    ("faq/bm25.html", "html", "https://y/bm25", "BM25 scores a keyword query by term frequency and document length."),
    ("notes/todo.txt", "text", "https://y/todo", "Remember to water the plants and buy coffee beans."),
]


@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformersEmbedder(EmbedderConfig())


@pytest.fixture(scope="module")
def retriever(milvus_uri, embedder):
    cfg = MilvusConfig(uri=milvus_uri, collection="retriever_unit")
    store = MilvusChunkStore(cfg, 384)
    store.drop()
    store.ensure_collection()
    vectors = embedder.embed_documents([d[3] for d in DOCS])
    store.upsert([
        {"id": f"c{i}", "text": text, "vector": vectors[i].tolist(), "doc_id": f"d{i}", "source": source, "url": url,
         "title": source, "heading": "H", "doc_type": doc_type, "chunk_index": 0, "chunk_count": 1, "doc_hash": "h",
         "ingest_time": 0}
        for i, (source, doc_type, url, text) in enumerate(DOCS)
    ])  # fmt: skip
    return MilvusRetriever(cfg, 384, store=store)


def search(retriever, embedder, query, mode, flt=None, top_k=4):
    return retriever.retrieve(query, embedder.embed_queries([query])[0].tolist(), mode=mode, top_k=top_k, flt=flt)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_each_mode_ranks_the_right_passage_first(retriever, embedder, mode):
    hits = search(retriever, embedder, "HNSW graph neighbours M", mode)
    assert hits[0].source == "guide/index.html"
    assert [h.index for h in hits] == list(range(1, len(hits) + 1))
    assert all(h.score > 0 for h in hits) if mode != "dense" else hits[0].score > hits[-1].score


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_filters_apply_in_every_mode(retriever, embedder, mode):
    hits = search(retriever, embedder, "HNSW index Docker BM25", mode, RetrievalFilter(url_prefix="https://y/"))
    assert hits and {h.url for h in hits} <= {"https://y/bm25", "https://y/todo"}
    typed = search(retriever, embedder, "install docker", mode, RetrievalFilter(doc_type=["markdown", "text"]))
    assert typed and {h.doc_type for h in typed} <= {"markdown", "text"}


def test_filter_expressions_are_quoted():
    assert filter_expr(None) == ""
    expr = filter_expr(RetrievalFilter(url_prefix='a"b', source_prefix="s/", doc_type=["html"]))
    assert expr == 'url like "a\\"b%" and source like "s/%" and doc_type in ["html"]'


def test_milvus_going_away_is_a_503(tmp_path, embedder):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(tmp_path),
                             "--host", "127.0.0.1", "--port", str(port)])  # fmt: skip
    wait_for_port(port, proc, "milvus-lite server")
    cfg = MilvusConfig(uri=f"http://127.0.0.1:{port}", collection="gone", timeout_s=3)
    store = MilvusChunkStore(cfg, 384)
    store.ensure_collection()
    retriever = MilvusRetriever(cfg, 384, store=store)
    proc.terminate()
    proc.wait(timeout=30)
    with pytest.raises(MilvusException) as err:
        search(retriever, embedder, "anything", "dense")
    error = from_milvus_error(err.value)
    assert error.status == 503 and "Milvus is unavailable" in error.message
