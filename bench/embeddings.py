"""The query embedder through HTTP: ``POST /v1/embeddings`` of one question, per embedder backend, in one run.

    python bench/embeddings.py [--backends torch/fp32 openvino/bf16] [--requests 200] [--corpus docs]

For each backend and precision it ingests the corpus (the project's own docs by default: the collection only
has to exist) into a collection of its own, serves the whole app on a local Ray cluster, and sends one question
at a time to /v1/embeddings with httpx, then 16 at once; it prints the latency p50/p95 of each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx
import ray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serve import add_app_arguments, bench_config, started_app  # noqa: E402

QUESTION = "How do I configure the chunk cache?"


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def concurrent(url: str, model: str, n: int, rounds: int) -> list[float]:
    async with httpx.AsyncClient(timeout=60) as client:

        async def one() -> float:
            started = time.perf_counter()
            response = await client.post(url, json={"model": model, "input": QUESTION})
            response.raise_for_status()
            return time.perf_counter() - started

        latencies: list[float] = []
        for _ in range(rounds):
            latencies += await asyncio.gather(*(one() for _ in range(n)))
        return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_app_arguments(parser)
    parser.set_defaults(corpus=str(REPO / "docs"))
    parser.add_argument("--backends", nargs="+", default=["torch/fp32", "openvino/bf16"], metavar="BACKEND/PRECISION")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    base_set = list(args.set)
    for backend_precision in args.backends:
        backend, precision = backend_precision.split("/")
        args.set = [*base_set, f"embedder.backend={backend}", f"embedder.precision={precision}"]
        cfg = bench_config(args, collection=f"bench_embed_{backend}_{precision}")
        with started_app(cfg) as base_url:
            url = f"{base_url}/embeddings"
            with httpx.Client(timeout=60) as client:
                for _ in range(20):  # warm-up
                    client.post(url, json={"model": cfg.embedder.model, "input": QUESTION}).raise_for_status()
                one_at_a_time = []
                for _ in range(args.requests):
                    started = time.perf_counter()
                    client.post(url, json={"model": cfg.embedder.model, "input": QUESTION}).raise_for_status()
                    one_at_a_time.append(time.perf_counter() - started)
            at_once = asyncio.run(concurrent(url, cfg.embedder.model, 16, max(1, args.requests // 16)))
        ray.shutdown()  # the next backend starts on a fresh cluster
        print(
            f"{backend}/{precision}: /v1/embeddings one question, one at a time p50 "
            f"{1000 * statistics.median(one_at_a_time):.1f} ms, p95 {1000 * percentile(one_at_a_time, 95):.1f} ms; "
            f"16 at once p50 {1000 * statistics.median(at_once):.1f} ms, p95 {1000 * percentile(at_once, 95):.1f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
