"""The API's logic, one service per area, each a plain class over async callables (the deployment handles in a
replica, plain functions in tests): no FastAPI, no Ray. ``Services.create`` wires them together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from rag.config import RagConfig
from serve_app.metrics import ServingMetrics
from serve_app.prompt import PromptBuilder
from serve_app.services.chat import ChatService
from serve_app.services.embeddings import EmbeddingsService
from serve_app.services.health import HealthService
from serve_app.services.parts import CountTokensFn, EmbedFn, GenerateFn, RetrieveFn
from serve_app.services.retrieval import RetrievalService


@dataclass(frozen=True)
class Services:
    cfg: RagConfig
    chat: ChatService
    retrieval: RetrievalService
    embeddings: EmbeddingsService
    health: HealthService
    metrics: ServingMetrics

    @classmethod
    def create(
        cls,
        cfg: RagConfig,
        *,
        embed: EmbedFn,
        count_tokens: CountTokensFn,
        retrieve: RetrieveFn,
        generate: GenerateFn,
        prompt: PromptBuilder,
        metrics: ServingMetrics | None = None,
    ) -> Services:
        """Every service over the same parts: ``embed`` and ``count_tokens`` (the QueryEmbedder), ``retrieve``
        (the Retriever), ``generate`` (the engine's chat stream) and the prompt builder."""
        metrics = metrics or ServingMetrics()
        retrieval = RetrievalService(cfg, embed=embed, retrieve=retrieve, metrics=metrics)
        return cls(
            cfg=cfg,
            chat=ChatService(cfg, retrieval=retrieval, generate=generate, prompt=prompt, metrics=metrics),
            retrieval=retrieval,
            embeddings=EmbeddingsService(cfg, embed=embed, count_tokens=count_tokens),
            health=HealthService(cfg, embed=embed, retrieve=retrieve, generate=generate),
            metrics=metrics,
        )


def services_of(request: Request) -> Services:
    """The services of the app that received the request (``api.build_api`` puts them in its state)."""
    services: Services = request.app.state.services
    return services


# The routers' dependency: ``services: ServicesDep`` in a route's signature.
ServicesDep = Annotated[Services, Depends(services_of)]
