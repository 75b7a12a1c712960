"""Pydantic AI's own `run_stream_events`, on the scripted run (see `_harness`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from _harness import Probe, main
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel


def scripted(chunks: int, paced: bool, probe: Probe) -> Agent[None, str]:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        done = any(isinstance(p, ToolReturnPart) for m in messages if isinstance(m, ModelRequest) for p in m.parts)
        if not done:
            yield {0: DeltaToolCall(name="lookup", json_args='{"key": "k"}', tool_call_id="t1")}
            return
        for _ in range(chunks):
            probe.produced()
            yield "abcd"
            if paced:
                await asyncio.sleep(0)

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    async def lookup(key: str) -> str:
        return key

    return agent


async def run_once(chunks: int, paced: bool, probe: Probe) -> int:
    agent = scripted(chunks, paced, probe)
    count = 0
    async with agent.run_stream_events("go") as events:
        async for event in events:
            count += 1
            if (isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta)) or (
                isinstance(event, PartStartEvent) and isinstance(event.part, TextPart)
            ):
                probe.seen()
    return count


if __name__ == "__main__":
    main(run_once, "Pydantic AI run_stream_events", ["pydantic-ai-slim"])
