"""`RedisEventBus`: each run's event log is a Redis Stream, so readers in other processes can follow it.

Stream layout (one key per run, `<prefix><run_id>`): an `open` marker at id `0-1`, the event with `seq` n
at id `0-(n+2)` (its `to_json()` in the field `event`), and a `closed` marker at id `1-0`, which sorts
after every event and so also refuses any append after the close. `read(after=n)` is `XREAD` from id
`0-(n+2)`, blocking while there is nothing new.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any, cast

from ..streaming.types import AnyStreamEvent, StreamEvent
from ._protocol import EventBatch, UnknownRunError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ("RedisEventBus",)

_OPEN_ID = "0-1"
_BLOCK_SLICE = 5.0
_CLOSED_ID = "1-0"


def _event_id(seq: int) -> str:
    return f"0-{seq + 2}"


class RedisEventBus:
    """An `EventBus` on Redis Streams (`XADD`/`XREAD`), for servers in several processes or machines.

    ```python
    from pydantic_deep.bus import RedisEventBus

    bus = RedisEventBus("redis://127.0.0.1:6379/0")  # connects lazily, on first use
    ```

    A log expires `max_run_seconds` after it is opened if it is never closed (a writer that died), and
    `retention_seconds` after it is closed. Needs `pip install 'pydantic-deep[redis]'`.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "pydantic-deep:events:",
        retention_seconds: int = 3600,
        max_run_seconds: int = 86_400,
        client: Redis | None = None,
    ) -> None:
        if client is None:
            try:
                from redis.asyncio import Redis
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError("RedisEventBus needs the redis client: pip install 'pydantic-deep[redis]'") from exc
            client = Redis.from_url(url, decode_responses=True)  # pyright: ignore[reportUnknownMemberType]
        self._redis: Redis = client
        self.prefix = prefix
        self.retention_seconds = retention_seconds
        self.max_run_seconds = max_run_seconds
        self._next_seq: dict[str, int] = {}

    def _key(self, run_id: str) -> str:
        return f"{self.prefix}{run_id}"

    async def open(self, run_id: str) -> None:
        from redis.exceptions import ResponseError

        key = self._key(run_id)
        try:
            await self._redis.xadd(key, {"kind": "open"}, id=_OPEN_ID)
        except ResponseError:
            raise ValueError(f"run {run_id!r} already has an event log") from None
        await self._redis.expire(key, self.max_run_seconds)
        self._next_seq[run_id] = 0

    async def append(self, run_id: str, event: AnyStreamEvent) -> None:
        from redis.exceptions import ResponseError

        expected = self._next_seq.get(run_id)
        if expected is not None and event.seq != expected:
            raise ValueError(f"run {run_id!r} expects seq {expected} next, got {event.seq}")
        key = self._key(run_id)
        if expected is None and not await self._redis.exists(key):
            raise UnknownRunError(run_id)
        try:
            await self._redis.xadd(key, {"event": event.to_json()}, id=_event_id(event.seq))
        except ResponseError:
            raise ValueError(f"run {run_id!r} refused seq {event.seq}: the log is closed or has it already") from None
        if expected is not None:
            self._next_seq[run_id] = expected + 1

    async def close(self, run_id: str) -> None:
        from redis.exceptions import ResponseError

        key = self._key(run_id)
        if not await self._redis.exists(key):
            raise UnknownRunError(run_id)
        with suppress(ResponseError):  # already closed
            await self._redis.xadd(key, {"kind": "closed"}, id=_CLOSED_ID)
        await self._redis.expire(key, self.retention_seconds)
        self._next_seq.pop(run_id, None)

    async def read(self, run_id: str, after: int = -1, *, limit: int = 256, wait: float | None = None) -> EventBatch:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        key = self._key(run_id)
        if not await self._redis.exists(key):
            raise UnknownRunError(run_id)
        start = _event_id(after) if after >= 0 else _OPEN_ID
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + max(wait, 0.0)
        while True:
            # Block in slices, so a log discarded while we wait (XREAD would wait for its key forever) is noticed.
            remaining = _BLOCK_SLICE if deadline is None else min(_BLOCK_SLICE, deadline - loop.time())
            block = None if remaining <= 0 else max(1, round(remaining * 1000))
            reply = await self._redis.xread({key: start}, count=limit, block=block)
            events: list[AnyStreamEvent] = []
            lines: list[str] = []
            closed = False
            for entry_id, fields in _entries(reply):
                if entry_id == _CLOSED_ID:
                    closed = True
                elif "event" in fields:
                    lines.append(fields["event"])  # stored as `to_json()` made it: no need to encode it again
                    events.append(StreamEvent.from_json(fields["event"]))
            if events or closed:
                return EventBatch(events=events, lines=lines, closed=closed)
            if not await self._redis.exists(key):
                return EventBatch(closed=True)
            if deadline is not None and loop.time() >= deadline:
                return EventBatch()

    async def exists(self, run_id: str) -> bool:
        return bool(await self._redis.exists(self._key(run_id)))

    async def discard(self, run_id: str) -> None:
        from redis.exceptions import ResponseError

        key = self._key(run_id)
        self._next_seq.pop(run_id, None)
        if not await self._redis.exists(key):
            return
        with suppress(ResponseError):  # wake readers blocked on the stream before it goes
            await self._redis.xadd(key, {"kind": "closed"}, id=_CLOSED_ID)
        await self._redis.delete(key)

    async def aclose(self) -> None:
        await self._redis.aclose()


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """The `(id, fields)` entries of one `XREAD` reply: RESP2 gives `[[key, entries]]`, RESP3 `{key: [entries]}`."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        streams = [entries for nested in cast(Mapping[Any, Any], reply).values() for entries in nested]
    else:
        streams = [stream[1] for stream in cast(Sequence[Any], reply)]
    return [(str(entry_id), cast(dict[str, str], fields)) for entries in streams for entry_id, fields in entries]
