"""Server-Sent Events: framing, and a response that streams frames until the client goes away.

A frame is `id: <seq>`, `event: <event_type>`, `data: <StreamEvent JSON>` and a blank line. The JSON is
one line (its strings escape newlines), and `sse_frame` splits any data on line breaks into several
`data:` lines anyway, which a client joins back with "\\n": no text can break the framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..bus import EventBatch, EventBus, UnknownRunError, sse_event_frame
from ..streaming import AnyStreamEvent, StreamEvent, StreamEventType

__all__ = ("KEEP_ALIVE", "EventStreamResponse", "event_frame", "follow_log", "sse_frame")

KEEP_ALIVE = b": keep-alive\n\n"
_BATCH_LIMIT = 4096
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def sse_frame(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE message; `event` and `id` must be single-line, `data` may hold any text."""
    lines: list[str] = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode()


def event_frame(event: AnyStreamEvent, line: str | None = None) -> bytes:
    """A `StreamEvent` as the SSE message `GET /runs/{run_id}/events` sends; `line` is its JSON if already made."""
    return sse_event_frame(event, event.to_json() if line is None else line)


def is_last(event: StreamEvent) -> bool:
    """The top-level run's `agent_end`: its stream ends here."""
    return event.event_type is StreamEventType.AGENT_END and event.depth == 0


async def follow_log(
    bus: EventBus,
    run_id: str,
    after: int,
    *,
    keepalive: float,
    first: EventBatch | None = None,
    flush_interval: float = 0.0,
) -> AsyncIterator[EventBatch]:
    """Batches of the run's events past `after` until `agent_end` or the log's close; an empty one when idle.

    An empty batch comes after `keepalive` seconds without events. `first` is a batch already read (the
    endpoint reads one to answer 404 before the stream starts). Every batch yielded has its `lines` filled.
    With `flush_interval`, a batch is yielded at most that often while events keep coming: the first
    event after a quiet spell goes at once, and those that follow it within the interval go together
    (one wake-up and one write for many events, instead of one each).
    """
    if first is not None and first.events:
        yield _with_lines(first)
        if is_last(first.events[-1]):
            return
        after = first.events[-1].seq
    while True:
        try:
            batch = await bus.read(run_id, after, limit=_BATCH_LIMIT, wait=keepalive)
        except UnknownRunError:  # dropped after its retention time while this reader lagged behind
            return
        if batch.events:
            yield _with_lines(batch)
            if is_last(batch.events[-1]):
                return
            after = batch.events[-1].seq
            if flush_interval > 0 and not batch.closed:
                await asyncio.sleep(flush_interval)
        elif not batch.closed:
            yield EventBatch()
        if batch.closed:
            return


def _with_lines(batch: EventBatch) -> EventBatch:
    lines = batch.json_lines()
    if lines is batch.lines:
        return batch
    return EventBatch(events=batch.events, lines=lines, frames=batch.frames, closed=batch.closed)


class EventStreamResponse(Response):
    """A `text/event-stream` response that stops writing as soon as the client disconnects.

    Each chunk of `frames` is sent as it comes; a task listening for `http.disconnect` cancels the writer,
    so a reader waiting on an idle run does not outlive its client.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        status_code: int = 200,
        *,
        headers: Mapping[str, str] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.frames = frames
        self.stop = stop
        self.status_code = status_code
        self.background = None
        self.init_headers({"cache-control": "no-store", "x-accel-buffering": "no", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        writer = asyncio.create_task(self._write(send))
        listener = asyncio.create_task(_until_disconnect(receive))
        tasks: set[asyncio.Task[Any]] = {writer, listener}
        if self.stop is not None:  # the server shuts down: end the response cleanly, the client resumes elsewhere
            tasks.add(asyncio.create_task(self.stop.wait()))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(writer, *(tasks - {writer}), return_exceptions=True)
        if writer not in done and listener not in done:
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        error = results[0]
        # OSError: the client went away mid-send (ASGI servers report it so); nothing left to tell anyone.
        if writer in done and isinstance(error, Exception) and not isinstance(error, OSError):
            raise error

    async def _write(self, send: Send) -> None:
        try:
            async for chunk in self.frames:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            closer = getattr(self.frames, "aclose", None)
            if closer is not None:
                await closer()


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return
