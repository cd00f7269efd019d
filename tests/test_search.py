"""MilvusRetriever, and the ingress' retrieval over it, without Ray: a real milvus-lite server, the real
embedder, hand-written rows."""

from __future__ import annotations

import asyncio
import os

import pytest
from pydantic import ValidationError
from pymilvus import MilvusException

from rag.config import EmbedderConfig, MilvusConfig, RagConfig, RetrievalConfig
from rag.embedder import SentenceTransformersEmbedder
from rag.milvus_server import start_local, stop_local
from rag.search import MilvusRetriever, RetrievalFilter, Search, Source, filter_expr, fuse_minmax, without_stop_words
from rag.store import MilvusChunkStore
from serve_app.errors import from_milvus_error
from serve_app.metrics import ServingMetrics
from serve_app.protocol import RetrieveRequest
from serve_app.services.retrieval import RetrievalService
from tests.conftest import answer_eventually, free_port

DOCS = [
    (
        "guide/install.md",
        "markdown",
        "https://x/install",
        "Install Milvus with Docker Compose and start the containers.",
    ),
    ("guide/index.html", "html", "https://x/index", "An HNSW index builds a graph; M sets the number of neighbours."),
    ("faq/bm25.html", "html", "https://y/bm25", "BM25 scores a keyword query by term frequency and document length."),
    ("notes/todo.txt", "text", "https://y/todo", "Remember to water the plants and buy coffee beans."),
]


@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformersEmbedder(EmbedderConfig())


def rows_for(embedder) -> list[dict]:
    vectors = embedder.embed_documents([d[3] for d in DOCS])
    return [
        {
            "id": f"c{i}",
            "text": text,
            "vector": vectors[i].tolist(),
            "doc_id": f"d{i}",
            "source": source,
            "url": url,
            "title": source,
            "heading": "H",
            "doc_type": doc_type,
            "chunk_index": 0,
            "chunk_count": 1,
            "page": 0,
            "doc_hash": "h",
            "ingest_time": 0,
        }
        for i, (source, doc_type, url, text) in enumerate(DOCS)
    ]


@pytest.fixture(scope="module")
def retriever(milvus_uri, embedder):
    cfg = MilvusConfig(uri=milvus_uri, collection="retriever_unit")
    store = MilvusChunkStore(cfg, 384)
    store.drop()
    store.ensure_collection()
    store.upsert(rows_for(embedder))
    return MilvusRetriever(cfg, 384, store=store)


def search(retriever, embedder, query, mode, flt=None, top_k=4):
    return retriever.retrieve(query, embedder.embed_queries([query])[0].tolist(), mode=mode, top_k=top_k, flt=flt)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_each_mode_ranks_the_right_passage_first(retriever, embedder, mode):
    hits = search(retriever, embedder, "HNSW graph neighbours M", mode)
    assert hits[0].source == "guide/index.html"
    assert [h.index for h in hits] == list(range(1, len(hits) + 1))
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    if mode == "bm25":
        assert all(s > 0 for s in scores)  # milvus-lite's negated BM25 is turned back into a score
    if mode == "hybrid":
        assert scores[0] <= 1.0 and all(s >= 0 for s in scores)  # min-max fusion scales each list to [0, 1]


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_filters_apply_in_every_mode(retriever, embedder, mode):
    hits = search(retriever, embedder, "HNSW index Docker BM25", mode, RetrievalFilter(url_prefix="https://y/"))
    assert hits and {h.url for h in hits} <= {"https://y/bm25", "https://y/todo"}
    typed = search(retriever, embedder, "install docker", mode, RetrievalFilter(doc_type=["markdown", "text"]))
    assert typed and {h.doc_type for h in typed} <= {"markdown", "text"}


def test_rrf_fusion_runs_in_milvus(retriever, embedder):
    rrf = MilvusRetriever(retriever.cfg, 384, RetrievalConfig(fusion="rrf", rrf_k=60), store=retriever.store)
    hits = search(rrf, embedder, "HNSW graph neighbours M", "hybrid")
    assert hits[0].source == "guide/index.html"
    assert hits[0].score == pytest.approx(2 / 61)  # first in both lists: 1/(60+1) twice


def test_bm25_can_leave_stop_words_out_of_the_query(retriever):
    plain = MilvusRetriever(retriever.cfg, 384, RetrievalConfig(bm25_stop_words=False), store=retriever.store)
    assert len(plain.retrieve("the HNSW and", None, mode="bm25", top_k=4)) > 1  # "the" and "and" match others
    # The fixture's retriever has the default settings, stop words dropped.
    assert [s.source for s in retriever.retrieve("the HNSW and", None, mode="bm25", top_k=4)] == ["guide/index.html"]
    only_stop_words = retriever.retrieve("to and the", None, mode="bm25", top_k=4)  # sent as it is
    assert only_stop_words and only_stop_words[0].source == "notes/todo.txt"
    assert (
        without_stop_words("How do I back up a collection? It's the one.") == "How do I back up collection? It's one."
    )


@pytest.mark.parametrize("fusion", ["minmax", "rrf"])
def test_a_batch_answers_each_search_as_alone(retriever, embedder, fusion):
    batched = MilvusRetriever(retriever.cfg, 384, RetrievalConfig(fusion=fusion), store=retriever.store)
    queries = ["HNSW graph neighbours M", "install docker compose", "BM25 keyword score", "plants coffee"]
    vectors = embedder.embed_queries(queries).tolist()
    searches = [
        Search(query, vector, mode, top_k, flt)
        for query, vector in zip(queries, vectors)
        for mode in ("dense", "bm25", "hybrid")
        for top_k, flt in ((4, None), (2, RetrievalFilter(url_prefix="https://y/")))
    ]
    answers = batched.retrieve_many(searches)
    assert len(answers) == len(searches) == 24
    assert all(answer for search, answer in zip(searches, answers) if search.flt is None)
    for search, answer in zip(searches, answers):
        alone = batched.retrieve(search.query, search.vector, mode=search.mode, top_k=search.top_k, flt=search.flt)
        assert all(s.text == DOCS[int(s.id[1:])][3] and s.url == DOCS[int(s.id[1:])][2] for s in answer), search
        assert [(s.id, s.index) for s in answer] == [(s.id, s.index) for s in alone], search
        assert [s.score for s in answer] == pytest.approx([s.score for s in alone], abs=1e-5), search  # float32 BLAS
        if search.flt:
            assert {s.url for s in answer} <= {"https://y/bm25", "https://y/todo"}


def test_a_failed_milvus_call_fails_only_the_questions_it_carried(retriever, embedder):
    vector = embedder.embed_queries(["HNSW graph neighbours M"])[0].tolist()
    good = Search("HNSW graph neighbours M", vector, "dense", 2)
    wrong_dim = Search("HNSW graph neighbours M", vector[:3], "dense", 3)  # its own Milvus call (another limit)
    half_failed = Search("HNSW graph neighbours M", vector[:3], "hybrid", 3)  # BM25 works, the dense half fails
    answers = retriever.retrieve_many([good, wrong_dim, good, half_failed])
    assert isinstance(answers[1], MilvusException) and isinstance(answers[3], MilvusException)
    assert len(answers[0]) == 2 and answers[0][0].id == "c1"  # the HNSW passage
    assert [s.id for s in answers[0]] == [s.id for s in answers[2]]
    with pytest.raises(MilvusException):
        retriever.retrieve(wrong_dim.query, wrong_dim.vector, mode="dense", top_k=3)


def test_the_ingress_retrieves_without_ray(retriever, embedder):
    """The retrieval service (the ingress' logic) over plain async callables: the real embedder and this retriever."""
    embedded: list[list[str]] = []

    async def embed(texts):
        embedded.append(texts)
        return embedder.embed_queries(texts).tolist()

    async def retrieve(query, vector, mode, top_k, flt):
        return retriever.retrieve(query, vector, mode=mode, top_k=top_k, flt=flt)

    service = RetrievalService(RagConfig(), embed=embed, retrieve=retrieve, metrics=ServingMetrics())
    for mode, embeds in (("bm25", 0), ("dense", 1), ("hybrid", 1)):
        embedded.clear()
        body = {"query": "HNSW graph neighbours M", "search": mode, "top_k": 2, "filter": {"url_prefix": "https://x/"}}
        result = asyncio.run(service.retrieve(RetrieveRequest.model_validate(body)))
        assert result["search"] == mode and result["data"][0]["id"] == "c1", result
        assert all(d["url"].startswith("https://x/") for d in result["data"]), result
        assert len(embedded) == embeds  # BM25 needs no query vector; the others embed once


def _source(id: str, score: float) -> Source:
    return Source(index=0, id=id, url=id, title="", heading="", source="", doc_type="text", score=score, text="")


def test_minmax_fusion_scales_each_list_and_weights_them():
    dense = [_source("a", 0.9), _source("b", 0.7), _source("c", 0.5)]
    bm25 = [_source("c", 12.0), _source("d", 8.0), _source("a", 4.0)]
    fused = fuse_minmax(dense, bm25, dense_weight=0.5, top_k=3)
    # a: 0.5*1 + 0.5*0 = 0.5; b: 0.5*0.5 = 0.25; c: 0.5*0 + 0.5*1 = 0.5; d: 0.5*0.5 = 0.25
    assert [(s.id, s.index) for s in fused][:2] in ([("a", 1), ("c", 2)], [("c", 1), ("a", 2)])
    assert [s.score for s in fused] == pytest.approx([0.5, 0.5, 0.25])
    only_dense = fuse_minmax(dense, bm25, dense_weight=1.0, top_k=2)
    assert [s.id for s in only_dense] == ["a", "b"]
    assert fuse_minmax([], [_source("x", -3.0)], dense_weight=0.5, top_k=5)[0].score == 0.5


def test_filter_expressions_are_quoted():
    assert filter_expr(None) == ""
    expr = filter_expr(RetrievalFilter(url_prefix='a"b', source_prefix="s/", doc_type=["html"]))
    assert expr == 'url like "a\\"b%" and source like "s/%" and doc_type in ["html"]'
    # A prefix's own wildcards are literal: "%" matches what starts with "%", not everything.
    wild = filter_expr(RetrievalFilter(url_prefix="100%", source_prefix="a_b"))
    assert wild == 'url like "100\\\\%%" and source like "a\\\\_b%"'
    with pytest.raises(ValidationError):
        RetrievalFilter(source_prefix="docs\\")


@pytest.mark.parametrize("fusion", ["minmax", "rrf"])  # two searches, or Milvus' hybrid_search
@pytest.mark.integration
def test_a_restarted_milvus_serves_the_retriever_that_ran_before(tmp_path, embedder, fusion):
    """The collection comes back released; the running retriever loads it again rather than failing every search
    (code 101, "in state 'released'") until its replica restarts."""
    cfg = MilvusConfig(
        uri=f"http://127.0.0.1:{free_port()}", collection="restarted", timeout_s=3, local_data_dir=str(tmp_path)
    )
    pid = start_local(cfg)
    # Own process group (a Ctrl-C to the caller spares it), same session: a new session is a new autogroup
    # for Linux's scheduler, where the CPU engine's nice no longer ranks it below the server.
    assert os.getpgid(pid) == pid and os.getsid(pid) == os.getsid(0)
    try:
        store = MilvusChunkStore(cfg, 384)
        store.ensure_collection()
        store.upsert(rows_for(embedder))
        store.flush()
        retriever = MilvusRetriever(cfg, 384, RetrievalConfig(fusion=fusion))
        assert search(retriever, embedder, "HNSW graph neighbours M", "hybrid")[0].source == "guide/index.html"
    finally:
        stop_local(cfg)
    start_local(cfg)
    try:
        hits = answer_eventually(  # meanwhile only gRPC reconnecting (its backoff is about a second)
            lambda: search(retriever, embedder, "HNSW graph neighbours M", "hybrid"),
            MilvusException,
            lambda e: "released" not in e.message,
            timeout_s=30,
            pause_s=0.5,
        )
        assert hits[0].source == "guide/index.html"
    finally:
        stop_local(cfg)


@pytest.mark.integration
def test_milvus_going_away_is_a_503(tmp_path, embedder):
    cfg = MilvusConfig(
        uri=f"http://127.0.0.1:{free_port()}", collection="gone", timeout_s=3, local_data_dir=str(tmp_path)
    )
    start_local(cfg)
    try:
        store = MilvusChunkStore(cfg, 384)
        store.ensure_collection()
        retriever = MilvusRetriever(cfg, 384, store=store)
    finally:
        stopped = stop_local(cfg)
    assert stopped
    with pytest.raises(MilvusException) as err:
        search(retriever, embedder, "anything", "dense")
    error = from_milvus_error(err.value)
    assert error.status == 503 and "Milvus is unavailable" in error.message


def test_a_collection_without_a_field_of_the_schema_is_refused_by_name(milvus_uri):
    """A collection created before the page field existed: neither written nor searched as if it had it."""
    from pymilvus import DataType, MilvusClient

    from rag.schema import FIELDS
    from rag.store import CollectionOutdated

    cfg = MilvusConfig(uri=milvus_uri, collection="before_pages")
    client = MilvusClient(uri=milvus_uri)
    if client.has_collection(cfg.collection):
        client.drop_collection(cfg.collection)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    for f in FIELDS:
        if f.name != "page":
            schema.add_field(
                f.name, f.dtype, is_primary=f.name == "id", **({"max_length": f.max_length} if f.max_length else {})
            )
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=384)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection(cfg.collection, schema=schema, index_params=index)
    store = MilvusChunkStore(cfg, 384)
    with pytest.raises(CollectionOutdated, match="collection 'before_pages' has no field page"):
        store.ensure_collection()
    with pytest.raises(CollectionOutdated, match="ingest into a new collection"):
        MilvusRetriever(cfg, 384)
    store.drop()


def test_a_pdf_passage_cites_its_page_and_links_to_it():
    entity = {"text": "t", "source": "m.pdf", "url": "https://x/m.pdf", "title": "M", "heading": "H"}
    pdf = MilvusRetriever._source(
        1, {"id": "a", "distance": 0.5, "entity": {**entity, "doc_type": "pdf", "page": 6}}, "dense"
    )
    assert pdf.page == 6 and pdf.url == "https://x/m.pdf#page=6"
    html = {**entity, "doc_type": "html", "page": 0, "url": "https://x/p.html"}
    web = MilvusRetriever._source(1, {"id": "b", "distance": 0.5, "entity": html}, "dense")
    assert web.page is None and web.url == "https://x/p.html"
