"""Approvals over HTTP: a waiting run's status, `POST /runs/{run_id}/approvals`, its rules, a reconnecting
client, another process of a fleet, and a per-run budget.

Real uvicorn on 127.0.0.1; each test reads the run's SSE stream up to `approval_required` (a handshake),
then decides.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from _fleet_helpers import Follower, fleet, shared_redis_buses
from _server_helpers import SseMessage, live_server, sse_stream
from pydantic_deep import create_deep_agent
from pydantic_deep.server import create_app


def launch(target: str) -> str:
    """Launch something."""
    return f"launched {target}"


def launcher() -> Any:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if len(messages) == 1:
            yield {0: DeltaToolCall(name="launch", json_args=json.dumps({"target": "rocket"}), tool_call_id="call-1")}
            return
        yield "done"

    model = FunctionModel(stream_function=stream, model_name="launcher")
    return create_deep_agent(model, tools=[launch], file_tools=False, planning=False)


async def until(messages: AsyncIterator[SseMessage], event_type: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async for message in messages:
        seen.append(message.json())
        if seen[-1]["event_type"] == event_type:
            return seen
    raise AssertionError(f"the stream ended before {event_type}: {[e['event_type'] for e in seen]}")


async def test_a_waiting_run_is_decided_over_http() -> None:
    app = create_app(launcher(), require_approval=["launch"])
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        run_id = (await http.post("/runs", json={"prompt": "go"})).json()["run_id"]
        async with http.stream("GET", f"/runs/{run_id}/events") as response:
            messages = sse_stream(response)
            first = await until(messages, "approval_required")
            waiting = (await http.get(f"/runs/{run_id}")).json()
            bad = await http.post(
                f"/runs/{run_id}/approvals", json={"tool_call_id": "call-1", "approved": False, "args": {}}
            )
            unknown = await http.post(f"/runs/{run_id}/approvals", json={"tool_call_id": "nope", "approved": True})
            edited = {"tool_call_id": "call-1", "approved": True, "args": {"target": "balloon"}}
            answered = await http.post(f"/runs/{run_id}/approvals", json=edited)
            rest = [m.json() async for m in messages]
        again = await http.post(f"/runs/{run_id}/approvals", json=edited)
        other = await http.post(f"/runs/{run_id}/approvals", json={"tool_call_id": "call-1", "approved": False})
        done = (await http.get(f"/runs/{run_id}")).json()
    assert (waiting["status"], waiting["pending_approvals"]) == (
        "awaiting_approval",
        [
            {
                "tool_call_id": "call-1",
                "tool_name": "launch",
                "args": {"target": "rocket"},
                "reason": "launch needs approval",
                "run_id": run_id,
                "depth": 0,
            }
        ],
    )
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "args")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "no_such_approval")
    assert answered.status_code == 202
    events = first + rest
    assert [e["seq"] for e in events] == list(range(len(events)))
    resolved = next(e for e in events if e["event_type"] == "approval_resolved")["data"]
    assert resolved == {
        "tool_call_id": "call-1",
        "approved": True,
        "decided_by": "admin",
        "reason": None,
        "args": {"target": "balloon"},
    }
    end = next(e for e in events if e["event_type"] == "tool_end")["data"]
    assert end["result"] == "launched balloon"
    assert events[-1]["data"]["status"] == "succeeded"
    assert again.status_code == 202  # the same decision again changes nothing
    assert (other.status_code, other.json()["error"]["code"]) == (409, "approval_conflict")
    assert (done["status"], done["pending_approvals"]) == ("succeeded", [])


async def test_a_client_that_comes_back_finds_the_run_waiting() -> None:
    async with live_server(create_app(launcher())) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        created = await http.post("/runs", json={"prompt": "go", "require_approval": ["launch"]})
        run_id = created.json()["run_id"]
        async with http.stream("GET", f"/runs/{run_id}/events") as response:
            first = await until(sse_stream(response), "approval_required")
        # Gone and back: the run still waits, and the stream resumes where it left off.
        assert (await http.get(f"/runs/{run_id}")).json()["status"] == "awaiting_approval"
        headers = {"Last-Event-ID": str(first[-1]["seq"])}
        async with http.stream("GET", f"/runs/{run_id}/events", headers=headers) as response:
            messages = sse_stream(response)
            deny = {"tool_call_id": "call-1", "approved": False, "reason": "not today"}
            assert (await http.post(f"/runs/{run_id}/approvals", json=deny)).status_code == 202
            rest = [m.json() async for m in messages]
    assert rest[0]["seq"] == first[-1]["seq"] + 1
    assert [e["event_type"] for e in rest][:2] == ["approval_resolved", "tool_end"]
    assert rest[1]["data"]["error"] == "not today"
    assert rest[-1]["data"]["status"] == "succeeded"


async def test_a_budget_in_the_request() -> None:
    async with live_server(create_app(launcher())) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        body = {"prompt": "go", "budget": {"max_steps": 1, "warn_at": 1}}
        run_id = (await http.post("/runs", json=body)).json()["run_id"]
        async with http.stream("GET", f"/runs/{run_id}/events") as response:
            events = [m.json() async for m in sse_stream(response)]
        refused = await http.post("/runs", json={"prompt": "go", "budget": {"max_steps": 0}})
    guards = [e["data"] for e in events if e["event_type"] == "guardrail"]
    assert [(g["action"], g["metric"], g["limit"], g["used"]) for g in guards] == [
        ("warn", "steps", 1, 1),
        ("block", "steps", 1, 1),
    ]
    assert [e["event_type"] for e in events][-2:] == ["error", "agent_end"]
    assert events[-2]["data"]["exception_type"] == "BudgetExceeded"
    assert (refused.status_code, refused.json()["error"]["errors"][0]["field"]) == (422, "budget.max_steps")


@pytest.mark.redis
async def test_an_approval_sent_to_another_server_of_the_fleet() -> None:
    async with (
        shared_redis_buses() as (here, there),
        live_server(create_app(launcher(), bus=here, require_approval=["launch"])) as first_url,
        live_server(create_app(launcher(), bus=there)) as second_url,
        httpx.AsyncClient(timeout=30) as http,
    ):
        run_id = (await http.post(f"{first_url}/runs", json={"prompt": "go"})).json()["run_id"]
        async with http.stream("GET", f"{second_url}/runs/{run_id}/events") as response:
            messages = sse_stream(response)
            await until(messages, "approval_required")
            status = (await http.get(f"{second_url}/runs/{run_id}")).json()
            answer = {"tool_call_id": "call-1", "approved": True}
            accepted = await http.post(f"{second_url}/runs/{run_id}/approvals", json=answer)
            rest = [m.json() async for m in messages]
    assert (status["status"], [p["tool_call_id"] for p in status["pending_approvals"]]) == (
        "awaiting_approval",
        ["call-1"],
    )
    assert accepted.status_code == 202
    assert [e["event_type"] for e in rest][:2] == ["approval_resolved", "tool_end"]
    assert rest[0]["data"]["decided_by"] == "admin"
    assert rest[-1]["data"]["status"] == "succeeded"


@pytest.mark.redis
@pytest.mark.fleet
async def test_an_approval_sent_to_another_pydantic_deep_serve_process() -> None:
    """Two `pydantic-deep serve` processes on one Redis bus: the run waits on the first, a person answers
    on the second, and a client following on the second sees the run go on there."""
    with fleet() as processes:
        owner, other = processes.start("--require-approval", "write_file", count=2)
        async with httpx.AsyncClient(timeout=30) as http:
            run_id = (await http.post(f"{owner.url}/runs", json={"prompt": "note this"})).json()["run_id"]
            follower = Follower(other.url, run_id)
            asked = await follower.until(http, "approval_required")
            status = (await http.get(f"{other.url}/runs/{run_id}")).json()
            answer = {"tool_call_id": asked["data"]["tool_call_id"], "approved": True}
            accepted = await http.post(f"{other.url}/runs/{run_id}/approvals", json=answer)
            again = await http.post(f"{owner.url}/runs/{run_id}/approvals", json=answer)  # the same answer: no change
            denied = await http.post(f"{owner.url}/runs/{run_id}/approvals", json={**answer, "approved": False})
            events = await follower.to_end(http)
    assert (asked["data"]["tool_name"], status["status"]) == ("write_file", "awaiting_approval")
    assert (accepted.status_code, again.status_code, denied.status_code) == (202, 202, 409)
    after = [e["event_type"] for e in events[events.index(asked) + 1 :]]
    assert after[:3] == ["approval_resolved", "file_change", "tool_end"] and after[-1] == "agent_end"
    assert events[-1]["data"]["status"] == "succeeded"
    assert [e["seq"] for e in events] == list(range(len(events)))
