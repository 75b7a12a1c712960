"""The event bus: the same contract for the in-process log and Redis Streams, and the server on Redis.

Redis tests use the server on 127.0.0.1:6379 (started by `make services`) and skip, saying why, without it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping, Sequence
from datetime import UTC, datetime

import pytest

from _server_helpers import Script, answer_text, client, events_of, parse_sse
from pydantic_deep.bus import (
    BusUnavailableError,
    EventBatch,
    EventBus,
    InMemoryEventBus,
    RedisEventBus,
    UnknownRunError,
    follow,
)
from pydantic_deep.server import create_app
from pydantic_deep.streaming import AnyStreamEvent, StreamEvent, llm_chunk_event

REDIS_URL = "redis://127.0.0.1:6379/0"


async def redis_bus() -> RedisEventBus:
    bus = RedisEventBus(REDIS_URL, prefix=f"pydantic-deep-test:{uuid.uuid4().hex}:")
    try:
        await bus.exists("ping")
    except Exception as exc:
        await bus.aclose()
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__}); run `make services`")
    return bus


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    the_bus: EventBus = InMemoryEventBus() if request.param == "memory" else await redis_bus()
    try:
        yield the_bus
    finally:
        for run_id in ("r", "r2"):
            await the_bus.discard(run_id)
        await the_bus.aclose()


def chunk(seq: int, text: str | None = None) -> StreamEvent:
    event = llm_chunk_event(text=text if text is not None else f"t{seq}\n")
    event.seq = seq
    event.run_id = "r"
    event.timestamp = datetime(2026, 1, 1, 12, 0, seq, tzinfo=UTC)
    return event


async def test_a_log_reads_from_any_seq_and_says_when_it_is_closed(bus: EventBus) -> None:
    assert isinstance(bus, EventBus)
    await bus.open("r")
    assert await bus.exists("r") and not await bus.exists("r2")
    assert await bus.read("r", wait=0) == EventBatch(events=[], closed=False)
    for seq in range(5):
        await bus.append("r", chunk(seq))
    assert [e.seq for e in (await bus.read("r")).events] == [0, 1, 2, 3, 4]
    assert (await bus.read("r", 2)).events == [chunk(3), chunk(4)]
    assert await bus.read("r", 0, limit=2) == EventBatch(events=[chunk(1), chunk(2)], closed=False)
    assert await bus.read("r", 4, wait=0) == EventBatch(events=[], closed=False)
    await bus.close("r")
    await bus.close("r")  # idempotent
    assert await bus.read("r", 2) == EventBatch(events=[chunk(3), chunk(4)], closed=True)
    assert await bus.read("r", 4) == EventBatch(events=[], closed=True)
    assert [e.seq async for e in follow(bus, "r", after=1)] == [2, 3, 4]


async def test_batches_carry_each_events_json_encoded_once_for_every_reader(bus: EventBus) -> None:
    await bus.open("r")
    for seq in range(4):
        await bus.append("r", chunk(seq))
    whole, tail = await bus.read("r"), await bus.read("r", 1, limit=1)
    assert whole.lines == [chunk(seq).to_json() for seq in range(4)]
    assert tail.lines == [chunk(2).to_json()] and tail.json_lines() is tail.lines
    if isinstance(bus, InMemoryEventBus):  # one string per event, whoever reads it
        assert tail.lines[0] is whole.lines[2] is (await bus.read("r", 1)).lines[0]
    # A bus that leaves `lines` out still gets the JSON, encoded on demand.
    assert EventBatch(events=[chunk(0)]).json_lines() == [chunk(0).to_json()]


async def test_the_log_refuses_gaps_repeats_reopening_and_appends_after_close(bus: EventBus) -> None:
    await bus.open("r")
    with pytest.raises(ValueError, match="already has an event log"):
        await bus.open("r")
    await bus.append("r", chunk(0))
    with pytest.raises(ValueError, match="expects seq 1 next, got 2"):
        await bus.append("r", chunk(2))
    with pytest.raises(ValueError, match="expects seq 1 next, got 0"):
        await bus.append("r", chunk(0))
    await bus.close("r")
    with pytest.raises(ValueError):
        await bus.append("r", chunk(1))
    with pytest.raises(UnknownRunError) as unknown:
        await bus.read("r2")
    assert str(unknown.value) == "no event log for run 'r2'"
    with pytest.raises(ValueError, match="limit must be at least 1"):
        await bus.read("r", limit=0)


async def blocked_in_read(bus: EventBus) -> None:
    """Return once a reader is waiting inside `bus.read` (the handshake for the wake-up tests)."""
    if isinstance(bus, InMemoryEventBus):
        await asyncio.sleep(0)  # one step takes a new reader task to its wait
        return
    from redis.asyncio import Redis

    observer = Redis.from_url(REDIS_URL, decode_responses=True)  # pyright: ignore[reportUnknownMemberType]
    try:
        # Redis itself says when a client sits blocked in XREAD; the state lives in another process, so ask.
        while True:
            clients = await observer.client_list()
            if any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in clients):
                return
            await asyncio.sleep(0.005)
    finally:
        await observer.aclose()


async def test_a_waiting_reader_wakes_on_append_and_on_discard(bus: EventBus) -> None:
    await bus.open("r")
    waiting = asyncio.create_task(bus.read("r", -1))
    await blocked_in_read(bus)
    await bus.append("r", chunk(0, "woke"))
    assert (await waiting).events == [chunk(0, "woke")]
    ahead = asyncio.create_task(bus.read("r", 0))
    await blocked_in_read(bus)
    await bus.discard("r")
    assert await ahead == EventBatch(events=[], closed=True)
    assert not await bus.exists("r")
    with pytest.raises(UnknownRunError):
        await bus.read("r")
    await bus.discard("r")  # nothing to do


async def test_readers_each_go_at_their_own_pace_and_see_the_same_log(bus: EventBus) -> None:
    await bus.open("r")

    async def writer() -> None:
        for seq in range(50):
            await bus.append("r", chunk(seq))
        await bus.close("r")

    async def slow_reader() -> list[StreamEvent]:
        got: list[StreamEvent] = []
        after = -1
        while True:
            batch = await bus.read("r", after, limit=1)
            got += batch.events
            if batch.closed:
                return got
            after = got[-1].seq if got else after
            await asyncio.sleep(0)

    fast = asyncio.create_task(_collect(follow(bus, "r")))
    slow = asyncio.create_task(slow_reader())
    await writer()
    assert await fast == await slow == [chunk(seq) for seq in range(50)]


async def _collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


# ---- the server on Redis -------------------------------------------------------------------------------


@pytest.mark.redis
async def test_the_server_on_redis_streams_runs_and_another_server_can_follow_them() -> None:
    bus = await redis_bus()
    other_bus = RedisEventBus(REDIS_URL, prefix=bus.prefix)
    script = Script(["over\nredis", " streams"])
    try:
        async with client(create_app(script.agent(), bus=bus)) as http:
            run_id = (await http.post("/runs", json={"prompt": "redis"})).json()["run_id"]
            here = events_of(parse_sse((await http.get(f"/runs/{run_id}/events")).text))
            resumed = events_of(parse_sse((await http.get(f"/runs/{run_id}/events?last_event_id=2")).text))
            # A second server (another process in production) on the same Redis: it follows the run too.
            async with client(create_app(script.agent(), bus=other_bus)) as elsewhere:
                there = await elsewhere.get(f"/runs/{run_id}/events")
                status_there = await elsewhere.get(f"/runs/{run_id}")
                listed_there = (await elsewhere.get("/runs")).json()["runs"]
            status_here = (await http.get(f"/runs/{run_id}")).json()
    finally:
        await bus.aclose()
        await other_bus.aclose()  # left open, its socket is closed by the garbage collector inside a later test
    assert answer_text(here) == "over\nredis streams"
    assert here[-1]["event_type"] == "agent_end" and [e["seq"] for e in here] == list(range(len(here)))
    assert resumed == here[3:]
    assert events_of(parse_sse(there.text)) == here
    # Status is read from the log elsewhere: the same facts as where the run ran.
    assert status_there.json() == status_here and status_here["status"] == "succeeded"
    assert [(r["run_id"], r["status"]) for r in listed_there] == [(run_id, "succeeded")]


def test_redis_bus_names_its_keys_and_connects_lazily() -> None:
    bus = RedisEventBus("redis://127.0.0.1:1/0", prefix="p:")  # nothing listens there; nothing is tried yet
    assert (bus.prefix, bus.retention_seconds, bus.max_run_seconds) == ("p:", 3600, 86_400)


class FlakyBus:
    """An in-process bus that can be made unreachable (as Redis going away), delegating everything else."""

    def __init__(self) -> None:
        self.inner = InMemoryEventBus()
        self.down = False
        self.refused = asyncio.Event()  # set once an append was refused: the outage has been felt

    def _check(self) -> None:
        if self.down:
            self.refused.set()
            raise BusUnavailableError("Redis is unavailable: connection refused")

    async def open(self, run_id: str, meta: Mapping[str, str] | None = None) -> None:
        self._check()
        await self.inner.open(run_id, meta)

    async def append(self, run_id: str, event: AnyStreamEvent) -> None:
        await self.append_many(run_id, [event])

    async def append_many(self, run_id: str, events: Sequence[AnyStreamEvent]) -> None:
        self._check()
        await self.inner.append_many(run_id, events)

    async def close(self, run_id: str) -> None:
        self._check()
        await self.inner.close(run_id)

    async def read(self, run_id: str, after: int = -1, *, limit: int = 256, wait: float | None = None) -> EventBatch:
        return await self.inner.read(run_id, after, limit=limit, wait=wait)

    async def hand_over(self, run_id: str) -> None:
        await self.inner.hand_over(run_id)

    async def exists(self, run_id: str) -> bool:
        return await self.inner.exists(run_id)

    async def discard(self, run_id: str) -> None:
        await self.inner.discard(run_id)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def metas(self, run_ids: Sequence[str]) -> list[dict[str, str] | None]:
        return await self.inner.metas(run_ids)

    async def run_ids(self, limit: int) -> list[str]:
        return await self.inner.run_ids(limit)

    async def save_messages(self, run_id: str, messages: str) -> None:
        self._check()
        await self.inner.save_messages(run_id, messages)

    async def messages(self, run_id: str) -> str | None:
        return await self.inner.messages(run_id)

    async def renew(self, owner: str, run_ids: Collection[str], seconds: float) -> None:
        self._check()

    async def orphans(self) -> list[str]:
        return []

    async def publish(self, message: Mapping[str, str]) -> None:
        await self.inner.publish(message)

    def subscribe(self) -> AsyncGenerator[dict[str, str]]:
        return self.inner.subscribe()


async def test_a_run_keeps_its_events_while_the_bus_is_away_and_is_stopped_past_the_bound() -> None:
    bus = FlakyBus()
    assert isinstance(bus, EventBus)
    script = Script(["a", "b", "c", "d", "e", "f"], paced=True)
    async with client(create_app(script.agent(), bus=bus, max_buffered_events=3, flush_interval=0)) as http:
        run_id = (await http.post("/runs", json={"prompt": "through"})).json()["run_id"]
        assert (await bus.read(run_id, wait=None)).events[0].event_type == "agent_start"
        bus.down = True
        refused = await http.post("/runs", json={"prompt": "during"})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
        assert refused.json()["error"]["code"] == "bus_unavailable"
        script.allow(6)  # the run goes on: its events wait in memory, past the bound of 3
        await bus.refused.wait()
        status = (await http.get(f"/runs/{run_id}")).json()  # described by the process that runs it
        while status["status"] == "running":
            await asyncio.sleep(0)  # the run task reaches the bound on its own pace, no timers involved
            status = (await http.get(f"/runs/{run_id}")).json()
        bus.down = False  # Redis is back: everything kept is written, in order
        events = events_of(parse_sse((await http.get(f"/runs/{run_id}/events")).text))
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[-2]["event_type"] == "error" and events[-2]["data"]["exception_type"] == "BusUnavailableError"
    assert "more than 3 events" in events[-2]["data"]["error"]
    assert events[-1]["event_type"] == "agent_end" and events[-1]["data"]["status"] == "failed"
    assert status["status"] == "failed"


class CancelSwallowingBus(InMemoryEventBus):
    """Its lease renewal turns a cancellation that lands in it into a connection error, as a Redis client can."""

    def __init__(self) -> None:
        super().__init__()
        self.renewing = asyncio.Event()

    async def renew(self, owner: str, run_ids: Collection[str], seconds: float) -> None:
        self.renewing.set()
        try:
            await asyncio.Event().wait()  # a renewal that is slow to answer
        except asyncio.CancelledError:
            raise BusUnavailableError("connection closed while reading") from None


async def test_shutdown_ends_background_work_whose_bus_turns_the_cancellation_into_an_error() -> None:
    bus = CancelSwallowingBus()
    app = create_app(Script(["x"]).agent(), bus=bus, lease_seconds=0.04)
    async with asyncio.timeout(30):  # the shutdown used to wait forever on the lease task
        async with client(app):
            await bus.renewing.wait()  # the lease task is inside the bus when the server shuts down
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "pydantic-deep leases"]
