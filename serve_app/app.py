"""The Serve application builder: ``serve run configs/serve_local.yaml`` or ``serve_app.app:build_app``.

The builder validates the one config first, so a bad Serve YAML fails at deploy time naming the field.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from rag.config import RagConfig
from rag.milvus_server import ensure_milvus
from rag.store import MilvusChunkStore
from serve_app.deployments import RagLLMServer, QueryEmbedder, RagIngress, Retriever
from serve_app.llm import cpu_engine_settings, llm_config_kwargs, prepare_model_source
from serve_app.serve_config import AppArgs


def build_rag_app(cfg: RagConfig) -> Application:
    """Ingress → (QueryEmbedder, Retriever, LLMServer), with CPU reservations that fit a 2-core machine."""
    from ray.serve.llm import LLMConfig, build_llm_deployment

    ensure_milvus(cfg.milvus)
    store = MilvusChunkStore(cfg.milvus, cfg.embedder.dim)
    if not store.client.has_collection(cfg.milvus.collection):
        raise ValueError(f"collection {cfg.milvus.collection!r} does not exist at {cfg.milvus.uri}: run `rag ingest` "
                         "first")  # fmt: skip
    model_source = prepare_model_source(cfg.llm)
    llm = build_llm_deployment(
        LLMConfig(**llm_config_kwargs(cfg.llm, model_source)), name_prefix="LLMServer:",
        deployment_cls=RagLLMServer, bind_kwargs={"cpu_engine": cpu_engine_settings(cfg.llm)},
    )  # fmt: skip
    embedder = serve.deployment(
        QueryEmbedder, name="QueryEmbedder", max_ongoing_requests=max(64, 4 * cfg.serve.embed_max_batch_size),
        ray_actor_options={"num_cpus": 0.2, "num_gpus": min(cfg.embedder.num_gpus, 1)},
    ).bind(cfg.embedder.model_dump(), cfg.serve.embed_max_batch_size, cfg.serve.embed_batch_wait_timeout_s,
           cfg.serve.embed_num_threads)  # fmt: skip
    retriever = serve.deployment(
        Retriever, name="Retriever", max_ongoing_requests=max(64, 4 * cfg.serve.retrieve_max_batch_size),
        ray_actor_options={"num_cpus": 0.1},
    ).bind(cfg.milvus.model_dump(), cfg.embedder.dim, cfg.retrieval.model_dump(), cfg.serve.retrieve_max_batch_size,
           cfg.serve.retrieve_batch_wait_timeout_s)  # fmt: skip
    return serve.deployment(RagIngress, name="RagIngress", max_ongoing_requests=cfg.serve.max_ongoing_requests,
                            ray_actor_options={"num_cpus": 0.1}).bind(  # fmt: skip
        cfg.model_dump(mode="json"), model_source, embedder, retriever, llm
    )


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Entry point for ``serve run`` / ``serve deploy``."""
    app_args = AppArgs.model_validate(args or {})
    return build_rag_app(RagConfig.load(app_args.config_file, app_args.overrides))
