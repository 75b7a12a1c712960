"""Scripted models and agents for the tracing tests: every step is fixed, so whole span trees can be compared."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.usage import RequestUsage

from pydantic_deep import DeepAgentDeps, create_deep_agent
from pydantic_deep.tracing import AgentRunData, ModelRequestData, Span, ToolCallData


@dataclass(frozen=True)
class Call:
    """One tool call the scripted model makes."""

    tool: str
    args: dict[str, Any] = field(default_factory=dict[str, Any])


Step = str | Call | list[Call] | Callable[[str], "str | Call"]
"""A text answer, one tool call, several calls in one response, or any of these made from the prompt."""


def prompt_of(messages: list[ModelMessage]) -> str:
    parts = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, UserPromptPart)]
    content = parts[-1].content
    assert isinstance(content, str)
    return content


def scripted(name: str, steps: Sequence[Step], *, cost: Decimal | None = None) -> FunctionModel:
    """A model that takes `steps` in order, one per request: a text answer or tool calls.

    Non-streamed responses report 10 input and 5 output tokens (and `cost` when given); streamed ones
    get FunctionModel's own estimate.
    """

    def step(messages: list[ModelMessage]) -> tuple[int, str | list[Call]]:
        index = sum(isinstance(m, ModelResponse) for m in messages)
        chosen = steps[min(index, len(steps) - 1)]
        made = chosen(prompt_of(messages)) if callable(chosen) else chosen
        return index, [made] if isinstance(made, Call) else made

    def call_id(index: int, position: int, call: Call) -> str:
        return f"{call.tool}-{index}" if position == 0 else f"{call.tool}-{index}.{position}"

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        index, chosen = step(messages)
        usage = RequestUsage(input_tokens=10, output_tokens=5, cost=cost)
        if isinstance(chosen, str):
            return ModelResponse(parts=[TextPart(chosen)], usage=usage)
        parts = [ToolCallPart(c.tool, c.args, tool_call_id=call_id(index, i, c)) for i, c in enumerate(chosen)]
        return ModelResponse(parts=parts, usage=usage)

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        index, chosen = step(messages)
        if isinstance(chosen, str):
            for word in re.findall(r"\S+\s*", chosen):
                yield word
            return
        yield {
            i: DeltaToolCall(name=c.tool, json_args=json.dumps(c.args), tool_call_id=call_id(index, i, c))
            for i, c in enumerate(chosen)
        }

    return FunctionModel(respond, stream_function=stream, model_name=name)


NAP = 0.05
"""How long the test tools sleep: a lower bound for their spans' durations."""


async def fetch(url: str) -> str:
    await asyncio.sleep(NAP)
    return f"page at {url}"


async def compute(x: int) -> int:
    await asyncio.sleep(NAP)
    return x * 2


async def lookup(q: str) -> str:
    await asyncio.sleep(NAP)
    return f"fact about {q}"


def researcher() -> Agent[DeepAgentDeps, str]:
    """A sub-agent that looks its task up once, then answers."""
    model = scripted("child-model", [lambda task: Call("lookup", {"q": task}), lambda task: f"found {task}"])
    return create_deep_agent(
        model,
        name="researcher",
        description="Looks facts up.",
        tools=[lookup],
        file_tools=False,
        planning=False,
    )


def delegating_agent(child: Agent[DeepAgentDeps, str] | None = None) -> Agent[DeepAgentDeps, str]:
    """Two tool calls, then a delegation to `child` (a `researcher()` by default), then an answer."""
    model = scripted(
        "parent-model",
        [
            Call("fetch", {"url": "https://example.com"}),
            Call("compute", {"x": 21}),
            Call("delegate_task", {"agent_name": "researcher", "task": "the moon"}),
            "All done.",
        ],
    )
    return create_deep_agent(
        model, tools=[fetch, compute], subagents=[child or researcher()], file_tools=False, planning=False
    )


DELEGATING_TREE = """\
agent_run assistant [ok]
  model_request parent-model [ok]
  tool_call fetch [ok]
  model_request parent-model [ok]
  tool_call compute [ok]
  model_request parent-model [ok]
  tool_call delegate_task [ok]
    agent_run researcher [ok]
      model_request child-model [ok]
      tool_call lookup [ok]
      model_request child-model [ok]
  model_request parent-model [ok]"""


def by_name(spans: Sequence[Span]) -> dict[str, Span]:
    """Spans keyed by name; the test names each tool, agent and model once in a trace."""
    return {span.name: span for span in spans}


def run_of(span: Span) -> AgentRunData:
    assert isinstance(span.data, AgentRunData), span
    return span.data


def request_of(span: Span) -> ModelRequestData:
    assert isinstance(span.data, ModelRequestData), span
    return span.data


def tool_of(span: Span) -> ToolCallData:
    assert isinstance(span.data, ToolCallData), span
    return span.data


def duration(span: Span) -> float:
    assert span.duration_seconds is not None, span
    return span.duration_seconds
