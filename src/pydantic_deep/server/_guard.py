"""Access control and request limits, as small ASGI middlewares and a WebSocket check.

`Doors` admits browsers by origin: a `Host` that is not this server's (DNS rebinding) gets 421, and a
state-changing request, `GET /chat` or a WebSocket handshake from another origin gets 403 unless that
origin was allowed (for CORS). With a token, every HTTP request but `GET /` (the dashboard page) must
carry `Authorization: Bearer <token>`; a WebSocket presents it the same way, or as the subprotocol
`bearer.<token>` (browsers cannot set headers on a WebSocket), or as the `token` query parameter.
Tokens are compared as SHA-256 digests with `hmac.compare_digest`: constant time, whatever their length.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._errors import error_response
from ._wire import ADMIN

__all__ = (
    "ADMIN",
    "PRINCIPAL_SCOPE_KEY",
    "SUBPROTOCOL",
    "AuthFunction",
    "Authenticate",
    "BodyLimit",
    "Doors",
    "RedactSecrets",
    "TokenCheck",
    "is_loopback_name",
    "redact_server_logs",
)

SUBPROTOCOL = "pydantic-deep"
"""The WebSocket subprotocol the server selects when the client offers it (next to `bearer.<token>`)."""

_BEARER_PREFIX = "bearer."


PRINCIPAL_SCOPE_KEY = "pydantic_deep.principal"
"""Where `Authenticate` leaves the request's principal in the ASGI scope."""

AuthFunction = Callable[[HTTPConnection], "str | Awaitable[str | None] | None"]
"""An application's own authentication: the principal for a request (or WebSocket handshake), or `None`."""


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class TokenCheck:
    """Finds the principal of a presented token, comparing digests in constant time.

    The single `token` is the principal `admin`; `tokens` maps principal names to their own tokens.
    With neither, every request is `admin` (nothing to check).
    """

    def __init__(self, token: str | None = None, tokens: Mapping[str, str] | None = None) -> None:
        self._principals: list[tuple[bytes, str]] = [(_digest(token), ADMIN)] if token else []
        self._principals += [(_digest(secret), name) for name, secret in (tokens or {}).items()]

    @property
    def enabled(self) -> bool:
        return bool(self._principals)

    def principal(self, presented: str | None) -> str | None:
        """The principal whose token `presented` is, or `None`."""
        if not self._principals:
            return ADMIN
        if presented is None:
            return None
        digest, found = _digest(presented), None
        for known, name in self._principals:  # every entry compared, whichever matches
            if hmac.compare_digest(digest, known):
                found = name
        return found

    def from_header(self, authorization: str | None) -> str | None:
        if not self._principals:
            return ADMIN
        scheme, _, credentials = (authorization or "").partition(" ")
        return self.principal(credentials.strip()) if scheme.lower() == "bearer" else None

    def websocket(
        self, query_token: str | None, offered: Sequence[str], authorization: str | None = None
    ) -> tuple[str | None, str | None]:
        """`(principal or None, subprotocol to select)` for a WebSocket handshake."""
        bearer = next((p for p in offered if p.lower().startswith(_BEARER_PREFIX)), None)
        selected = SUBPROTOCOL if SUBPROTOCOL in offered else bearer
        for presented in (
            self.from_header(authorization) if authorization is not None else None,
            self.principal(query_token) if query_token is not None else None,
            self.principal(bearer[len(_BEARER_PREFIX) :]) if bearer is not None else None,
        ):
            if presented is not None:
                return presented, selected
        return (ADMIN if not self._principals else None), selected

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        bearer = next((p for p in offered if p.lower().startswith(_BEARER_PREFIX)), None)
        return SUBPROTOCOL if SUBPROTOCOL in offered else bearer


class Authenticate:
    """Finds each request's principal and leaves it in the scope; answers 401 to HTTP requests without one.

    `GET`/`HEAD /` (the dashboard page) is public. A WebSocket handshake without a principal is let
    through with none, so its route can accept it and close with a reason a browser can read (4401).
    `auth`, when given, replaces the token checks.
    """

    def __init__(
        self,
        app: ASGIApp,
        check: TokenCheck,
        *,
        auth: AuthFunction | None = None,
        public_paths: frozenset[str] = frozenset({"/"}),
    ) -> None:
        self.app = app
        self.check = check
        self.auth = auth
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] in self.public_paths and scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        principal = await self._principal(scope)
        if principal is None and scope["type"] == "http":
            response = error_response(
                401,
                "unauthorized",
                "this server needs `Authorization: Bearer <token>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)

    async def _principal(self, scope: Scope) -> str | None:
        if self.auth is not None:
            found = self.auth(HTTPConnection(scope))
            if inspect.isawaitable(found):
                found = await found
            return found if isinstance(found, str) and found else None
        headers = Headers(scope=scope)
        if scope["type"] == "websocket":
            query = HTTPConnection(scope).query_params.get("token")
            return self.check.websocket(query, scope.get("subprotocols") or [], headers.get("authorization"))[0]
        return self.check.from_header(headers.get("authorization"))


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


def is_loopback_name(host: str) -> bool:
    """Whether a host name (no port) can only mean this machine: `localhost`, `*.localhost`, 127.0.0.0/8, `::1`."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """`example.com:8000` → `example.com`; `[::1]:8000` → `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CROSS_SITE = frozenset({"cross-site", "same-site"})


class Doors:
    """Refuses requests aimed at this server under another name, and browser requests from other origins.

    - `Host`: with `allowed_hosts=None`, any host when `open_host` (a token guards the server), else only
      loopback names; otherwise loopback names and `allowed_hosts` (`*` for any). Others get 421.
    - Origin: a request that changes something (any method but GET/HEAD/OPTIONS), `GET /chat` (it starts
      a run) and every WebSocket handshake are refused with 403 when they come from a page on an origin
      other than this server's own and not in `allowed_origins` (`*`: any). A request with no `Origin`
      but `Sec-Fetch-Site: cross-site` (an `<img>` or `<form>` on another site) is refused the same way.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Collection[str] | None,
        allowed_origins: Collection[str],
        open_host: bool,
    ) -> None:
        self.app = app
        hosts = None if allowed_hosts is None else {_host_name(h) for h in allowed_hosts}
        self.any_host = "*" in hosts if hosts is not None else open_host
        self.hosts = frozenset(hosts or ())
        self.any_origin = "*" in allowed_origins
        self.origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        refusal: tuple[int, str, str] | None = None
        if host is not None and not self.any_host and not self._host_allowed(_host_name(host)):
            refusal = (
                421,
                "misdirected_request",
                "this server does not answer to that host name; allow it with --allowed-host",
            )
        elif self._guarded(scope) and not self._origin_allowed(headers, host):
            message = "requests from this origin are not allowed; allow it with --cors-origin"
            refusal = (403, "forbidden_origin", message)
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":  # closing before accepting: the handshake is answered 403
            await send({"type": "websocket.close", "code": 1008, "reason": refusal[2]})
        else:
            await error_response(*refusal)(scope, receive, send)

    def _host_allowed(self, name: str) -> bool:
        return is_loopback_name(name) or name in self.hosts

    @staticmethod
    def _guarded(scope: Scope) -> bool:
        if scope["type"] == "websocket":
            return True
        return scope["method"] not in _SAFE_METHODS or scope["path"] == "/chat"

    def _origin_allowed(self, headers: Headers, host: str | None) -> bool:
        origin = headers.get("origin")
        if origin is None:
            return headers.get("sec-fetch-site", "") not in _CROSS_SITE or self.any_origin
        origin = origin.strip().rstrip("/").lower()
        if self.any_origin or origin in self.origins:
            return True
        if origin == "null":  # sandboxed frames, file:// pages
            return False
        return host is not None and urlsplit(origin).netloc == host.strip().lower()


_SECRET_PARAMETER = re.compile(r"(?i)([?&](?:token|access_token|api_key|apikey|key|secret|password)=)[^&\s\"]*")


class RedactSecrets(logging.Filter):
    """Blanks secret query parameters (`?token=...`) in log lines, e.g. uvicorn's access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "=" in a for a in record.args):
            record.args = tuple(_redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and "=" in record.msg:
            record.msg = _redact(record.msg)
        return True


def _redact(text: str) -> str:
    return _SECRET_PARAMETER.sub(r"\1[redacted]", text)


def redact_server_logs() -> None:
    """Put `RedactSecrets` on uvicorn's loggers (its access log, and the one that logs WebSocket paths); once."""
    for name in ("uvicorn.access", "uvicorn.error"):
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())
