"""POST /v1/embeddings and GET /v1/models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serve_app.errors import unavailable_as_api_error
from serve_app.protocol import EmbeddingsRequest, EmbeddingsResponse
from serve_app.services import ServicesDep
from serve_app.services.models import served_models

router = APIRouter()


@router.post("/v1/embeddings", response_model=EmbeddingsResponse)
@unavailable_as_api_error
async def embeddings(request: EmbeddingsRequest, services: ServicesDep) -> dict[str, Any]:
    return await services.embeddings.embeddings(request)


@router.get("/v1/models")
async def models(services: ServicesDep) -> dict[str, Any]:
    return served_models(services.cfg)
