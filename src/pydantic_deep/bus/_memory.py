"""`InMemoryEventBus`: the event logs of one process, in memory."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..streaming.types import AnyStreamEvent
from ._protocol import EventBatch, UnknownRunError

__all__ = ("InMemoryEventBus",)


@dataclass(eq=False)
class _Log:
    events: list[AnyStreamEvent] = field(default_factory=list[AnyStreamEvent])
    # The events' JSON, encoded by the first reader that reaches them and then shared by all.
    lines: list[str] = field(default_factory=list[str])
    closed: bool = False
    # Replaced on every change and set, so each waiting reader wakes once per append, with no queue per reader.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class InMemoryEventBus:
    """An `EventBus` that keeps each run's events in a list; readers wait on one notification per log.

    Appending never waits for readers. All readers share the log: memory grows with a run's events, not
    with its readers. Use it from one event loop; logs live until `discard` (the server drops finished
    runs after its retention time).
    """

    def __init__(self) -> None:
        self._logs: dict[str, _Log] = {}

    def _log(self, run_id: str) -> _Log:
        log = self._logs.get(run_id)
        if log is None:
            raise UnknownRunError(run_id)
        return log

    async def open(self, run_id: str) -> None:
        if run_id in self._logs:
            raise ValueError(f"run {run_id!r} already has an event log")
        self._logs[run_id] = _Log()

    async def append(self, run_id: str, event: AnyStreamEvent) -> None:
        log = self._log(run_id)
        if log.closed:
            raise ValueError(f"the event log of run {run_id!r} is closed")
        if event.seq != len(log.events):
            raise ValueError(f"run {run_id!r} expects seq {len(log.events)} next, got {event.seq}")
        log.events.append(event)
        log.notify()

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
        if start >= len(log.events) and not log.closed:
            if wait is not None and wait <= 0:
                return EventBatch()
            try:
                async with asyncio.timeout(wait):
                    # A reader that asked past the end (after > last seq) sleeps through earlier appends.
                    while start >= len(log.events) and not log.closed:
                        await log.changed.wait()
            except TimeoutError:
                return EventBatch()
        end = min(start + limit, len(log.events))
        log.lines.extend(event.to_json() for event in log.events[len(log.lines) : end])
        events = log.events[start:end]
        return EventBatch(events=events, lines=log.lines[start:end], closed=log.closed and end >= len(log.events))

    async def exists(self, run_id: str) -> bool:
        return run_id in self._logs

    async def discard(self, run_id: str) -> None:
        log = self._logs.pop(run_id, None)
        if log is not None and not log.closed:
            log.closed = True
            log.notify()

    async def aclose(self) -> None:
        for run_id in list(self._logs):
            await self.discard(run_id)

    def __len__(self) -> int:
        """How many run logs are held."""
        return len(self._logs)
