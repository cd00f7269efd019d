"""The embedder's cold start: what every ingest embedding actor and every QueryEmbedder replica pays.

    python bench/embedder_startup.py [--backends torch/fp32 openvino/fp32] [--rounds 3]

For each backend and precision, ``--rounds`` fresh Python processes each import the embedder, load it (the
OpenVINO export is built once beforehand, as ``prepare_embedder`` does in the driver) and embed one question. It
prints the median seconds from the process's first import to that vector, its peak RSS, and whether torch was
imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag.config import RagConfig  # noqa: E402
from rag.embedder import prepare_embedder  # noqa: E402

CHILD = """
import json, resource, sys, time
started = time.perf_counter()
from rag.config import EmbedderConfig
from rag.embedder import SentenceTransformersEmbedder
embedder = SentenceTransformersEmbedder(EmbedderConfig.model_validate_json(sys.argv[1]), num_threads=2)
embedder.embed_queries(["How do I configure the chunk cache?"])
print(json.dumps({
    "seconds": time.perf_counter() - started,
    "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "torch": "torch" in sys.modules,
}))
"""


def cold_start(embedder_json: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ran = subprocess.run(
        [sys.executable, "-c", CHILD, embedder_json], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(ran.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["torch/fp32", "openvino/fp32"], metavar="BACKEND/PRECISION")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", default=str(REPO / "configs" / "local.yaml"))
    args = parser.parse_args()

    base = RagConfig.load(args.config).embedder
    print(f"machine: {os.cpu_count()} CPUs; {args.rounds} fresh processes per backend, medians")
    print(f"{'backend':<16} {'ready s':>8} {'peak RSS MiB':>13}  torch imported")
    for name in args.backends:
        backend, precision = name.split("/")
        cfg = prepare_embedder(base.model_copy(update={"backend": backend, "precision": precision}))
        runs = [cold_start(cfg.model_dump_json()) for _ in range(args.rounds)]
        seconds = statistics.median(r["seconds"] for r in runs)
        rss = statistics.median(r["rss_mib"] for r in runs)
        print(f"{name:<16} {seconds:>8.1f} {rss:>13.0f}  {runs[0]['torch']}")


if __name__ == "__main__":
    main()
