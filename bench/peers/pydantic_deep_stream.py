"""pydantic-deep's `run_stream` on a deep agent, on the scripted run (see `_harness`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from _harness import Probe, main
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from pydantic_deep import DeepAgentDeps, create_deep_agent
from pydantic_deep.streaming import StreamEventType, run_stream


async def run_once(chunks: int, paced: bool, probe: Probe) -> int:
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

    async def lookup(key: str) -> str:
        """Look a key up."""
        return key

    agent = create_deep_agent(FunctionModel(stream_function=model), tools=[lookup])
    count = 0
    async for event in run_stream(agent, "go", DeepAgentDeps()):
        count += 1
        if event.event_type is StreamEventType.LLM_CHUNK:
            probe.seen()
    return count


if __name__ == "__main__":
    main(run_once, "pydantic-deep run_stream (deep agent)", ["pydantic-deep", "pydantic-ai-slim"])
