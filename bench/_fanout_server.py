"""The server `bench_fanout.py` measures: our app on an in-process bus, plus a minimal Starlette endpoint.

    python bench/_fanout_server.py PORT CHUNKS [FLUSH_INTERVAL]

`POST /synthetic` starts a producer that appends CHUNKS `llm_chunk` events and an `agent_end` to a new
log on the server's bus, yielding to the event loop after each (as a run on a network stream does),
and answers its run id (`POST /reset` drops every log); readers follow it at the real
`GET /runs/{run_id}/events`. The producer costs the same with readers or without, so their
difference is what readers cost. `GET /frames/{run_id}`
is the floor: a bare Starlette streaming response that sends a finished run's SSE frames, encoded
beforehand, in chunks of 256 events (`?chunk=N`: of N; `&pace=S`: S seconds apart). `GET /cpu` answers
this process's CPU seconds so far, and the CPU seconds and steps of every callback the event loop ran so
far, by the coroutine of the task each stepped (`(callback)` for a bare callback: timers, transports), so
the readers' own cost can be read apart from the producers' in the same phase.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import uuid
from collections.abc import AsyncIterator

import uvicorn
from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel
from starlette.responses import JSONResponse, StreamingResponse

from pydantic_deep.server import create_app
from pydantic_deep.server._sse import event_frame
from pydantic_deep.streaming import agent_end_event, llm_chunk_event

SPENT: dict[str, float] = {}
STEPS: dict[str, int] = {}


def attribute_cpu() -> None:
    """Time each callback the loop runs (CPU time of this thread) and charge it to the coroutine it steps."""
    run_handle = asyncio.events.Handle._run  # pyright: ignore[reportPrivateUsage]
    clock = time.thread_time

    def run(handle: asyncio.events.Handle) -> None:
        start = clock()
        run_handle(handle)
        spent = clock() - start
        task = getattr(handle._callback, "__self__", None)  # pyright: ignore[reportPrivateUsage, reportAttributeAccessIssue]
        name = task.get_coro().__qualname__ if isinstance(task, asyncio.Task) else "(callback)"  # pyright: ignore[reportUnknownMemberType]
        SPENT[name] = SPENT.get(name, 0.0) + spent
        STEPS[name] = STEPS.get(name, 0) + 1

    asyncio.events.Handle._run = run  # type: ignore[method-assign]  # pyright: ignore[reportPrivateUsage]


def main(port: int, chunks: int, flush_interval: float) -> None:
    attribute_cpu()
    app = create_app(Agent(TestModel()), max_concurrent_runs=1000, deps=lambda: None, flush_interval=flush_interval)
    frames: dict[tuple[str, int], list[bytes]] = {}

    @app.get("/frames/{run_id}")
    async def bare(run_id: str, chunk: int = 256, pace: float = 0.0) -> StreamingResponse:  # pyright: ignore[reportUnusedFunction]
        if (run_id, chunk) not in frames:
            batch = await app.state.deep.bus.read(run_id, -1, limit=1_000_000)
            encoded = [event_frame(event, line) for event, line in zip(batch.events, batch.json_lines(), strict=True)]
            frames[run_id, chunk] = [b"".join(encoded[i : i + chunk]) for i in range(0, len(encoded), chunk)]

        async def body() -> AsyncIterator[bytes]:
            for part in frames[run_id, chunk]:
                yield part
                if pace:
                    await asyncio.sleep(pace)

        return StreamingResponse(body(), media_type="text/event-stream")

    bus = app.state.deep.bus
    producers: set[asyncio.Task[None]] = set()

    async def produce(run_id: str) -> None:
        for seq in range(chunks):
            event = llm_chunk_event(text="abcd")
            event.seq, event.run_id = seq, run_id
            await bus.append(run_id, event)
            await asyncio.sleep(0)
        end = agent_end_event()
        end.seq, end.run_id = chunks, run_id
        await bus.append(run_id, end)
        await bus.close(run_id)

    @app.post("/synthetic")
    async def synthetic() -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        run_id = uuid.uuid4().hex
        await bus.open(run_id)
        task = asyncio.create_task(produce(run_id))
        producers.add(task)
        task.add_done_callback(producers.discard)
        return JSONResponse({"run_id": run_id})

    @app.get("/synthetic/{run_id}/done")
    async def done(run_id: str) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        batch = await bus.read(run_id, chunks - 1, wait=None)  # returns once the last event is there
        return JSONResponse({"done": bool(batch.events)})

    @app.post("/reset")
    async def reset() -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        """Drop every log and collect garbage: each phase starts from the same heap."""
        for run_id in await bus.run_ids(1_000_000):
            await bus.discard(run_id)
        frames.clear()
        gc.collect()
        return JSONResponse({})

    @app.get("/cpu")
    async def cpu() -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        return JSONResponse({"cpu": time.process_time(), "spent": SPENT, "steps": STEPS})

    # Keep idle connections as long as a round lasts: with uvicorn's 5 s default, the client could reuse a
    # pooled connection at the moment the server closes it (the keep-alive race), and a round would fail.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=600)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.02)
