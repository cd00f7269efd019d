"""serve_app/deployment_options.py, and the replica settings' parity with Serve's own fields."""

from __future__ import annotations

import pytest
from ray.serve._private.config import DeploymentConfig
from ray.serve.config import AutoscalingConfig

from rag.config import RagConfig, ReplicaConfig
from serve_app.deployment_options import deployment_options, replica_options
from serve_app.deployments import QueryEmbedder, Retriever
from serve_app.ingress import RagIngress
from serve_app.llm import llm_config_kwargs


def test_deployment_options_fixed_or_autoscaled():
    fixed = ReplicaConfig(
        min_replicas=2, max_replicas=2, max_ongoing_requests=8, max_queued_requests=4, num_cpus=0.5, num_gpus=0.25
    )
    assert deployment_options(fixed, retry_after_s=7) == {
        "max_ongoing_requests": 8,
        "max_queued_requests": 4,
        "backpressure_config": {"status_code": 503, "retry_after_s": 7},
        "ray_actor_options": {"num_cpus": 0.5, "num_gpus": 0.25},
        "num_replicas": 2,
    }
    scaled = replica_options(ReplicaConfig(min_replicas=0, max_replicas=4, target_ongoing_requests=16), 5)
    assert "num_replicas" not in scaled and "ray_actor_options" not in scaled
    assert scaled["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 16}


SERVE_FIELDS = {
    "min_replicas": AutoscalingConfig,
    "max_replicas": AutoscalingConfig,
    "target_ongoing_requests": AutoscalingConfig,
    "max_ongoing_requests": DeploymentConfig,
    "max_queued_requests": DeploymentConfig,
}


@pytest.mark.parametrize("name", sorted(SERVE_FIELDS))
def test_replica_fields_take_what_serve_takes(name):
    """Each field accepts exactly the values Serve's own field does, at and around its bound."""
    serve_cls = SERVE_FIELDS[name]
    room = {"max_replicas": 64} if name != "max_replicas" and serve_cls is AutoscalingConfig else {}
    for value in (-2, -1, 0, 0.5, 1, 64):
        mine = _accepts(ReplicaConfig, {"max_replicas": 64, name: value})
        serve = _accepts(serve_cls, {**room, name: value})
        assert mine == serve, (name, value)


def _accepts(model: type, fields: dict) -> bool:
    try:
        model(**fields)
    except ValueError:
        return False
    return True


def test_each_deployment_owns_its_options():
    cfg = RagConfig.load(None, {"serve": {"retry_after_s": 9}})
    for shell, section in ((RagIngress, "ingress"), (QueryEmbedder, "embedder"), (Retriever, "retriever")):
        options = shell.get_deployment_options(cfg)
        assert options == {"name": shell.__name__, **deployment_options(getattr(cfg.serve, section), 9)}
    engine = llm_config_kwargs(cfg, "model-folder")["deployment_config"]
    assert engine["backpressure_config"]["retry_after_s"] == 9
    assert engine["max_queued_requests"] == cfg.llm.replicas.max_queued_requests
