"""A fleet: real `pydantic-deep serve` processes on a real Redis, followed, cancelled, killed and drained.

Each test starts its processes through the command line (`--bus redis://...`, a fresh key prefix) and a
shared fake OpenAI model in this process whose answers wait at gates (see `_fleet_helpers`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import httpx
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws

from _fleet_helpers import Follower, OwnRedis, fleet, redis_or_skip

pytestmark = [pytest.mark.redis, pytest.mark.fleet]


def assert_whole_run(events: list[dict[str, Any]], status: str) -> None:
    """One run's log: seq from 0 without gaps, agent_start first, agent_end last with `status`, calls paired."""
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["event_type"] == "agent_start"
    assert events[-1]["event_type"] == "agent_end" and events[-1]["data"]["status"] == status
    starts = [e["data"]["tool_call_id"] for e in events if e["event_type"] == "tool_start"]
    ends = [e["data"]["tool_call_id"] for e in events if e["event_type"] == "tool_end"]
    assert sorted(starts) == sorted(ends)


async def test_a_run_is_followed_resumed_and_cancelled_through_another_process_and_quiet_runs_stay_open() -> None:
    redis_or_skip()
    with fleet() as the_fleet:
        a, b = the_fleet.start(count=2)
        gate = the_fleet.model.gate("quiet")
        the_fleet.model.gate("cancel me")
        async with httpx.AsyncClient(timeout=60) as http:
            run_id = (await http.post(f"{a.url}/runs", json={"prompt": "quiet"})).json()["run_id"]
            on_b, on_a = Follower(b.url, run_id), Follower(a.url, run_id)
            await on_b.until(http, "tool_end")  # then the connection drops: on_b resumes after it below
            await asyncio.to_thread(the_fleet.model.arrived["quiet"].wait)
            assert (await http.get(f"{b.url}/runs/{run_id}")).json()["status"] == "running"
            followers = [asyncio.create_task(on_b.to_end(http)), asyncio.create_task(on_a.to_end(http))]
            # The model thinks for 11 s (the old bus cut every follower after 5 quiet seconds).
            await asyncio.sleep(11)
            assert not any(task.done() for task in followers)
            gate.set()
            from_b, from_a = await asyncio.gather(*followers)
            assert from_b == from_a  # resumed on B after a dropped connection: nothing lost, nothing repeated
            assert_whole_run(from_a, "succeeded")
            assert "".join(e["data"]["text"] for e in from_a if e["event_type"] == "llm_chunk").endswith(
                "Done with quiet."
            )
            assert on_a.keepalives >= 1 and on_b.keepalives >= 1
            status_a = (await http.get(f"{a.url}/runs/{run_id}")).json()
            assert (await http.get(f"{b.url}/runs/{run_id}")).json() == status_a
            assert status_a["status"] == "succeeded" and status_a["last_seq"] == from_a[-1]["seq"]

            # Cancelled through B, run by A: A hears it on the bus; every follower ends `cancelled`.
            run_id = (await http.post(f"{a.url}/runs", json={"prompt": "cancel me"})).json()["run_id"]
            on_b = Follower(b.url, run_id)
            await on_b.until(http, "tool_end")
            await asyncio.to_thread(the_fleet.model.arrived["cancel me"].wait)
            cancelled = await http.post(f"{b.url}/runs/{run_id}/cancel")
            assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"] is True
            events = await on_b.to_end(http)
            assert_whole_run(events, "cancelled")
            assert events == await Follower(a.url, run_id).to_end(http)
            listed = (await http.get(f"{b.url}/runs")).json()["runs"]
            assert [(r["prompt"], r["status"]) for r in listed] == [("cancel me", "cancelled"), ("quiet", "succeeded")]


async def test_kill_9_of_the_owner_ends_every_follower_with_error_and_agent_end() -> None:
    redis_or_skip()
    with fleet() as the_fleet:
        a, b, c = the_fleet.start("--lease", "2", count=3)
        the_fleet.model.gate("doomed")
        async with httpx.AsyncClient(timeout=60) as http:
            run_id = (await http.post(f"{a.url}/runs", json={"prompt": "doomed"})).json()["run_id"]
            on_b, on_c = Follower(b.url, run_id), Follower(c.url, run_id)
            await on_b.until(http, "tool_end")
            await asyncio.to_thread(the_fleet.model.arrived["doomed"].wait)
            followers = [asyncio.create_task(on_b.to_end(http)), asyncio.create_task(on_c.to_end(http))]
            killed = time.monotonic()
            a.proc.kill()
            from_b, from_c = await asyncio.gather(*followers)
            print(f"followers ended {time.monotonic() - killed:.1f} s after kill -9 (lease 2 s)")
            assert from_b == from_c
            assert_whole_run(from_b, "failed")
            error = from_b[-2]
            assert error["event_type"] == "error" and error["data"]["exception_type"] == "ServerLost"
            assert "server running this run was lost" in error["data"]["error"]
            status = (await http.get(f"{b.url}/runs/{run_id}")).json()
            assert status["status"] == "failed" and status["error"] == error["data"]["error"]
            assert (await http.get(f"{c.url}/runs/{run_id}")).json() == status
            # Ended once, though two processes noticed: the log holds one error and one agent_end.
            assert [e["event_type"] for e in from_b].count("agent_end") == 1


async def test_redis_restarted_mid_run_503_then_followers_resume_and_new_runs_work() -> None:
    own = OwnRedis()
    own.start()
    try:
        with fleet(own.url) as the_fleet:
            (server,) = the_fleet.start()
            gate = the_fleet.model.gate("through the outage")
            async with httpx.AsyncClient(timeout=60) as http:
                run_id = (await http.post(f"{server.url}/runs", json={"prompt": "through the outage"})).json()["run_id"]
                follower = Follower(server.url, run_id)
                await follower.until(http, "tool_end")
                await asyncio.to_thread(the_fleet.model.arrived["through the outage"].wait)
                following = asyncio.create_task(follower.to_end(http))
                own.stop()
                refused = await http.post(f"{server.url}/runs", json={"prompt": "during"})
                assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
                assert refused.json()["error"]["code"] == "bus_unavailable"
                gate.set()  # the run goes on while Redis is away: its events wait in the outbox
                await asyncio.to_thread(wait_for_line, server, "the event bus is unavailable")
                own.start()  # empty: a Redis without persistence lost every log
                events = await following
                assert_whole_run(events, "succeeded")
                assert "".join(e["data"]["text"] for e in events if e["event_type"] == "llm_chunk").endswith(
                    "Done with through the outage."
                )
                again = await http.post(f"{server.url}/runs", json={"prompt": "after"})
                assert again.status_code == 201, again.text
                assert_whole_run(await Follower(server.url, again.json()["run_id"]).to_end(http), "succeeded")
    finally:
        own.close()


def wait_for_line(server: Any, needle: str) -> None:
    end = time.monotonic() + 60
    while needle not in server.output():
        assert time.monotonic() < end, f"{needle!r} never appeared:\n{server.output()}"
        time.sleep(0.02)


async def test_sigterm_drains_sse_and_websocket_clients_get_agent_end_and_the_process_exits() -> None:
    redis_or_skip()
    with fleet() as the_fleet:
        (server,) = the_fleet.start("--drain-timeout", "3")
        finishing, _ = the_fleet.model.gate("finishes while draining"), the_fleet.model.gate("never finishes")
        async with httpx.AsyncClient(timeout=60) as http:
            started = [
                (await http.post(f"{server.url}/runs", json={"prompt": prompt})).json()["run_id"]
                for prompt in ("finishes while draining", "never finishes")
            ]
            sse = Follower(server.url, started[0])
            await sse.until(http, "tool_end")
            for prompt in ("finishes while draining", "never finishes"):
                await asyncio.to_thread(the_fleet.model.arrived[prompt].wait)
            sse_task = asyncio.create_task(sse.to_end(http))
            async with aconnect_ws(f"{server.url}/runs/{started[1]}/ws", http) as ws:
                first = json.loads(await ws.receive_text())
                assert first["event_type"] == "agent_start"
                server.signal(signal.SIGTERM)
                await asyncio.to_thread(wait_for_line, server, "SIGTERM: draining")
                refused = await http.post(f"{server.url}/runs", json={"prompt": "too late"})
                assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
                finishing.set()
                ws_events = [first]
                while ws_events[-1]["event_type"] != "agent_end":
                    ws_events.append(json.loads(await ws.receive_text()))
            assert_whole_run(await sse_task, "succeeded")
            assert_whole_run(ws_events, "cancelled")
        signalled = time.monotonic()
        code = await asyncio.to_thread(server.wait, 60)
        print(f"exited {time.monotonic() - signalled:.1f} s after the clients had their ends")
        assert code == 0, server.output()
        assert "cancelling 1 runs still running" in server.output()


async def test_run_and_idle_timeouts_end_runs_failed_with_a_clear_error() -> None:
    redis_or_skip()
    with fleet(chunk_delay=0.05) as the_fleet:
        (server,) = the_fleet.start("--idle-timeout", "2", "--run-timeout", "6")
        the_fleet.model.gate("idle")
        async with httpx.AsyncClient(timeout=60) as http:
            idle, long = [
                (await http.post(f"{server.url}/runs", json={"prompt": prompt})).json()["run_id"]
                for prompt in ("idle", "long")
            ]
            idle_events = await Follower(server.url, idle).to_end(http)
            long_events = await Follower(server.url, long).to_end(http)
            for events, kind, words in (
                (idle_events, "IdleTimeoutError", "no event from the model or a tool for 2 s"),
                (long_events, "RunTimeoutError", "longer than its run timeout of 6 s"),
            ):
                assert_whole_run(events, "failed")
                assert events[-2]["event_type"] == "error" and events[-2]["data"]["exception_type"] == kind
                assert words in events[-2]["data"]["error"]
            assert sum(e["event_type"] == "llm_chunk" for e in long_events) > 10  # it was streaming all along
            status = (await http.get(f"{server.url}/runs/{idle}")).json()
            assert status["status"] == "failed" and "idle timeout" in status["error"]


async def test_an_answer_cut_off_before_the_providers_completion_event_fails_the_run() -> None:
    redis_or_skip()
    with fleet() as the_fleet:
        (server,) = the_fleet.start()
        async with httpx.AsyncClient(timeout=60) as http:
            run_id = (await http.post(f"{server.url}/runs", json={"prompt": "cut short"})).json()["run_id"]
            events = await Follower(server.url, run_id).to_end(http)
    assert_whole_run(events, "failed")
    texts = [e["data"]["text"] for e in events if e["event_type"] == "llm_chunk"]
    assert texts[-2:] == ["Done", " with "]  # what arrived is kept
    error = events[-2]["data"]
    assert error["exception_type"] == "IncompleteAnswerError" and "cut off" in error["error"]


async def test_sigterm_closes_streams_of_other_processes_runs_and_their_clients_resume_elsewhere() -> None:
    redis_or_skip()
    with fleet() as the_fleet:
        a, b = the_fleet.start(count=2)
        gate = the_fleet.model.gate("outlives b")
        async with httpx.AsyncClient(timeout=60) as http:
            run_id = (await http.post(f"{a.url}/runs", json={"prompt": "outlives b"})).json()["run_id"]
            on_b = Follower(b.url, run_id)
            await on_b.until(http, "tool_end")
            await asyncio.to_thread(the_fleet.model.arrived["outlives b"].wait)
            sse_on_b = asyncio.create_task(on_b.to_end(http))
            async with aconnect_ws(f"{b.url}/runs/{run_id}/ws", http) as ws:
                assert json.loads(await ws.receive_text())["event_type"] == "agent_start"
                b.signal(signal.SIGTERM)
                cut = await sse_on_b  # B ends the stream cleanly: it does not own the run
                with pytest.raises(WebSocketDisconnect) as closed:
                    while True:
                        await ws.receive_text()
            assert closed.value.code == 1012
            assert cut[-1]["event_type"] != "agent_end"
            assert await asyncio.to_thread(b.wait, 60) == 0
            gate.set()
            events = await Follower(a.url, run_id, after=on_b.after, events=list(cut)).to_end(http)
            assert_whole_run(events, "succeeded")  # resumed on A where B left off: nothing lost or repeated
