"""A scripted deep-agent run with a plan, tools, a sub-agent, a failing tool and a model error.

Shared by the terminal tests: the events come from a real `create_deep_agent` run driven by
`FunctionModel`s, then get fixed timestamps and durations so rendered text is reproducible.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from pydantic_ai import ModelRetry
from pydantic_ai.messages import ModelMessage, ModelRequest, RetryPromptPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from pydantic_deep import DeepAgentDeps, StateBackend, create_deep_agent
from pydantic_deep.streaming import StreamEvent, StreamEventType, run_stream

START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PLAN = [
    {"content": "Research the topic", "active_form": "Researching the topic", "status": "in_progress"},
    {"content": "Check the numbers", "active_form": "Checking the numbers"},
    {"content": "Write the answer", "active_form": "Writing the answer"},
]


def _answers(messages: list[ModelMessage]) -> int:
    """How many tool results (or retry prompts) the model has seen so far: the script's step counter."""
    return sum(
        1
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart | RetryPromptPart)
    )


def _call(name: str, args: dict[str, object], call_id: str) -> DeltaToolCalls:
    return {0: DeltaToolCall(name=name, json_args=json.dumps(args), tool_call_id=call_id)}


class ModelConnectionLost(RuntimeError):
    pass


def scripted_agent():  # type: ignore[no-untyped-def]
    async def researcher(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if _answers(messages) == 0:
            yield _call("search", {"query": "why streaming matters"}, "search-1")
            return
        yield "Users see progress at once.\n"
        yield "They can stop a run that goes wrong."

    async def search(query: str) -> str:
        return f"3 sources about {query}"

    child = create_deep_agent(
        FunctionModel(stream_function=researcher),
        name="researcher",
        description="Finds sources",
        tools=[search],
        file_tools=False,
        planning=False,
    )

    async def lead(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        step = _answers(messages)
        if step == 0:
            yield _call("write_plan", {"items": PLAN}, "plan-1")
        elif step == 1:
            yield _call(
                "delegate_task", {"agent_name": "researcher", "task": "Find why streaming matters"}, "delegate-1"
            )
        elif step == 2:
            yield _call("fetch_stats", {"url": "https://example.com/stats"}, "stats-1")
        else:
            yield "Streaming matters because users "
            yield "see work as it happens."
            raise ModelConnectionLost("connection to the model was lost")

    async def fetch_stats(url: str) -> str:
        raise ModelRetry(f"{url} answered 503")

    return create_deep_agent(
        FunctionModel(stream_function=lead), name="lead", subagents=[child], tools=[fetch_stats], file_tools=False
    )


async def scripted_events() -> list[StreamEvent]:
    """The scripted run's events, with timestamps 0.1s apart and fixed durations."""
    events: list[StreamEvent] = []
    try:
        async for event in run_stream(
            scripted_agent(), "Why does streaming matter?", DeepAgentDeps(backend=StateBackend())
        ):
            events.append(event)
    except ModelConnectionLost:
        pass
    return [_fixed(event) for event in events]


def _fixed(event: StreamEvent) -> StreamEvent:
    data = dict(event.data)
    if event.event_type in (StreamEventType.TOOL_END, StreamEventType.SUBAGENT_END, StreamEventType.AGENT_END):
        data["duration_seconds"] = {"tool_end": 0.25, "subagent_end": 1.5, "agent_end": 4.2}[event.event_type.value]
    return dataclasses.replace(event, data=data, timestamp=START + timedelta(seconds=event.seq / 10))
