"""The scripted model as a Pydantic AI `FunctionModel`, for Pydantic AI itself and for pydantic-deep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from _harness import Probe
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel


def scripted_model(chunks: int, paced: bool, probe: Probe) -> FunctionModel:
    """One tool call (`lookup`), then `chunks` four-character chunks."""

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

    return FunctionModel(stream_function=model)


async def lookup(key: str) -> str:
    """Look a key up."""
    return key
