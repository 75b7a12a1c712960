"""LangGraph's prebuilt agent (`langchain.agents.create_agent`), streamed with `stream_mode="messages"`."""

from __future__ import annotations

from _harness import Probe, main
from _langchain_model import ScriptedChatModel, consume
from langchain.agents import create_agent
from langchain_core.tools import tool


@tool
async def lookup(key: str) -> str:
    """Look a key up."""
    return key


async def run_once(chunks: int, paced: bool, probe: Probe) -> int:
    agent = create_agent(ScriptedChatModel(chunks=chunks, paced=paced, probe=probe), tools=[lookup])
    return await consume(agent, probe)


if __name__ == "__main__":
    main(run_once, "LangGraph create_agent", ["langgraph", "langchain", "langchain-core"])
