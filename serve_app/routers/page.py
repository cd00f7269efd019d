"""The chat page: GET / and its two assets under /static (serve_app/static/, no build step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import Scope

CHAT_PAGE = Path(__file__).parent.parent / "static"
CHAT_PAGE_ASSETS = frozenset({"chat.js", "chat.css", "favicon.svg"})
# The page runs only its own files: an answer or a passage that slipped past the page's escaping still could not
# load or run a script, reach another origin, or be framed.
CHAT_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def chat_page() -> FileResponse:
    """The chat page: a client of this API like any other."""
    return FileResponse(CHAT_PAGE / "index.html", headers=CHAT_PAGE_HEADERS)


class PageAssets(StaticFiles):
    """The page's script, style sheet and icon, and nothing else of the folder: the page itself is served only at
    /, with its Content-Security-Policy."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in CHAT_PAGE_ASSETS:
            raise HTTPException(404)
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount_assets(app: Any) -> None:
    app.mount("/static", PageAssets(directory=CHAT_PAGE), name="static")
