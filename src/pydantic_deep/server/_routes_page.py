"""`GET /`: the live dashboard, one self-contained page."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ("router",)

router = APIRouter(tags=["dashboard"])

_PLACEHOLDER_PAGE = """<!doctype html>
<html lang="en"><meta charset="utf-8"><title>pydantic-deep</title>
<body><h1>pydantic-deep</h1><p>The dashboard page is not installed with this package.
The API is here: <code>POST /runs</code>, <code>GET /runs/{run_id}/events</code>; see
<code>/openapi.json</code>.</p></body></html>
"""

# The page is one self-contained file: it may run its own inline script and style and talk to this server only.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/", response_class=HTMLResponse, summary="The dashboard page")
async def dashboard() -> HTMLResponse:
    return HTMLResponse(_dashboard_html(), headers=_PAGE_HEADERS)


@router.head("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard_head() -> HTMLResponse:
    """What `GET /` would answer, without the page (monitors and load balancers check it so)."""
    return HTMLResponse(_dashboard_html(), headers=_PAGE_HEADERS)


def _dashboard_html() -> str:
    try:
        return (
            resources.files(__package__ or "pydantic_deep.server")
            .joinpath("static", "dashboard.html")
            .read_text(encoding="utf-8")
        )
    except (FileNotFoundError, NotADirectoryError, OSError):
        return _PLACEHOLDER_PAGE
