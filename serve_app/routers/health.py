"""GET /healthz (liveness) and GET /readyz (readiness)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from serve_app.services import ServicesDep

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    """Liveness: the ingress answers (no key needed). Readiness is /readyz."""
    return {"status": "ok", "time": int(time.time())}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> dict[str, Any]:
    """Readiness: the embedder, Milvus and the engine each answer a real call; else a 503 naming them."""
    return await services.health.ready()
