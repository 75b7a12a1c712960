"""`LogCopy`: a run's events held in memory with their JSON and SSE frames, and readers waiting on it.

The in-process bus keeps each log as one; the Redis bus keeps one per followed log and process (its
mirror). Readers share it: each waits for the next change, woken once per batch that is added.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..streaming.types import AnyStreamEvent
from ._protocol import EventBatch

__all__ = ("LogCopy",)


@dataclass(eq=False)
class LogCopy:
    """Events in `seq` order (index n holds seq n), each with its JSON line and SSE frame made once."""

    events: list[AnyStreamEvent] = field(default_factory=list[AnyStreamEvent])
    lines: list[str] = field(default_factory=list[str])
    frames: list[bytes] = field(default_factory=list[bytes])
    closed: bool = False
    # Replaced on every change and set, so each waiting reader wakes once per change, with no queue per reader.
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0
    """Readers waiting for the next change."""

    def notify(self) -> None:
        if not self.waiting:  # nobody to wake (a reader checks and starts waiting with no await between)
            return
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    async def wait_past(self, start: int, wait: float | None) -> bool:
        """Wait until the copy holds index `start` or is closed; `False` if `wait` seconds passed first."""
        if start < len(self.events) or self.closed:
            return True
        if wait is not None and wait <= 0:
            return False
        self.waiting += 1
        try:
            async with asyncio.timeout(wait):
                while start >= len(self.events) and not self.closed:
                    await self.changed.wait()
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
        return True

    def batch(self, start: int, limit: int) -> EventBatch:
        """Up to `limit` events from index `start`, with their lines and frames."""
        end = min(start + limit, len(self.events))
        return EventBatch(
            events=self.events[start:end],
            lines=self.lines[start:end],
            frames=self.frames[start:end],
            closed=self.closed and end >= len(self.events),
        )
