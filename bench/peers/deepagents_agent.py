"""deepagents (LangChain's deep agent on LangGraph), streamed with `stream_mode="messages"`."""

from __future__ import annotations

from _harness import Probe, main
from _langchain_model import ScriptedChatModel, consume
from deepagents import create_deep_agent
from langchain_core.tools import tool


@tool
async def lookup(key: str) -> str:
    """Look a key up."""
    return key


async def run_once(chunks: int, paced: bool, probe: Probe) -> int:
    agent = create_deep_agent(model=ScriptedChatModel(chunks=chunks, paced=paced, probe=probe), tools=[lookup])
    return await consume(agent, probe)


if __name__ == "__main__":
    main(run_once, "deepagents", ["deepagents", "langgraph", "langchain-core"])
