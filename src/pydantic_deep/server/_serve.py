"""`serve`: run the app with uvicorn, refusing to expose it beyond this machine without a token.

On `SIGTERM` or `SIGINT` the server drains before uvicorn shuts down: it answers 503 to new runs, lets
running runs finish for up to `drain_timeout` seconds, cancels the rest, and ends every open stream
cleanly (a run's readers get its `agent_end` first), so the process exits without waiting on its
clients. A second signal skips what is left of the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import importlib
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, cast
from urllib.parse import urlsplit

import uvicorn
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.models import Model

from ..bus import BusUnavailableError, RedisEventBus
from ._app import TOKEN_ENV_VAR, bus_from_url, create_app, read_tokens_file
from ._context import ServerContext
from ._durable import DurableRuns

__all__ = ("ServeOptions", "ServerConfigError", "check_bind", "is_loopback", "openapi_schema", "serve")

logger = logging.getLogger("pydantic_deep.server")


class ServerConfigError(ValueError):
    """The server cannot start as configured (e.g. a public address without a token, Redis unreachable)."""


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


@dataclass(kw_only=True)
class ServeOptions:
    """Everything a deployment sets on `pydantic-deep serve`; each is also an environment variable (docs/server.md)."""

    host: str = "127.0.0.1"
    port: int = 8000
    model: Model | str | None = None
    token: str | None = None
    bus: str | None = None
    """`memory` (the default: one process) or a Redis URL, `redis://HOST:PORT/DB`, shared by a fleet."""
    bus_prefix: str | None = None
    """The Redis bus's key prefix (`pydantic-deep:events:`): fleets sharing one Redis each take their own."""
    max_runs: int = 32
    run_timeout: float | None = None
    idle_timeout: float | None = None
    drain_timeout: float = 30.0
    retention_seconds: float = 3600.0
    max_retained_runs: int = 1000
    max_prompt_chars: int = 100_000
    max_request_bytes: int = 16 * 1024 * 1024
    keepalive_seconds: float = 15.0
    lease_seconds: float = 10.0
    flush_interval: float = 0.02
    cors_origins: Sequence[str] = ()
    """Web page origins allowed to call the server (CORS), e.g. `http://localhost:3000`; `*` needs a token."""
    allowed_hosts: Sequence[str] | None = None
    """Host names the server answers to besides loopback ones (without a token: only those)."""
    tokens_file: str | None = None
    """A file of `NAME TOKEN` lines: each token's holder is a user who sees only their own runs."""
    require_approval: Sequence[str] = ()
    """Tools whose calls wait for a decision (`POST /runs/{run_id}/approvals`)."""
    agent: str | None = None
    """The agent to serve instead of a deep agent on `model`: `MODULE:NAME`, an agent or a function that makes one."""
    durable: str | None = None
    """A PostgreSQL URL: runs are kept there as they settle and go on in another process after a crash."""
    durable_worker: bool = True
    """Whether this process runs durable runs (`False`: it only takes requests and serves streams)."""
    log_level: str = "info"


def serve(options: ServeOptions | None = None, **settings: Any) -> None:
    """Serve the app with uvicorn until a signal, then drain (the `pydantic-deep serve` command).

    Takes a `ServeOptions` or its fields as keywords. `token` falls back to `PYDANTIC_DEEP_TOKEN`.
    Raises `ServerConfigError` before anything starts for a public address without a token, a bad
    setting, or a Redis bus that does not answer; a bad `model` raises `ModelConfigError`.
    """
    options = options or ServeOptions(**settings)
    token = options.token or os.environ.get(TOKEN_ENV_VAR) or None
    try:
        tokens = read_tokens_file(options.tokens_file) if options.tokens_file else None
    except ValueError as exc:
        raise ServerConfigError(str(exc)) from None
    check_bind(options.host, token or (next(iter(tokens.values())) if tokens else None))
    try:
        bus = bus_from_url(options.bus, prefix=options.bus_prefix)
    except ValueError as exc:
        raise ServerConfigError(str(exc)) from None
    if isinstance(bus, RedisEventBus):
        asyncio.run(_check_redis(bus))
    if options.durable:
        if not isinstance(bus, RedisEventBus):
            raise ServerConfigError("--durable needs a Redis bus the fleet shares: add --bus redis://HOST:PORT/DB")
        asyncio.run(_check_postgres(options.durable))
    agent = load_agent(options.agent) if options.agent else None
    if agent is not None and options.model is not None:
        raise ServerConfigError("give --agent or --model, not both: the agent brings its own model")
    try:
        app = create_app(
            agent,
            model=options.model,
            token=token,
            bus=options.bus or "memory",  # by URL: the app makes its client in its own loop, and closes it
            bus_prefix=options.bus_prefix,
            max_concurrent_runs=options.max_runs,
            run_timeout=options.run_timeout,
            idle_timeout=options.idle_timeout,
            drain_timeout=options.drain_timeout,
            retention_seconds=options.retention_seconds,
            max_retained_runs=options.max_retained_runs,
            max_prompt_chars=options.max_prompt_chars,
            max_request_bytes=options.max_request_bytes,
            keepalive_seconds=options.keepalive_seconds,
            lease_seconds=options.lease_seconds,
            flush_interval=options.flush_interval,
            cors_origins=options.cors_origins,
            allowed_hosts=options.allowed_hosts,
            tokens=tokens,
            require_approval=options.require_approval,
            durable=options.durable or "",
            durable_worker=options.durable_worker,
        )
    except ValueError as exc:
        raise ServerConfigError(str(exc)) from None
    _log_to_stderr(options.log_level)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level=options.log_level,
        proxy_headers=False,
        timeout_graceful_shutdown=5,  # a backstop: the drain has ended every stream by then
    )
    _DrainingServer(config, app.state.deep).run()


def load_agent(spec: str) -> AbstractAgent[Any, Any]:
    """The agent `MODULE:NAME` names (the module imported from the current directory too): an agent, or a
    function of no arguments that returns one."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ServerConfigError(f"--agent {spec!r}: expected MODULE:NAME, e.g. myapp.agents:support_agent")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
        for part in name.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ServerConfigError(f"--agent {spec!r}: {exc}") from None
    if not isinstance(found, AbstractAgent) and callable(found):
        try:
            found = found()
        except TypeError as exc:
            raise ServerConfigError(
                f"--agent {spec!r} is neither an agent nor a function of no arguments: {exc}"
            ) from None
    if not isinstance(found, AbstractAgent):
        raise ServerConfigError(f"--agent {spec!r} is a {type(found).__name__}, not a Pydantic AI agent")
    return cast("AbstractAgent[Any, Any]", found)


async def _check_postgres(url: str) -> None:
    try:
        await DurableRuns(url, concurrency=1).check()
    except ValueError as exc:
        raise ServerConfigError(str(exc)) from None
    except Exception as exc:  # psycopg's OperationalError and friends: say what failed, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServerConfigError(
            f"cannot reach the durable store (PostgreSQL) at {_no_password(url)}: {first}"
        ) from None


def _no_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


async def _check_redis(bus: RedisEventBus) -> None:
    try:
        await bus.ping()
    except BusUnavailableError as exc:
        raise ServerConfigError(f"cannot reach the Redis bus at {bus.url}: {exc.__cause__ or exc}") from None
    finally:
        await bus.aclose()


def _log_to_stderr(level: str) -> None:
    """Show the server's own log lines (drain, lost runs, the bus going away) the way uvicorn shows its own."""
    ours = logging.getLogger("pydantic_deep")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-9s %(message)s"))
        ours.addHandler(handler)
        ours.propagate = False
    ours.setLevel(level.upper() if level.upper() in logging.getLevelNamesMapping() else logging.INFO)


STUCK_SHUTDOWN_SECONDS = 15.0
"""How long past the drain timeout a shutdown may take before the process exits anyway (status 1)."""


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, which drains the app on the first signal and only then shuts down."""

    def __init__(self, config: uvicorn.Config, context: ServerContext) -> None:
        super().__init__(config)
        self.context = context
        self.loop: asyncio.AbstractEventLoop | None = None
        self.draining: asyncio.Task[None] | None = None

    async def serve(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        """uvicorn's, without raising the signal again at the end: a drained server exits with status 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self.loop
        if loop is None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        if self.draining is None:
            loop.call_soon_threadsafe(self._begin_drain, sig)
            return
        # A second signal: stop waiting for runs, close every stream, shut down now.
        loop.call_soon_threadsafe(self._hurry, sig)

    def _begin_drain(self, sig: int) -> None:
        if self.draining is not None:
            return
        name = signal.Signals(sig).name
        logger.info("%s: draining (up to %g s for running runs)", name, self.context.drain_timeout)
        self.draining = asyncio.ensure_future(self._drain(sig))
        # The promise is an exit within the drain timeout plus a few seconds: should a step of the shutdown
        # hang, say where, and exit all the same.
        watchdog = threading.Timer(self.context.drain_timeout + STUCK_SHUTDOWN_SECONDS, self._stuck)
        watchdog.daemon = True
        watchdog.start()

    async def _drain(self, sig: int) -> None:
        try:
            await self.context.shutdown()
        except Exception:
            logger.exception("the drain failed; shutting down")
        finally:
            self.context.stopping.set()
            super().handle_exit(sig, None)

    def _stuck(self) -> None:
        logger.error(
            "the shutdown is stuck %g s after the drain timeout; exiting now. Where each task waits:",
            STUCK_SHUTDOWN_SECONDS,
        )
        loop = self.loop
        with contextlib.suppress(Exception):  # best effort, from another thread: the loop may be blocked
            for task in list(asyncio.all_tasks(loop)) if loop is not None else []:
                task.print_stack(limit=12, file=sys.stderr)
        faulthandler.dump_traceback(all_threads=True)
        sys.stderr.flush()
        os._exit(1)

    def _hurry(self, sig: int) -> None:
        logger.info("%s again: cancelling running runs and closing every stream", signal.Signals(sig).name)
        self.context.stopping.set()
        for record in self.context.runs.running():
            record.token.cancel()
        super().handle_exit(sig, None)


def openapi_schema() -> dict[str, Any]:
    """The server's OpenAPI schema (published as docs/openapi.json)."""
    from ..agent import create_deep_agent
    from ..models import demo_model

    return create_app(create_deep_agent(demo_model(delay=0)), token=None).openapi()
