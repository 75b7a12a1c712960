"""The event model: factories, JSON round trip and the published JSON Schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, cast, get_args, get_origin, get_type_hints

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_ai import Agent, ModelRetry, RunContext
from pydantic_ai.exceptions import UsageLimitExceeded

from pydantic_deep import Budget, DeepAgentDeps, create_deep_agent, demo_model
from pydantic_deep.streaming import (
    AnyStreamEvent,
    RunResumedData,
    StreamEvent,
    StreamEventType,
    agent_end_event,
    agent_start_event,
    collect_stream_result,
    error_event,
    llm_chunk_event,
    payload_types,
    progress_event,
    report_progress,
    run_stream,
    run_stream_with_tools,
    stream_event_json_schema,
    tool_end_event,
    tool_start_event,
)
from pydantic_deep.testing import Fail, ScriptedModel, Step, Text, Thinking, ToolCall

SCHEMA_PATH = Path(__file__).parent.parent / "docs" / "stream-event.schema.json"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def value_of(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of one payload field's type: JSON values where the type is `Any`."""
    if annotation is Any:
        return json_values
    origin = get_origin(annotation)
    if origin is Literal:
        return st.sampled_from(get_args(annotation))
    if origin in (Union, UnionType):
        return st.one_of([value_of(arg) for arg in get_args(annotation)])
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), json_values, max_size=4)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: st.text(max_size=20),
        int: st.integers(0, 2**40),
        float: st.floats(allow_nan=False, allow_infinity=False),
        bool: st.booleans(),
        type(None): st.none(),
    }
    return simple[annotation]


def payloads(event_type: StreamEventType) -> st.SearchStrategy[dict[str, Any]]:
    hints = get_type_hints(payload_types()[event_type])
    return st.fixed_dictionaries({key: value_of(hint) for key, hint in hints.items()})


event_types = st.sampled_from(list(StreamEventType))
events = event_types.flatmap(
    lambda event_type: st.builds(
        StreamEvent,
        event_type=st.just(event_type),
        data=payloads(event_type),
        timestamp=st.datetimes(
            min_value=datetime(2000, 1, 1),
            max_value=datetime(2100, 1, 1),
            timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]),
        ),
        seq=st.integers(0, 2**40),
        run_id=st.text(max_size=40),
        agent_name=st.none() | st.text(max_size=20),
        parent_run_id=st.none() | st.text(max_size=40),
        parent_tool_call_id=st.none() | st.text(max_size=40),
        depth=st.integers(0, 5),
    )
)


@given(events)
def test_every_event_survives_a_json_round_trip(event: StreamEvent) -> None:
    line = event.to_json()
    assert "\n" not in line  # one event, one line: safe for JSONL and SSE `data:`
    assert StreamEvent.from_json(line) == event


def test_factories_fill_every_payload_key() -> None:
    assert llm_chunk_event(text="Hello").data == {"text": "Hello"}
    assert tool_start_event(tool_name="read_file", args={"path": "/tmp/test.txt"}).data == {
        "tool_name": "read_file",
        "args": {"path": "/tmp/test.txt"},
        "tool_call_id": None,
    }
    assert tool_end_event(tool_name="read_file", result="contents", duration_seconds=0.5).data == {
        "tool_name": "read_file",
        "tool_call_id": None,
        "result": "contents",
        "duration_seconds": 0.5,
        "error": None,
    }
    assert progress_event(iteration=2, total_tokens=150).data == {
        "iteration": 2,
        "total_tokens": 150,
        "input_tokens": None,
        "output_tokens": None,
        "total_cost_usd": None,
        "requests": None,
        "tool_calls": None,
    }
    assert error_event(error="Something went wrong", exception_type="ValueError").data == {
        "error": "Something went wrong",
        "exception_type": "ValueError",
    }
    assert agent_start_event(agent_name="a", prompt="p", model="m").data == {
        "agent_name": "a",
        "prompt": "p",
        "model": "m",
    }
    assert agent_end_event(agent_name="a", success=False).data["status"] == "failed"


def test_event_types_compare_and_serialise_as_plain_strings() -> None:
    event = llm_chunk_event(text="x")
    assert event.event_type == "llm_chunk"
    assert json.dumps({"t": event.event_type}) == '{"t": "llm_chunk"}'
    assert str(StreamEventType.AGENT_END) == "agent_end"


def test_non_json_tool_results_are_serialised_without_failing() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    event = tool_end_event(tool_name="t", result={"when": datetime(2026, 1, 1, tzinfo=UTC), "obj": Opaque()})
    assert json.loads(event.to_json())["data"]["result"] == {"when": "2026-01-01T00:00:00Z", "obj": "<opaque>"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"hello": 1}', "missing or bad field"),
        ("[1, 2]", "expected a JSON object"),
        ('{"event_type": "nope", "data": {}, "timestamp": "2026-01-01T00:00:00+00:00"}', "'nope' is not a valid"),
        ('{"event_type": "llm_chunk", "data": {}, "timestamp": "2026-01-01T00:00:00"}', "timezone-aware"),
    ],
)
def test_from_json_rejects_what_is_not_an_event(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamEvent.from_json(line)


def test_published_json_schema_is_current() -> None:
    """docs/stream-event.schema.json is generated from the code; regenerate with UPDATE_SCHEMA=1."""
    import os

    current = json.dumps(stream_event_json_schema(), indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SCHEMA") == "1":
        SCHEMA_PATH.write_text(current)
    assert SCHEMA_PATH.read_text() == current, "docs/stream-event.schema.json is stale: run UPDATE_SCHEMA=1 pytest"


def test_real_events_validate_against_the_schema() -> None:
    import jsonschema

    schema = stream_event_json_schema()
    for event in [llm_chunk_event(text="x"), progress_event(iteration=1), agent_end_event(agent_name="a")]:
        jsonschema.validate(json.loads(event.to_json()), schema)


# ---- real runs against the published schema ----------------------------------------------------------


def thinking_and_tools() -> ScriptedModel:
    return ScriptedModel(
        [
            Step(
                Thinking("Let me check."),
                ToolCall("lookup", {"key": "a"}, id="call-1"),
                ToolCall("lookup", {"key": "missing"}, id="call-2"),
            ),
            Step(Text("Found it.")),
        ]
    )


async def lookup(ctx: RunContext[DeepAgentDeps], key: str) -> dict[str, Any]:
    """Look a key up."""
    await report_progress(ctx, message="looking", fraction=0.5)
    if key == "missing":
        raise ModelRetry("no such key")
    return {"key": key, "when": datetime(2026, 1, 1, tzinfo=UTC)}


async def _events_of_real_runs() -> dict[str, list[AnyStreamEvent]]:
    runs: dict[str, list[AnyStreamEvent]] = {}
    _, runs["demo"] = await collect_stream_result(
        create_deep_agent(demo_model(delay=0)), "Plan a picnic", DeepAgentDeps()
    )
    tools = create_deep_agent(thinking_and_tools(), tools=[lookup], planning=False)
    runs["tools"] = [event async for event in run_stream_with_tools(tools, "Look up a", DeepAgentDeps())]
    researcher = create_deep_agent(demo_model(delay=0), name="researcher", description="Looks things up")
    delegate = ToolCall("delegate_task", {"agent_name": "researcher", "task": "Look it up"})
    lead_model = ScriptedModel([Step(delegate), Step(Text("The researcher found it."))])
    lead = create_deep_agent(lead_model, subagents=[researcher], planning=False)
    _, runs["subagent"] = await collect_stream_result(lead, "Research this", DeepAgentDeps())
    guarded = create_deep_agent(
        thinking_and_tools(),
        tools=[lookup],
        planning=False,
        require_approval=["lookup"],
        budget=Budget(max_steps=1, warn_at=0.5),
    )
    runs["guarded"] = []
    with pytest.raises(UsageLimitExceeded):  # an approval each, then the step budget stops the second request
        async for event in run_stream(guarded, "Look up a", DeepAgentDeps(), on_approval=lambda event: True):
            runs["guarded"].append(event)
    # Only a durable server's takeover writes `run_resumed` (tests/test_durable.py follows real ones).
    resumed = StreamEvent(
        event_type=StreamEventType.RUN_RESUMED,
        data=RunResumedData(from_step=2, void_after_seq=7, void_events=3, owner="host:1:abc", attempt=2),
        seq=11,
        run_id="run-1",
    )
    runs["resumed"] = [cast(AnyStreamEvent, resumed)]
    runs["failing"] = []
    with pytest.raises(ConnectionError):
        broken = ScriptedModel([Step(Text("Starting"), Fail(ConnectionError("provider went away")))])
        async for event in run_stream(Agent(broken), "Hi"):
            runs["failing"].append(event)
    return runs


async def test_events_of_real_runs_match_the_published_schema() -> None:
    import jsonschema

    published = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(published)
    runs = await _events_of_real_runs()
    seen: set[str] = set()
    for name, events in runs.items():
        for event in events:
            wire = json.loads(event.to_json())
            errors = [
                f"{name} seq {event.seq} {'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(wire)
            ]
            assert errors == []
            assert wire == event.to_dict() and StreamEvent.from_json(event.to_json()) == StreamEvent.from_dict(wire)
            seen.add(event.event_type.value)
    # Every event type a run can produce came up at least once.
    assert seen == {t.value for t in StreamEventType}
    assert [e.event_type.value for e in runs["failing"]] == ["agent_start", "llm_chunk", "error", "agent_end"]


def test_a_payload_that_does_not_match_its_type_is_refused_naming_the_field() -> None:
    good = json.loads(tool_end_event(tool_name="t", result=1, duration_seconds=0.1).to_json())
    bad = {**good, "data": {**good["data"], "duration_seconds": "soon"}}
    with pytest.raises(ValueError, match=r"^not a StreamEvent: missing or bad field 'data\.duration_seconds': "):
        StreamEvent.from_dict(bad)
    del bad["data"]["tool_name"]
    with pytest.raises(ValueError, match=r"'data\.tool_name': Field required"):
        StreamEvent.from_json(json.dumps(bad))
