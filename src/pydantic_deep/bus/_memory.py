"""`InMemoryEventBus`: the event logs of one process, in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from ..streaming.types import AnyStreamEvent
from ._log import LogCopy
from ._protocol import EventBatch, UnknownRunError, run_end_meta, sse_event_frame

__all__ = ("InMemoryEventBus",)


@dataclass(eq=False)
class _Log(LogCopy):
    """A log, its JSON and frames made once as each event is appended, and what `open` was given."""

    meta: dict[str, str] = field(default_factory=dict[str, str])
    messages: str | None = None


class InMemoryEventBus:
    """An `EventBus` that keeps each run's events in a list; readers wait on one notification per log.

    Appending never waits for readers. All readers share the log: memory grows with a run's events, not
    with its readers. Use it from one event loop; logs live until `discard` (the server drops finished
    runs after its retention time).
    """

    def __init__(self) -> None:
        self._logs: dict[str, _Log] = {}
        self._subscribers: set[asyncio.Queue[dict[str, str]]] = set()

    def _log(self, run_id: str) -> _Log:
        log = self._logs.get(run_id)
        if log is None:
            raise UnknownRunError(run_id)
        return log

    async def open(self, run_id: str, meta: Mapping[str, str] | None = None) -> None:
        if run_id in self._logs:
            raise ValueError(f"run {run_id!r} already has an event log")
        self._logs[run_id] = _Log(meta=dict(meta or {}))

    async def append(self, run_id: str, event: AnyStreamEvent) -> None:
        self.append_now(run_id, event)

    def append_now(self, run_id: str, event: AnyStreamEvent) -> None:
        """`append`, without the `await`: an in-process log never waits."""
        log = self._log(run_id)
        if log.closed:
            raise ValueError(f"the event log of run {run_id!r} is closed")
        if event.seq != len(log.events):
            raise ValueError(f"run {run_id!r} expects seq {len(log.events)} next, got {event.seq}")
        line = event.to_json()
        log.events.append(event)
        log.lines.append(line)
        log.frames.append(sse_event_frame(event, line))
        if (end := run_end_meta(event)) is not None:
            log.meta.update(end)
        log.notify()

    async def append_many(self, run_id: str, events: Sequence[AnyStreamEvent]) -> None:
        for event in events:
            await self.append(run_id, event)

    async def close(self, run_id: str) -> None:
        log = self._log(run_id)
        if not log.closed:
            log.closed = True
            log.notify()

    async def read(self, run_id: str, after: int = -1, *, limit: int = 256, wait: float | None = None) -> EventBatch:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        log = self._log(run_id)
        start = max(after + 1, 0)
        # A reader that asked past the end (after > last seq) sleeps through earlier appends.
        if not await log.wait_past(start, wait):
            return EventBatch()
        return log.batch(start, limit)

    async def exists(self, run_id: str) -> bool:
        return run_id in self._logs

    async def discard(self, run_id: str) -> None:
        log = self._logs.pop(run_id, None)
        if log is not None and not log.closed:
            log.closed = True
            log.notify()

    async def hand_over(self, run_id: str) -> None:
        return  # one process: nothing kept for the writer alone

    async def aclose(self) -> None:
        for run_id in list(self._logs):
            await self.discard(run_id)

    async def metas(self, run_ids: Sequence[str]) -> list[dict[str, str] | None]:
        return [dict(log.meta) if (log := self._logs.get(run_id)) is not None else None for run_id in run_ids]

    async def run_ids(self, limit: int) -> list[str]:
        return list(reversed(self._logs))[:limit]

    async def save_messages(self, run_id: str, messages: str) -> None:
        self._log(run_id).messages = messages

    async def messages(self, run_id: str) -> str | None:
        log = self._logs.get(run_id)
        return None if log is None else log.messages

    async def renew(self, owner: str, run_ids: Collection[str], seconds: float) -> None:
        """Nothing to do: every run of an in-process bus lives and dies with this process."""

    async def orphans(self) -> list[str]:
        return []

    async def publish(self, message: Mapping[str, str]) -> None:
        for queue in self._subscribers:
            queue.put_nowait(dict(message))

    async def subscribe(self) -> AsyncGenerator[dict[str, str]]:
        queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    def __len__(self) -> int:
        """How many run logs are held."""
        return len(self._logs)
