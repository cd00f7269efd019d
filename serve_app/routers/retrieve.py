"""POST /v1/retrieve."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serve_app.errors import unavailable_as_api_error
from serve_app.protocol import RetrieveRequest, RetrieveResponse
from serve_app.services import ServicesDep

router = APIRouter()


@router.post("/v1/retrieve", response_model=RetrieveResponse)
@unavailable_as_api_error
async def retrieve(request: RetrieveRequest, services: ServicesDep) -> dict[str, Any]:
    """The passages a question retrieves, with their text, without generating."""
    return await services.retrieval.retrieve(request)
