"""The `EventBus` protocol: one append-only event log per run, read by any number of readers at their own pace.

A run's writer appends each `StreamEvent` in `seq` order; a reader asks for the events after the last
`seq` it has seen and waits when there are none yet. Nothing is pushed into per-reader queues, so a slow
reader only falls behind in the shared log: it never slows the writer or the other readers, and a reader
that reconnects resumes exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..streaming.types import AnyStreamEvent, StreamEventType

__all__ = (
    "SSE_ERROR_EVENT",
    "BusUnavailableError",
    "EventBatch",
    "EventBus",
    "UnknownRunError",
    "follow",
    "sse_event_frame",
    "sse_event_name",
)


class UnknownRunError(KeyError):
    """The bus holds no log for this run: it never existed or was discarded."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id

    def __str__(self) -> str:
        return f"no event log for run {self.run_id!r}"


class BusUnavailableError(ConnectionError):
    """The bus cannot be reached right now (Redis down or restarting); the same call may work later."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EventBatch:
    """What one `EventBus.read` returned."""

    events: list[AnyStreamEvent] = field(default_factory=list[AnyStreamEvent])
    """Events with `seq` greater than the one asked for, in order, without gaps."""
    closed: bool = False
    """The log is closed and `events` reach its end: no event will ever follow these."""
    lines: list[str] = field(default_factory=list[str], compare=False)
    """`events` as JSON (`StreamEvent.to_json()`), encoded once per log and shared by every reader.

    A bus may leave it empty; `json_lines()` then encodes the events itself.
    """
    frames: list[bytes] = field(default_factory=list[bytes], compare=False)
    """`events` as Server-Sent Events messages (`sse_event_frame`), made once per log; may be left empty too."""

    def json_lines(self) -> list[str]:
        """`lines` when the bus filled them in, otherwise the events encoded now."""
        if len(self.lines) == len(self.events):
            return self.lines
        return [event.to_json() for event in self.events]

    def sse_frames(self) -> list[bytes]:
        """`frames` when the bus filled them in, otherwise made now."""
        if len(self.frames) == len(self.events):
            return self.frames
        return [sse_event_frame(event, line) for event, line in zip(self.events, self.json_lines(), strict=True)]


SSE_ERROR_EVENT = "run_error"
"""The SSE event name of an `error` event: a message named `error` would fire the browser's own
`EventSource.onerror` (meant for connection trouble) while the stream is still open."""

_SSE_NAMES = {event_type: event_type.value for event_type in StreamEventType} | {StreamEventType.ERROR: SSE_ERROR_EVENT}


def sse_event_name(event_type: StreamEventType) -> str:
    """The SSE `event:` name for an event type: its value, except `run_error` for `error`."""
    return _SSE_NAMES[event_type]


def sse_event_frame(event: AnyStreamEvent, line: str) -> bytes:
    """The SSE message for `event` whose JSON is `line`: `id: <seq>`, `event: <name>`, `data: <line>`.

    The name is the event type (`sse_event_name`: `run_error` for `error`). `line` is one line
    (`to_json` escapes every line break), so it goes in a single `data:` field.
    """
    return f"id: {event.seq}\nevent: {_SSE_NAMES[event.event_type]}\ndata: {line}\n\n".encode()


@runtime_checkable
class EventBus(Protocol):
    """Per-run append-only event logs with blocking reads; see the module docstring.

    Implementations: `InMemoryEventBus` (one process) and `RedisEventBus` (Redis Streams, across
    processes). A log is addressed by `seq`: the event appended n-th has `seq == n` (from 0).
    """

    async def open(self, run_id: str, meta: Mapping[str, str] | None = None) -> None:
        """Create an empty log for `run_id` described by `meta` (see `meta`); `ValueError` if one exists."""
        ...

    async def append(self, run_id: str, event: AnyStreamEvent) -> None:
        """Add `event` at the end of the log; its `seq` must be the log's length (`ValueError` otherwise)."""
        ...

    async def append_many(self, run_id: str, events: Sequence[AnyStreamEvent]) -> None:
        """`append` each of `events` in order, in one round trip where the bus can."""
        ...

    async def close(self, run_id: str) -> None:
        """Mark the log finished: readers get `closed=True` once they reach its end. Idempotent."""
        ...

    async def read(self, run_id: str, after: int = -1, *, limit: int = 256, wait: float | None = None) -> EventBatch:
        """Events with `seq > after` (at most `limit`), waiting up to `wait` seconds for the first one.

        Returns at once when events are available or the log is closed; an empty, not closed batch when
        `wait` seconds passed first (`None` waits as long as it takes, `0` does not wait). Raises
        `UnknownRunError` when there is no log for `run_id`.
        """
        ...

    async def exists(self, run_id: str) -> bool:
        """Whether a log for `run_id` is held."""
        ...

    async def discard(self, run_id: str) -> None:
        """Drop the log (readers waiting on it see it closed). Does nothing for an unknown run."""
        ...

    async def hand_over(self, run_id: str) -> None:
        """This process stops writing the log and another goes on with it (a durable run): forget what was
        kept to write it (its next `seq`, the copy kept to write the log back after Redis lost it)."""
        ...

    async def aclose(self) -> None:
        """Release the bus's resources (connections); the logs of an in-process bus go with it."""
        ...

    # ---- what a fleet of servers shares besides the logs ------------------------------------------------

    async def metas(self, run_ids: Sequence[str]) -> list[dict[str, str] | None]:
        """For each run, what `open` was given plus `status` and `finished_at` once its `agent_end` is
        appended; `None` for a run whose log is not held."""
        ...

    async def run_ids(self, limit: int) -> list[str]:
        """The runs whose logs are held, newest first, at most `limit`."""
        ...

    async def save_messages(self, run_id: str, messages: str) -> None:
        """Keep the run's conversation (Pydantic AI's messages JSON) with its log, dropped with it;
        `UnknownRunError` if the log is not held."""
        ...

    async def messages(self, run_id: str) -> str | None:
        """What `save_messages` kept for the run, or `None`."""
        ...

    async def renew(self, owner: str, run_ids: Collection[str], seconds: float) -> None:
        """Hold a lease of `seconds` on each run for `owner` (the process running it)."""
        ...

    async def orphans(self) -> list[str]:
        """Open logs whose lease has lapsed: the process running them is gone."""
        ...

    async def publish(self, message: Mapping[str, str]) -> None:
        """Send `message` to every `subscribe`r, in every process on this bus (a cancel, say)."""
        ...

    def subscribe(self) -> AsyncGenerator[dict[str, str]]:
        """The messages `publish`ed from now on, until the iterator is closed."""
        ...


def run_end_meta(event: AnyStreamEvent) -> dict[str, str] | None:
    """`status` and `finished_at` for a run's meta when `event` is its top-level `agent_end`, else `None`."""
    if event.event_type is StreamEventType.AGENT_END and event.depth == 0:
        return {"status": event.data["status"], "finished_at": event.timestamp.isoformat()}
    return None


async def follow(bus: EventBus, run_id: str, after: int = -1) -> AsyncIterator[AnyStreamEvent]:
    """Yield a run's events with `seq > after`, then live ones as they are appended, until the log closes.

    ```python
    import asyncio

    from pydantic_deep.bus import InMemoryEventBus, follow
    from pydantic_deep.streaming import llm_chunk_event


    async def main() -> None:
        bus = InMemoryEventBus()
        await bus.open("run-1")
        for seq, text in enumerate(["Hel", "lo"]):
            event = llm_chunk_event(text=text)
            event.seq = seq
            await bus.append("run-1", event)
        await bus.close("run-1")
        assert [e.data["text"] async for e in follow(bus, "run-1")] == ["Hel", "lo"]
        assert [e.data["text"] async for e in follow(bus, "run-1", after=0)] == ["lo"]


    asyncio.run(main())
    ```
    """
    while True:
        batch = await bus.read(run_id, after)
        for event in batch.events:
            yield event
            after = event.seq
        if batch.closed:
            return
