"""Durable runs: a fleet of real `pydantic-deep serve --durable` processes on a real Redis and Postgres.

The agent (`_durable_app`) stops at gates the test opens; a test kills the process at a gate with
`kill -9` (or stops it with `SIGTERM`) and follows the run to its end on another process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from _fleet_helpers import REDIS_URL, START_DEADLINE, Follower, Server, redis_or_skip
from _js_helpers import JS, MISSING, WHY
from pydantic_deep.streaming import RunState, StreamEvent

pytestmark = [pytest.mark.redis, pytest.mark.fleet, pytest.mark.postgres]

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
ANSWER = "Part one, still part one. Part two: the notes say yes."


@pytest.fixture
def database() -> Iterator[str]:
    """A database of this test's own (pgtask's tables have fixed names), dropped after."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(f"{POSTGRES}/test", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES} ({exc}); run `make services`")
    name = f"pydantic_deep_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


class DurableFleet:
    """`pydantic-deep serve --durable` processes serving `_durable_app` on one bus prefix and one database."""

    def __init__(self, database: str, directory: Path) -> None:
        self.database, self.dir = database, directory
        self.prefix = f"pydantic-deep-test:{uuid.uuid4().hex}:"
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("PYDANTIC_DEEP_")}
        tests = str(Path(__file__).parent)
        self.env.update(DURABLE_TEST_DIR=str(directory), PYTHONPATH=tests, NO_COLOR="1")
        self.servers: list[Server] = []

    def start(self, *args: str, count: int = 1) -> list[Server]:
        started = [
            Server(
                *("--bus", REDIS_URL, "--bus-prefix", self.prefix, "--keepalive", "1", "--lease", "2"),
                *("--agent", "_durable_app:make_agent", "--durable", self.database, *args),
                env=self.env,
                name="durable",
            )
            for _ in range(count)
        ]
        self.servers += started
        for server in started:
            server.wait_ready()
        return started

    def by_pid(self, pid: int) -> Server:
        (server,) = [s for s in self.servers if s.proc.pid == pid]
        return server

    async def reached(self, gate: str, *, not_by: int | None = None) -> int:
        """Wait until a process stops at `gate` (not process `not_by`); its pid."""
        path = self.dir / f"{gate}.reached"
        end = time.monotonic() + START_DEADLINE
        while True:  # handshake: the process writes its pid when it gets there
            if path.exists() and (text := path.read_text()) and int(text) != not_by:
                return int(text)
            assert time.monotonic() < end, f"no process reached {gate}:\n" + self.outputs()
            await asyncio.sleep(0.02)

    def open(self, gate: str) -> None:
        (self.dir / f"{gate}.open").touch()

    def kill(self, server: Server, *, then_open: str | None = None) -> None:
        """`kill -9` the process, wait until it is gone, then open the gate its run stopped at (if given):
        the process that goes on with the run passes it."""
        server.proc.send_signal(signal.SIGKILL)
        server.wait(30)
        if then_open is not None:
            self.open(then_open)

    def stopped(self, server: Server) -> int:
        """`server`'s exit status once it has stopped (a drain takes a few seconds at most)."""
        try:
            return server.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{server.url} did not stop:\n{self.outputs()}") from None

    def effects(self) -> list[tuple[str, str, int]]:
        """Each `record` call: (label, tool call id, pid of the process that ran it)."""
        path = self.dir / "effects.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(label, call_id, int(pid)) for label, call_id, pid in (line.split("|") for line in lines)]

    def outputs(self) -> str:
        return "\n".join(f"--- {s.url}\n{s.output()}" for s in self.servers)


@contextmanager
def durable_fleet(database: str, directory: Path) -> Iterator[DurableFleet]:
    redis_or_skip()
    the_fleet = DurableFleet(database, directory)
    try:
        yield the_fleet
    finally:
        for server in the_fleet.servers:
            server.stop()


async def queue_state(database: str, run_id: str) -> str:
    """The state of the run's task in pgtask's queue."""
    import psycopg
    from pgtask import Client

    with psycopg.connect(database) as connection:
        row = connection.execute("SELECT task_id FROM pydantic_deep.runs WHERE run_id = %s", (run_id,)).fetchone()
    assert row is not None
    result = await (await Client.connect(database)).task_result(row[0])
    assert result is not None
    return result.state


def folded(events: list[dict[str, Any]]) -> RunState:
    state = RunState()
    for event in events:
        state.apply(StreamEvent.from_dict(event))
    return state


def without_void(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log as a consumer honouring `run_resumed` sees it: the void events left out."""
    kept: list[dict[str, Any]] = []
    for event in events:
        if event["event_type"] == "run_resumed":
            after = event["data"]["void_after_seq"]
            kept = [e for e in kept if e["seq"] <= after]
        kept.append(event)
    return kept


def void_of(events: list[dict[str, Any]], resumed: dict[str, Any]) -> list[dict[str, Any]]:
    """The events `resumed` (a `run_resumed`) declares void."""
    return [e for e in events if resumed["data"]["void_after_seq"] < e["seq"] < resumed["seq"]]


def assert_resumed_run(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A run taken over once: contiguous seq, one `run_resumed`, calls paired and the answer whole once void
    events are dropped; the answer is what an uninterrupted run gives. Returns the `run_resumed` event."""
    assert [e["seq"] for e in events] == list(range(len(events)))
    (resumed,) = [e for e in events if e["event_type"] == "run_resumed"]
    assert events[0]["event_type"] == "agent_start"
    assert events[-1]["event_type"] == "agent_end" and events[-1]["data"]["status"] == "succeeded", events[-3:]
    assert events[-1]["data"]["output"] == ANSWER
    kept = without_void(events)
    starts = [e["data"]["tool_call_id"] for e in kept if e["event_type"] == "tool_start"]
    ends = [e["data"]["tool_call_id"] for e in kept if e["event_type"] == "tool_end"]
    assert starts == ends == ["call-write", "call-record", "call-read"]
    assert "".join(e["data"]["text"] for e in kept if e["event_type"] == "llm_chunk") == ANSWER
    state = folded(events)
    assert (state.text, state.phase, state.resumed) == (ANSWER, "succeeded", 1)
    assert [call.tool_call_id for call in state.tools] == ["call-write", "call-record", "call-read"]
    return resumed


async def test_kill_9_mid_answer_the_run_goes_on_in_another_process_and_its_stream_too(
    database: str, tmp_path: Path
) -> None:
    with durable_fleet(database, tmp_path) as the_fleet:
        a, b, c = the_fleet.start(count=3)
        prompt = "mid-answer one"
        async with httpx.AsyncClient(timeout=60) as http:
            created = await http.post(f"{a.url}/runs", json={"prompt": prompt})
            assert created.status_code == 201, created.text
            run_id = created.json()["run_id"]
            owner = the_fleet.by_pid(await the_fleet.reached(f"{prompt}-answer"))
            watcher = next(s for s in (c, b, a) if s is not owner)
            follower = Follower(watcher.url, run_id)
            before = await follower.until(http, "llm_chunk")  # the answer has begun streaming
            assert before["data"]["text"] == "Part one, "
            the_fleet.kill(owner, then_open=f"{prompt}-answer")
            events = await follower.to_end(http)
            resumed = assert_resumed_run(events)
            # Settled: three model requests and the three tool calls; the cut answer's text is void.
            assert resumed["data"]["from_step"] == 3 and resumed["data"]["attempt"] == 2
            void = void_of(events, resumed)
            assert [e["event_type"] for e in void] == ["llm_chunk", "llm_chunk"]
            assert len(void) == resumed["data"]["void_events"]
            status = (await http.get(f"{watcher.url}/runs/{run_id}")).json()
            assert status["status"] == "succeeded" and status["output"] == ANSWER
        # Each finished tool call ran once: `record` before the kill, never again.
        assert the_fleet.effects() == [(prompt, "call-record", owner.proc.pid)]


async def test_kill_9_mid_tool_the_tool_runs_again_with_its_call_id_and_the_workspace_is_intact(
    database: str, tmp_path: Path
) -> None:
    with durable_fleet(database, tmp_path) as the_fleet:
        a, b, c = the_fleet.start(count=3)
        prompt = "mid-tool two"
        async with httpx.AsyncClient(timeout=60) as http:
            run_id = (await http.post(f"{b.url}/runs", json={"prompt": prompt})).json()["run_id"]
            owner = the_fleet.by_pid(await the_fleet.reached(f"{prompt}-tool"))
            watcher = next(s for s in (a, b, c) if s is not owner)
            follower = Follower(watcher.url, run_id)
            started = await follower.until(http, "tool_start")
            assert started["data"]["tool_call_id"] == "call-write"
            the_fleet.kill(owner, then_open=f"{prompt}-tool")
            events = await follower.to_end(http)
            resumed = assert_resumed_run(events)  # the answer quotes notes.md: written before the kill
            assert resumed["data"]["from_step"] == 2  # write_file settled with its model requests
            void = void_of(events, resumed)
            assert [(e["event_type"], e["data"]["tool_call_id"]) for e in void] == [("tool_start", "call-record")]
            writes = [e for e in events if e["event_type"] == "tool_start" and e["data"]["tool_name"] == "write_file"]
            assert len(writes) == 1  # a finished call is not run again
        # The call in flight ran again, at least once, with the same call id (its idempotency key).
        (first, again) = the_fleet.effects()
        assert first[:2] == again[:2] == (prompt, "call-record")
        assert first[2] == owner.proc.pid and again[2] != owner.proc.pid


async def test_a_rolling_restart_of_two_processes_under_five_running_runs_completes_all_five(
    database: str, tmp_path: Path
) -> None:
    with durable_fleet(database, tmp_path) as the_fleet:
        a, b = the_fleet.start("--drain-timeout", "1", count=2)
        prompts = [f"mid-answer roll {n}" for n in range(5)]
        async with httpx.AsyncClient(timeout=60) as http:
            run_ids = {}
            for n, prompt in enumerate(prompts):
                created = await http.post(f"{(a, b)[n % 2].url}/runs", json={"prompt": prompt})
                run_ids[prompt] = created.json()["run_id"]
            owners = {prompt: await the_fleet.reached(f"{prompt}-answer") for prompt in prompts}
            # Restart each process in turn: SIGTERM hands its runs over (after its drain) and it exits.
            a.signal(signal.SIGTERM)
            assert the_fleet.stopped(a) == 0, the_fleet.outputs()
            (a2,) = the_fleet.start("--drain-timeout", "1")
            for prompt in [p for p in prompts if owners[p] == a.proc.pid]:
                owners[prompt] = await the_fleet.reached(f"{prompt}-answer", not_by=a.proc.pid)
            b.signal(signal.SIGTERM)
            assert the_fleet.stopped(b) == 0, the_fleet.outputs()
            for prompt in [p for p in prompts if owners[p] == b.proc.pid]:
                owners[prompt] = await the_fleet.reached(f"{prompt}-answer", not_by=b.proc.pid)
            assert set(owners.values()) == {a2.proc.pid}
            for prompt in prompts:
                the_fleet.open(f"{prompt}-answer")
            for prompt in prompts:
                events = await Follower(a2.url, run_ids[prompt]).to_end(http)
                assert [e["seq"] for e in events] == list(range(len(events)))
                state = folded(events)
                assert (state.phase, state.text, state.output) == ("succeeded", ANSWER, ANSWER), events[-3:]
                assert [call.tool_call_id for call in state.tools] == ["call-write", "call-record", "call-read"]
        assert "handed over to another process" in a.output() + b.output()
        # Every `record` call finished before the restarts: each ran once.
        assert sorted(label for label, _, _ in the_fleet.effects()) == prompts


async def test_a_run_cancelled_while_no_process_runs_it_is_cancelled_for_good(database: str, tmp_path: Path) -> None:
    with durable_fleet(database, tmp_path) as the_fleet:
        a, b = the_fleet.start(count=2)
        prompt = "mid-tool three"
        async with httpx.AsyncClient(timeout=60) as http:
            run_id = (await http.post(f"{a.url}/runs", json={"prompt": prompt})).json()["run_id"]
            owner = the_fleet.by_pid(await the_fleet.reached(f"{prompt}-tool"))
            other = b if owner is a else a
            the_fleet.kill(owner)
            cancelled = await http.post(f"{other.url}/runs/{run_id}/cancel")
            assert cancelled.status_code == 202
            the_fleet.open(f"{prompt}-tool")
            events = await Follower(other.url, run_id).to_end(http)
            assert events[-1]["event_type"] == "agent_end" and events[-1]["data"]["status"] == "cancelled"
            assert [e["seq"] for e in events] == list(range(len(events)))
            assert (await http.get(f"{other.url}/runs/{run_id}")).json()["status"] == "cancelled"
        # Not run again: the call in flight at the kill ran once, and the queue holds the run no more.
        assert [label for label, _, _ in the_fleet.effects()] == [prompt]
        assert await queue_state(database, run_id) in ("succeeded", "cancelled")


async def test_the_next_turn_of_a_durable_conversation_finds_the_files_the_last_one_wrote(
    database: str, tmp_path: Path
) -> None:
    with durable_fleet(database, tmp_path) as the_fleet:
        a, b = the_fleet.start(count=2)
        async with httpx.AsyncClient(timeout=60) as http:
            first = (await http.post(f"{a.url}/runs", json={"prompt": "first turn"})).json()["run_id"]
            events = await Follower(b.url, first).to_end(http)
            assert events[-1]["data"]["output"] == ANSWER
            body = {"prompt": "again, what do the notes say?", "continue_from": first}
            second = (await http.post(f"{b.url}/runs", json=body)).json()["run_id"]
            events = await Follower(a.url, second).to_end(http)
            assert events[-1]["data"]["status"] == "succeeded"
            output = events[-1]["data"]["output"]
            assert output.startswith("The notes say:") and "first turn" in output


async def client_across_a_takeover(
    the_fleet: DurableFleet, prompt: str, script: str, *args: str, begun: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """A real JavaScript client (`tests/js/SCRIPT`) on a process that only serves (`--no-durable-worker`)
    follows a run while the process running it is killed mid-answer; what the client printed after."""
    (front,) = the_fleet.start("--no-durable-worker")
    the_fleet.start(count=2)
    node = await asyncio.create_subprocess_exec(
        "node", str(JS / script), front.url, *args, prompt, stdout=asyncio.subprocess.PIPE, cwd=JS
    )
    assert node.stdout is not None
    owner = the_fleet.by_pid(await the_fleet.reached(f"{prompt}-answer"))
    printed: list[dict[str, Any]] = []
    while not printed or not begun(printed[-1]):  # handshake: the client has the answer's first half
        printed.append(json.loads(await node.stdout.readline()))
    the_fleet.kill(owner, then_open=f"{prompt}-answer")
    printed += [json.loads(line) for line in (await node.stdout.read()).decode().splitlines()]
    assert await node.wait() == 0
    return printed


@pytest.mark.skipif(MISSING, reason=WHY)
async def test_an_ag_ui_client_following_a_run_across_a_takeover_shows_the_answer_once(
    database: str, tmp_path: Path
) -> None:
    """The real `HttpAgent`: the messages snapshot at `run_resumed` takes the cut-off text back."""
    with durable_fleet(database, tmp_path) as the_fleet:
        prompt = "mid-answer agui"
        printed = await client_across_a_takeover(
            the_fleet,
            prompt,
            "agui_run.mjs",
            "thread-1",
            "run-1",
            begun=lambda p: p.get("event") == "TEXT_MESSAGE_CONTENT",
        )
        seen = [line["event"] for line in printed if "event" in line]
        (outcome,) = [line for line in printed if "messages" in line or "error" in line]
        assert "error" not in outcome, outcome
        assert seen.count("MESSAGES_SNAPSHOT") == 1 and seen[-1] == "RUN_FINISHED"
        assert [c["name"] for c in outcome["custom"]].count("run_resumed") == 1
        texts = [m["content"] for m in outcome["messages"] if m["role"] == "assistant" and m.get("content")]
        assert texts == [ANSWER]  # once: the half streamed before the kill went with the snapshot
        assert [m["content"] for m in outcome["messages"] if m["role"] == "user"] == [prompt]
        calls = [c["id"] for m in outcome["messages"] if m["role"] == "assistant" for c in m.get("toolCalls") or []]
        assert calls == ["call-write", "call-record", "call-read"]


@pytest.mark.skipif(MISSING, reason=WHY)
async def test_a_vercel_ai_chat_following_a_run_across_a_takeover_gets_the_answer_and_a_run_resumed_part(
    database: str, tmp_path: Path
) -> None:
    """The AI SDK's transport has no chunk that takes text back: the message gets a `data-run_resumed` part
    naming the void events, and the answer again after it (docs/durability.md says so)."""
    with durable_fleet(database, tmp_path) as the_fleet:
        prompt = "mid-answer vercel"
        printed = await client_across_a_takeover(
            the_fleet, prompt, "vercel_chat.mjs", "send", "chat-1", begun=lambda p: p.get("chunk") == "text-delta"
        )
        (message,) = [line["message"] for line in printed if "message" in line]
        kinds = [part["type"] for part in message["parts"]]
        resumed = kinds.index("data-run_resumed")
        assert message["parts"][resumed]["data"]["void_events"] == 2
        after = [part["text"] for part in message["parts"][resumed:] if part["type"] == "text"]
        assert "".join(after) == ANSWER
        assert message["metadata"]["pydantic_deep"]["status"] == "succeeded"


async def test_a_durable_run_cancelled_while_it_runs_ends_cancelled_and_is_not_run_again(
    database: str, tmp_path: Path
) -> None:
    with durable_fleet(database, tmp_path) as the_fleet:
        a, b = the_fleet.start(count=2)
        prompt = "mid-tool four"
        async with httpx.AsyncClient(timeout=60) as http:
            run_id = (await http.post(f"{a.url}/runs", json={"prompt": prompt})).json()["run_id"]
            owner = the_fleet.by_pid(await the_fleet.reached(f"{prompt}-tool"))
            other = b if owner is a else a
            cancelled = await http.post(f"{other.url}/runs/{run_id}/cancel")  # its owner hears it on the bus
            assert cancelled.status_code == 202
            events = await Follower(other.url, run_id).to_end(http)
            assert [e["seq"] for e in events] == list(range(len(events)))
            assert events[-1]["event_type"] == "agent_end" and events[-1]["data"]["status"] == "cancelled"
            assert [e["event_type"] for e in events[-2:]] == ["tool_end", "agent_end"]  # the call in flight closed
            assert (await http.get(f"{owner.url}/runs/{run_id}")).json()["status"] == "cancelled"
            # Over for good: the owner stopping (a deploy) hands nothing back, so nobody runs it again.
            owner.signal(signal.SIGTERM)
            assert the_fleet.stopped(owner) == 0, the_fleet.outputs()
            the_fleet.open(f"{prompt}-tool")
            assert (await http.get(f"{other.url}/runs/{run_id}")).json()["status"] == "cancelled"
        assert await queue_state(database, run_id) == "succeeded"  # its task is over: no process claims it again
        assert "handed over" not in owner.output()
        assert [label for label, _, _ in the_fleet.effects()] == [prompt]


async def test_a_durable_run_cancelled_mid_answer_ends_cancelled_with_what_streamed_and_is_not_run_again(
    database: str, tmp_path: Path
) -> None:
    # The model waits mid-answer inside its durable step while the stream's consumer pulls its events: the
    # cancel ends that pull (the model's stream is closed) and the run, which nobody takes over afterwards.
    with durable_fleet(database, tmp_path) as the_fleet:
        a, b = the_fleet.start(count=2)
        prompt = "mid-answer five"
        async with httpx.AsyncClient(timeout=60) as http:
            run_id = (await http.post(f"{a.url}/runs", json={"prompt": prompt})).json()["run_id"]
            owner = the_fleet.by_pid(await the_fleet.reached(f"{prompt}-answer"))
            other = b if owner is a else a
            follower = Follower(other.url, run_id)
            await follower.until(http, "llm_chunk")
            cancelled = await http.post(f"{other.url}/runs/{run_id}/cancel")
            assert cancelled.status_code == 202
            events = await follower.to_end(http)
            assert [e["seq"] for e in events] == list(range(len(events)))
            assert [e["event_type"] for e in events[-3:]] == ["llm_chunk", "llm_chunk", "agent_end"]
            assert events[-1]["data"]["status"] == "cancelled"
            text = "".join(e["data"]["text"] for e in events if e["event_type"] == "llm_chunk")
            assert text == "Part one, still part one. "
            assert (await http.get(f"{owner.url}/runs/{run_id}")).json()["status"] == "cancelled"
            owner.signal(signal.SIGTERM)
            assert the_fleet.stopped(owner) == 0, the_fleet.outputs()
            the_fleet.open(f"{prompt}-answer")
            assert (await http.get(f"{other.url}/runs/{run_id}")).json()["status"] == "cancelled"
        assert await queue_state(database, run_id) == "succeeded"
        assert [label for label, _, _ in the_fleet.effects()] == [prompt]


async def test_a_durable_run_whose_model_goes_quiet_mid_answer_fails_on_the_idle_timeout(
    database: str, tmp_path: Path
) -> None:
    # Only the run is stopped (not the stream's consumer, which is pulling the model's events inside the
    # durable step): the pull in flight must end with it, or the run's end would never reach the log.
    with durable_fleet(database, tmp_path) as the_fleet:
        (server,) = the_fleet.start("--idle-timeout", "5")
        prompt = "mid-answer six"
        async with httpx.AsyncClient(timeout=60) as http:
            run_id = (await http.post(f"{server.url}/runs", json={"prompt": prompt})).json()["run_id"]
            await the_fleet.reached(f"{prompt}-answer")
            events = await Follower(server.url, run_id).to_end(http)
            assert [e["seq"] for e in events] == list(range(len(events)))
            assert [e["event_type"] for e in events[-4:]] == ["llm_chunk", "llm_chunk", "error", "agent_end"]
            assert events[-2]["data"]["exception_type"] == "IdleTimeoutError"
            assert events[-1]["data"]["status"] == "failed"
            text = "".join(e["data"]["text"] for e in events if e["event_type"] == "llm_chunk")
            assert text == "Part one, still part one. "
            assert (await http.get(f"{server.url}/runs/{run_id}")).json()["status"] == "failed"
            the_fleet.open(f"{prompt}-answer")
