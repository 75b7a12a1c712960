"""Access control and request limits, as two small ASGI middlewares and a WebSocket check.

With a token, every HTTP request but `GET /` (the dashboard page) must carry `Authorization: Bearer
<token>`; a WebSocket presents it as the `token` query parameter or the subprotocol `bearer.<token>`.
Tokens are compared as SHA-256 digests with `hmac.compare_digest`: constant time, whatever their length.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._errors import error_response

__all__ = ("SUBPROTOCOL", "BodyLimit", "RequireToken", "TokenCheck")

SUBPROTOCOL = "pydantic-deep"
"""The WebSocket subprotocol the server selects when the client offers it (next to `bearer.<token>`)."""

_BEARER_PREFIX = "bearer."


class TokenCheck:
    """Compares a presented token with the configured one in constant time; with no token, all pass."""

    def __init__(self, token: str | None) -> None:
        self._digest = hashlib.sha256(token.encode()).digest() if token else None

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    def accepts(self, presented: str | None) -> bool:
        if self._digest is None:
            return True
        if presented is None:
            return False
        return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), self._digest)

    def accepts_header(self, authorization: str | None) -> bool:
        if self._digest is None:
            return True
        scheme, _, credentials = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self.accepts(credentials.strip())

    def websocket(self, query_token: str | None, offered: Sequence[str]) -> tuple[bool, str | None]:
        """`(allowed, subprotocol to select)` for a WebSocket handshake."""
        bearer = next((p for p in offered if p.lower().startswith(_BEARER_PREFIX)), None)
        selected = SUBPROTOCOL if SUBPROTOCOL in offered else bearer
        if self._digest is None:
            return True, selected
        if query_token is not None and self.accepts(query_token):
            return True, selected
        if bearer is not None and self.accepts(bearer[len(_BEARER_PREFIX) :]):
            return True, selected
        return False, selected


class RequireToken:
    """Answers 401 to any HTTP request without the right bearer token, except `GET`/`HEAD /`."""

    def __init__(self, app: ASGIApp, check: TokenCheck, *, public_paths: frozenset[str] = frozenset({"/"})) -> None:
        self.app = app
        self.check = check
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.check.enabled:
            public = scope["path"] in self.public_paths and scope["method"] in ("GET", "HEAD")
            if not public and not self.check.accepts_header(Headers(scope=scope).get("authorization")):
                response = error_response(
                    401,
                    "unauthorized",
                    "this server needs `Authorization: Bearer <token>`",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, whether or not they declare a `Content-Length`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(413, "request_too_large", self._message())
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"the request body is over this server's limit of {self.max_bytes} bytes"
