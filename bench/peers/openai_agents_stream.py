"""The OpenAI Agents SDK's `Runner.run_streamed`, on the scripted run (see `_harness`).

The model streams Responses API events as the SDK's own models do: a text delta per chunk, then the
completed response. Tracing is off (it would upload spans to OpenAI).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from _harness import Probe, main
from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.models.interface import Model
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
)

set_tracing_disabled(True)


def _completed(output: list[Any], sequence: int) -> ResponseCompletedEvent:
    response = Response.model_construct(
        id="resp-1", object="response", created_at=0, model="scripted", output=output, usage=None
    )
    return ResponseCompletedEvent(type="response.completed", sequence_number=sequence, response=response)


class ScriptedModel(Model):
    def __init__(self, chunks: int, paced: bool, probe: Probe) -> None:
        self.chunks, self.paced, self.probe = chunks, paced, probe

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the benchmark streams")

    async def stream_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        answered = isinstance(input, list) and any(
            isinstance(item, dict) and item.get("type") == "function_call_output" for item in input
        )
        if not answered:
            call = ResponseFunctionToolCall(
                type="function_call",
                id="fc-1",
                call_id="t1",
                name="lookup",
                arguments='{"key": "k"}',
                status="completed",
            )
            yield _completed([call], 0)
            return
        for sequence in range(self.chunks):
            self.probe.produced()
            yield ResponseTextDeltaEvent(
                type="response.output_text.delta",
                item_id="msg-1",
                output_index=0,
                content_index=0,
                delta="abcd",
                logprobs=[],
                sequence_number=sequence,
            )
            if self.paced:
                await asyncio.sleep(0)
        text = ResponseOutputText(type="output_text", text="abcd" * self.chunks, annotations=[])
        message = ResponseOutputMessage(
            id="msg-1", type="message", role="assistant", status="completed", content=[text]
        )
        yield _completed([message], self.chunks)


@function_tool
async def lookup(key: str) -> str:
    """Look a key up."""
    return key


async def run_once(chunks: int, paced: bool, probe: Probe) -> int:
    agent = Agent(name="bench", model=ScriptedModel(chunks, paced, probe), tools=[lookup])
    result = Runner.run_streamed(agent, "go")
    count = 0
    async for event in result.stream_events():
        count += 1
        if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
            probe.seen()
    return count


if __name__ == "__main__":
    main(run_once, "OpenAI Agents run_streamed", ["openai-agents", "openai"])
