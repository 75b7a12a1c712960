"""`serve`: run the app with uvicorn, refusing to expose it beyond this machine without a token."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from pydantic_ai.models import Model

from ._app import TOKEN_ENV_VAR, create_app

__all__ = ("ServerConfigError", "check_bind", "is_loopback", "openapi_schema", "serve")


class ServerConfigError(ValueError):
    """The server cannot start as configured (e.g. a public address without a token)."""


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine (`127.0.0.1`, `::1`, `localhost`)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Raise `ServerConfigError` for a non-loopback `host` with no token: anyone reaching it could run the agent."""
    if not is_loopback(host) and not token:
        raise ServerConfigError(
            f"refusing to listen on {host!r} without a token: anyone who can reach that address could run the "
            f"agent. Pass --token <secret> (or set {TOKEN_ENV_VAR}), or listen on 127.0.0.1."
        )


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model: Model | str | None = None,
    token: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve `create_app(model=model, token=token)` with uvicorn until interrupted (the `pydantic-deep serve` command).

    `token` falls back to `PYDANTIC_DEEP_TOKEN`. Listening on anything but a loopback address without a token
    raises `ServerConfigError` before anything starts; a bad `model` raises `ModelConfigError`.
    """
    token = token or os.environ.get(TOKEN_ENV_VAR) or None
    check_bind(host, token)
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the server needs uvicorn: pip install 'pydantic-deep[server]'") from exc
    app = create_app(model=model, token=token)
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False)


def openapi_schema() -> dict[str, Any]:
    """The server's OpenAPI schema (published as docs/openapi.json)."""
    from ..agent import create_deep_agent
    from ..models import demo_model

    return create_app(create_deep_agent(demo_model(delay=0)), token=None).openapi()
