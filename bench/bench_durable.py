"""The cost of durable mode: the same streamed run with and without pgtask steps in Postgres.

A scripted agent makes `--tools` tool calls (one per model request), then answers in `--chunks` text
chunks. Each run is a pgtask task run by a worker in this process; durable runs stream through
`run_stream(durability=...)`, so each model request and tool call is saved as a step. Wall time per run
(median of `--batches` batches, the two ways alternating), then per settled step and per event.

    make bench        # or: .venv/bin/python bench/bench_durable.py [--runs 20] [--chunks 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

from pydantic_deep.streaming import run_stream

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def make_agent(tools: int, chunks: int) -> Agent[None, str]:
    async def script(messages: list[ModelMessage], info: AgentInfo) -> Any:
        step = sum(isinstance(m, ModelResponse) for m in messages)
        if step < tools:
            yield {0: DeltaToolCall(name="work", json_args=f'{{"n": {step}}}', tool_call_id=f"call-{step}")}
            return
        for _ in range(chunks):
            yield "tick "

    agent = Agent(FunctionModel(stream_function=script), name="bench")

    @agent.tool_plain
    def work(n: int) -> str:
        return f"done {n}"

    return agent


async def main(runs: int, batches: int, tools: int, chunks: int) -> None:
    import psycopg
    from pgtask import Client, Task, TaskRegistry, Worker
    from pydantic_ai_harness.pgtask import PGTaskDurability

    name = f"pydantic_deep_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES}/test", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = f"{POSTGRES}/{name}"
    agents = {n: make_agent(tools, n) for n in (chunks, chunks * 10)}
    events: dict[int, int] = {}
    registry = TaskRegistry(queue_name="bench")

    @registry.task("run")
    async def run(task: Task, payload: dict[str, Any]) -> None:
        durability = (lambda live: PGTaskDurability(name="bench", event_stream_handler=live)) if payload["d"] else None
        count = 0
        async for _ in run_stream(agents[payload["n"]], "go", durability=durability):
            count += 1
        events[payload["n"]] = count

    times: dict[tuple[bool, int], list[float]] = {(d, n): [] for d in (False, True) for n in agents}
    try:
        client = await Client.connect(url)
        await client.migrate()
        worker = Worker(url, registry, concurrency=1, poll_interval=1)
        working = asyncio.create_task(worker.run())

        async def batch(durable: bool, n: int) -> float:
            started = time.perf_counter()
            for _ in range(runs):
                handle = await client.enqueue(run.request({"d": durable, "n": n}))
                result = await handle.result(timeout=60)
                assert result is not None and result.state == "succeeded", result
            return (time.perf_counter() - started) / runs

        for key in times:  # warm up every way
            await batch(*key)
        for _ in range(batches):
            for key in times:
                times[key].append(await batch(*key))
        worker.shutdown()
        await working
    finally:
        with psycopg.connect(f"{POSTGRES}/test", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    median = {key: statistics.median(values) for key, values in times.items()}
    few, many = sorted(agents)
    steps = 2 * tools + 1  # model requests and tool calls: each a saved step when durable
    plain, durable = median[(False, few)], median[(True, few)]
    per_event = {d: (median[(d, many)] - median[(d, few)]) / (events[many] - events[few]) for d in (False, True)}
    print(f"durable mode: runs of {tools} tool calls, then {few} (or {many}) text chunks; median of {batches}")
    print(
        f"  per run ({events[few]} events, a pgtask task either way):"
        f" plain {plain * 1e3:.2f} ms, durable {durable * 1e3:.2f} ms"
    )
    print(f"  ratio durable / plain per run: {durable / plain:.2f}")
    print(f"  added per settled step ({steps} per run): {(durable - plain) / steps * 1e3:.2f} ms")
    print(
        f"  per streamed event: plain {per_event[False] * 1e6:.1f} µs, durable {per_event[True] * 1e6:.1f} µs"
        f" (ratio {per_event[True] / per_event[False]:.2f})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--tools", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.batches, args.tools, args.chunks))
