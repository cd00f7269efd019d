"""The services and their FastAPI app without Ray: stand-in callables for the embedder, the retriever and the engine
(vLLM's stream shapes as LLMServer yields them), the real prompt builder, and a metrics recorder."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from rag.api_keys import read_api_keys
from rag.config import RagConfig
from rag.search import Source
from serve_app.api import build_api
from serve_app.errors import APIError
from serve_app.metrics import ServingMetrics
from serve_app.prompt import PromptBuilder
from serve_app.protocol import ChatRequest
from serve_app.services import Services

SOURCE = Source(
    index=1,
    id="c1",
    url="https://milvus.io/docs/rbac.md",
    title="RBAC",
    heading="Users",
    source="rbac.html",
    doc_type="html",
    score=0.9,
    text="Milvus grants privileges to roles.",
)


def event(**fields: Any) -> str:
    return f"data: {json.dumps({'id': 'x', 'object': 'chat.completion.chunk', 'model': 'rag', **fields})}\n\n"


def vllm_stream(continuous_usage: bool = False) -> list[list[str]]:
    """What LLMServer's chat yields when streaming with include_usage: batches of SSE strings."""
    usage = {"prompt_tokens": 120, "completion_tokens": 2, "total_tokens": 122}
    every = {"usage": {"prompt_tokens": 120, "completion_tokens": 1, "total_tokens": 121}} if continuous_usage else {}
    return [
        [
            event(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}], **every),
            event(choices=[{"index": 0, "delta": {"content": "Roles"}}], **every),
        ],
        [event(choices=[{"index": 0, "delta": {"content": " [1]"}, "finish_reason": "stop"}], **every)],
        [event(choices=[], usage=usage), "data: [DONE]\n\n"],
    ]


class Recorder(ServingMetrics):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in {"request", "error", "retrieval", "passages_returned", "first_token", "usage"}:

            def record(*args: Any) -> None:
                self.calls.append((name, args))
                attr(*args)

            return record
        return attr

    def of(self, name: str) -> list[tuple]:
        return [args for called, args in self.calls if called == name]


@pytest.fixture(scope="module")
def prompt(smollm2_dir) -> PromptBuilder:
    return PromptBuilder(AutoTokenizer.from_pretrained(smollm2_dir), max_model_len=2048)


def service(
    prompt: PromptBuilder,
    *,
    stream: list[list[str]] | None = None,
    embed=None,
    retrieve=None,
    generate=None,
    ready_timeout_s: float = 10,
    serve: dict[str, Any] | None = None,
) -> tuple[Services, Recorder, list[Any]]:
    engine_requests: list[Any] = []

    async def default_embed(texts):
        return [[0.1] * 384 for _ in texts]

    async def count_tokens(texts):
        return sum(len(t.split()) for t in texts)

    async def default_retrieve(query, vector, mode, top_k, flt):
        return [SOURCE]

    async def default_generate(request):
        engine_requests.append(request)
        for batch in stream or []:
            yield batch

    metrics = Recorder()
    cfg = RagConfig.load(None, {"serve": {"ready_timeout_s": ready_timeout_s, **(serve or {})}})
    rag = Services.create(
        cfg,
        embed=embed or default_embed,
        count_tokens=count_tokens,
        retrieve=retrieve or default_retrieve,
        generate=generate or default_generate,
        prompt=prompt,
        metrics=metrics,
    )
    return rag, metrics, engine_requests


def chat(rag: Services, **extra: Any) -> list[dict]:
    async def run() -> list[str]:
        body = {"model": "rag", "messages": [{"role": "user", "content": "Who grants privileges?"}], **extra}
        return [chunk async for chunk in await rag.chat.chat(ChatRequest.model_validate(body))]

    text = "".join(asyncio.run(run()))
    return [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: {")]


def test_a_stream_counts_the_engines_usage_and_hides_it_unless_asked(prompt):
    rag, metrics, engine_requests = service(prompt, stream=vllm_stream())
    events = chat(rag, stream=True)
    assert engine_requests[0].stream_options.include_usage  # asked of the engine either way
    assert all(e["choices"] for e in events)  # the usage event is not the client's
    assert events[0]["sources"][0]["id"] == "c1"
    assert metrics.of("usage") == [(120, 2)]
    assert len(metrics.of("first_token")) == 1 and metrics.of("passages_returned") == [(1,)]
    assert metrics.of("retrieval")[0][0] == "hybrid"


def test_a_client_that_asks_for_usage_keeps_its_own_stream_options(prompt):
    rag, metrics, engine_requests = service(prompt, stream=vllm_stream(continuous_usage=True))
    events = chat(rag, stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True})
    options = engine_requests[0].stream_options
    assert options.include_usage and options.continuous_usage_stats
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 2
    assert metrics.of("usage") == [(120, 2)]  # the final event only, not every chunk's running count


def test_readiness_names_the_parts_that_do_not_answer(prompt):
    searched: list[list[float]] = []

    async def retrieve(query, vector, mode, top_k, flt):
        searched.append(vector)
        return [SOURCE]

    ok, _, _ = service(prompt, retrieve=retrieve, stream=[[object()]])
    assert asyncio.run(ok.health.ready())["parts"] == {"embedder": "ok", "milvus": "ok", "engine": "ok"}
    assert searched == [[0.1] * 384]  # Milvus is probed with the embedder's own answer

    async def broken_embed(texts):
        raise RuntimeError("model not loaded")

    async def slow_generate(request):
        await asyncio.sleep(5)
        yield object()

    down, metrics, _ = service(prompt, embed=broken_embed, generate=slow_generate, ready_timeout_s=0.2)
    with pytest.raises(APIError) as err:
        asyncio.run(down.health.ready())
    assert err.value.status == 503
    assert err.value.message == (
        "not ready: embedder: RuntimeError: model not loaded; milvus: not tried (no query vector); engine: TimeoutError"
    )


def test_requests_are_counted_by_route_template_and_status(prompt):
    rag, metrics, _ = service(prompt)
    client = TestClient(build_api(rag))
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/nope").status_code == 404
    assert client.post("/v1/chat/completions", content=b"{not json").status_code == 400
    assert client.post("/v1/retrieve", json={"query": "x", "top_k": 0}).status_code == 400
    assert metrics.of("request") == [
        ("/healthz", 200),
        ("unmatched", 404),
        ("/v1/chat/completions", 400),
        ("/v1/retrieve", 400),
    ]
    assert [kind for (kind,) in metrics.of("error")] == ["invalid_request_error"] * 3
    too_long = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "word " * 3000}]})
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"


def test_a_message_that_parses_as_another_kind_is_a_400(prompt):
    # vLLM's message union takes gpt-oss Harmony messages (author, recipient) too, as objects (schemathesis found it).
    client = TestClient(build_api(service(prompt)[0]))
    harmony = {"author": {"role": "user"}, "recipient": "x", "content": []}
    response = client.post("/v1/chat/completions", json={"messages": [user(), harmony]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "messages.1" and "role and a content" in response.text


def test_api_keys_guard_every_route_but_liveness(prompt, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# the team's keys\nkey-one\n\nkey-two\n")
    rag, metrics, _ = service(prompt, stream=vllm_stream())
    client = TestClient(build_api(rag, read_api_keys(str(keys))))
    body = {"model": "rag", "messages": [{"role": "user", "content": "hi"}]}
    assert client.get("/healthz").status_code == 200
    for headers in (
        {},
        {"Authorization": "Bearer key-thre"},
        {"Authorization": "key-one"},
        {"Authorization": "Bearer "},
    ):
        for path, method in (("/v1/chat/completions", "post"), ("/v1/models", "get"), ("/readyz", "get")):
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
            error = response.json()["error"]
            assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
            assert "key-" not in response.text  # nothing of a key is echoed
    assert client.get("/v1/models", headers={"Authorization": "Bearer key-two"}).status_code == 200
    assert client.get("/v1/models", headers={"Authorization": "bearer  key-one "}).status_code == 200
    assert ("/healthz", 200) in metrics.of("request") and ("unmatched", 401) in metrics.of("request")


def test_a_collection_embedded_otherwise_is_a_500_that_says_what_to_do(prompt):
    from rag.store import EmbedderMismatch

    async def mismatched(query, vector, mode, top_k, flt):
        raise EmbedderMismatch("collection 'c' was embedded with m|torch|fp32 but this config embeds with m|x|y")

    rag, metrics, _ = service(prompt, retrieve=mismatched)
    client = TestClient(build_api(rag))
    for path, body in (
        ("/v1/retrieve", {"query": "q"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}]}),
    ):
        response = client.post(path, json=body)
        assert response.status_code == 500 and "retry-after" not in response.headers  # retrying will not help
        error = response.json()["error"]
        assert error["code"] == "embedder_mismatch" and "m|torch|fp32" in error["message"], error
        assert error["type"] == "server_error"


def test_the_chat_page_and_its_files_are_public_and_lock_down_scripts(prompt, tmp_path):
    """The page loads without a key (it asks for one when the API answers 401); the API behind it does not. The
    page may run only its own script file, and no path leaves the static folder."""
    keys = tmp_path / "keys"
    keys.write_text("key-one\n")
    rag, _, _ = service(prompt)
    client = TestClient(build_api(rag, read_api_keys(str(keys))))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for name, kind in (("chat.js", "javascript"), ("chat.css", "text/css")):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"], name
        assert f"static/{name}" in page.text
    assert "innerHTML" not in client.get("/static/chat.js").text  # text goes in as text
    key = {"Authorization": "Bearer key-one"}
    for other in ("/static/%2e%2e/ingress.py", "/static/..%2fingress.py", "/static/index.html", "/static/"):
        response = client.get(other, headers=key)  # only the two assets; the page only at /, with its CSP
        assert response.status_code == 404 and "RagService" not in response.text, other
    assert client.get("/static/chat.js").headers["x-content-type-options"] == "nosniff"
    assert client.get("/v1/models").status_code == 401
    assert "/" not in client.get("/openapi.json", headers={"Authorization": "Bearer key-one"}).json()["paths"]


def test_a_keys_file_without_keys_is_an_error_not_an_open_endpoint(tmp_path):
    from rag.config import ConfigError

    (tmp_path / "empty").write_text("# none yet\n\n")
    for path in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(ConfigError, match="api_keys_file"):
            read_api_keys(str(path))


def test_open_endpoint_warning_only_beyond_loopback_without_keys():
    from serve_app.serve_yaml import open_endpoint_warning

    cfg = RagConfig.load(None)
    assert open_endpoint_warning(cfg, "127.0.0.1") is None
    assert "no API keys" in (open_endpoint_warning(cfg, "0.0.0.0") or "")
    assert open_endpoint_warning(RagConfig.load(None, {"serve": {"api_keys_file": "/k"}}), "0.0.0.0") is None


def test_a_body_past_the_limit_is_refused_before_it_is_read(prompt):
    parsed = []
    rag, _, _ = service(prompt, serve={"limits": {"max_body_bytes": 1000}})
    original = rag.chat.parse
    rag.chat.parse = lambda request: parsed.append(request) or original(request)  # type: ignore[method-assign]
    client = TestClient(build_api(rag))
    big = {"model": "rag", "messages": [{"role": "user", "content": "x" * 2000}]}
    declared = client.post("/v1/chat/completions", json=big)
    assert declared.status_code == 413 and "serve.limits.max_body_bytes" in declared.json()["error"]["message"]

    def chunked():  # no Content-Length: refused once the bytes read pass the limit
        yield b'{"model": "rag", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"x" * 100

    streamed = client.post("/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "limit_exceeded"
    assert parsed == []


def limits_client(prompt) -> TestClient:
    limits = {"max_messages": 3, "max_message_chars": 50, "max_tokens": 64, "max_top_k": 10, "max_filter_chars": 40}
    rag, _, _ = service(prompt, stream=vllm_stream(), serve={"limits": {**limits, "max_embedding_inputs": 4}})
    return TestClient(build_api(rag))


def user(text: str = "hi") -> dict[str, str]:
    return {"role": "user", "content": text}


@pytest.mark.parametrize(
    ("path", "body", "limit"),
    [
        ("/v1/chat/completions", {"messages": [user()] * 4}, "max_messages"),
        ("/v1/chat/completions", {"messages": [user("x" * 51)]}, "max_message_chars"),
        ("/v1/chat/completions", {"messages": [user()], "max_tokens": 65}, "max_tokens"),
        ("/v1/chat/completions", {"messages": [user()], "max_completion_tokens": 65}, "max_tokens"),
        ("/v1/chat/completions", {"messages": [user()], "top_k": 11}, "max_top_k"),
        ("/v1/chat/completions", {"messages": [user()], "filter": {"url_prefix": "x" * 40}}, "max_filter_chars"),
        ("/v1/retrieve", {"query": "x" * 51}, "max_message_chars"),
        ("/v1/retrieve", {"query": "x", "top_k": 11}, "max_top_k"),
        ("/v1/embeddings", {"input": ["a"] * 5}, "max_embedding_inputs"),
        ("/v1/embeddings", {"input": "x" * 51}, "max_message_chars"),
    ],
)
def test_each_limit_is_a_400_naming_it(prompt, path, body, limit):
    response = limits_client(prompt).post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "limit_exceeded" and f"serve.limits.{limit}" in error["message"]


def test_within_the_limits_is_answered(prompt):
    client = limits_client(prompt)
    response = client.post(
        "/v1/chat/completions", json={"messages": [user()] * 3, "max_tokens": 64, "top_k": 10, "stream": True}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),  # vLLM's own validator refuses it: a 400, not a 500
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"use_beam_search": True}, "use_beam_search"),
        ({"chat_template": "{{ 'pwned' }}"}, "chat_template"),
        ({"continue_final_message": True, "add_generation_prompt": False}, "add_generation_prompt"),
        ({"priority": -10}, "priority"),
    ],
)
def test_parameters_that_would_change_the_answer_are_refused(prompt, extra, param):
    rag, _, engine_requests = service(prompt, stream=vllm_stream())
    response = TestClient(build_api(rag)).post("/v1/chat/completions", json={"messages": [user()], **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["code"] == ("unsupported_parameter" if param != "tool_choice" else None)
    assert engine_requests == []


def test_their_defaults_pass_and_reach_the_engine_as_vllms_own_request(prompt):
    from serve_app.protocol import ChatCompletionRequest

    rag, _, engine_requests = service(prompt, stream=vllm_stream())
    body = {"messages": [user()], "n": 1, "tool_choice": "none", "echo": False, "top_k": 2, "search": "bm25"}
    body["stream"] = True
    response = TestClient(build_api(rag)).post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    (sent,) = engine_requests
    assert type(sent) is ChatCompletionRequest and sent.top_k is None  # our top_k counts passages, not samples
    assert sent.model == "rag" and sent.max_tokens == 256 and "search" not in sent.model_fields_set


def test_embeddings_name_their_model_and_count_tokens(prompt):
    rag, _, _ = service(prompt)
    client = TestClient(build_api(rag))
    model = rag.cfg.embedder.model
    assert {m["id"] for m in client.get("/v1/models").json()["data"]} == {"rag", model}
    response = client.post("/v1/embeddings", json={"model": model, "input": ["two words", "and three more"]})
    assert response.status_code == 200, response.text
    assert response.json()["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    unknown = client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_the_openapi_schema_describes_the_typed_api(prompt):
    rag, _, _ = service(prompt)
    schema = TestClient(build_api(rag)).get("/openapi.json").json()
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatRequest")
    assert {"top_k", "search", "filter", "messages"} <= set(
        schema["components"]["schemas"]["ChatRequest"]["properties"]
    )
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    for status in ("400", "401", "404", "413", "503"):
        assert chat["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    embeddings = schema["paths"]["/v1/embeddings"]["post"]["responses"]["200"]["content"]["application/json"]
    assert embeddings["schema"]["$ref"].endswith("/EmbeddingsResponse")
    assert "422" not in json.dumps(schema["paths"])  # FastAPI's own; this API answers OpenAI's 400


def test_validation_errors_are_openai_400s_not_fastapis_422(prompt):
    rag, _, _ = service(prompt)
    client = TestClient(build_api(rag))
    bodies = (
        [1, 2],
        {"messages": "hi"},
        {"messages": None},
        {"messages": [user()], "temperature": "hot"},
        {"query": 5},
    )
    for body in bodies:
        response = client.post("/v1/chat/completions" if "query" not in body else "/v1/retrieve", json=body)
        assert response.status_code == 400, response.text
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_rag_ready_sends_the_configs_key(prompt, tmp_path):
    """`rag ready --timeout 0` is the Kubernetes readiness probe: one GET /readyz with the config's first key."""
    import threading

    import uvicorn

    from entrypoints.cli import main as rag_main
    from tests.conftest import free_port

    keys = tmp_path / "keys"
    keys.write_text("sk-probe\n")
    rag, _, _ = service(prompt, stream=[[object()]])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_api(rag, ["sk-probe"]), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        assert rag_main(["ready", "--url", url, "--timeout", "0", "--set", f"serve.api_keys_file={keys}"]) == 0
        assert rag_main(["ready", "--url", url, "--timeout", "0"]) == 1  # no key: 401, not ready
    finally:
        server.should_exit = True
        thread.join(10)
