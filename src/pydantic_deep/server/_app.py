"""`create_app`: the ASGI app that runs agents and streams their events over SSE, WebSocket, AG-UI and Vercel AI.

The routes live in routers by concern (`_routes_runs`, `_routes_chat`, `_routes_protocols`,
`_routes_page`) and reach the registry, the bus and the limits through `app.state` (see `_context`).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.models import Model
from starlette.middleware.cors import CORSMiddleware

from ..bus import EventBus, InMemoryEventBus, RedisEventBus
from ..deps import DeepAgentDeps
from . import _routes_chat, _routes_page, _routes_protocols, _routes_runs
from ._context import ServerContext
from ._docs import door_answers
from ._durable import DURABLE_ENV_VAR, DurableRuns
from ._errors import install_error_handlers
from ._guard import Authenticate, AuthFunction, BodyLimit, Doors, TokenCheck, redact_server_logs
from ._routes_protocols import rebuild_protocol_run
from ._runs import ProtocolRun, RunRegistry
from ._wire import RunProtocol

__all__ = ("TOKEN_ENV_VAR", "bus_from_url", "create_app", "read_tokens_file")

TOKEN_ENV_VAR = "PYDANTIC_DEEP_TOKEN"


def create_app(
    agent: AbstractAgent[Any, Any] | None = None,
    *,
    bus: EventBus | str | None = None,
    bus_prefix: str | None = None,
    token: str | None = None,
    model: Model | str | None = None,
    deps: Callable[[], Any] | None = None,
    max_prompt_chars: int = 100_000,
    max_request_bytes: int = 16 * 1024 * 1024,
    max_concurrent_runs: int = 32,
    retention_seconds: float = 3600.0,
    max_retained_runs: int = 1000,
    keepalive_seconds: float = 15.0,
    run_timeout: float | None = None,
    idle_timeout: float | None = None,
    drain_timeout: float = 30.0,
    lease_seconds: float = 10.0,
    max_buffered_events: int = 10_000,
    flush_interval: float = 0.02,
    cors_origins: Sequence[str] = (),
    allowed_hosts: Sequence[str] | None = None,
    tokens: Mapping[str, str] | None = None,
    auth: AuthFunction | None = None,
    require_approval: Sequence[str] = (),
    durable: str | None = None,
    durable_worker: bool = True,
) -> FastAPI:
    """Build the ASGI app: start runs over HTTP and stream their events to any number of clients.

    ```python
    import asyncio

    import httpx

    from pydantic_deep import create_deep_agent, demo_model
    from pydantic_deep.server import create_app


    async def main() -> None:
        app = create_app(create_deep_agent(demo_model(delay=0)))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
                created = await client.post("/runs", json={"prompt": "Plan a picnic"})
                run_id = created.json()["run_id"]
                stream = await client.get(f"/runs/{run_id}/events")
                assert stream.text.startswith("id: 0")
                assert "event: agent_end" in stream.text


    asyncio.run(main())
    ```

    `agent` defaults to `create_deep_agent(model)`; each run gets `deps()` (a fresh `DeepAgentDeps` by
    default). Events go to `bus` (an `InMemoryEventBus` unless given: pass a `RedisEventBus`, or its
    `redis://` URL and a `bus_prefix` for its keys, to share runs between processes), and every
    reader follows that log at its own pace. `token` (or the `PYDANTIC_DEEP_TOKEN` environment
    variable) makes every endpoint but the dashboard page require `Authorization: Bearer <token>`.
    Limits: `max_prompt_chars` (413 above), `max_request_bytes` (413), `max_concurrent_runs` (429 with
    `Retry-After`); finished runs are dropped after `retention_seconds` or when more than
    `max_retained_runs` are held. `keepalive_seconds` spaces
    the SSE keep-alive comments. A run past `run_timeout` seconds, or `idle_timeout` seconds without an
    event, ends `failed`. `drain_timeout` is how long a shutdown lets running runs finish;
    `lease_seconds` how soon the fleet notices a dead process; `max_buffered_events` how many events a
    run may hold while the bus is away before it is stopped. A live stream writes at most once per
    `flush_interval` seconds while events keep coming (0: once per event).

    Browsers: pages on `cors_origins` (e.g. `http://localhost:3000`; `*` only with a token) may call
    the server (CORS); a page on any other origin cannot start, cancel or follow runs over WebSocket.
    Without a token, only requests addressed to a loopback name (`localhost`, `127.0.0.1`, `[::1]`)
    or one of `allowed_hosts` are answered (421 otherwise: DNS rebinding); with a token, any host
    unless `allowed_hosts` is given.

    Users: `tokens` maps principal names to their tokens (`read_tokens_file` reads them from a file); a
    run belongs to the principal that started it, and others get 404 for it and do not see it listed,
    except `admin` (also the holder of `token`), who sees all. `auth` replaces the token checks with the
    application's own: a function (sync or async) from the request (`starlette.requests.HTTPConnection`,
    a WebSocket handshake too) to its principal's name, or `None` for 401. See docs/server.md and
    docs/scaling.md.

    Durable runs: with `durable` (a PostgreSQL URL, or the `PYDANTIC_DEEP_DURABLE` environment variable)
    and a Redis bus, each run started with `POST /runs` is kept in Postgres as it settles and goes on in
    another process of the fleet when its own dies or shuts down (docs/durability.md). With
    `durable_worker=False` this process queues runs and serves their streams but runs none itself.

    Approvals: calls to the tools in `require_approval` (and those a request's own `require_approval`
    names) wait for a decision, sent to `POST /runs/{run_id}/approvals` on any process of the fleet.
    """
    if token is None:
        token = os.environ.get(TOKEN_ENV_VAR) or None
    if token is not None and not token.strip():
        raise ValueError(f"the token is blank: give a secret (--token or {TOKEN_ENV_VAR}), or no token at all")
    for name, value in (
        ("max_prompt_chars", max_prompt_chars),
        ("max_request_bytes", max_request_bytes),
        ("max_concurrent_runs", max_concurrent_runs),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value!r}")
    if retention_seconds < 0 or max_retained_runs < 0 or keepalive_seconds <= 0:
        raise ValueError("retention_seconds and max_retained_runs must be >= 0 and keepalive_seconds > 0")
    for name, limit in (("run_timeout", run_timeout), ("idle_timeout", idle_timeout)):
        if limit is not None and not limit > 0:
            raise ValueError(f"{name} must be a positive number of seconds or None, got {limit!r}")
    if drain_timeout < 0 or flush_interval < 0 or not lease_seconds > 0 or max_buffered_events < 1:
        raise ValueError(
            "drain_timeout and flush_interval must be >= 0, lease_seconds > 0 and max_buffered_events >= 1"
        )
    tokens = _check_tokens(tokens)
    authenticated = token is not None or bool(tokens) or auth is not None
    cors_origins = _check_origins(cors_origins, authenticated=authenticated)
    if agent is None:
        from ..agent import create_deep_agent

        agent = create_deep_agent(model)
    event_bus = bus_from_url(bus, prefix=bus_prefix) if bus is None or isinstance(bus, str) else bus
    owns_bus = bus is None or isinstance(bus, str)
    new_deps = deps or DeepAgentDeps
    durable = durable if durable is not None else os.environ.get(DURABLE_ENV_VAR) or None
    durable_runs: DurableRuns | None = None
    if durable:
        if isinstance(event_bus, InMemoryEventBus):
            raise ValueError("durable mode needs a bus the fleet shares: give a Redis bus (redis://...)")
        durable_runs = DurableRuns(
            durable.strip(),
            concurrency=max_concurrent_runs,
            lease_seconds=lease_seconds,
            shutdown_grace=drain_timeout,
            work=durable_worker,
        )
    context = ServerContext(
        agent=agent,
        deps=new_deps,
        runs=RunRegistry(
            agent=agent,
            bus=event_bus,
            deps=new_deps,
            max_concurrent_runs=max_concurrent_runs,
            retention_seconds=retention_seconds,
            max_retained_runs=max_retained_runs,
            run_timeout=run_timeout,
            idle_timeout=idle_timeout,
            lease_seconds=lease_seconds,
            max_buffered_events=max_buffered_events,
            require_approval=require_approval,
            durable=durable_runs,
            rebuild=partial(_rebuild, agent),
        ),
        bus=event_bus,
        check=TokenCheck(token, tokens),
        max_prompt_chars=max_prompt_chars,
        keepalive_seconds=keepalive_seconds,
        drain_timeout=drain_timeout,
        flush_interval=flush_interval,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncGenerator[None]:
        redact_server_logs()  # a token sent as ?token= never reaches the access log
        await context.runs.open()
        try:
            yield
        finally:
            context.stopping.set()
            await context.runs.aclose()
            if owns_bus:  # ours to close; a bus passed in belongs to the caller
                await event_bus.aclose()

    app = FastAPI(
        title="pydantic-deep",
        version=_version(),
        description=(
            "Run a deep agent over HTTP and stream everything it does as typed events. "
            "Besides these endpoints, `WS /runs/{run_id}/ws` streams the same events as WebSocket JSON text "
            "frames (resume with `?last_event_id=N`; token as `?token=` or subprotocol `bearer.<token>`)."
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=_JSONResponse,
    )
    app.state.deep = context
    app.openapi = _streaming_openapi(app.openapi)
    modules = (_routes_page, _routes_runs, _routes_chat, _routes_protocols)
    install_error_handlers(app, routes=[route for module in modules for route in module.router.routes])
    # Outermost last: the host and origin checks, then CORS (preflights carry no token), then the token.
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    app.add_middleware(Authenticate, check=context.check, auth=auth)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["Location", "Retry-After", "x-vercel-ai-ui-message-stream"],
            max_age=600,
        )
    app.add_middleware(Doors, allowed_hosts=allowed_hosts, allowed_origins=cors_origins, open_host=authenticated)
    for module in modules:
        app.include_router(module.router)
    return app


class _JSONResponse(JSONResponse):
    """JSON that never fails on text that is not valid Unicode: such text (a lone surrogate in a tool's
    output, say) is sent as a JSON `\\u` escape instead of making the answer a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def _check_tokens(tokens: Mapping[str, str] | None) -> dict[str, str]:
    """Principal names and their tokens: names without spaces, tokens not blank, no token given twice."""
    checked: dict[str, str] = {}
    for name, secret in (tokens or {}).items():
        if not name or name != name.strip() or any(c.isspace() for c in name):
            raise ValueError(f"principal name {name!r} must be one word with no spaces")
        if not secret.strip():
            raise ValueError(f"the token of {name!r} is blank")
        if secret in checked.values():
            raise ValueError(f"the token of {name!r} is also another principal's: each needs its own")
        checked[name] = secret
    return checked


def read_tokens_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Principals and their tokens from a file of `NAME TOKEN` lines (`#` comments and blank lines skipped).

    Raises `ValueError` naming the line for anything else (a line without a token, a name given twice).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the tokens file {os.fspath(path)!r}: {exc.strerror or exc}") from None
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"tokens file line {number}: expected `NAME TOKEN`, got {len(parts)} field(s)")
        name, secret = parts
        if name in tokens:
            raise ValueError(f"tokens file line {number}: {name!r} is given twice")
        tokens[name] = secret
    if not tokens:
        raise ValueError(f"the tokens file {os.fspath(path)!r} names no one: write one `NAME TOKEN` per line")
    return tokens


def _check_origins(origins: Sequence[str], *, authenticated: bool) -> list[str]:
    """Origins as `scheme://host[:port]`; `*` (any page on the web) only when a token guards the server."""
    checked: list[str] = []
    for origin in origins:
        origin = origin.strip().rstrip("/")
        if origin == "*":
            if not authenticated:
                raise ValueError("cors origin '*' lets any web page call this server: it needs a token")
        else:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise ValueError(f"cors origin {origin!r} is not an origin: use scheme://host[:port]")
        checked.append(origin)
    return checked


def bus_from_url(url: str | None, *, prefix: str | None = None) -> EventBus:
    """`None` or `memory`: an `InMemoryEventBus`; `redis://` or `rediss://`: a `RedisEventBus` (keys under `prefix`)."""
    if url is None or url.strip() in ("", "memory"):
        return InMemoryEventBus()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisEventBus(url.strip()) if not prefix else RedisEventBus(url.strip(), prefix=prefix)
    raise ValueError(f"unknown bus {url!r}: use 'memory' or a Redis URL such as redis://127.0.0.1:6379/0")


def _streaming_openapi(plain: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        schema = plain()
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                ok = responses.get("200", {}).get("content", {})
                if "text/event-stream" in ok:  # FastAPI adds a JSON body to every 200; these only stream
                    ok.pop("application/json", None)
                for status, answer in door_answers(path, method).items():
                    responses.setdefault(status, answer)
                operation["responses"] = dict(sorted(responses.items()))
        return schema

    return openapi


def _rebuild(
    agent: AbstractAgent[Any, Any], protocol: RunProtocol, request: bytes, conversation: str, message_id: str | None
) -> ProtocolRun:
    return rebuild_protocol_run(agent, protocol, request, conversation=conversation, message_id=message_id)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pydantic-deep")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return "0"
