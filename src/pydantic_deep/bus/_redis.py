"""`RedisEventBus`: each run's event log is a Redis Stream, so servers in several processes share runs.

Keys, all under `prefix`:

    <run_id>          the log: an `open` marker at id `0-1`, the event with `seq` n at id `0-(n+2)` (its
                      `to_json()` in the field `event`), a `closed` marker at `1-0`, which sorts after every
                      event and so also refuses any append after the close
    meta:<run_id>     a hash: what `open` was given, then `status` and `finished_at` at the run's end
    lease:<run_id>    the process running the run, while it lives (renewed; it expires when the process dies)
    messages:<run_id> the run's conversation as it ended (Pydantic AI's messages JSON), kept as long as the log
    runs              a sorted set of run ids by creation time (listing across processes)
    live              the set of runs whose log is open (where lapsed leases are looked for)
    control           a short stream of messages to every process (cancel requests)

Reads do not each go to Redis: one follower task per run and process mirrors the log in memory with
blocking `XREAD`s, and every reader of that process reads the mirror, which wakes them once per batch
that arrives. The mirror keeps each event's JSON as Redis holds it, so nothing is encoded twice.

Blocking reads last `block_seconds` (2 s), well inside the client's socket timeout (30 s), so a quiet run
never times a connection out. When Redis cannot be reached, calls raise `BusUnavailableError` and the
followers retry with backoff: readers see no events (a server sends keep-alives) and go on where they
were once Redis is back. A writer keeps what it wrote to an open log, so a log that a restarted Redis
lost (one without persistence) is written back whole at the next append.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._aio import raise_if_cancelling
from ..streaming.types import AnyStreamEvent, StreamEvent
from ._log import LogCopy
from ._protocol import BusUnavailableError, EventBatch, UnknownRunError, run_end_meta, sse_event_frame

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ("RedisEventBus",)

logger = logging.getLogger("pydantic_deep.bus")

_OPEN_ID = "0-1"
_CLOSED_ID = "1-0"
_READ_COUNT = 1000
_CONTROL_MAXLEN = 1000
_IDLE_MIRROR_SECONDS = 60.0
_T = TypeVar("_T")


def _event_id(seq: int) -> str:
    return f"0-{seq + 2}"


def _seq_of(entry_id: str) -> int:
    return int(entry_id.partition("-")[2]) - 2


@dataclass(eq=False)
class _Mirror(LogCopy):
    """One process's copy of a run's log, filled by one follower task and read by every local reader."""

    missing: bool = False  # the log did not exist when the mirror started
    error: BaseException | None = None  # why the first read failed
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    last_used: float = field(default_factory=time.monotonic)

    def add(self, entries: Sequence[tuple[str, str]], events: Sequence[AnyStreamEvent] | None = None) -> None:
        """Add `(entry id, JSON)` entries past the mirror's end (ones it holds already are skipped)."""
        held = len(self.events)
        added = False
        for index, (entry_id, line) in enumerate(entries):
            if _seq_of(entry_id) < held:
                continue
            event = events[index] if events is not None else StreamEvent.from_json(line)
            self.lines.append(line)  # as `to_json()` made it: not encoded again
            self.events.append(event)
            self.frames.append(sse_event_frame(event, line))
            held += 1
            added = True
        if added:
            self.notify()


@dataclass(eq=False)
class _Written:
    """What this process wrote to an open log: enough to write it back if Redis lost it."""

    meta: dict[str, str]
    lines: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])  # (entry id, JSON)
    next_seq: int = 0


class RedisEventBus:
    """An `EventBus` on Redis Streams (`XADD`/`XREAD`), for servers in several processes or machines.

    ```python
    from pydantic_deep.bus import RedisEventBus

    bus = RedisEventBus("redis://127.0.0.1:6379/0")  # connects lazily, on first use
    ```

    A log expires `max_run_seconds` after it is opened if it is never closed, and `retention_seconds`
    after it is closed. `socket_timeout` bounds every Redis call; blocking reads wait `block_seconds`
    at a time. Needs the `redis` extra.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "pydantic-deep:events:",
        retention_seconds: int = 3600,
        max_run_seconds: int = 86_400,
        socket_timeout: float = 30.0,
        block_seconds: float = 2.0,
        client: Redis | None = None,
    ) -> None:
        if not 0 < block_seconds < socket_timeout:
            raise ValueError(f"block_seconds must be above 0 and below socket_timeout, got {block_seconds!r}")
        if client is None:
            try:
                from redis.asyncio import Redis
                from redis.asyncio.retry import Retry
                from redis.backoff import ExponentialWithJitterBackoff
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "RedisEventBus needs the redis client: install this project's `redis` extra (uv sync --extra redis)"
                ) from exc
            client = Redis.from_url(  # pyright: ignore[reportUnknownMemberType]
                url,
                decode_responses=True,
                socket_timeout=socket_timeout,
                socket_connect_timeout=min(socket_timeout, 5.0),
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
                health_check_interval=30,
            )
        self._redis: Redis = client
        self.url = url
        self.prefix = prefix
        self.retention_seconds = retention_seconds
        self.max_run_seconds = max_run_seconds
        self.block_seconds = block_seconds
        self._written: dict[str, _Written] = {}
        self._mirrors: dict[str, _Mirror] = {}
        self._swept = 0.0
        self._closing = False

    def _key(self, run_id: str) -> str:
        return f"{self.prefix}{run_id}"

    # ---- writing -------------------------------------------------------------------------------------------

    async def open(self, run_id: str, meta: Mapping[str, str] | None = None) -> None:
        from redis.exceptions import ResponseError

        written = _Written(meta=dict(meta or {}))
        try:
            await _reachable(self._create(run_id, written))
        except ResponseError:
            raise ValueError(f"run {run_id!r} already has an event log") from None
        self._written[run_id] = written

    async def _create(self, run_id: str, written: _Written, *, restore: bool = False) -> None:
        key, meta_key = self._key(run_id), f"{self.prefix}meta:{run_id}"
        pipe = self._redis.pipeline(transaction=True)
        if restore:
            pipe.delete(key)
        pipe.xadd(key, {"kind": "open"}, id=_OPEN_ID)
        for entry_id, line in written.lines:
            pipe.xadd(key, {"event": line}, id=entry_id)
        pipe.expire(key, self.max_run_seconds)
        meta = written.meta or {"created_at": ""}
        pipe.hset(meta_key, mapping=cast(Mapping[Any, Any], meta))  # pyright: ignore[reportUnknownMemberType]
        pipe.expire(meta_key, self.max_run_seconds)
        pipe.zadd(f"{self.prefix}runs", {run_id: time.time()}, nx=True)
        pipe.sadd(f"{self.prefix}live", run_id)
        await pipe.execute()

    async def append(self, run_id: str, event: AnyStreamEvent) -> None:
        await self.append_many(run_id, [event])

    async def append_many(self, run_id: str, events: Sequence[AnyStreamEvent]) -> None:
        if not events:
            return
        written = self._written.get(run_id)
        if written is not None:
            for offset, event in enumerate(events):
                if event.seq != written.next_seq + offset:
                    raise ValueError(f"run {run_id!r} expects seq {written.next_seq + offset} next, got {event.seq}")
        entries = [(_event_id(event.seq), event.to_json()) for event in events]
        end = next((m for m in map(run_end_meta, events) if m is not None), None)
        added = await _reachable(self._append_entries(run_id, entries, end))
        if not added:
            if written is None:
                raise UnknownRunError(run_id)
            logger.warning("the event log of run %s was lost by Redis (restarted?); writing it back", run_id)
            await _reachable(self._create(run_id, written, restore=True))
            added = await _reachable(self._append_entries(run_id, entries, end))
            if not added:  # pragma: no cover - lost again at once
                raise BusUnavailableError(f"the event log of run {run_id!r} keeps disappearing from Redis")
        if written is not None:
            written.lines.extend(entries)
            written.next_seq += len(events)
        mirror = self._mirrors.get(run_id)
        if mirror is not None and mirror.ready.is_set() and len(mirror.events) == events[0].seq:
            mirror.add(entries, events)  # this process's readers need not wait for the round trip

    async def _append_entries(self, run_id: str, entries: list[tuple[str, str]], end: dict[str, str] | None) -> bool:
        """XADD each entry (`NOMKSTREAM`: a log Redis lost is not started again half-way); `False` if it was lost."""
        from redis.exceptions import ResponseError

        key = self._key(run_id)
        try:
            if len(entries) == 1 and end is None:
                answers = [await self._redis.xadd(key, {"event": entries[0][1]}, id=entries[0][0], nomkstream=True)]
            else:
                pipe = self._redis.pipeline(transaction=False)
                for entry_id, line in entries:
                    pipe.xadd(key, {"event": line}, id=entry_id, nomkstream=True)
                if end is not None:
                    pipe.hset(f"{self.prefix}meta:{run_id}", mapping=cast(Mapping[Any, Any], end))  # pyright: ignore[reportUnknownMemberType]
                answers = await pipe.execute()
        except ResponseError as exc:
            if "ID specified" in str(exc) or "equal or smaller" in str(exc):
                first_seq = _seq_of(entries[0][0])
                raise ValueError(
                    f"run {run_id!r} refused seq {first_seq}: the log is closed or has it already"
                ) from None
            raise
        return answers[0] is not None

    async def close(self, run_id: str) -> None:
        from redis.exceptions import ResponseError

        key = self._key(run_id)
        if not await _reachable(self._redis.exists(key)):
            raise UnknownRunError(run_id)
        written = self._written.get(run_id)
        written_seq = -1 if written is None else written.next_seq
        with contextlib.suppress(ResponseError):  # already closed
            await _reachable(self._redis.xadd(key, {"kind": "closed"}, id=_CLOSED_ID))
        pipe = self._redis.pipeline(transaction=False)
        pipe.expire(key, self.retention_seconds)
        pipe.expire(f"{self.prefix}meta:{run_id}", self.retention_seconds)
        pipe.expire(f"{self.prefix}messages:{run_id}", self.retention_seconds)
        pipe.srem(f"{self.prefix}live", run_id)
        pipe.delete(f"{self.prefix}lease:{run_id}")
        await _reachable(pipe.execute())
        self._written.pop(run_id, None)
        mirror = self._mirrors.get(run_id)
        # Closed here only when it holds every event; otherwise its follower fetches the rest, then the marker.
        if mirror is not None and mirror.ready.is_set() and not mirror.closed and len(mirror.events) == written_seq:
            mirror.closed = True
            mirror.notify()

    async def hand_over(self, run_id: str) -> None:
        self._written.pop(run_id, None)

    async def discard(self, run_id: str) -> None:
        from redis.exceptions import ResponseError

        key = self._key(run_id)
        self._written.pop(run_id, None)
        if await _reachable(self._redis.exists(key)):
            with contextlib.suppress(ResponseError):  # wake followers blocked on the stream before it goes
                await _reachable(self._redis.xadd(key, {"kind": "closed"}, id=_CLOSED_ID))
        pipe = self._redis.pipeline(transaction=False)
        for name in (key, *(f"{self.prefix}{kind}:{run_id}" for kind in ("meta", "lease", "messages"))):
            pipe.delete(name)
        pipe.zrem(f"{self.prefix}runs", run_id)
        pipe.srem(f"{self.prefix}live", run_id)
        await _reachable(pipe.execute())
        mirror = self._mirrors.pop(run_id, None)
        if mirror is not None:
            if mirror.task is not None:
                mirror.task.cancel()
            if not mirror.closed:
                mirror.closed = True
                mirror.notify()

    # ---- reading -------------------------------------------------------------------------------------------

    async def read(self, run_id: str, after: int = -1, *, limit: int = 256, wait: float | None = None) -> EventBatch:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        mirror = await self._mirror(run_id)
        start = max(after + 1, 0)
        try:
            if not await mirror.wait_past(start, wait):
                return EventBatch()
        finally:
            mirror.last_used = time.monotonic()
        return mirror.batch(start, limit)

    async def _mirror(self, run_id: str) -> _Mirror:
        self._sweep()
        mirror = self._mirrors.get(run_id)
        if mirror is None:
            mirror = self._mirrors[run_id] = _Mirror()
            mirror.task = asyncio.create_task(self._follow(run_id, mirror), name=f"pydantic-deep follow {run_id}")
        mirror.last_used = time.monotonic()
        await mirror.ready.wait()
        if mirror.missing or mirror.error is not None:
            if self._mirrors.get(run_id) is mirror:
                del self._mirrors[run_id]
            if mirror.error is not None:
                raise BusUnavailableError(f"cannot read run {run_id!r}: {mirror.error}") from mirror.error
            raise UnknownRunError(run_id)
        return mirror

    async def _follow(self, run_id: str, mirror: _Mirror) -> None:
        """Mirror the log until it closes or nobody has read it for a while."""
        key = self._key(run_id)
        block: int | None = None  # the first read returns at once: a new reader needs the log as it is
        missing_since: float | None = None
        failures = 0
        while not self._closing:
            try:
                last_id = _event_id(len(mirror.events) - 1) if mirror.events else _OPEN_ID
                reply = await self._redis.xread({key: last_id}, count=_READ_COUNT, block=block)
                entries = _entries(reply)
                if not entries and not await self._redis.exists(key):
                    if not mirror.ready.is_set():
                        mirror.missing = True
                        break
                    # Gone: discarded, expired, or lost by a restarted Redis (its writer will write it back).
                    missing_since = missing_since or time.monotonic()
                    if time.monotonic() - missing_since > max(10.0, 5 * self.block_seconds):
                        mirror.closed = True
                        mirror.notify()
                        break
                else:
                    missing_since = None
                failures = 0
            except Exception as exc:
                raise_if_cancelling()
                if not mirror.ready.is_set():
                    mirror.error = exc
                    break
                failures += 1
                if failures == 1:
                    logger.warning("lost Redis while following run %s (%s); retrying", run_id, exc)
                await asyncio.sleep(min(0.1 * 2**failures, 2.0))
                continue
            if entries:
                mirror.add([(entry_id, fields["event"]) for entry_id, fields in entries if "event" in fields])
                if entries[-1][0] == _CLOSED_ID and not mirror.closed:
                    mirror.closed = True
                    mirror.notify()
            mirror.ready.set()
            if mirror.closed:
                break
            if time.monotonic() - mirror.last_used > _IDLE_MIRROR_SECONDS and not mirror.waiting:
                # Nobody reads it: stop following. The next reader starts a fresh mirror.
                if self._mirrors.get(run_id) is mirror:
                    del self._mirrors[run_id]
                break
            block = round(self.block_seconds * 1000)
        mirror.ready.set()

    def _sweep(self) -> None:
        """Forget closed mirrors nobody has read for a while (at most once a second)."""
        now = time.monotonic()
        if now - self._swept < 1.0:
            return
        self._swept = now
        for run_id, mirror in list(self._mirrors.items()):
            if mirror.closed and now - mirror.last_used > _IDLE_MIRROR_SECONDS:
                del self._mirrors[run_id]

    async def exists(self, run_id: str) -> bool:
        return bool(await _reachable(self._redis.exists(self._key(run_id))))

    async def metas(self, run_ids: Sequence[str]) -> list[dict[str, str] | None]:
        pipe = self._redis.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hgetall(f"{self.prefix}meta:{run_id}")  # pyright: ignore[reportUnknownMemberType]
        answers = cast(list[dict[str, str]], await _reachable(pipe.execute()))
        return [answer or None for answer in answers]

    async def run_ids(self, limit: int) -> list[str]:
        index = f"{self.prefix}runs"
        ids = cast(list[str], await _reachable(self._redis.zrevrange(index, 0, max(limit, 1) - 1)))  # pyright: ignore[reportUnknownMemberType]
        pipe = self._redis.pipeline(transaction=False)
        for run_id in ids:
            pipe.exists(self._key(run_id))
        present = await _reachable(pipe.execute())
        gone = [run_id for run_id, here in zip(ids, present, strict=True) if not here]
        if gone:  # expired with their retention: drop them from the index too
            await _reachable(self._redis.zrem(index, *gone))
        return [run_id for run_id, here in zip(ids, present, strict=True) if here]

    async def save_messages(self, run_id: str, messages: str) -> None:
        if not await _reachable(self._redis.exists(self._key(run_id))):
            raise UnknownRunError(run_id)
        await _reachable(self._redis.set(f"{self.prefix}messages:{run_id}", messages))

    async def messages(self, run_id: str) -> str | None:
        return cast(str | None, await _reachable(self._redis.get(f"{self.prefix}messages:{run_id}")))

    # ---- leases and messages ---------------------------------------------------------------------------

    async def renew(self, owner: str, run_ids: Collection[str], seconds: float) -> None:
        if not run_ids:
            return
        pipe = self._redis.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.set(f"{self.prefix}lease:{run_id}", owner, px=max(1, round(seconds * 1000)))
        await _reachable(pipe.execute())

    async def orphans(self) -> list[str]:
        live = f"{self.prefix}live"
        run_ids = sorted(cast(set[str], await _reachable(self._redis.smembers(live))))  # pyright: ignore[reportUnknownMemberType, reportGeneralTypeIssues]
        if not run_ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.exists(f"{self.prefix}lease:{run_id}")
            pipe.exists(self._key(run_id))
        answers = await _reachable(pipe.execute())
        leased, present = answers[0::2], answers[1::2]
        gone = [run_id for run_id, here in zip(run_ids, present, strict=True) if not here]
        if gone:
            await _reachable(self._redis.srem(live, *gone))  # pyright: ignore[reportUnknownMemberType, reportGeneralTypeIssues]
        return [
            run_id
            for run_id, lease, here in zip(run_ids, leased, present, strict=True)
            if here and not lease and run_id not in self._written
        ]

    async def publish(self, message: Mapping[str, str]) -> None:
        await _reachable(
            self._redis.xadd(f"{self.prefix}control", dict(message), maxlen=_CONTROL_MAXLEN, approximate=True)  # pyright: ignore[reportArgumentType]
        )

    async def subscribe(self) -> AsyncGenerator[dict[str, str]]:
        key = f"{self.prefix}control"
        last_id = "$"
        failures = 0
        block = round(self.block_seconds * 1000)
        while not self._closing:
            try:
                if last_id == "$":  # start after the newest message, so every later one is seen
                    newest = cast(list[Any], await self._redis.xrevrange(key, count=1))
                    last_id = str(newest[0][0]) if newest else "0-0"
                reply = await self._redis.xread({key: last_id}, block=block)
                failures = 0
            except Exception as exc:
                raise_if_cancelling()
                failures += 1
                if failures == 1:
                    logger.warning("lost Redis while listening for control messages (%s); retrying", exc)
                await asyncio.sleep(min(0.1 * 2**failures, 2.0))
                continue
            for entry_id, fields in _entries(reply):
                last_id = entry_id
                yield dict(fields)

    async def ping(self) -> None:
        """Check that Redis answers; `BusUnavailableError` saying why when it does not."""
        await _reachable(self._redis.ping())  # pyright: ignore[reportUnknownMemberType, reportGeneralTypeIssues]

    async def aclose(self) -> None:
        self._closing = True
        tasks = [m.task for m in self._mirrors.values() if m.task is not None and not m.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._mirrors.clear()
        await self._redis.aclose()


async def _reachable(call: Awaitable[_T]) -> _T:
    """Await a Redis call, turning "cannot reach Redis" into `BusUnavailableError`."""
    from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

    try:
        return await call
    except (ConnectionError, TimeoutError, BusyLoadingError, OSError) as exc:
        raise BusUnavailableError(f"Redis is unavailable: {exc}") from exc


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """The `(id, fields)` entries of one `XREAD` reply: RESP2 gives `[[key, entries]]`, RESP3 `{key: [entries]}`."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        streams = [entries for nested in cast(Mapping[Any, Any], reply).values() for entries in nested]
    else:
        streams = [stream[1] for stream in cast(Sequence[Any], reply)]
    return [(str(entry_id), cast(dict[str, str], fields)) for entries in streams for entry_id, fields in entries]
