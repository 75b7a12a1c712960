"""What every route works with, kept on `app.state` and handed to routes as FastAPI dependencies.

`ServerContext` holds the run registry, the event bus and the limits; `Context` is the dependency a
route declares to get it. The resume point of every streaming endpoint is read by one parser, and
every endpoint that follows a log opens it through `open_log`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends
from pydantic_ai.agent import AbstractAgent
from starlette.requests import HTTPConnection

from ..bus import EventBatch, EventBus
from ._errors import ApiError, FieldError
from ._guard import PRINCIPAL_SCOPE_KEY, TokenCheck
from ._runs import RunRegistry
from ._sse import KEEP_ALIVE, follow_log
from ._wire import ADMIN

__all__ = ("Context", "Principal", "ServerContext", "open_log", "parse_resume_point", "require_visible")

logger = logging.getLogger("pydantic_deep.server")


@dataclass(frozen=True, kw_only=True)
class ServerContext:
    """The server's parts and limits, one per app."""

    agent: AbstractAgent[Any, Any]
    deps: Callable[[], Any]
    runs: RunRegistry
    bus: EventBus
    check: TokenCheck
    max_prompt_chars: int
    keepalive_seconds: float
    drain_timeout: float = 30.0
    flush_interval: float = 0.02
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server shuts down: every stream still open ends (its client resumes elsewhere)."""
    _streams: dict[str, int] = field(default_factory=dict[str, int])
    _stream_ended: asyncio.Event = field(default_factory=asyncio.Event)

    def check_prompt(self, prompt: str) -> None:
        """422 for a blank prompt, 413 for one over the limit."""
        if not prompt.strip():
            raise ApiError.invalid([FieldError(field="prompt", message="must not be empty")])
        if len(prompt) > self.max_prompt_chars:
            raise ApiError(
                413,
                "prompt_too_long",
                f"the prompt has {len(prompt)} characters; this server's limit is {self.max_prompt_chars}",
                field="prompt",
            )

    async def batches(self, run_id: str, after: int, first: EventBatch) -> AsyncIterator[EventBatch]:
        """The log's batches past `after` (starting with `first`), an empty one whenever it has been idle a while."""
        self._streams[run_id] = self._streams.get(run_id, 0) + 1
        try:
            async for batch in follow_log(
                self.bus,
                run_id,
                after,
                keepalive=self.keepalive_seconds,
                first=first,
                flush_interval=self.flush_interval,
            ):
                yield batch
        finally:
            self._streams[run_id] -= 1
            if not self._streams[run_id]:
                del self._streams[run_id]
            self._stream_ended.set()

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        """Drain: refuse new runs (503), let running ones finish for up to `drain_timeout` (cancel the rest),
        give their readers a moment to reach `agent_end`, then end every stream still open."""
        timeout = self.drain_timeout if drain_timeout is None else drain_timeout
        local = {record.run_id for record in self.runs.running()}
        await self.runs.drain(timeout)
        try:
            async with asyncio.timeout(2.0):  # readers of our runs are reading their last events
                while local & self._streams.keys():
                    self._stream_ended.clear()
                    await self._stream_ended.wait()
        except TimeoutError:
            logger.info("draining: closing streams of readers still behind")
        self.stopping.set()

    async def sse(
        self, run_id: str, after: int, first: EventBatch, frame: Callable[[EventBatch], bytes]
    ) -> AsyncIterator[bytes]:
        """The SSE body of a log: `frame(batch)` for each batch of events, keep-alive comments while idle."""
        async for batch in self.batches(run_id, after, first):
            yield frame(batch) if batch.events else KEEP_ALIVE


async def _server_context(connection: HTTPConnection) -> ServerContext:
    return connection.app.state.deep


Context = Annotated[ServerContext, Depends(_server_context)]
"""Declare a parameter of this type in a route to get the app's `ServerContext`."""


async def _principal(connection: HTTPConnection) -> str | None:
    return connection.scope.get(PRINCIPAL_SCOPE_KEY, ADMIN)


Principal = Annotated[str | None, Depends(_principal)]
"""The request's principal (`Authenticate` found it); `None` only for a WebSocket handshake it refused."""


async def require_visible(context: ServerContext, run_id: str, principal: str | None) -> None:
    """`UnknownRunError` (404) when the run is another principal's; `admin` sees every run, so no lookup."""
    if principal is not None and principal != ADMIN:
        await context.runs.require(run_id, principal)


def parse_resume_point(value: str | None, *, field: str) -> int | None:
    """The `seq` a client last saw, from a `Last-Event-ID` header or a `last_event_id` parameter.

    Blank or missing is `None` (start at the beginning); anything but an integer of at least -1 is a
    422 naming `field`.
    """
    if value is None or not value.strip():
        return None
    try:
        after = int(value.strip())
    except ValueError:
        raise ApiError.invalid([FieldError(field=field, message="must be an event's seq (an integer)")]) from None
    if after < -1:
        raise ApiError.invalid([FieldError(field=field, message="must be -1 or more")])
    return after


async def open_log(bus: EventBus, run_id: str, after: int) -> EventBatch | None:
    """The first batch of a run's log past `after`; `None` when the run has finished and nothing is left.

    Raises `UnknownRunError` (a 404) for a run the bus does not know.
    """
    first = await bus.read(run_id, after, wait=0)
    return None if first.closed and not first.events else first


def json_text(value: object) -> str:
    """One line of JSON for an SSE `data:` field of the simple endpoints."""
    return json.dumps(value, ensure_ascii=False, default=str)
