"""Budgets: each kind warns at `warn_at`, then stops the run with `guardrail` block, `error`, `agent_end`.

Tokens and dollars go through Pydantic AI's real OpenAI model against our local OpenAI-compatible server,
so the cost is genai-prices' real price of `gpt-4o`; steps and seconds use a function model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic_ai import models
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from pydantic_deep import Budget, DeepAgentDeps, create_deep_agent
from pydantic_deep.budget import BudgetExceeded, StepsAndTime
from pydantic_deep.streaming import AnyStreamEvent, StreamEventType, run_stream
from pydantic_deep.testing import FakeOpenAIServer, ScriptReply, ScriptRequest, ScriptResult, ScriptToolCall
from pydantic_deep.tracing import InMemoryExporter, TraceContext


def looping() -> FunctionModel:
    """A model that calls `pause` on every request, forever."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        yield {0: DeltaToolCall(name="pause", json_args=json.dumps({}), tool_call_id=f"call-{len(messages)}")}

    return FunctionModel(stream_function=stream, model_name="looping")


async def pause() -> str:
    """Wait a moment."""
    await asyncio.sleep(0.03)
    return "paused"


def guarded(events: list[AnyStreamEvent]) -> list[tuple[str, Any]]:
    """The guardrail events and how the run ended."""
    shown: list[tuple[str, Any]] = []
    for event in events:
        data: Any = event.data
        if event.event_type == StreamEventType.GUARDRAIL:
            shown.append(("guardrail", (data["kind"], data["action"], data["metric"], data["limit"], data["used"])))
        elif event.event_type in (StreamEventType.ERROR, StreamEventType.AGENT_END):
            shown.append((event.event_type.value, data.get("exception_type") or data.get("status")))
    return shown


async def run(agent: Any, **options: Any) -> list[AnyStreamEvent]:
    events: list[AnyStreamEvent] = []
    with pytest.raises(Exception) as raised:  # a failed run's stream raises after its agent_end
        async for event in run_stream(agent, "go", DeepAgentDeps(), **options):
            events.append(event)
    assert type(raised.value).__name__ in ("BudgetExceeded", "SpendLimitExceeded")
    return events


async def test_a_step_budget_warns_then_stops_the_run() -> None:
    agent = create_deep_agent(
        looping(), tools=[pause], budget=Budget(max_steps=4, warn_at=0.5), file_tools=False, planning=False
    )
    events = await run(agent)
    assert guarded(events) == [
        ("guardrail", ("budget", "warn", "steps", 4, 2)),
        ("guardrail", ("budget", "block", "steps", 4, 4)),
        ("error", "BudgetExceeded"),
        ("agent_end", "failed"),
    ]
    assert [e.data["requests"] for e in events if e.event_type == StreamEventType.PROGRESS] == [1, 2, 3, 4]
    block = next(e for e in events if e.event_type == StreamEventType.GUARDRAIL and e.data["action"] == "block")
    assert block.data["message"] == "the budget of 4 model requests is spent (4 used). Give the run a larger Budget."


async def test_the_trace_records_the_warning_and_the_stop_on_the_run_span() -> None:
    memory = InMemoryExporter()
    agent = create_deep_agent(
        looping(), tools=[pause], budget=Budget(max_steps=2, warn_at=0.5), file_tools=False, planning=False
    )
    with pytest.raises(BudgetExceeded):
        async for _ in run_stream(agent, "go", DeepAgentDeps(trace_context=TraceContext(exporters=[memory]))):
            pass
    span = memory.find(kind="agent_run")[0]
    assert (span.status, span.error_type) == ("error", "BudgetExceeded")
    assert [(e.name, e.attributes["kind"], e.attributes["action"], e.attributes.get("used")) for e in span.events] == [
        ("guardrail", "budget", "warn", 1),
        ("guardrail", "budget", "block", None),
    ]


async def test_a_time_budget_stops_the_run_at_the_next_step() -> None:
    # Per run, on top of the agent's own (it has none): `run_stream(..., budget=...)`.
    agent = create_deep_agent(looping(), tools=[pause], file_tools=False, planning=False)
    events = await run(agent, budget=Budget(max_seconds=0.05, warn_at=None))
    shown = guarded(events)
    assert [s[1][:3] for s in shown[:1]] == [("budget", "block", "seconds")]
    assert shown[1:] == [("error", "BudgetExceeded"), ("agent_end", "failed")]
    assert shown[0][1][4] >= 0.05


async def test_a_time_budget_warns_then_stops_the_run() -> None:
    clock = [0.0]  # seconds pass only when the tool runs: 3 a call

    async def slow() -> str:
        """Take three seconds."""
        clock[0] += 3
        return "done"

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        yield {0: DeltaToolCall(name="slow", json_args="{}", tool_call_id=f"call-{len(messages)}")}

    limits = StepsAndTime(Budget(max_seconds=10, warn_at=0.5), clock=lambda: clock[0])
    agent = create_deep_agent(
        FunctionModel(stream_function=model), tools=[slow], capabilities=[limits], file_tools=False, planning=False
    )
    events = await run(agent)
    assert guarded(events) == [  # requests at 0, 3, 6 (warn: past 5), 9, then 12 is refused
        ("guardrail", ("budget", "warn", "seconds", 10, 6)),
        ("guardrail", ("budget", "block", "seconds", 10, 12)),
        ("error", "BudgetExceeded"),
        ("agent_end", "failed"),
    ]
    assert [e.data["requests"] for e in events if e.event_type == StreamEventType.PROGRESS] == [1, 2, 3, 4]


def priced(request: ScriptRequest) -> ScriptResult:
    """Every reply calls a tool again: 1,000 input and 100 output tokens each."""
    return ScriptReply(
        tool_calls=[ScriptToolCall("note", {"text": f"step {len(request.tool_results)}"})],
        input_tokens=1000,
        output_tokens=100,
    )


def note(text: str) -> str:
    """Keep a note."""
    return "noted"


@pytest.fixture
def openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(priced) as server, models.override_allow_model_requests(True):
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
        yield server


async def test_a_token_budget_through_the_real_openai_client(openai: FakeOpenAIServer) -> None:
    agent = create_deep_agent(
        "openai-chat:gpt-4o", tools=[note], budget=Budget(max_tokens=3000), file_tools=False, planning=False
    )
    events = await run(agent)
    # 1,100 tokens a request: the warning (80% = 2,400) after the third, the stop before the fourth.
    assert guarded(events) == [
        ("guardrail", ("budget", "warn", "tokens", 3000, 3300)),
        ("guardrail", ("budget", "block", "tokens", 3000, 3300)),
        ("error", "SpendLimitExceeded"),
        ("agent_end", "failed"),
    ]


async def test_a_cost_budget_through_the_real_openai_client(openai: FakeOpenAIServer) -> None:
    # gpt-4o: $2.50 per million input tokens, $10 per million output: $0.0035 a request.
    agent = create_deep_agent(
        "openai-chat:gpt-4o",
        tools=[note],
        budget=Budget(max_cost_usd=0.01, warn_at=0.5),
        file_tools=False,
        planning=False,
    )
    events = await run(agent)
    shown = guarded(events)
    assert [s[1][:3] if s[0] == "guardrail" else s for s in shown] == [
        ("budget", "warn", "cost_usd"),
        ("budget", "block", "cost_usd"),
        ("error", "SpendLimitExceeded"),
        ("agent_end", "failed"),
    ]
    warn, block = shown[0][1], shown[1][1]
    assert (warn[3], round(warn[4], 6)) == (0.01, 0.007)  # after two requests: past half of $0.01
    assert (block[3], round(block[4], 6)) == (0.01, 0.0105)  # after three: spent; the fourth is refused
    end = events[-1].data
    assert round(end["total_cost_usd"], 6) == 0.0105  # type: ignore[typeddict-item]


def test_a_budget_checks_its_numbers() -> None:
    with pytest.raises(ValueError, match="max_tokens must be a positive number"):
        Budget(max_tokens=0)
    with pytest.raises(ValueError, match="warn_at must be a fraction"):
        Budget(max_steps=3, warn_at=1.5)
