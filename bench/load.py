"""Load: 64 streaming users against the whole app for 60 s (locust, SSE), on loopback.

    python bench/load.py [--users 64] [--seconds 60] [--max-tokens 64] [--corpus ../shared/corpus/milvus-docs]

It ingests the corpus, serves the app on a local Ray cluster with an API key, and runs locust headless with
users that stream answers back to back (bench/locustfile.py). It prints requests, successes, 503s (the app
refusing past its queues, with Retry-After), other errors (must be 0), TTFT p50/p95, completion time p95 and the
peak memory (RSS) of the app's processes: Ray's, Serve's replicas, the engine, milvus-lite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serve import QUESTIONS, add_app_arguments, bench_config, started_app  # noqa: E402

# The app's processes on this host: Ray's and Serve's, the replicas and the engine, and milvus-lite.
APP_PROCESS_MARKERS = ("ray::", "raylet", "gcs_server", "dashboard", "VLLM", "milvus_lite", "milvus-lite")


def app_rss_bytes() -> int:
    import psutil

    total = 0
    for proc in psutil.process_iter(["cmdline", "name", "memory_info"]):
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
        if any(marker in text for marker in APP_PROCESS_MARKERS) and proc.info["memory_info"]:
            total += proc.info["memory_info"].rss
    return total


class PeakMemory(threading.Thread):
    """Samples the app's total RSS every half second; ``peak`` is the largest sample."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.running = 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, app_rss_bytes())
            time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def report(records: list[dict], seconds: float, peak_bytes: int) -> None:
    ok = [r for r in records if r["status"] == 200 and r["error"] is None]
    refused = [r for r in records if r["status"] == 503]
    other = [r for r in records if r not in ok and r not in refused]
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    print(f"requests         {len(records)}  ({len(records) / seconds:.2f}/s over {seconds:.0f} s)")
    print(f"successes        {len(ok)}")
    print(f"503s             {len(refused)}  (refused past the queue, with Retry-After)")
    print(f"other errors     {len(other)}  (target 0)")
    for r in other[:5]:
        print(f"  {r['status']}: {r['error']}")
    if ttft:
        print(f"TTFT             p50 {percentile(ttft, 50) * 1000:.0f} ms  p95 {percentile(ttft, 95) * 1000:.0f} ms")
    if ok:
        print(f"completion time  p95 {percentile([r['seconds'] for r in ok], 95) * 1000:.0f} ms")
    print(f"peak memory      {peak_bytes / 2**30:.2f} GiB (RSS of the app's processes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_app_arguments(parser)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    api_key = "sk-load-" + os.urandom(8).hex()
    (work / "keys").write_text(api_key + "\n")
    args.set.append(f"serve.api_keys_file={work / 'keys'}")
    cfg = bench_config(args, collection="bench_load")
    with started_app(cfg) as base_url:
        print(
            f"users {args.users}, {args.seconds} s, max_tokens {args.max_tokens}; engine takes "
            f"{cfg.llm.replicas.max_ongoing_requests} at once, queue {cfg.llm.replicas.max_queued_requests}",
            flush=True,
        )
        records = work / "records.jsonl"
        env = {
            **os.environ,
            "RAG_LOAD_QUESTIONS": json.dumps(QUESTIONS),
            "RAG_LOAD_RECORDS": str(records),
            "RAG_LOAD_MAX_TOKENS": str(args.max_tokens),
            "RAG_LOAD_API_KEY": api_key,
        }
        command = [
            str(Path(sys.executable).parent / "locust"),
            "-f",
            str(REPO / "bench" / "locustfile.py"),
            "--headless",
            "--only-summary",
            "--host",
            base_url.removesuffix("/v1"),
            "--users",
            str(args.users),
            "--spawn-rate",
            str(args.users),
            "--run-time",
            f"{args.seconds}s",
            "--stop-timeout",
            "120",  # users finish the answer they are streaming; locust then stops
        ]
        memory = PeakMemory()
        memory.start()
        started = time.perf_counter()
        subprocess.run(command, env=env, check=False, timeout=args.seconds + 300, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        memory.running = False
        memory.join()
        report([json.loads(line) for line in records.read_text().splitlines()], elapsed, memory.peak)


if __name__ == "__main__":
    main()
