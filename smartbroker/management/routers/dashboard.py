"""The dashboard: static HTML/JS/CSS at ``/`` (no build step). It calls the API with the
credentials its login form collects, so serving the files needs no authentication."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from smartbroker.management.errors import not_found

STATIC = Path(__file__).resolve().parent.parent / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}

router = APIRouter(include_in_schema=False)


def _file(name: str) -> Response:
    path = (STATIC / name).resolve()
    if path.parent != STATIC or path.suffix not in TYPES or not path.is_file():
        raise not_found()
    return FileResponse(path, media_type=TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


@router.get("/")
async def index() -> Response:
    return _file("index.html")


@router.get("/index.html")
async def index_html() -> Response:
    return RedirectResponse("/", status_code=301)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return _file(name)


@router.get("/api/auth")
async def auth_settings() -> dict[str, object]:
    """What a login page asks before it has credentials (RabbitMQ: no authentication either):
    no OAuth 2 (UAA) here, basic auth only."""
    return {"enable_uaa": False, "uaa_client_id": "", "uaa_location": ""}
