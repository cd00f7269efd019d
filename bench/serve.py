"""Serving latency and throughput: the RAG app against its own engine, in one run.

    python bench/serve.py [--corpus ../shared/corpus/milvus-docs] [--concurrency 1 8 32] [--rounds 3] [--max-tokens 64]

For each N it sends N concurrent streaming chat requests to the app over HTTP (the official openai client),
and the very same prompts (the messages the ingress builds: passages + question) straight to the engine's
LLMServer deployment through a Serve handle, with no retrieval; --rounds times, with other questions each
round and the two paths taking turns going first, pooling all rounds. It prints TTFT p50/p95, output tokens/s,
requests/s and failures for both, and the ratios. Targets on 2 cores: RAG TTFT p50 <= engine + 100 ms at
N = 1 and 8, no failures at N = 32, RAG throughput >= 0.9x the engine's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from openai import AsyncOpenAI

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest import free_port  # noqa: E402
from entrypoints.local_ray import init_local_ray  # noqa: E402
from ingest_jobs.ingest import run_ingest  # noqa: E402
from rag.config import RagConfig, parse_overrides  # noqa: E402
from rag.milvus_server import start_local, stop_local  # noqa: E402
from rag.prepare import prepare  # noqa: E402

QUESTIONS = [
    "How do I enable RBAC and create a user?",
    "What is the chunk cache?",
    "How do I configure object storage?",
    "What does the HNSW parameter M mean?",
    "How do I upgrade a Milvus cluster with Helm?",
    "What are the limits on collection names?",
    "How does BM25 full-text search work?",
    "How do I back up a collection?",
    "What consistency levels does Milvus offer?",
    "How do I monitor Milvus with Prometheus?",
    "What is a partition key?",
    "How do I load a collection?",
    "What index types does Milvus support?",
    "How do I deploy Milvus on Kubernetes?",
    "What is a sparse vector?",
    "How do I use a scalar filter in search?",
    "What is the maximum vector dimension?",
    "How do I configure message storage with Kafka?",
    "What is Milvus Lite?",
    "How do I do a hybrid search?",
    "What is range search?",
    "How do I insert data into a collection?",
    "What is a dynamic field?",
    "How do I configure resource groups?",
    "What does compaction do?",
    "How do I use the GPU index?",
    "How do I authenticate users?",
    "What are the Milvus components?",
    "How do I drop a collection?",
    "What is grouping search?",
    "How do I enable TLS?",
    "What metric types are supported?",
]


@dataclass
class Result:
    ttft_s: list[float] = field(default_factory=list)
    tokens: int = 0
    requests: int = 0
    failures: int = 0
    wall_s: float = 0.0

    def add(self, other: Result) -> None:
        self.ttft_s += other.ttft_s
        self.tokens += other.tokens
        self.requests += other.requests
        self.failures += other.failures
        self.wall_s += other.wall_s

    def row(self, label: str, n: int) -> str:
        p50 = statistics.median(self.ttft_s) * 1000 if self.ttft_s else float("nan")
        p95 = statistics.quantiles(self.ttft_s, n=20)[-1] * 1000 if len(self.ttft_s) > 1 else p50
        return (
            f"{label:6s} N={n:<3d} TTFT p50 {p50:7.0f} ms  p95 {p95:7.0f} ms  {self.tokens / self.wall_s:7.1f} "
            f"tok/s  {self.requests / self.wall_s:6.2f} req/s  failures {self.failures}"
        )

    @property
    def p50(self) -> float:
        return statistics.median(self.ttft_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


async def rag_tokens(client: AsyncOpenAI, question: str, max_tokens: int):
    """Yields once per content token of a streamed chat through the app's HTTP endpoint."""
    stream = await client.chat.completions.create(
        model="rag",
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            yield


async def engine_tokens(handle, request):
    """Yields once per content token of the same chat sent straight to the LLMServer deployment."""
    async for items in handle.chat.remote(request):
        for item in items:
            if not isinstance(item, str):
                raise RuntimeError(f"engine error: {item}")
            if item.startswith("data: {"):
                delta = json.loads(item[6:])["choices"]
                if delta and delta[0]["delta"].get("content"):
                    yield


async def retrieval_latency(client: httpx.AsyncClient, questions: list[str]) -> list[float]:
    """Seconds per /v1/retrieve call when all arrive at once: the part of RAG's TTFT that is not the engine."""

    async def one(question: str) -> float:
        started = time.perf_counter()
        response = await client.post("/retrieve", json={"query": question})
        response.raise_for_status()
        return time.perf_counter() - started

    return list(await asyncio.gather(*(one(q) for q in questions)))


PROCESS_LABELS = {  # substring of a process's command line -> label
    "RagIngress": "ingress",
    "rag:QueryEmbedder": "embedder",
    "rag:Retriever": "retriever",
    "ProxyActor": "proxy",
    "milvus_lite": "milvus-lite",
    "LLMServer": "llm-replica",
    "EngineCore": "engine-core",
    "VLLM": "engine-worker",
    "bench/serve.py": "bench-client",
}


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far per labelled process: where a request's work goes on this host."""
    import psutil

    totals: dict[str, float] = {}
    for proc in psutil.process_iter(["cmdline", "cpu_times"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        label = next((v for k, v in PROCESS_LABELS.items() if k in cmdline), None)
        if label and proc.info["cpu_times"]:
            totals[label] = totals.get(label, 0.0) + proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return totals


def add_cpu_since(before: dict[str, float], totals: dict[str, float]) -> None:
    for label, seconds in cpu_seconds().items():
        totals[label] = totals.get(label, 0.0) + seconds - before.get(label, 0.0)


def cpu_row(totals: dict[str, float], requests: int) -> str:
    per_request = {k: v / requests * 1000 for k, v in totals.items()}
    return "  ".join(f"{k} {v:.0f}" for k, v in sorted(per_request.items(), key=lambda kv: -kv[1]) if v >= 0.5)


async def measure(tokens, result: Result) -> None:
    """Times one streamed request into ``result``: TTFT to the first content token, tokens, failures."""
    started = time.perf_counter()
    first = None
    try:
        async for _ in tokens:
            first = first or time.perf_counter()
            result.tokens += 1
    except Exception as e:
        print(f"  failure: {type(e).__name__}: {e}", file=sys.stderr)
        first = None
    if first is None:
        result.failures += 1
    else:
        result.ttft_s.append(first - started)


async def run_batch(make, n: int) -> Result:
    result = Result(requests=n)
    started = time.perf_counter()
    await asyncio.gather(*(make(i, result) for i in range(n)))
    result.wall_s = time.perf_counter() - started
    return result


def engine_messages(cfg: RagConfig, base_url: str, tokenizer, question: str, max_tokens: int) -> list[dict]:
    """The exact messages the ingress sends the engine: the same retrieval, the same prompt builder."""
    from rag.search import Source
    from serve_app.prompt import PromptBuilder

    data = httpx.post(f"{base_url}/retrieve", json={"query": question}, timeout=60).json()["data"]
    builder = PromptBuilder(tokenizer, max_model_len=cfg.llm.max_model_len)
    messages, _ = builder.build(
        [{"role": "user", "content": question}], [Source(**d) for d in data], max_tokens=max_tokens
    )
    return messages


def warm_up_retrieval(base_url: str, rounds: int = 3) -> None:
    """Every question in every mode, a few times over. milvus-lite finishes building a freshly written
    collection's indexes in the background during its first few hundred searches, and searches meanwhile
    can take seconds; a deployed service has long passed that point, so the bench does too."""
    timings = []
    for _ in range(rounds):
        for search in ("dense", "bm25", "hybrid"):
            for question in QUESTIONS:
                started = time.perf_counter()
                httpx.post(f"{base_url}/retrieve", json={"query": question, "search": search}, timeout=120)
                timings.append(time.perf_counter() - started)
    last = statistics.median(timings[-len(QUESTIONS) :]) * 1000
    print(
        f"retrieval warm-up: {len(timings)} searches, slowest {max(timings) * 1000:.0f} ms, "
        f"last round p50 {last:.0f} ms",
        flush=True,
    )


async def main_async(
    cfg: RagConfig, base_url: str, concurrency: list[int], rounds: int, max_tokens: int, model_source: str
):
    from ray import serve
    from transformers import AutoTokenizer

    from serve_app.protocol import ChatCompletionRequest

    tokenizer = AutoTokenizer.from_pretrained(model_source)
    llm_name = next(name for name in serve.status().applications["rag"].deployments if name.startswith("LLMServer:"))
    llm = serve.get_deployment_handle(llm_name, app_name="rag")
    handle = llm.options(stream=True)
    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    prompts = [engine_messages(cfg, base_url, tokenizer, q, max_tokens) for q in QUESTIONS]

    def engine_req(i: int):
        return ChatCompletionRequest.model_validate(
            {
                "model": cfg.llm.model_id,
                "messages": prompts[i % len(prompts)],
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": True,
            }
        )

    warm_up_retrieval(base_url)
    await run_batch(lambda i, r: measure(rag_tokens(client, QUESTIONS[i], max_tokens), r), 2)  # warm-up both paths
    await run_batch(lambda i, r: measure(engine_tokens(handle, engine_req(i)), r), 2)
    http = httpx.AsyncClient(base_url=base_url, timeout=300)
    for n in concurrency:
        seconds, rag, engine, round_diffs = [], Result(), Result(), []
        cpu_retrieve, cpu_rag = {}, {}
        for r in range(rounds):  # each round other questions; the two paths take turns going first

            def question(i: int, r: int = r, n: int = n) -> int:
                return (r * n + i) % len(QUESTIONS)

            before = cpu_seconds()
            seconds += await retrieval_latency(http, [QUESTIONS[question(i)] for i in range(n)])
            add_cpu_since(before, cpu_retrieve)
            this_round = {}
            for path in ("rag", "engine") if r % 2 == 0 else ("engine", "rag"):
                # Both paths send the same prompts: empty vLLM's prefix cache first, or the second gets free prefill.
                await llm.reset_prefix_cache.remote()
                if path == "rag":
                    tokens = lambda i: rag_tokens(client, QUESTIONS[question(i)], max_tokens)  # noqa: E731
                else:
                    tokens = lambda i: engine_tokens(handle, engine_req(question(i)))  # noqa: E731
                before = cpu_seconds()
                this_round[path] = await run_batch(lambda i, res, tokens=tokens: measure(tokens(i), res), n)
                (rag if path == "rag" else engine).add(this_round[path])
                if path == "rag":
                    add_cpu_since(before, cpu_rag)
            if this_round["rag"].ttft_s and this_round["engine"].ttft_s:
                round_diffs.append((this_round["rag"].p50 - this_round["engine"].p50) * 1000)
        print(
            f"retrieve N={n:<3d} p50 {statistics.median(seconds) * 1000:7.0f} ms  max {max(seconds) * 1000:7.0f} ms"
            f"  (/v1/retrieve alone, {rounds} x {n} at once)"
        )
        print(f"  CPU ms per request, /v1/retrieve: {cpu_row(cpu_retrieve, rounds * n)}")
        print(f"  CPU ms per request, RAG chat:     {cpu_row(cpu_rag, rounds * n)}")
        print(rag.row("rag", n))
        print(engine.row("engine", n))
        if rag.ttft_s and engine.ttft_s:
            print(
                f"       N={n:<3d} TTFT p50 rag - engine = {(rag.p50 - engine.p50) * 1000:+.0f} ms (target <= +100)"
                f"   throughput rag/engine = {rag.tokens_per_s / engine.tokens_per_s:.2f} (target >= 0.90)",
                flush=True,
            )
            print(f"       N={n:<3d} TTFT p50 rag - engine per round: {', '.join(f'{d:+.0f}' for d in round_diffs)} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_app_arguments(parser)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per N; figures pool all rounds")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    from serve_app.llm import prepare_model_source

    cfg = bench_config(args, collection="bench_serve")
    with started_app(cfg) as base_url:
        print(
            f"stream_batching_interval_ms={cfg.llm.stream_batching_interval_ms}, max_tokens={args.max_tokens}",
            flush=True,
        )
        asyncio.run(
            main_async(cfg, base_url, args.concurrency, args.rounds, args.max_tokens, prepare_model_source(cfg.llm))
        )


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every serving bench takes: what to ingest, the config, where Milvus keeps its data."""
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus" / "milvus-docs"))
    parser.add_argument("--config", default=str(REPO / "configs" / "local.yaml"))
    parser.add_argument("--milvus-dir", help="keep Milvus data here between runs (a re-run skips unchanged pages)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")


def bench_config(args: argparse.Namespace, *, collection: str) -> RagConfig:
    """The config with the bench's corpus, a milvus-lite server and a Serve port of its own."""
    overrides = parse_overrides(args.set)
    milvus = {
        "uri": f"http://127.0.0.1:{free_port()}",
        "collection": collection,
        "local_data_dir": args.milvus_dir or tempfile.mkdtemp(prefix="bench-milvus-"),
    }
    return RagConfig.load(
        args.config,
        {
            **overrides,
            "corpus": {"path": args.corpus},
            "milvus": {**overrides.get("milvus", {}), **milvus},
            "serve": {**overrides.get("serve", {}), "port": free_port()},
        },
    )


@contextlib.contextmanager
def started_app(cfg: RagConfig) -> Iterator[str]:
    """The config's corpus ingested into a milvus-lite server of its own and the app served on a local Ray
    cluster; yields the app's /v1 URL, and stops all of it after."""
    from ray import serve

    from serve_app.app import prepare_app

    start_local(cfg.milvus)
    try:
        init_local_ray(log_to_driver=False)
        summary = run_ingest(prepare(cfg, corpus=True))
        print(f"ingested {summary.documents} documents, {summary.collection_rows} chunks", flush=True)
        started = time.perf_counter()
        serve.start(http_options={"host": "127.0.0.1", "port": cfg.serve.port})
        serve.run(prepare_app(cfg), name="rag", route_prefix="/")
        print(f"app ready in {time.perf_counter() - started:.0f} s", flush=True)
        yield f"http://127.0.0.1:{cfg.serve.port}/v1"
        serve.shutdown()
    finally:
        stop_local(cfg.milvus)


if __name__ == "__main__":
    main()
