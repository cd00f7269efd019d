"""``serve.deployment`` options from a deployment's replica settings: each Serve shell's ``get_deployment_options``
calls this with its own section of the config, as Ray's LLMServer builds its own from ``LLMConfig``."""

from __future__ import annotations

from typing import Any

from rag.config import ReplicaConfig


def backpressure_config(retry_after_s: int) -> dict[str, Any]:
    """Serve's answer to a request past a full queue: 503 with Retry-After."""
    return {"status_code": 503, "retry_after_s": retry_after_s}


def replica_options(replicas: ReplicaConfig, retry_after_s: int) -> dict[str, Any]:
    """The queue and the count: ``num_replicas`` when min == max, else ``autoscaling_config``; no resources."""
    options: dict[str, Any] = {
        "max_ongoing_requests": replicas.max_ongoing_requests,
        "max_queued_requests": replicas.max_queued_requests,
        "backpressure_config": backpressure_config(retry_after_s),
    }
    if replicas.min_replicas == replicas.max_replicas:
        options["num_replicas"] = replicas.min_replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": replicas.min_replicas,
            "max_replicas": replicas.max_replicas,
            "target_ongoing_requests": replicas.target_ongoing_requests,
        }
    return options


def deployment_options(replicas: ReplicaConfig, retry_after_s: int) -> dict[str, Any]:
    """The keyword arguments of ``serve.deployment`` for a deployment whose replicas hold their own resources."""
    return {
        **replica_options(replicas, retry_after_s),
        "ray_actor_options": {"num_cpus": replicas.num_cpus, "num_gpus": replicas.num_gpus},
    }
