"""`RunState` and `run_resumed`: folding a log whose cut-off events are voided gives the state of the log
without them, whatever those events did (text, calls in parallel, a sub-agent, plan, files, guardrails)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pydantic_deep.streaming import (
    GuardrailData,
    PlanUpdateData,
    RunResumedData,
    RunState,
    StreamEvent,
    StreamEventType,
    ToolCall,
    agent_start_event,
    llm_chunk_event,
    progress_event,
    tool_end_event,
    tool_start_event,
)
from pydantic_deep.streaming.types import AnyStreamEvent, FileChangeData, ToolProgressData


def event(event_type: StreamEventType, data: Any, **where: Any) -> AnyStreamEvent:
    made: Any = StreamEvent(event_type=event_type, data=data, **where)
    return made


def plan(item_id: str, status: str) -> AnyStreamEvent:
    data = PlanUpdateData(action="updated", item_id=item_id, content=f"step {item_id}", status=status, active_form=None)
    return event(StreamEventType.PLAN_UPDATE, data)


def file(path: str) -> AnyStreamEvent:
    return event(
        StreamEventType.FILE_CHANGE, FileChangeData(path=path, operation="write", content_hash=None, diff=None)
    )


def tool_progress(call_id: str, message: str, **where: Any) -> AnyStreamEvent:
    data = ToolProgressData(tool_name="slow", tool_call_id=call_id, message=message, fraction=None)
    return event(StreamEventType.TOOL_PROGRESS, data, **where)


def guardrail(message: str) -> AnyStreamEvent:
    data = GuardrailData(kind="budget", action="warn", metric="steps", limit=5, used=4, message=message)
    return event(StreamEventType.GUARDRAIL, data)


def resumed(void_after_seq: int) -> AnyStreamEvent:
    data = RunResumedData(from_step=1, void_after_seq=void_after_seq, void_events=0, owner="p2", attempt=2)
    return event(StreamEventType.RUN_RESUMED, data)


def sub(call_id: str) -> dict[str, Any]:
    return {"run_id": "sub-1", "depth": 1, "parent_run_id": "root", "parent_tool_call_id": call_id}


# Before the settled point: a plan, a file, a call that keeps running (`slow`, in parallel), and `fast`,
# whose end is the settled point.
SETTLED: list[AnyStreamEvent] = [
    agent_start_event(agent_name="a"),
    llm_chunk_event(text="Let me see. "),
    progress_event(iteration=1),
    plan("1", "in_progress"),
    file("/a.md"),
    tool_start_event(tool_name="slow", tool_call_id="slow-1"),
    tool_progress("slow-1", "a third"),
    tool_start_event(tool_name="fast", tool_call_id="fast-1"),
    tool_end_event(tool_name="fast", tool_call_id="fast-1", result="done"),
]

# What may come after it and be voided: any mix of these.
VOIDABLE: list[AnyStreamEvent] = [
    tool_progress("slow-1", "two thirds"),
    plan("1", "completed"),
    plan("2", "pending"),
    file("/a.md"),
    file("/b.md"),
    guardrail("4 of 5 steps"),
    tool_start_event(tool_name="other", tool_call_id="other-1"),
    event(StreamEventType.TOOL_START, {"tool_name": "search", "args": {}, "tool_call_id": "s-1"}, **sub("slow-1")),
    event(StreamEventType.LLM_CHUNK, {"text": "found it"}, **sub("slow-1")),
    llm_chunk_event(text="Half an "),
]

REDONE: list[AnyStreamEvent] = [
    tool_end_event(tool_name="slow", tool_call_id="slow-1", result="slow done"),
    progress_event(iteration=2),
    llm_chunk_event(text="The answer."),
]


def numbered(events: list[AnyStreamEvent]) -> list[AnyStreamEvent]:
    copies: list[AnyStreamEvent] = []
    for seq, original in enumerate(events):
        copy: Any = StreamEvent(
            event_type=original.event_type,
            data=original.data,
            seq=seq,
            run_id=original.run_id or "root",
            depth=original.depth,
            parent_run_id=original.parent_run_id,
            parent_tool_call_id=original.parent_tool_call_id,
        )
        copies.append(copy)
    return copies


def call_view(call: ToolCall) -> Any:
    return (
        call.tool_call_id,
        call.status,
        call.progress,
        call.result,
        [call_view(child) for child in call.children],
        call.subagent.text if call.subagent else None,
    )


def observable(state: RunState) -> Any:
    return (
        state.text,
        state.steps,
        [call_view(call) for call in state.tools],
        {key: step.status for key, step in state.plan.items()},
        dict(state.files),
        [g["message"] for g in state.guardrails],
        [call.tool_call_id for call in state.running_calls()],
        [call.tool_call_id for call in state.waiting_for_approval()],
    )


def fold(events: list[AnyStreamEvent]) -> RunState:
    state = RunState()
    for one in events:
        state.apply(one)
    return state


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(range(len(VOIDABLE))), max_size=8))
def test_voided_events_leave_no_trace(picks: list[int]) -> None:
    void = [VOIDABLE[i] for i in picks]
    with_void = numbered([*SETTLED, *void, resumed(len(SETTLED) - 1), *REDONE])
    without = numbered([*SETTLED, *REDONE])
    state = fold(with_void)
    assert observable(state) == observable(fold(without))
    assert (state.resumed, state.event_count, state.last_seq) == (1, len(with_void), len(with_void) - 1)
    assert state.find_call("other-1") is None


def test_a_second_takeover_goes_back_to_its_own_settled_point() -> None:
    first = [llm_chunk_event(text="cut "), resumed(len(SETTLED) - 1)]
    again = [*REDONE[:2], llm_chunk_event(text="cut again "), resumed(len(SETTLED) + 2 + 1), *REDONE[2:]]
    state = fold(numbered([*SETTLED, *first, *again]))
    assert observable(state) == observable(fold(numbered([*SETTLED, *REDONE])))
    assert state.resumed == 2


def test_a_takeover_from_a_point_the_state_never_saw_changes_nothing() -> None:
    events = numbered([*SETTLED, llm_chunk_event(text="kept "), resumed(3)])  # 3 is no settled point
    assert fold(events).text == "Let me see. kept "
