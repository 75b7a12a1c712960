"""The server `bench_fanout.py` measures: our app on an in-process bus, plus a minimal Starlette endpoint.

    python bench/_fanout_server.py PORT CHUNKS

`POST /runs` runs a scripted agent streaming CHUNKS text chunks (yielding to the event loop after
each, as a network stream does). `GET /frames/{run_id}` is the floor: a bare Starlette streaming
response that sends a finished run's SSE frames, encoded beforehand, in the same 256-event chunks
our replay sends. `GET /cpu` answers this process's CPU seconds so far.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator

import uvicorn
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel
from starlette.responses import JSONResponse, StreamingResponse

from pydantic_deep.server import create_app
from pydantic_deep.server._sse import event_frame


def agent(chunks: int) -> Agent[None, str]:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        for _ in range(chunks):
            yield "abcd"
            await asyncio.sleep(0)

    return Agent(FunctionModel(stream_function=model))


def main(port: int, chunks: int) -> None:
    app = create_app(agent(chunks), max_concurrent_runs=1000, deps=lambda: None)
    frames: dict[str, list[bytes]] = {}

    @app.get("/frames/{run_id}")
    async def bare(run_id: str) -> StreamingResponse:  # pyright: ignore[reportUnusedFunction]
        if run_id not in frames:
            batch = await app.state.deep.bus.read(run_id, -1, limit=1_000_000)
            encoded = [event_frame(event, line) for event, line in zip(batch.events, batch.json_lines(), strict=True)]
            frames[run_id] = [b"".join(encoded[i : i + 256]) for i in range(0, len(encoded), 256)]

        async def body() -> AsyncIterator[bytes]:
            for chunk in frames[run_id]:
                yield chunk

        return StreamingResponse(body(), media_type="text/event-stream")

    @app.get("/cpu")
    async def cpu() -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        return JSONResponse({"cpu": time.process_time()})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
