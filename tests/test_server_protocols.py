"""The AG-UI and Vercel AI endpoints: whole event sequences, each event validated by the protocol's own models."""

from __future__ import annotations

import json
from typing import Any, get_args

from ag_ui.core import Event as AGUIEvent
from pydantic import TypeAdapter
from pydantic_ai.ui.vercel_ai import response_types as vercel

from _server_helpers import Script, client, parse_sse
from pydantic_deep.server import create_app

AGUI_EVENTS: TypeAdapter[Any] = TypeAdapter(AGUIEvent)
# The Vercel AI chunk models by their `type` (`data-*` chunks aside, which carry any name after `data-`).
VERCEL_CHUNKS: dict[str, type[vercel.BaseChunk]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for name in dir(vercel)
    if name.endswith("Chunk")
    and name not in ("BaseChunk", "DataChunk", "DoneChunk")
    and isinstance(cls := getattr(vercel, name), type)
}


def lookup(city: str) -> str:
    """Look up the weather."""
    return f"sunny in {city}"


def scripted_agent() -> Any:
    return Script(["It is\n", "sunny."], tool="lookup", tool_args={"city": "Paris"}).agent(tools=[lookup])


def agui_body(prompt: str) -> dict[str, Any]:
    return {
        "threadId": "thread-1",
        "runId": "run-1",
        "state": None,
        "messages": [{"id": "m1", "role": "user", "content": prompt}],
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }


def vercel_body(prompt: str, chat_id: str = "chat-1") -> dict[str, Any]:
    return {
        "trigger": "submit-message",
        "id": chat_id,
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": prompt}]}],
    }


def check_agui_nesting(events: list[dict[str, Any]]) -> None:
    """The AG-UI client's rules: one run brackets all; messages and tool calls open, fill and close by id."""
    assert events[0]["type"] == "RUN_STARTED" and events[-1]["type"] == "RUN_FINISHED"
    open_messages: set[str] = set()
    open_calls: set[str] = set()
    ended_calls: set[str] = set()
    for event in events[1:-1]:
        match event["type"]:
            case "TEXT_MESSAGE_START":
                open_messages.add(event["messageId"])
            case "TEXT_MESSAGE_CONTENT":
                assert event["messageId"] in open_messages and event["delta"]
            case "TEXT_MESSAGE_END":
                open_messages.remove(event["messageId"])
            case "TOOL_CALL_START":
                open_calls.add(event["toolCallId"])
            case "TOOL_CALL_ARGS":
                assert event["toolCallId"] in open_calls
            case "TOOL_CALL_END":
                open_calls.remove(event["toolCallId"])
                ended_calls.add(event["toolCallId"])
            case "TOOL_CALL_RESULT":
                assert event["toolCallId"] in ended_calls
            case other:
                assert other not in ("RUN_STARTED", "RUN_FINISHED", "RUN_ERROR"), other
    assert not open_messages and not open_calls


async def test_ag_ui_event_sequence_follows_the_protocol() -> None:
    async with client(create_app(scripted_agent())) as http:
        response = await http.post("/ag-ui", json=agui_body("weather?"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    messages = parse_sse(response.text)
    assert [m.id for m in messages] == [str(n) for n in range(len(messages))]  # each frame's position: a cursor
    events = [json.loads(m.data) for m in messages]
    for event in events:
        AGUI_EVENTS.validate_python(event)  # each one is a valid AG-UI event
    types = [e["type"] for e in events if e["type"] != "REASONING_ENCRYPTED_VALUE"]
    assert types == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "CUSTOM",  # progress: the first model request's usage
        "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "CUSTOM",
        "CUSTOM",  # agent_end
        "RUN_FINISHED",
    ]
    check_agui_nesting(events)
    assert (events[0]["threadId"], events[0]["runId"]) == ("thread-1", "run-1")
    call = next(e for e in events if e["type"] == "TOOL_CALL_START")
    assert call["toolCallName"] == "lookup"
    assert json.loads(next(e for e in events if e["type"] == "TOOL_CALL_ARGS")["delta"]) == {"city": "Paris"}
    assert next(e for e in events if e["type"] == "TOOL_CALL_RESULT")["content"] == "sunny in Paris"
    text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == "It is\nsunny."
    custom = [(e["name"], e["value"]) for e in events if e["type"] == "CUSTOM"]
    assert [name for name, _ in custom] == ["progress", "progress", "agent_end"]
    assert [value["requests"] for _, value in custom[:2]] == [1, 2]
    assert custom[2][1]["status"] == "succeeded" and custom[2][1]["total_tokens"] == custom[1][1]["total_tokens"] > 0
    run_id = response.headers["x-run-id"]
    assert {e["messageId"] for e in events if e["type"].startswith("TEXT_MESSAGE")} <= {
        f"{run_id}-{n}" for n in range(1, 10)
    }


async def test_vercel_ai_event_sequence_follows_the_protocol() -> None:
    async with client(create_app(scripted_agent())) as http:
        response = await http.post("/vercel-ai", json=vercel_body("weather?"))
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    data = [m.data for m in parse_sse(response.text)]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for chunk in chunks:
        VERCEL_CHUNKS[chunk["type"]].model_validate(chunk)
    assert [c["type"] for c in chunks] == [
        "start",
        "start-step",
        "tool-input-start",
        "tool-input-delta",
        "message-metadata",  # the first model request's usage
        "tool-input-available",
        "tool-output-available",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-end",
        "message-metadata",
        "message-metadata",  # the run's end
        "finish-step",
        "finish",
    ]
    run_id = response.headers["x-run-id"]
    assert chunks[0]["messageId"] == run_id
    tool = next(c for c in chunks if c["type"] == "tool-input-available")
    assert (tool["toolName"], tool["input"]) == ("lookup", {"city": "Paris"})
    assert next(c for c in chunks if c["type"] == "tool-output-available")["output"] == "sunny in Paris"
    text_ids = {c["id"] for c in chunks if c["type"].startswith("text-")}
    assert text_ids == {f"{run_id}-1"}
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "It is\nsunny."
    metadata = [c["messageMetadata"]["pydantic_deep"] for c in chunks if c["type"] == "message-metadata"]
    assert [m["usage"]["requests"] for m in metadata[:2]] == [1, 2]
    assert metadata[2]["status"] == "succeeded" and metadata[2]["run_id"] == run_id
    assert metadata[2]["total_tokens"] == metadata[1]["usage"]["total_tokens"] > 0


async def test_protocol_endpoints_reject_bad_bodies_as_json_422() -> None:
    async with client(create_app(scripted_agent())) as http:
        agui = await http.post("/ag-ui", json={"messages": "nope"})
        vercel_response = await http.post("/vercel-ai", content=b"{", headers={"content-type": "application/json"})
    assert agui.status_code == 422
    assert agui.json()["error"]["code"] == "invalid_request"
    assert {e["field"] for e in agui.json()["error"]["errors"]} >= {"threadId", "runId", "messages"}
    assert vercel_response.status_code == 422 and vercel_response.json()["error"]["field"] == "body"
