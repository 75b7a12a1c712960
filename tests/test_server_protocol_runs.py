"""AG-UI and Vercel AI runs on the run log: listed, cancellable, resumable, per principal, across a fleet.

The model is a `Script` the test paces (handshakes, no sleeps): a stream is read up to a frame, the client
goes away or another one joins, then the model is let through.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from _fleet_helpers import shared_redis_buses
from _server_helpers import Script, SseMessage, client, live_server, parse_sse, sse_stream
from pydantic_deep import create_deep_agent
from pydantic_deep.server import create_app
from pydantic_deep.streaming import DEFERRED_CALL_ERROR
from test_server_protocols import agui_body, check_agui_nesting, vercel_body

TOKENS = {"alice": "alice-secret", "bob": "bob-secret"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def frames_until(messages: AsyncIterator[SseMessage], wanted: str) -> list[SseMessage]:
    """Read SSE messages up to and including the first whose data mentions `wanted`."""
    seen: list[SseMessage] = []
    async for message in messages:
        seen.append(message)
        if wanted in message.data:
            return seen
    raise AssertionError(f"the stream ended before {wanted!r}: {[m.data for m in seen]}")


async def test_protocol_runs_are_listed_and_keep_their_log_and_conversation() -> None:
    async with client(create_app(Script(["Hi ", "there."]).agent())) as http:
        agui = await http.post("/ag-ui", json=agui_body("first"))
        vercel = await http.post("/vercel-ai", json=vercel_body("second", chat_id="chat-9"))
        listed = (await http.get("/runs")).json()["runs"]
        info = (await http.get(f"/runs/{vercel.headers['x-run-id']}")).json()
        events = parse_sse((await http.get(f"/runs/{vercel.headers['x-run-id']}/events")).text)
        messages = (await http.get(f"/runs/{vercel.headers['x-run-id']}/messages")).json()
    by_id = {run["run_id"]: run for run in listed}
    assert by_id[agui.headers["x-run-id"]]["protocol"] == "ag-ui"
    assert by_id[agui.headers["x-run-id"]]["conversation"] == "thread-1"
    assert by_id[agui.headers["x-run-id"]]["prompt"] == "first"
    assert (info["protocol"], info["conversation"], info["prompt"], info["status"]) == (
        "vercel-ai",
        "chat-9",
        "second",
        "succeeded",
    )
    assert info["usage"]["requests"] == 1 and info["output"] == "Hi there."
    assert [json.loads(m.data)["event_type"] for m in events] == [
        "agent_start",
        "llm_chunk",
        "llm_chunk",
        "progress",
        "agent_end",
    ]
    assert [part["content"] for part in messages[-1]["parts"]] == ["Hi there."]  # the answer, for the next turn


async def test_ag_ui_resumes_after_the_last_frame_it_saw() -> None:
    script = Script(["one ", "two ", "three"], paced=True)
    app = create_app(script.agent())
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        script.allow(1)
        async with http.stream("POST", "/ag-ui", json=agui_body("count")) as response:
            run_id = response.headers["x-run-id"]
            first = await frames_until(sse_stream(response), "TEXT_MESSAGE_CONTENT")
        # The client went away; the run did not: it goes on when the model does.
        script.allow(3)
        resumed_response = await http.post(
            "/ag-ui", json=agui_body("count"), headers={"Last-Event-ID": first[-1].id or ""}
        )
        again = await http.post("/ag-ui", json=agui_body("count"))
        runs = (await http.get("/runs")).json()["runs"]
    resumed = parse_sse(resumed_response.text)
    whole = parse_sse(again.text)
    assert resumed_response.headers["x-run-id"] == again.headers["x-run-id"] == run_id
    assert [run["run_id"] for run in runs] == [run_id]  # sending the same run again joins it
    # A resumed stream starts with the run's first frame, then those after the last one seen: the same frames.
    assert [m.id for m in resumed][:2] == ["0", str(int(first[-1].id or "") + 1)]
    assert [(m.id, m.data) for m in first + resumed[1:]] == [(m.id, m.data) for m in whole]
    assert resumed[0].data == whole[0].data
    events = [json.loads(m.data) for m in whole]
    check_agui_nesting(events)
    assert "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT") == "one two three"


async def test_vercel_ai_chat_resumes_while_it_runs_and_answers_204_after() -> None:
    script = Script(["one ", "two ", "three"], paced=True)
    async with live_server(create_app(script.agent())) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        script.allow(1)
        async with http.stream("POST", "/vercel-ai", json=vercel_body("count", chat_id="chat-r")) as response:
            messages = sse_stream(response)
            first = await frames_until(messages, "text-delta")
            async with http.stream("GET", "/vercel-ai/chat-r/stream") as reloaded:
                assert reloaded.status_code == 200
                assert reloaded.headers["x-vercel-ai-ui-message-stream"] == "v1"
                again = sse_stream(reloaded)
                joined = await frames_until(again, "text-delta")
                script.allow(3)
                joined += [m async for m in again]
            rest = [m async for m in messages]
        after = await http.get("/vercel-ai/chat-r/stream")
        unknown = await http.get("/vercel-ai/no-such-chat/stream")
    assert [(m.id, m.data) for m in joined] == [(m.id, m.data) for m in first + rest]
    assert joined[-1].data == "[DONE]"
    deltas = [json.loads(m.data)["delta"] for m in joined if '"text-delta"' in m.data]
    assert "".join(deltas) == "one two three"
    assert (after.status_code, unknown.status_code) == (204, 204)


async def test_cancelling_a_protocol_run_ends_its_stream_as_each_protocol_says() -> None:
    agui_script, vercel_script = Script(["never"], paced=True), Script(["never"], paced=True)
    async with live_server(create_app(agui_script.agent())) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        async with http.stream("POST", "/ag-ui", json=agui_body("wait")) as response:
            await agui_script.started.wait()
            cancelled = await http.post(f"/runs/{response.headers['x-run-id']}/cancel")
            agui = [json.loads(m.data) async for m in sse_stream(response)]
    async with (
        live_server(create_app(vercel_script.agent())) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        async with http.stream("POST", "/vercel-ai", json=vercel_body("wait")) as response:
            await vercel_script.started.wait()
            await http.post(f"/runs/{response.headers['x-run-id']}/cancel")
            vercel = [m.data async for m in sse_stream(response)]
    assert cancelled.status_code == 202
    assert [e["type"] for e in agui][-2:] == ["CUSTOM", "RUN_FINISHED"]
    assert agui[-2]["value"]["status"] == "cancelled"
    assert "RUN_ERROR" not in [e["type"] for e in agui]
    assert [json.loads(d)["type"] for d in vercel[-4:-1]] == ["message-metadata", "abort", "finish-step"]
    assert vercel[-1] == "[DONE]"


async def test_a_failed_protocol_run_ends_with_the_protocols_error() -> None:
    async with client(create_app(Script(["partial "], fail_with="the model broke").agent())) as http:
        agui = [json.loads(m.data) for m in parse_sse((await http.post("/ag-ui", json=agui_body("x"))).text)]
        vercel = [m.data for m in parse_sse((await http.post("/vercel-ai", json=vercel_body("x"))).text)]
    error = agui[-1]
    assert (error["type"], error["message"], error["code"]) == ("RUN_ERROR", "the model broke", "RuntimeError")
    assert [e["type"] for e in agui].count("RUN_FINISHED") == 0
    check_types = [json.loads(d)["type"] for d in vercel[:-1]]
    assert check_types[-4:] == ["message-metadata", "error", "finish-step", "finish"]
    assert next(json.loads(d) for d in vercel if '"error"' in d)["errorText"] == "the model broke"


async def test_each_principal_has_its_own_protocol_runs() -> None:
    script = Script(["mine"], paced=True)
    app = create_app(script.agent(), tokens=TOKENS)
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        async with http.stream(
            "POST", "/vercel-ai", json=vercel_body("x", chat_id="shared"), headers=bearer("alice-secret")
        ) as response:
            assert response.status_code == 200
            await script.started.wait()
            bob = await http.get("/vercel-ai/shared/stream", headers=bearer("bob-secret"))
            bobs_runs = (await http.get("/runs", headers=bearer("bob-secret"))).json()["runs"]
            script.allow(1)
            alice = [m.data async for m in sse_stream(response)]
        alice_agui = await http.post("/ag-ui", json=agui_body("y"), headers=bearer("alice-secret"))
        bob_agui = await http.post("/ag-ui", json=agui_body("y"), headers=bearer("bob-secret"))
    assert bob.status_code == 204 and bobs_runs == []
    assert alice[-1] == "[DONE]"
    # The same thread and run ids from another principal are another run, not a way into alice's.
    assert alice_agui.headers["x-run-id"] != bob_agui.headers["x-run-id"]


@pytest.mark.redis
async def test_a_chat_resumes_on_another_server_of_the_fleet() -> None:
    script = Script(["far ", "away"], paced=True)
    async with (
        shared_redis_buses() as (here, there),
        live_server(create_app(script.agent(), bus=here)) as first_url,
        live_server(create_app(script.agent(), bus=there)) as second_url,
        httpx.AsyncClient(timeout=30) as http,
    ):
        script.allow(1)
        async with http.stream("POST", f"{first_url}/vercel-ai", json=vercel_body("x", "chat-f")) as response:
            messages = sse_stream(response)
            first = await frames_until(messages, "text-delta")
            async with http.stream("GET", f"{second_url}/vercel-ai/chat-f/stream") as elsewhere:
                there_messages = sse_stream(elsewhere)
                joined = await frames_until(there_messages, "text-delta")
                script.allow(2)
                joined += [m async for m in there_messages]
            rest = [m async for m in messages]
    assert [(m.id, m.data) for m in joined] == [(m.id, m.data) for m in first + rest]
    assert joined[-1].data == "[DONE]"


async def test_a_call_that_needs_approval_ends_a_protocol_run_the_protocols_way() -> None:
    async def launch(target: str) -> str:
        """Launch something."""
        return f"launched {target}"

    def app() -> FastAPI:  # a model of its own for each: its first request calls the tool
        script = Script(["done"], tool="launch", tool_args={"target": "kite"})
        return create_app(script.agent(tools=[launch]), require_approval=["launch"])

    async with client(app()) as http:
        vercel = await http.post("/vercel-ai", json=vercel_body("launch it"))
    async with client(app()) as http:
        agui = await http.post("/ag-ui", json=agui_body("launch it"))
        info = (await http.get(f"/runs/{agui.headers['x-run-id']}")).json()
        logged = parse_sse((await http.get(f"/runs/{agui.headers['x-run-id']}/events")).text)
        bad = {**agui_body("launch it"), "runId": "run-2", "resume": [{"interruptId": "call-1", "status": "resolved"}]}
        refused = await http.post("/ag-ui", json=bad)
    events = [json.loads(m.data) for m in parse_sse(agui.text)]
    check_agui_nesting(events)
    interrupt = events[-1]["outcome"]["interrupts"][0]
    assert (events[-1]["outcome"]["type"], interrupt["toolCallId"], interrupt["metadata"]) == (
        "interrupt",
        "call-1",
        {"reason": "launch needs approval"},
    )
    chunks = [json.loads(m.data) for m in parse_sse(vercel.text) if m.data != "[DONE]"]
    assert {"type": "tool-approval-request", "approvalId": "call-1", "toolCallId": "call-1"} in chunks
    assert (info["status"], info["pending_approvals"]) == ("succeeded", [])  # ended, its answer comes next time
    ends = [m.json()["data"] for m in logged if m.event == "tool_end"]  # its tool_start has its tool_end
    assert [(end["tool_call_id"], end["error"]) for end in ends] == [("call-1", DEFERRED_CALL_ERROR)]
    assert (refused.status_code, refused.json()["error"]["field"]) == (422, "resume")


def delegating_app(*, parent_call_id: str, sub_call_id: str) -> FastAPI:
    """A parent that delegates to `launcher`, whose `launch` call (id `sub_call_id`) needs approval."""

    def launch(target: str) -> str:
        """Launch something."""
        return f"launched {target}"

    async def sub_model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if len(messages) == 1:
            yield {0: DeltaToolCall(name="launch", json_args='{"target": "probe"}', tool_call_id=sub_call_id)}
            return
        yield "probe launched"

    async def parent_model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if len(messages) == 1:
            args = json.dumps({"agent_name": "launcher", "task": "launch the probe"})
            yield {0: DeltaToolCall(name="delegate_task", json_args=args, tool_call_id=parent_call_id)}
            return
        yield "all done"

    sub = create_deep_agent(
        FunctionModel(stream_function=sub_model),
        name="launcher",
        description="Launches things.",
        tools=[launch],
        file_tools=False,
        planning=False,
    )
    parent = create_deep_agent(
        FunctionModel(stream_function=parent_model), subagents=[sub], file_tools=False, planning=False
    )
    return create_app(parent, require_approval=["launch"])


async def test_a_sub_agents_call_in_a_protocol_run_waits_and_is_decided_over_runs() -> None:
    """No later request could answer a sub-agent's call (its run is inside the parent's tool call), so it
    waits in the stream, and `POST /runs/{run_id}/approvals` decides it."""

    app = delegating_app(parent_call_id="parent-1", sub_call_id="sub-1")
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        async with http.stream("POST", "/ag-ui", json=agui_body("launch the probe")) as response:
            messages = sse_stream(response)
            asked = await frames_until(messages, '"approval_required"')
            status = (await http.get(f"/runs/{response.headers['x-run-id']}")).json()
            answer = {"tool_call_id": "sub-1", "approved": True}
            decided = await http.post(f"/runs/{response.headers['x-run-id']}/approvals", json=answer)
            rest = [json.loads(m.data) async for m in messages]
    assert json.loads(asked[-1].data)["value"]["tool_call_id"] == "sub-1"
    assert (status["status"], status["pending_approvals"][0]["depth"]) == ("awaiting_approval", 1)
    assert decided.status_code == 202
    events = [json.loads(m.data) for m in asked] + rest
    check_agui_nesting(events)
    assert events[-1]["outcome"]["type"] == "success"
    assert "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT") == "all done"


async def test_a_sub_agents_call_that_waits_is_a_vercel_data_part_of_its_own() -> None:
    """A sub-agent's call ids can repeat the parent's, so its parts are keyed by its run as well."""

    app = delegating_app(parent_call_id="call-1", sub_call_id="call-1")
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        async with http.stream("POST", "/vercel-ai", json=vercel_body("launch the probe")) as response:
            messages = sse_stream(response)
            asked = await frames_until(messages, "data-approval_required")
            answer = {"tool_call_id": "call-1", "approved": True}
            decided = await http.post(f"/runs/{response.headers['x-run-id']}/approvals", json=answer)
            rest = [m.data async for m in messages]
    part = json.loads(asked[-1].data)
    assert part["id"].endswith("/call-1") and part["id"] != "call-1" and part["data"]["tool_call_id"] == "call-1"
    assert decided.status_code == 202
    resolved = [json.loads(d) for d in rest if "data-approval_resolved" in d]
    assert [r["id"] for r in resolved] == [part["id"]]
