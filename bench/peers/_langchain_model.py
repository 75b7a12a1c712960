"""The scripted model as a LangChain chat model, for LangGraph's `create_agent` and deepagents."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from _harness import Probe
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.outputs.chat_generation import merge_chat_generation_chunks


class ScriptedChatModel(BaseChatModel):
    """One tool call (`lookup`), then `chunks` four-character chunks; streamed when the graph streams."""

    chunks: int
    paced: bool
    probe: Any

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        raise NotImplementedError("the benchmark runs async")

    async def _astream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        if not any(isinstance(message, ToolMessage) for message in messages):
            call = {"name": "lookup", "args": '{"key": "k"}', "id": "t1", "index": 0, "type": "tool_call_chunk"}
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[call]))
            return
        probe: Probe = self.probe
        for _ in range(self.chunks):
            probe.produced()
            yield ChatGenerationChunk(message=AIMessageChunk(content="abcd"))
            if self.paced:
                await asyncio.sleep(0)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        chunks = [chunk async for chunk in self._astream(messages, stop, run_manager, **kwargs)]
        merged = merge_chat_generation_chunks(chunks)
        assert merged is not None
        return ChatResult(generations=[merged])


async def consume(agent: Any, probe: Probe) -> int:
    """Stream the graph's messages (token by token) and count them."""
    count = 0
    stream = agent.astream({"messages": [{"role": "user", "content": "go"}]}, stream_mode="messages")
    async for message, _metadata in stream:
        count += 1
        if isinstance(message, AIMessageChunk) and message.content:
            probe.seen()
    return count
