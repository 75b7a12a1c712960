"""Tool approvals answered in process: in the consumer's loop, by a callback, or by the timeout.

The model is a `FunctionModel` that calls the tools it is told to on its first request and answers on
its second, so each test reads the whole stream and asserts on it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic_ai import CancellationToken
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from pydantic_deep import DeepAgentDeps, create_deep_agent
from pydantic_deep.streaming import (
    AnyStreamEvent,
    ApprovalConflictError,
    ApprovalDecision,
    RunState,
    StreamEventType,
    approve,
    deny,
    run_stream,
)


def calling(*calls: tuple[str, dict[str, Any]], answer: str = "done") -> FunctionModel:
    """A model that makes `calls` (in one response), then answers with the tools' results."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if len(messages) == 1:
            yield {
                i: DeltaToolCall(name=name, json_args=json.dumps(args), tool_call_id=f"call-{i}")
                for i, (name, args) in enumerate(calls)
            }
            return
        results = [part.content for part in messages[-1].parts if part.part_kind in ("tool-return",)]
        yield f"{answer}: {results}"

    return FunctionModel(stream_function=stream, model_name="calling")


def launch(target: str) -> str:
    """Launch something."""
    return f"launched {target}"


def look(target: str) -> str:
    """Look at something."""
    return f"looked at {target}"


def agent(model: FunctionModel, policy: Any = ("launch",)) -> Any:
    return create_deep_agent(model, tools=[launch, look], require_approval=policy, file_tools=False, planning=False)


def summary(events: list[AnyStreamEvent]) -> list[tuple[str, Any]]:
    """Each event's type with what matters of its payload for these tests."""
    shown: list[tuple[str, Any]] = []
    for event in events:
        data: Any = event.data
        match event.event_type:
            case StreamEventType.TOOL_START:
                shown.append(("tool_start", (data["tool_call_id"], data["args"])))
            case StreamEventType.APPROVAL_REQUIRED:
                shown.append(("approval_required", (data["tool_call_id"], data["tool_name"], data["reason"])))
            case StreamEventType.APPROVAL_RESOLVED:
                shown.append(
                    ("approval_resolved", (data["tool_call_id"], data["approved"], data["decided_by"], data["args"]))
                )
            case StreamEventType.TOOL_END:
                shown.append(("tool_end", (data["tool_call_id"], data["result"], data["error"])))
            case StreamEventType.AGENT_END:
                shown.append(("agent_end", data["status"]))
            case _:
                pass
    return shown


async def collect(stream: AsyncIterator[AnyStreamEvent], answer: Any = None) -> list[AnyStreamEvent]:
    events: list[AnyStreamEvent] = []
    async for event in stream:
        events.append(event)
        if event.event_type == StreamEventType.APPROVAL_REQUIRED and answer is not None:
            answer(event)
    return events


async def test_approving_in_the_loop_lets_the_call_run() -> None:
    stream = run_stream(agent(calling(("launch", {"target": "rocket"}))), "go", DeepAgentDeps())
    events = await collect(stream, approve)
    assert summary(events) == [
        ("tool_start", ("call-0", {"target": "rocket"})),
        ("approval_required", ("call-0", "launch", "launch needs approval")),
        ("approval_resolved", ("call-0", True, "stream", None)),
        ("tool_end", ("call-0", "launched rocket", None)),
        ("agent_end", "succeeded"),
    ]
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[-1].data["output"] == "done: ['launched rocket']"


async def test_a_denied_call_ends_with_the_denial_and_the_run_goes_on() -> None:
    stream = run_stream(agent(calling(("launch", {"target": "rocket"}))), "go", DeepAgentDeps())
    events = await collect(stream, lambda event: deny(event, "not today"))
    assert summary(events)[2:] == [
        ("approval_resolved", ("call-0", False, "stream", None)),
        ("tool_end", ("call-0", None, "not today")),
        ("agent_end", "succeeded"),
    ]
    resolved = next(e for e in events if e.event_type == StreamEventType.APPROVAL_RESOLVED)
    assert resolved.data["reason"] == "not today"


async def test_approving_with_other_arguments_runs_the_call_with_them() -> None:
    stream = run_stream(agent(calling(("launch", {"target": "rocket"}))), "go", DeepAgentDeps())
    events = await collect(stream, lambda event: approve(event, args={"target": "balloon"}))
    assert summary(events)[2:] == [
        ("approval_resolved", ("call-0", True, "stream", {"target": "balloon"})),
        ("tool_end", ("call-0", "launched balloon", None)),
        ("agent_end", "succeeded"),
    ]
    state = RunState()
    for event in events:
        state.apply(event)
    (call,) = state.tools
    assert (call.approval, call.decided_by, call.args, call.result) == (
        "approved",
        "stream",
        {"target": "balloon"},
        "launched balloon",
    )


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_callback_decides(kind: str) -> None:
    seen: list[str] = []

    def sync_decide(event: AnyStreamEvent) -> ApprovalDecision:
        seen.append(event.data["tool_name"])  # type: ignore[typeddict-item]
        return ApprovalDecision(False, reason="policy says no")

    async def async_decide(event: AnyStreamEvent) -> bool:
        seen.append(event.data["tool_name"])  # type: ignore[typeddict-item]
        return True

    decide = sync_decide if kind == "sync" else async_decide
    stream = run_stream(agent(calling(("launch", {"target": "rocket"}))), "go", DeepAgentDeps(), on_approval=decide)
    events = await collect(stream)
    approved = kind == "async"
    assert seen == ["launch"]
    assert summary(events)[2:4] == [
        ("approval_resolved", ("call-0", approved, "callback", None)),
        ("tool_end", ("call-0", "launched rocket" if approved else None, None if approved else "policy says no")),
    ]


async def test_no_decision_within_the_timeout_denies() -> None:
    stream = run_stream(agent(calling(("launch", {"target": "rocket"}))), "go", DeepAgentDeps(), approval_timeout=0.05)
    events = await collect(stream)  # nobody answers
    assert summary(events)[2:] == [
        ("approval_resolved", ("call-0", False, "timeout", None)),
        ("tool_end", ("call-0", None, "no decision within 0.05 s")),
        ("agent_end", "succeeded"),
    ]


async def test_parallel_calls_of_which_some_wait() -> None:
    model = calling(("launch", {"target": "a"}), ("look", {"target": "b"}), ("launch", {"target": "c"}))

    def decide(event: AnyStreamEvent) -> None:
        if event.data["tool_call_id"] == "call-0":  # type: ignore[typeddict-item]
            approve(event)
        else:
            deny(event)

    events = await collect(run_stream(agent(model), "go", DeepAgentDeps()), decide)
    shown = summary(events)
    assert [s for s in shown if s[0] == "approval_required"] == [
        ("approval_required", ("call-0", "launch", "launch needs approval")),
        ("approval_required", ("call-2", "launch", "launch needs approval")),
    ]
    ends = {s[1][0]: s[1][1:] for s in shown if s[0] == "tool_end"}
    assert ends == {
        "call-0": ("launched a", None),
        "call-1": ("looked at b", None),
        "call-2": (None, "The user denied this tool call."),
    }
    # Every call that started ended once; every one that waited was resolved before it ended.
    for call_id in ("call-0", "call-2"):
        kinds = [s[0] for s in shown if s[1][0] == call_id]
        assert kinds == ["tool_start", "approval_required", "approval_resolved", "tool_end"]


async def test_a_policy_function_picks_calls_by_their_arguments_and_gives_the_reason() -> None:
    def risky(name: str, args: Any) -> str | None:
        return f"{args['target']} is dangerous" if args.get("target") == "moon" else None

    model = calling(("launch", {"target": "moon"}), ("launch", {"target": "kite"}))
    events = await collect(run_stream(agent(model, policy=risky), "go", DeepAgentDeps()), approve)
    assert [s for s in summary(events) if s[0] == "approval_required"] == [
        ("approval_required", ("call-0", "launch", "moon is dangerous"))
    ]


async def test_a_waiting_call_is_not_idle_and_answers_are_checked() -> None:
    stream = run_stream(agent(calling(("launch", {"target": "rocket"}))), "go", DeepAgentDeps(), idle_timeout=0.05)
    events: list[AnyStreamEvent] = []
    async for event in stream:
        events.append(event)
        if event.event_type == StreamEventType.APPROVAL_REQUIRED:
            await asyncio.sleep(0.2)  # far past the idle timeout: a person takes their time
            approve(event)
            approve(event)  # the same answer again changes nothing
            with pytest.raises(ApprovalConflictError):
                deny(event)
    assert summary(events)[-1] == ("agent_end", "succeeded")
    with pytest.raises(KeyError):
        approve(next(e for e in events if e.event_type == StreamEventType.APPROVAL_REQUIRED))  # no longer waits
    with pytest.raises(TypeError):
        approve(events[0])


@pytest.mark.parametrize("where", ["agent", "run"])
async def test_a_sub_agents_call_waits_in_the_parent_stream(where: str) -> None:
    """The policy is the parent agent's (`create_deep_agent(require_approval=)`) or the run's own."""
    sub = create_deep_agent(
        calling(("launch", {"target": "probe"}), answer="sub done"),
        name="launcher",
        description="Launches things.",
        tools=[launch],
        file_tools=False,
        planning=False,
    )

    async def parent_stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if len(messages) == 1:
            args = {"agent_name": "launcher", "task": "launch the probe"}
            yield {0: DeltaToolCall(name="delegate_task", json_args=json.dumps(args), tool_call_id="parent-0")}
            return
        yield "all done"

    parent = create_deep_agent(
        FunctionModel(stream_function=parent_stream, model_name="parent"),
        subagents=[sub],
        require_approval=["launch"] if where == "agent" else None,
        file_tools=False,
        planning=False,
    )
    per_run: Any = {"require_approval": ["launch"]} if where == "run" else {}
    events = await collect(run_stream(parent, "go", DeepAgentDeps(), **per_run), approve)
    required = next(e for e in events if e.event_type == StreamEventType.APPROVAL_REQUIRED)
    assert (required.depth, required.parent_tool_call_id, required.agent_name) == (1, "parent-0", "launcher")
    inner = [s for s in summary(events) if s[1] and s[1][0] == "call-0"]
    assert [s[0] for s in inner] == ["tool_start", "approval_required", "approval_resolved", "tool_end"]
    assert events[-1].data["status"] == "succeeded"


async def test_a_callback_that_fails_denies_the_call_and_the_run_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: AnyStreamEvent) -> bool:
        raise RuntimeError("the policy service is down")

    stream = run_stream(agent(calling(("launch", {"target": "rocket"}))), "go", DeepAgentDeps(), on_approval=broken)
    events = await collect(stream)
    assert summary(events)[2:] == [
        ("approval_resolved", ("call-0", False, "callback", None)),
        ("tool_end", ("call-0", None, "the approval callback failed: RuntimeError('the policy service is down')")),
        ("agent_end", "succeeded"),
    ]
    assert "on_approval failed for launch" in caplog.text


async def test_cancelling_a_run_that_waits_for_approval() -> None:
    token = CancellationToken()
    events: list[AnyStreamEvent] = []
    stream = run_stream(
        agent(calling(("launch", {"target": "rocket"}))), "go", DeepAgentDeps(), cancellation_token=token
    )
    async for event in stream:
        events.append(event)
        if event.event_type == StreamEventType.APPROVAL_REQUIRED:
            token.cancel()
    assert summary(events)[-2:] == [
        ("tool_end", ("call-0", None, "cancelled")),
        ("agent_end", "cancelled"),
    ]


async def test_each_decision_is_an_event_of_the_run_span_in_the_trace() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from pydantic_deep.tracing import InMemoryExporter, OpenTelemetryExporter, TraceContext

    otel = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(otel))
    memory = InMemoryExporter()
    trace = TraceContext(exporters=[memory, OpenTelemetryExporter(provider)])
    model = calling(("launch", {"target": "moon"}), ("launch", {"target": "mars"}))
    answers = {"call-0": ApprovalDecision(True), "call-1": ApprovalDecision(False, reason="not mars")}
    deps = DeepAgentDeps(trace_context=trace)
    stream = run_stream(agent(model), "go", deps=deps, on_approval=lambda e: answers[e.data["tool_call_id"]])
    await collect(stream)
    run_span = memory.find(kind="agent_run")[0]
    assert [(e.name, e.attributes["tool_call_id"], e.attributes.get("approved")) for e in run_span.events] == [
        ("approval_required", "call-0", None),
        ("approval_required", "call-1", None),
        ("approval_resolved", "call-0", True),
        ("approval_resolved", "call-1", False),
    ]
    assert run_span.events[0].attributes["args"] == {"target": "moon"}
    assert run_span.events[3].attributes["reason"] == "not mars"
    assert run_span.to_dict()["events"][3]["name"] == "approval_resolved"
    exported = next(span for span in otel.get_finished_spans() if span.name == "invoke_agent assistant")
    assert [(e.name, dict(e.attributes or {}).get("pydantic_deep.approved")) for e in exported.events] == [
        ("approval_required", None),
        ("approval_required", None),
        ("approval_resolved", True),
        ("approval_resolved", False),
    ]
    assert dict(exported.events[0].attributes or {})["pydantic_deep.args"] == '{"target": "moon"}'


async def test_a_stream_that_takes_deferred_requests_ends_with_them_and_the_answer_continues_it() -> None:
    from pydantic_ai import DeferredToolRequests, DeferredToolResults, ToolDenied

    from pydantic_deep.streaming import DEFERRED_CALL_ERROR

    model = calling(("launch", {"target": "moon"}), ("look", {"target": "moon"}))
    deep = agent(model)
    ended: list[Any] = []
    first = await collect(
        run_stream(deep, "go", DeepAgentDeps(), output_type=[str, DeferredToolRequests], on_messages=ended.append)
    )
    assert summary(first) == [
        ("tool_start", ("call-0", {"target": "moon"})),
        ("tool_start", ("call-1", {"target": "moon"})),
        ("tool_end", ("call-1", "looked at moon", None)),
        ("approval_required", ("call-0", "launch", "launch needs approval")),
        ("tool_end", ("call-0", None, DEFERRED_CALL_ERROR)),
        ("agent_end", "succeeded"),
    ]
    assert first[-1].data["output"]["approvals"][0]["tool_call_id"] == "call-0"
    answers = DeferredToolResults(approvals={"call-0": ToolDenied("not today")})
    second = await collect(
        run_stream(deep, None, DeepAgentDeps(), message_history=ended[0], deferred_tool_results=answers)
    )
    assert summary(second) == [
        ("approval_resolved", ("call-0", False, None, None)),
        ("tool_start", ("call-0", {"target": "moon"})),
        ("tool_end", ("call-0", None, "not today")),
        ("agent_end", "succeeded"),
    ]
    assert second[-1].data["output"] == "done: ['not today', 'looked at moon']"
