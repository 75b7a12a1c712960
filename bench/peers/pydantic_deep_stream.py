"""pydantic-deep's `run_stream` on a deep agent, on the scripted run (see `_harness`)."""

from __future__ import annotations

from _harness import Probe, main
from _pydantic_ai_model import lookup, scripted_model

from pydantic_deep import DeepAgentDeps, create_deep_agent
from pydantic_deep.streaming import StreamEventType, run_stream


async def run_once(chunks: int, paced: bool, probe: Probe) -> int:
    agent = create_deep_agent(scripted_model(chunks, paced, probe), tools=[lookup])
    count = 0
    async for event in run_stream(agent, "go", DeepAgentDeps()):
        count += 1
        if event.event_type is StreamEventType.LLM_CHUNK:
            probe.seen()
    return count


if __name__ == "__main__":
    main(run_once, "pydantic-deep run_stream (deep agent)", ["pydantic-deep", "pydantic-ai-slim"])
