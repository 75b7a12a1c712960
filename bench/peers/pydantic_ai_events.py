"""Pydantic AI's own `run_stream_events`, on the scripted run (see `_harness`)."""

from __future__ import annotations

from _harness import Probe, main
from _pydantic_ai_model import lookup, scripted_model
from pydantic_ai import Agent
from pydantic_ai.messages import PartDeltaEvent, PartStartEvent, TextPart, TextPartDelta


async def run_once(chunks: int, paced: bool, probe: Probe) -> int:
    agent = Agent(scripted_model(chunks, paced, probe), tools=[lookup])
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
