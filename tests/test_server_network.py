"""The server over real sockets: uvicorn on 127.0.0.1 in the test's event loop, real HTTP and WebSocket clients.

Dropped connections and resume, keep-alives, a slow reader next to a fast one, WebSocket parity and auth,
and 200 concurrent streaming clients. Every wait is a handshake on what a client has received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws
from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCalls, FunctionModel

from _server_helpers import Script, SseParser, answer_text, events_of, live_server, sse_stream
from pydantic_deep import create_deep_agent
from pydantic_deep.server import create_app

TOKEN = "network-token"


def last_prompt(messages: list[ModelMessage]) -> str:
    parts = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, UserPromptPart)]
    assert isinstance(parts[-1].content, str)
    return parts[-1].content


def check(message: Any) -> dict[str, Any]:
    return events_of([message])[0]


async def read_until(
    http: httpx.AsyncClient, url: str, stop: Callable[[dict[str, Any]], bool], **kwargs: Any
) -> list[dict[str, Any]]:
    """Open the stream, read events until `stop` says so, then drop the connection."""
    got: list[dict[str, Any]] = []
    async with http.stream("GET", url, **kwargs) as response:
        assert response.status_code == 200
        async for message in sse_stream(response):
            got.append(check(message))
            if stop(got[-1]):
                break
    return got


def chunk_count(n: int) -> Callable[[dict[str, Any]], bool]:
    seen = 0

    def stop(event: dict[str, Any]) -> bool:
        nonlocal seen
        seen += event["event_type"] == "llm_chunk"
        return seen >= n

    return stop


def is_end(event: dict[str, Any]) -> bool:
    return event["event_type"] == "agent_end"


async def test_resume_after_dropped_connections_from_several_points() -> None:
    script = Script([f"line {i}\n" if i % 3 == 0 else f"word{i} " for i in range(12)], paced=True)
    async with live_server(create_app(script.agent())) as url, httpx.AsyncClient(base_url=url) as http:
        run_id = (await http.post("/runs", json={"prompt": "resume me"})).json()["run_id"]
        events_url = f"/runs/{run_id}/events"
        observer_seen: list[dict[str, Any]] = []
        eight_chunks = asyncio.Event()

        async def observe() -> None:  # a client that never drops: the reference, and our handshake
            async with http.stream("GET", events_url) as response:
                async for message in sse_stream(response):
                    observer_seen.append(check(message))
                    if sum(e["event_type"] == "llm_chunk" for e in observer_seen) == 8:
                        eight_chunks.set()
            # the stream ended on its own, right after agent_end

        observer = asyncio.create_task(observe())
        script.allow(3)
        collected = await read_until(http, events_url, chunk_count(3))  # drop 1: live, at the edge of the log
        assert collected[-1]["event_type"] == "llm_chunk"

        script.allow(8)
        await eight_chunks.wait()  # five more chunks were logged while no one was connected to read them
        collected += await read_until(
            http, events_url, chunk_count(2), headers={"Last-Event-ID": str(collected[-1]["seq"])}
        )  # drop 2: in the middle of what piled up

        script.allow(12)
        collected += await read_until(http, f"{events_url}?last_event_id={collected[-1]['seq']}", is_end)
        await observer
        status = (await http.get(f"/runs/{run_id}")).json()

        # After the end, resuming from anywhere gives exactly the rest.
        middle = collected[len(collected) // 2]["seq"]
        rest = await read_until(http, events_url, is_end, headers={"Last-Event-ID": str(middle)})

    assert [e["seq"] for e in collected] == list(range(len(collected)))  # none lost, none repeated
    assert collected == observer_seen
    assert answer_text(collected) == script.text == status["output"]
    assert collected[-1]["event_type"] == "agent_end" and status["status"] == "succeeded"
    assert rest == collected[middle + 1 :]


async def test_keep_alive_comments_while_idle_then_the_stream_continues() -> None:
    script = Script(["after\nthe pause"], paced=True)
    app = create_app(script.agent(), keepalive_seconds=0.01)
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        run_id = (await http.post("/runs", json={"prompt": "idle"})).json()["run_id"]
        parser = SseParser()
        events: list[dict[str, Any]] = []
        released = False
        async with http.stream("GET", f"/runs/{run_id}/events") as response:
            async for line in response.aiter_lines():
                message = parser.line(line)
                if message is not None:
                    events.append(check(message))
                if parser.comments and not released:
                    released = True
                    script.allow(1)  # a keep-alive arrived while the run was idle: let it go on
        assert parser.comments[0] == "keep-alive"
        assert [e["event_type"] for e in events] == ["agent_start", "llm_chunk", "progress", "agent_end"]
        assert answer_text(events) == "after\nthe pause"


async def test_a_slow_reader_slows_neither_the_run_nor_a_fast_reader() -> None:
    # Far more than the socket buffers hold, so the slow reader's connection really is full while it idles.
    script = Script([f"{i:05d}" + "x" * 4000 for i in range(2000)])
    async with live_server(create_app(script.agent())) as url, httpx.AsyncClient(base_url=url) as http:
        run_id = (await http.post("/runs", json={"prompt": "big"})).json()["run_id"]
        async with http.stream("GET", f"/runs/{run_id}/events") as slow:
            slow_messages = sse_stream(slow)
            first = check(await anext(slow_messages))  # connected, then reads nothing for a while
            fast = await read_until(http, f"/runs/{run_id}/events", is_end)
            status = (await http.get(f"/runs/{run_id}")).json()
            assert status["status"] == "succeeded"  # the run finished while the slow reader lagged behind
            rest = [check(message) async for message in slow_messages]
    slow_all = [first, *rest]
    assert slow_all == fast
    assert [e["seq"] for e in fast] == list(range(len(fast)))
    assert answer_text(fast) == script.text


async def test_200_concurrent_streaming_clients_get_every_event() -> None:
    runs, per_run = 10, 20
    scripts = [Script([f"run {r} chunk {i}\n" for i in range(30)], paced=True) for r in range(runs)]

    # One app, one agent: each run's prompt picks the script that answers it.
    by_prompt = {f"run {r}": scripts[r] for r in range(runs)}

    async def route(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        prompt = last_prompt(messages)
        async for item in by_prompt[prompt].stream(messages, info):
            yield item

    agent = create_deep_agent(FunctionModel(stream_function=route), planning=False, file_tools=False)
    connected = 0
    everyone_connected = asyncio.Event()
    limits = httpx.Limits(max_connections=runs * per_run + 20, max_keepalive_connections=0)
    async with (
        live_server(create_app(agent)) as url,
        httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http,
    ):
        run_ids = [(await http.post("/runs", json={"prompt": f"run {r}"})).json()["run_id"] for r in range(runs)]

        async def follow(run_id: str) -> list[dict[str, Any]]:
            nonlocal connected
            got: list[dict[str, Any]] = []
            async with http.stream("GET", f"/runs/{run_id}/events") as response:
                async for message in sse_stream(response):
                    got.append(check(message))
                    if len(got) == 1:
                        connected += 1
                        if connected == runs * per_run:
                            everyone_connected.set()
            return got

        readers = [asyncio.create_task(follow(run_id)) for run_id in run_ids for _ in range(per_run)]
        await everyone_connected.wait()  # all 200 streams are open before any run says a word
        for script in scripts:
            script.allow(30)
        results = await asyncio.gather(*readers)

    assert len(results) == runs * per_run
    for r in range(runs):
        streams = results[r * per_run : (r + 1) * per_run]
        reference = streams[0]
        assert [e["seq"] for e in reference] == list(range(len(reference)))
        assert reference[-1]["event_type"] == "agent_end" and reference[-1]["data"]["status"] == "succeeded"
        assert answer_text(reference) == scripts[r].text
        assert all(stream == reference for stream in streams)
        assert {e["run_id"] for e in reference} == {run_ids[r]}


# ---- WebSocket -----------------------------------------------------------------------------------------


async def ws_events(url: str, http: httpx.AsyncClient, **kwargs: Any) -> tuple[list[dict[str, Any]], int]:
    events: list[dict[str, Any]] = []
    async with aconnect_ws(url, http, **kwargs) as ws:
        try:
            while True:
                events.append(await ws.receive_json())
        except WebSocketDisconnect as closed:
            return events, closed.code


async def test_websocket_sends_the_same_events_as_sse_and_resumes() -> None:
    script = Script(["web\nsocket", " parity"])
    async with live_server(create_app(script.agent())) as url, httpx.AsyncClient(base_url=url) as http:
        run_id = (await http.post("/runs", json={"prompt": "ws"})).json()["run_id"]
        sse = await read_until(http, f"/runs/{run_id}/events", is_end)
        ws_url = url.replace("http", "ws") + f"/runs/{run_id}/ws"
        everything, code = await ws_events(ws_url, http)
        resumed, resumed_code = await ws_events(ws_url + "?last_event_id=2", http)
    assert everything == sse and code == 1000
    assert resumed == sse[3:] and resumed_code == 1000


async def test_websocket_follows_a_live_run_to_its_end() -> None:
    script = Script(["live", " over", " ws"], paced=True)
    async with live_server(create_app(script.agent())) as url, httpx.AsyncClient(base_url=url) as http:
        run_id = (await http.post("/runs", json={"prompt": "ws"})).json()["run_id"]
        events: list[dict[str, Any]] = []
        async with aconnect_ws(url.replace("http", "ws") + f"/runs/{run_id}/ws", http) as ws:
            events.append(await ws.receive_json())
            script.allow(3)
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    events.append(await ws.receive_json())
    assert closed.value.code == 1000
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert answer_text(events) == "live over ws" and events[-1]["event_type"] == "agent_end"


async def test_websocket_auth_and_errors_close_with_a_reason() -> None:
    script = Script(["ok"])
    app = create_app(script.agent(), token=TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, headers=headers) as http:
        run_id = (await http.post("/runs", json={"prompt": "ws"})).json()["run_id"]
        await read_until(http, f"/runs/{run_id}/events", is_end)
        base = url.replace("http", "ws")
        async with httpx.AsyncClient() as anonymous:  # a browser's WebSocket cannot send headers
            refused = await ws_events(f"{base}/runs/{run_id}/ws", anonymous)
            wrong = await ws_events(f"{base}/runs/{run_id}/ws?token=nope", anonymous)
            by_query, _ = await ws_events(f"{base}/runs/{run_id}/ws?token={TOKEN}", anonymous)
            async with aconnect_ws(
                f"{base}/runs/{run_id}/ws", anonymous, subprotocols=["pydantic-deep", f"bearer.{TOKEN}"]
            ) as ws:
                assert ws.subprotocol == "pydantic-deep"
                first = await ws.receive_json()
            unknown = await ws_events(f"{base}/runs/nope/ws?token={TOKEN}", anonymous)
            bad_resume = await ws_events(f"{base}/runs/{run_id}/ws?token={TOKEN}&last_event_id=x", anonymous)
    assert refused == ([], 4401) and wrong == ([], 4401)
    assert by_query[-1]["event_type"] == "agent_end" and first["seq"] == 0
    assert unknown == ([], 4404) and bad_resume == ([], 4422)
