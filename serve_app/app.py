"""The Serve application builder: ``serve run configs/serve_local.yaml`` or ``serve_app.app:build_app``.

The builder validates the one config first, so a bad Serve YAML fails at deploy time naming the field. Every
deployment says what Serve should give it in its own ``get_deployment_options`` (the ingress, the QueryEmbedder and
the Retriever from ``serve.*``), and the engine's options come from ``llm`` through Ray's own ``LLMConfig``.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from rag.config import RagConfig
from rag.prepare import prepare
from serve_app.cpu_host import llm_server_options
from serve_app.deployments import QueryEmbedder, Retriever
from serve_app.ingress import RagIngress
from serve_app.llm import llm_config_kwargs, prepare_model_source
from serve_app.serve_yaml import AppArgs


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


def bind(deployment_cls: Any, cfg: RagConfig, *args: Any) -> Application:
    """A shell as a deployment with the options it asks for, bound to the config and its handles."""
    return serve.deployment(**deployment_cls.get_deployment_options(cfg))(deployment_cls).bind(cfg, *args)


def prepare_app(cfg: RagConfig) -> Application:
    """The app to deploy from a prepared config (``rag.prepare``): a packaged model unpacked once. Milvus is the
    caller's: a Milvus or a collection that is not there yet makes /readyz and searches 503 until it is."""
    return build_rag_app(cfg, prepare_model_source(cfg.llm))


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Entry point for ``serve run`` / ``serve deploy``. It runs in a Ray worker, so it starts no Milvus: a server
    started there would not outlive the build. ``make serve`` and ``rag demo`` start the local one."""
    app_args = AppArgs.model_validate(args or {})
    prepared = prepare(RagConfig.load(app_args.config_file, app_args.overrides), milvus=False)
    return prepare_app(prepared.cfg)
