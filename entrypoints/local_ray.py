"""Local Ray clusters as the project ships them: the entry points (`rag demo`), the tests and the benchmarks
start Ray through here."""

from __future__ import annotations

from typing import Any

from serve_app.serve_yaml import SERVE_ENV

# Ray starts its workers at nice 15. The CPU engine runs llm.cpu_nice below its replica but stops at 19, so at 15
# replicas and engine ended up nearly equal and a burst of retrievals queued behind the engine's prefill. At 0
# the replicas outrank the engine as llm.cpu_nice means. The raylet reads it when it starts: `init_local_ray`
# passes it as Ray's system config, `make serve` and a cluster's `ray start` as RAY_START_ENV.
WORKER_NICENESS = 0
RAY_START_ENV = {"RAY_worker_niceness": str(WORKER_NICENESS)}


def init_local_ray(env_vars: dict[str, str] | None = None, **kwargs: Any):
    """``ray.init`` that starts a local cluster running this app as shipped: its workers at WORKER_NICENESS,
    SERVE_ENV (plus ``env_vars``) for the job's processes. Always a new cluster (Ray takes no system config
    when it joins one): on an existing cluster, start Ray with RAY_START_ENV and connect with ``ray.init``."""
    import ray

    return ray.init(
        address="local",
        runtime_env={"env_vars": {**(env_vars or {}), **SERVE_ENV}},
        _system_config={"worker_niceness": WORKER_NICENESS},
        **kwargs,
    )
