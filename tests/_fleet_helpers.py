"""Real fleets for the tests: `pydantic-deep serve` processes on Redis, a model they share, a Redis of our own.

Every process runs the real command line with `--model openai-chat:...` against one `FakeOpenAIServer`
in the test process, whose answers wait on gates the test opens: that is how a test knows a run is in
flight on another process (the model request arrived) and decides when it goes on.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from _server_helpers import SseMessage, SseParser, sse_stream
from pydantic_deep.testing import ScriptReply, ScriptRequest, ScriptToolCall

REDIS_URL = "redis://127.0.0.1:6379/0"
START_DEADLINE = 90.0  # seconds a process may take to answer at all, on a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_or_skip(url: str = REDIS_URL) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()  # pyright: ignore[reportUnknownMemberType]
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url} ({type(exc).__name__}); run `make services`")


@asynccontextmanager
async def shared_redis_buses(count: int = 2) -> AsyncIterator[list[Any]]:
    """`count` `RedisEventBus`es on one fresh key prefix (one per server of a fleet); skips without Redis."""
    from pydantic_deep.bus import RedisEventBus

    redis_or_skip()
    prefix = f"pydantic-deep-test:{uuid.uuid4().hex}:"
    buses = [RedisEventBus(REDIS_URL, prefix=prefix) for _ in range(count)]
    try:
        yield buses
    finally:
        for bus in buses:
            await bus.aclose()


@dataclass
class GatedModel:
    """The script of the shared fake model: a run writes a file, then waits at its gate before answering.

    `arrived[prompt]` is set when the run's second model request reaches the model (the run is in flight
    with a tool call done); `gates[prompt]` lets it answer. Prompts without a gate answer at once. A
    prompt starting with `cut` gets an answer cut off before the completion event; `long` a long one.
    """

    gates: dict[str, threading.Event] = field(default_factory=dict[str, threading.Event])
    arrived: defaultdict[str, threading.Event] = field(default_factory=lambda: defaultdict(threading.Event))

    def gate(self, prompt: str) -> threading.Event:
        self.gates[prompt] = threading.Event()
        return self.gates[prompt]

    def open_all(self) -> None:
        for gate in self.gates.values():
            gate.set()

    async def __call__(self, request: ScriptRequest) -> ScriptReply:
        prompt = request.prompt
        if not request.tool_results:
            call = ScriptToolCall("write_file", {"path": "notes.md", "content": prompt})
            return ScriptReply(text=["Noting", " it."], tool_calls=[call])
        self.arrived[prompt].set()
        gate = self.gates.get(prompt)
        if gate is not None:
            await asyncio.to_thread(gate.wait)
        if prompt.startswith("cut"):  # the provider ends the body after two chunks, before its completion event
            return ScriptReply(text=["Done", " with ", prompt, "."], end_after=2)
        if prompt.startswith("long"):  # many chunks, paced by the provider's chunk delay
            return ScriptReply(text=["tick "] * 10_000)
        return ScriptReply(text=["Done", " with ", prompt, "."])


class Server:
    """One `pydantic-deep serve` process; its output goes to a file the failure message shows."""

    def __init__(self, *args: str, env: dict[str, str], name: str = "server") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix=f"pydantic-deep-{name}-", suffix=".log")[1])
        self._out = self.log.open("w")
        command = [sys.executable, "-m", "pydantic_deep.cli", "serve", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT, env=env, text=True)

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def wait_ready(self) -> None:
        end = time.monotonic() + START_DEADLINE
        while True:  # handshake: the run list answers once the app has started (and reached Redis)
            assert self.proc.poll() is None, f"the server exited with {self.proc.returncode}:\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/runs", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < end, f"the server never answered:\n{self.output()}"
            time.sleep(0.05)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._out.close()
        self.log.unlink(missing_ok=True)


@dataclass
class Fleet:
    """Processes on one bus prefix, sharing one fake model."""

    model: GatedModel
    env: dict[str, str]
    bus: str
    prefix: str
    servers: list[Server] = field(default_factory=list[Server])

    def start(self, *args: str, count: int = 1) -> list[Server]:
        started = [
            Server("--bus", self.bus, "--bus-prefix", self.prefix, "--keepalive", "1", *args, env=self.env)
            for _ in range(count)
        ]
        self.servers += started
        for server in started:
            server.wait_ready()
        return started


@contextmanager
def fleet(bus: str = REDIS_URL, *, chunk_delay: float = 0.0) -> Iterator[Fleet]:
    """A fleet on a fresh key prefix, and the fake model its processes use; every process is killed after."""
    from pydantic_deep.testing import FakeOpenAIServer

    model = GatedModel()
    with FakeOpenAIServer(model, api_key="sk-fleet", chunk_delay=chunk_delay) as provider:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYDANTIC_DEEP_")}
        env.update(provider.env, PYDANTIC_DEEP_MODEL="openai-chat:gpt-4o-mini", NO_COLOR="1")
        the_fleet = Fleet(model=model, env=env, bus=bus, prefix=f"pydantic-deep-test:{uuid.uuid4().hex}:")
        try:
            yield the_fleet
        finally:
            model.open_all()  # no model request stays blocked in the provider's thread
            for server in the_fleet.servers:
                server.stop()


@dataclass
class Follower:
    """An SSE client following a run on one server, recording every event and keep-alive it gets."""

    url: str
    run_id: str
    after: int = -1
    events: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    keepalives: int = 0

    @asynccontextmanager
    async def stream(self, http: httpx.AsyncClient) -> AsyncIterator[AsyncIterator[SseMessage]]:
        headers = {"Last-Event-ID": str(self.after)} if self.after >= 0 else {}
        async with http.stream("GET", f"{self.url}/runs/{self.run_id}/events", headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            parser = SseParser()

            async def messages() -> AsyncIterator[SseMessage]:
                async for message in sse_stream(response, parser):
                    self.keepalives = len(parser.comments)
                    event = message.json()
                    assert message.id == str(event["seq"]) and event["seq"] == self.after + 1, (message, self.after)
                    self.events.append(event)
                    self.after = event["seq"]
                    yield message
                self.keepalives = len(parser.comments)

            yield messages()

    async def until(self, http: httpx.AsyncClient, event_type: str) -> dict[str, Any]:
        """Follow (from where this follower is) until an event of `event_type`; return it."""
        async with self.stream(http) as messages:
            async for message in messages:
                if message.event == event_type:
                    return message.json()
        raise AssertionError(f"the stream ended before {event_type}: {[e['event_type'] for e in self.events]}")

    async def to_end(self, http: httpx.AsyncClient) -> list[dict[str, Any]]:
        async with self.stream(http) as messages:
            async for _ in messages:
                pass
        return self.events


class OwnRedis:
    """A Redis server of our own on a free port, which a test may stop and start again (no persistence)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed; run `make services`")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="pydantic-deep-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*args, "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis

        end = time.monotonic() + START_DEADLINE
        while True:  # handshake: it answers PING
            try:
                redis.Redis(port=self.port, socket_connect_timeout=1).ping()  # pyright: ignore[reportUnknownMemberType]
                return
            except redis.ConnectionError:
                assert self.proc.poll() is None, "redis-server exited"
                assert time.monotonic() < end, "redis-server never answered"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
