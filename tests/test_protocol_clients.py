"""The real Vercel AI SDK (`ai`) and AG-UI client (`@ag-ui/client`) against the server, in Node.

The npm packages are pinned in `tests/js/package-lock.json` and installed by `make services`; the
scripts in `tests/js` print what the client saw, one JSON line at a time, and the test reads those
lines as they come (a handshake: the model moves on only once a client has seen what it waits for).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from _js_helpers import JS, MISSING, WHY
from _server_helpers import Script, live_server
from pydantic_deep.server import create_app

pytestmark = pytest.mark.skipif(MISSING, reason=WHY)


def weather(city: str) -> str:
    """Look up the weather."""
    return f"sunny in {city}"


class Node:
    """A Node script's JSON lines, read as they are printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    async def until(self, key: str, value: Any = None) -> dict[str, Any]:
        """Read lines up to the first that has `key` (with `value`, when given)."""
        assert self.process.stdout is not None
        while True:
            raw = await self.process.stdout.readline()
            if not raw:
                stderr = await self.process.stderr.read() if self.process.stderr else b""
                raise AssertionError(f"the script ended before {key}={value!r}: {self.lines} {stderr.decode()}")
            line = json.loads(raw)
            self.lines.append(line)
            if key in line and (value is None or line[key] == value):
                return line

    def seen(self, key: str) -> list[Any]:
        return [line[key] for line in self.lines if key in line]


@asynccontextmanager
async def node(script: str, *args: str, token: str | None = None) -> AsyncIterator[Node]:
    env = {**os.environ, **({"CHECK_TOKEN": token} if token else {})}
    process = await asyncio.create_subprocess_exec(
        "node",
        str(JS / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=JS,
    )
    try:
        yield Node(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_the_ai_sdk_builds_the_message_with_usage_and_resumes_a_running_chat() -> None:
    script = Script(["It is ", "sunny ", "there."], paced=True, tool="weather", tool_args={"city": "Paris"})
    async with live_server(create_app(script.agent(tools=[weather]))) as url:
        async with node("vercel_chat.mjs", url, "send", "chat-1", "weather?") as sender:
            script.allow(1)
            await sender.until("chunk", "text-delta")
            # A reload: the SDK reconnects to the chat and gets its running stream from the start.
            async with node("vercel_chat.mjs", url, "resume", "chat-1") as reloaded:
                await reloaded.until("chunk", "text-delta")
                script.allow(3)
                resumed = (await reloaded.until("message"))["message"]
            sent = (await sender.until("message"))["message"]
        async with node("vercel_chat.mjs", url, "resume", "chat-1") as after:
            nothing = await after.until("resumed")
    assert resumed == sent
    assert sender.seen("chunk") == reloaded.seen("chunk")
    assert sent["role"] == "assistant"
    parts = [part for part in sent["parts"] if part["type"] not in ("step-start",)]
    tool = parts[0]
    assert (tool["type"], tool["state"], tool["input"], tool["output"]) == (
        "tool-weather",
        "output-available",
        {"city": "Paris"},
        "sunny in Paris",
    )
    assert [part["text"] for part in parts if part["type"] == "text"] == ["It is sunny there."]
    usage = sent["metadata"]["pydantic_deep"]
    assert usage["status"] == "succeeded" and usage["usage"]["requests"] == 2
    assert usage["total_tokens"] == usage["usage"]["total_tokens"] > 0
    assert sent["id"] == usage["run_id"]
    assert nothing == {"resumed": None}  # the chat has no running stream any more: 204


async def test_the_ai_sdk_shows_a_failed_run_as_an_error() -> None:
    async with live_server(create_app(Script(["half "], fail_with="the model broke").agent())) as url:
        async with node("vercel_chat.mjs", url, "send", "chat-2", "x") as sender:
            await sender.until("message")
    assert "error" in sender.seen("chunk")
    assert sender.seen("chunk")[-1] == "finish"


async def test_the_ag_ui_client_runs_and_rejoins_a_run() -> None:
    script = Script(["It is ", "sunny."], paced=True, tool="weather", tool_args={"city": "Paris"})
    async with live_server(create_app(script.agent(tools=[weather]))) as url:
        async with node("agui_run.mjs", url, "thread-1", "run-1", "weather?") as first:
            script.allow(1)
            await first.until("event", "TEXT_MESSAGE_CONTENT")
            # Another client (a reloaded page) sends the same run: it joins it and sees it from the start.
            async with node("agui_run.mjs", url, "thread-1", "run-1", "weather?") as second:
                await second.until("event", "TEXT_MESSAGE_CONTENT")
                script.allow(2)
                joined = await second.until("messages")
            done = await first.until("messages")
    assert first.seen("event") == second.seen("event")
    assert joined["messages"] == done["messages"]
    roles = [message["role"] for message in done["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert done["messages"][1]["toolCalls"][0]["function"]["name"] == "weather"
    assert done["messages"][2]["content"] == "sunny in Paris"
    assert done["messages"][3]["content"] == "It is sunny."
    names = [custom["name"] for custom in done["custom"]]
    assert names == ["progress", "progress", "agent_end"]
    assert done["custom"][-1]["value"]["status"] == "succeeded"


async def test_the_ag_ui_client_reports_a_failed_run() -> None:
    async with live_server(create_app(Script(["half "], fail_with="the model broke").agent())) as url:
        async with node("agui_run.mjs", url, "thread-2", "run-2", "x") as client:
            error = await client.until("run_error")
            outcome = await client.until("messages")
    assert (error["run_error"], error["code"]) == ("the model broke", "RuntimeError")
    assert client.seen("event")[-1] == "RUN_ERROR"
    assert outcome["messages"][-1]["content"] == "half "  # what the model said before it broke
    assert outcome["custom"][-1]["value"]["status"] == "failed"


def launch(target: str) -> str:
    """Launch something."""
    return f"launched {target}"


async def approval_chat(protocol: str, decision: str) -> tuple[dict[str, Any], dict[str, Any], Script]:
    """Run a chat in which `launch` needs approval and the client answers `decision`; what it was asked
    and the messages it ended with."""
    script = Script(["done"], tool="launch", tool_args={"target": "kite"})
    app = create_app(script.agent(tools=[launch]), require_approval=["launch"])
    async with live_server(app) as url, node("approve.mjs", protocol, url, "chat-a", "launch it", decision) as client:
        asked = await client.until("asked")
        ended = await client.until("messages")
        assert await client.process.wait() == 0, client.lines
    return asked["asked"], ended, script


async def test_the_ai_sdk_chat_answers_a_tool_approval_request() -> None:
    asked, ended, script = await approval_chat("vercel", "approve")
    assert asked == [{"type": "tool-launch", "input": {"target": "kite"}, "approval": {"id": "call-1"}}]
    assistant = ended["messages"][-1]
    tool = next(part for part in assistant["parts"] if part["type"] == "tool-launch")
    assert (tool["state"], tool["output"], tool["approval"]["approved"]) == ("output-available", "launched kite", True)
    assert [part["text"] for part in assistant["parts"] if part["type"] == "text"] == ["done"]
    assert len(script.messages) == 2  # the tool call, then the answer after the approved call ran


async def test_the_ai_sdk_chat_denies_a_call_with_a_reason() -> None:
    _, ended, script = await approval_chat("vercel", "deny:not today")
    tool = next(part for part in ended["messages"][-1]["parts"] if part["type"] == "tool-launch")
    denial = {"id": "call-1", "approved": False, "reason": "not today"}
    assert (tool["state"], tool["approval"]) == ("output-denied", denial)
    returned = [part for part in script.messages[-1][-1].parts if getattr(part, "tool_name", None) == "launch"]
    assert [part.content for part in returned] == ["not today"]  # what the model was told


async def test_an_agui_client_resumes_an_interrupt() -> None:
    asked, ended, script = await approval_chat("agui", "approve")
    assert [(i["reason"], i["toolCallId"], i["id"]) for i in asked] == [("tool_call", "call-1", "int-call-1")]
    assert [m.get("content") for m in ended["messages"] if m["role"] == "tool"] == ["launched kite"]
    assert ended["messages"][-1]["content"] == "done" and ended["pending"] == []
    assert len(script.messages) == 2
