"""Shared by the server tests: a scripted model the test paces, an SSE parser, and two ways to serve the app.

`client(app)` talks to the ASGI app in process (httpx `ASGITransport`, lifespan entered; responses are
buffered, so streams are read after they end). `live_server(app)` runs a real uvicorn on 127.0.0.1 in the
test's own event loop, on a socket bound and listening before uvicorn starts, for the network cases.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from pydantic_deep import DeepAgentDeps, create_deep_agent
from pydantic_deep.bus import sse_event_name
from pydantic_deep.streaming import StreamEventType


@dataclass
class Script:
    """A model that streams `chunks` one by one, each only once the test has allowed it.

    `allow(n)` lets the first n chunks through (`paced=False` allows them all from the start). `started`
    is set when the model's stream begins; `messages` records what the model saw on each request. With
    `tool`, the first response calls the tool `tool` with `tool_args` and the text comes after.
    """

    chunks: list[str]
    paced: bool = False
    tool: str | None = None
    tool_args: dict[str, Any] = field(default_factory=dict[str, Any])
    fail_with: str | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    messages: list[list[ModelMessage]] = field(default_factory=list[list[ModelMessage]])
    _gates: list[asyncio.Event] = field(default_factory=list[asyncio.Event])

    def __post_init__(self) -> None:
        self._gates = [asyncio.Event() for _ in self.chunks]
        if not self.paced:
            self.allow(len(self.chunks))

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def allow(self, n: int) -> None:
        for gate in self._gates[:n]:
            gate.set()

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        self.messages.append(list(messages))
        if self.tool is not None and len(self.messages) == 1:
            yield {0: DeltaToolCall(name=self.tool, json_args=json.dumps(self.tool_args), tool_call_id="call-1")}
            return
        self.started.set()
        for gate, chunk in zip(self._gates, self.chunks, strict=True):
            await gate.wait()
            yield chunk
        if self.fail_with is not None:
            raise RuntimeError(self.fail_with)

    def agent(self, **kwargs: Any) -> Agent[DeepAgentDeps, str]:
        kwargs.setdefault("planning", False)
        kwargs.setdefault("file_tools", False)
        return create_deep_agent(FunctionModel(stream_function=self.stream, model_name="script"), **kwargs)


@dataclass
class SseMessage:
    """One dispatched Server-Sent Event, parsed the way a browser does."""

    data: str
    event: str = "message"
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


_LINES = re.compile(r"\r\n|\r|\n")


class SseParser:
    """The event-stream interpretation of the HTML spec: fields per line, dispatch on a blank line."""

    def __init__(self) -> None:
        self.data: list[str] = []
        self.event = ""
        self.last_id: str | None = None
        self.comments: list[str] = []

    def line(self, text: str) -> SseMessage | None:
        if text == "":
            if not self.data:
                self.event = ""
                return None
            message = SseMessage(data="\n".join(self.data), event=self.event or "message", id=self.last_id)
            self.data, self.event = [], ""
            return message
        if text.startswith(":"):
            self.comments.append(text[1:].strip())
            return None
        name, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None


def parse_sse(body: str) -> list[SseMessage]:
    parser = SseParser()
    messages = [parser.line(line) for line in _LINES.split(body)]
    return [m for m in messages if m is not None]


async def sse_stream(response: httpx.Response, parser: SseParser | None = None) -> AsyncIterator[SseMessage]:
    """Messages of a streaming httpx response as they arrive; keep-alive comments land in `parser.comments`."""
    parser = parser or SseParser()
    async for line in response.aiter_lines():
        message = parser.line(line)
        if message is not None:
            yield message


def events_of(messages: Sequence[SseMessage]) -> list[dict[str, Any]]:
    """The StreamEvent dicts carried by SSE messages, checking each frame's id and event name against its data."""
    events: list[dict[str, Any]] = []
    for message in messages:
        event = message.json()
        assert message.id == str(event["seq"])
        assert message.event == sse_event_name(StreamEventType(event["event_type"]))
        events.append(event)
    return events


def answer_text(events: Sequence[dict[str, Any]]) -> str:
    return "".join(e["data"]["text"] for e in events if e["event_type"] == "llm_chunk" and e["depth"] == 0)


@asynccontextmanager
async def client(app: FastAPI, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app in process, with the app's lifespan entered (and left: runs are stopped)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as http:
            yield http


@asynccontextmanager
async def live_server(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port in this event loop; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # connections queue here until uvicorn accepts them: no need to wait for start-up
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", ws="wsproto", timeout_graceful_shutdown=5, backlog=1024
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
