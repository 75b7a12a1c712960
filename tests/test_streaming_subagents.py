"""Sub-agent runs stream live inside the delegating run's stream, placed in the tree."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from pydantic_deep import DeepAgentDeps, StateBackend, create_deep_agent
from pydantic_deep.streaming import StreamEvent, StreamEventType, run_stream, stream_text


def returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]


def build(child_saw: asyncio.Event | None = None):  # type: ignore[no-untyped-def]
    async def child_model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if not returns(messages):
            yield {0: DeltaToolCall(name="note", json_args='{"text": "found it"}', tool_call_id="child-call")}
            return
        yield "child "
        if child_saw is not None:
            # Handshake: the parent's consumer must see the child's first chunk before the child goes on.
            await asyncio.wait_for(child_saw.wait(), timeout=5)
        yield "answer"

    async def note(text: str) -> str:
        return f"noted: {text}"

    child = create_deep_agent(
        FunctionModel(stream_function=child_model),
        name="researcher",
        description="Researches",
        tools=[note],
        file_tools=False,
        planning=False,
    )

    async def parent_model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if not returns(messages):
            args = '{"agent_name": "researcher", "task": "find it"}'
            yield {0: DeltaToolCall(name="delegate_task", json_args=args, tool_call_id="delegate-1")}
            return
        yield "parent done"

    return create_deep_agent(
        FunctionModel(stream_function=parent_model), name="lead", subagents=[child], file_tools=False, planning=False
    )


def row(e: StreamEvent) -> tuple[str, str | None, int, str | None]:
    detail = e.data.get("text") or e.data.get("tool_name") or e.data.get("subagent_name")
    return (e.event_type.value, e.agent_name, e.depth, detail)


async def test_subagent_events_are_nested_live_and_bracketed() -> None:
    saw_child_chunk = asyncio.Event()
    events: list[StreamEvent] = []
    async for event in run_stream(build(saw_child_chunk), "go", DeepAgentDeps(backend=StateBackend())):
        events.append(event)
        if event.event_type is StreamEventType.LLM_CHUNK and event.depth == 1:
            saw_child_chunk.set()
    assert [row(e) for e in events] == [
        ("agent_start", "lead", 0, None),
        ("progress", "lead", 0, None),
        ("tool_start", "lead", 0, "delegate_task"),
        ("subagent_start", "lead", 0, "researcher"),
        ("tool_start", "researcher", 1, "note"),
        ("tool_end", "researcher", 1, "note"),
        ("llm_chunk", "researcher", 1, "child "),
        ("llm_chunk", "researcher", 1, "answer"),
        ("subagent_end", "lead", 0, "researcher"),
        ("tool_end", "lead", 0, "delegate_task"),
        ("llm_chunk", "lead", 0, "parent done"),
        ("progress", "lead", 0, None),
        ("agent_end", "lead", 0, None),
    ]
    top_run = events[0].run_id
    child_events = [e for e in events if e.depth == 1]
    assert {(e.parent_run_id, e.parent_tool_call_id) for e in child_events} == {(top_run, "delegate-1")}
    assert len({e.run_id for e in child_events}) == 1 and child_events[0].run_id != top_run
    assert [e.seq for e in events] == list(range(len(events)))
    child_tool_end = next(e for e in child_events if e.event_type is StreamEventType.TOOL_END)
    assert child_tool_end.data["result"] == "noted: found it"
    assert events[8].data == {
        "subagent_name": "researcher",
        "tool_call_id": "delegate-1",
        "success": True,
        "output": "child answer",
        "duration_seconds": events[8].data["duration_seconds"],
    }


async def test_stream_text_keeps_to_the_top_level_unless_asked() -> None:
    assert [t async for t in stream_text(build(), "go", DeepAgentDeps())] == ["parent done"]
    assert [t async for t in stream_text(build(), "go", DeepAgentDeps(), include_subagents=True)] == [
        "child ",
        "answer",
        "parent done",
    ]


async def test_calls_a_failed_sub_agent_left_open_still_end_before_its_subagent_end() -> None:
    """A child that exhausts its retries stops mid-call; each of its calls still gets exactly one tool_end."""

    async def child_model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[DeltaToolCalls]:
        yield {0: DeltaToolCall(name="always_retry", json_args="{}")}

    async def always_retry() -> str:
        from pydantic_ai import ModelRetry

        raise ModelRetry("not yet")

    child = create_deep_agent(
        FunctionModel(stream_function=child_model),
        name="stubborn",
        tools=[always_retry],
        file_tools=False,
        planning=False,
    )

    async def parent_model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if not returns(messages):
            yield {
                0: DeltaToolCall(
                    name="delegate_task", json_args='{"agent_name": "stubborn", "task": "t"}', tool_call_id="d"
                )
            }
            return
        yield "gave up"

    lead = create_deep_agent(
        FunctionModel(stream_function=parent_model), subagents=[child], file_tools=False, planning=False
    )
    events = [e async for e in run_stream(lead, "go", DeepAgentDeps())]
    starts = [(e.run_id, e.data["tool_call_id"]) for e in events if e.event_type is StreamEventType.TOOL_START]
    ends = [(e.run_id, e.data["tool_call_id"]) for e in events if e.event_type is StreamEventType.TOOL_END]
    assert sorted(starts) == sorted(ends) and len(set(starts)) == len(starts) == 4
    sub_end = next(e.seq for e in events if e.event_type is StreamEventType.SUBAGENT_END)
    assert all(e.seq < sub_end for e in events if e.depth == 1)
    assert events[-1].data["status"] == "succeeded"
