"""RagService and its FastAPI app without Ray: stand-in callables for the embedder, the retriever and the engine
(vLLM's stream shapes as LLMServer yields them), the real prompt builder, and a metrics recorder."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from rag.config import RagConfig
from rag.search import Source
from serve_app.errors import APIError
from serve_app.ingress import RagService, build_fastapi
from serve_app.metrics import ServingMetrics
from serve_app.prompt import PromptBuilder

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
) -> tuple[RagService, Recorder, list[Any]]:
    engine_requests: list[Any] = []

    async def default_embed(texts):
        return [[0.1] * 384 for _ in texts]

    async def default_retrieve(query, vector, mode, top_k, flt):
        return [SOURCE]

    async def default_generate(request):
        engine_requests.append(request)
        for batch in stream or []:
            yield batch

    metrics = Recorder()
    cfg = RagConfig.load(None, {"serve": {"ready_timeout_s": ready_timeout_s}})
    rag = RagService(
        cfg,
        embed=embed or default_embed,
        retrieve=retrieve or default_retrieve,
        generate=generate or default_generate,
        prompt=prompt,
        metrics=metrics,
    )
    return rag, metrics, engine_requests


def chat(rag: RagService, **extra: Any) -> list[dict]:
    async def run() -> list[str]:
        body = {"model": "rag", "messages": [{"role": "user", "content": "Who grants privileges?"}], **extra}
        return [chunk async for chunk in await rag.chat(body)]

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
    assert asyncio.run(ok.ready())["parts"] == {"embedder": "ok", "milvus": "ok", "engine": "ok"}
    assert searched == [[0.1] * 384]  # Milvus is probed with the embedder's own answer

    async def broken_embed(texts):
        raise RuntimeError("model not loaded")

    async def slow_generate(request):
        await asyncio.sleep(5)
        yield object()

    down, metrics, _ = service(prompt, embed=broken_embed, generate=slow_generate, ready_timeout_s=0.2)
    with pytest.raises(APIError) as err:
        asyncio.run(down.ready())
    assert err.value.status == 503
    assert err.value.message == (
        "not ready: embedder: RuntimeError: model not loaded; milvus: not tried (no query vector); engine: TimeoutError"
    )


def test_requests_are_counted_by_route_template_and_status(prompt):
    rag, metrics, _ = service(prompt)
    client = TestClient(build_fastapi(rag))
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
