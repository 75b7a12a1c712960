"""The harness's guardrails through `create_deep_agent(guardrails=...)`: one that fails the run shows as a
`guardrail` block event before `error` and `agent_end`; a soft refusal does not end the run; redactions
are `guardrail` redact events, and what they redacted never reaches the model or the output."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai_harness.guardrails import (
    GuardrailError,
    GuardrailResult,
    InputGuardrail,
    OutputGuardrail,
    ToolBlocked,
    ToolCallInfo,
    ToolGuardrail,
    ToolResultInfo,
)

from pydantic_deep import DeepAgentDeps, create_deep_agent
from pydantic_deep.streaming import AnyStreamEvent, StreamEventType, run_stream
from pydantic_deep.testing import ScriptedModel, Step, Text, ToolCall


def wire(amount: int) -> str:
    """Wire money."""
    return f"wired {amount}"


def ending(events: list[AnyStreamEvent]) -> list[tuple[str, Any]]:
    shown: list[tuple[str, Any]] = []
    for event in events:
        data: Any = event.data
        if event.event_type == StreamEventType.GUARDRAIL:
            shown.append(("guardrail", (data["kind"], data["action"], data["message"])))
        elif event.event_type in (StreamEventType.ERROR, StreamEventType.AGENT_END):
            shown.append((event.event_type.value, data.get("exception_type") or data.get("status")))
    return shown


async def failing_run(agent: Any) -> list[AnyStreamEvent]:
    events: list[AnyStreamEvent] = []
    with pytest.raises(GuardrailError):
        async for event in run_stream(agent, "go", DeepAgentDeps()):
            events.append(event)
    return events


async def test_an_output_guardrail_that_blocks_fails_the_run_in_the_stream() -> None:
    guard = OutputGuardrail(guard=lambda output: "secret" not in str(output))
    agent = create_deep_agent(ScriptedModel([Step(Text("the secret is 42"))]), guardrails=[guard], planning=False)
    events = await failing_run(agent)
    assert ending(events)[0][1][:2] == ("output", "block")
    assert ending(events)[1:] == [("error", "OutputBlocked"), ("agent_end", "failed")]


async def test_a_tool_guardrail_that_raises_fails_the_run_and_one_that_refuses_does_not() -> None:
    def no_big_wires(call: ToolCallInfo) -> GuardrailResult:
        if call.name == "wire" and call.args["amount"] > 1000:
            raise ToolBlocked("wire", "over the limit")
        if call.name == "wire" and call.args["amount"] > 100:
            return GuardrailResult.block("ask a person for amounts over 100")
        return GuardrailResult.allow()

    steps = [Step(ToolCall("wire", {"amount": 500})), Step(ToolCall("wire", {"amount": 5000})), Step(Text("ok"))]
    agent = create_deep_agent(
        ScriptedModel(steps), tools=[wire], guardrails=[ToolGuardrail(guard=no_big_wires)], planning=False
    )
    events = await failing_run(agent)
    ends = [e.data for e in events if e.event_type == StreamEventType.TOOL_END]
    assert ends[0]["result"] == "ask a person for amounts over 100"  # refused; the run went on
    assert ending(events) == [
        ("guardrail", ("tool", "block", "ask a person for amounts over 100")),
        ("guardrail", ("tool", "block", "Tool 'wire' blocked: over the limit")),
        ("error", "ToolBlocked"),
        ("agent_end", "failed"),
    ]


def account() -> str:
    """Read the account."""
    return "IBAN DE89370400440532013000, balance 10"


async def test_redactions_are_guardrail_events_and_what_they_removed_goes_nowhere() -> None:
    seen: list[list[ModelMessage]] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        seen.append(list(messages))
        if len(messages) == 1:
            yield {0: DeltaToolCall(name="account", json_args="{}", tool_call_id="call-1")}
            return
        yield "Bob, your balance is 10"

    def no_names(prompt: str) -> GuardrailResult:
        return GuardrailResult.replace(prompt.replace("Bob", "[name]")) if "Bob" in prompt else GuardrailResult.allow()

    def no_iban(result: ToolResultInfo) -> GuardrailResult:
        return GuardrailResult.replace(str(result.result).replace("DE89370400440532013000", "[iban]"))

    async def no_names_out(output: str) -> GuardrailResult:
        return GuardrailResult.replace(output.replace("Bob", "[name]"))

    guards = [InputGuardrail(guard=no_names), ToolGuardrail(result_guard=no_iban), OutputGuardrail(guard=no_names_out)]
    agent = create_deep_agent(
        FunctionModel(stream_function=model), tools=[account], guardrails=guards, planning=False, file_tools=False
    )
    events = [event async for event in run_stream(agent, "I am Bob: my balance?", DeepAgentDeps())]
    assert ending(events) == [
        (
            "guardrail",
            (
                "input",
                "redact",
                "input redacted by no_names",
            ),
        ),
        (
            "guardrail",
            (
                "tool",
                "redact",
                "the result of account redacted by no_iban",
            ),
        ),
        (
            "guardrail",
            (
                "output",
                "redact",
                "output redacted by no_names_out",
            ),
        ),
        ("agent_end", "succeeded"),
    ]
    result = next(e for e in events if e.event_type == StreamEventType.GUARDRAIL and e.data["kind"] == "tool")
    assert result.data["metric"] is None and result.data["limit"] is None
    prompts = [
        p.content for m in seen[0] if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, UserPromptPart)
    ]
    assert prompts == ["I am [name]: my balance?"]
    returned = [p.content for p in seen[1][-1].parts if isinstance(p, ToolReturnPart)]
    assert returned == ["IBAN [iban], balance 10"]
    assert events[-1].data["output"] == "[name], your balance is 10"
