"""Streaming overhead against raw Pydantic AI, measured in one process, alternating runs.

The scripted run: one tool call, then N four-character text chunks, the model yielding to the event
loop after each chunk as a network stream does. Reported: microseconds per text chunk (median of 7),
our ratio to raw `run_stream_events`, the model's own `StreamedResponse` iterated alone (no agent run:
the floor every stream on Pydantic AI's models pays), and peak traced memory at 20,000 and 200,000 chunks.

    make bench            # or: .venv/bin/python bench/bench_streaming.py [--chunks 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from pydantic_deep.streaming import run_stream


def scripted_agent(chunks: int) -> Agent[None, str]:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        done = any(isinstance(p, ToolReturnPart) for m in messages if isinstance(m, ModelRequest) for p in m.parts)
        if not done:
            yield {0: DeltaToolCall(name="lookup", json_args='{"key": "k"}', tool_call_id="t1")}
            return
        for _ in range(chunks):
            yield "abcd"
            await asyncio.sleep(0)

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    async def lookup(key: str) -> str:
        return key

    return agent


async def model_stream_alone(agent: Agent[None, str]) -> int:
    """The floor: the scripted model's own `StreamedResponse` for the text request, no agent run around it."""
    model = agent.model
    assert isinstance(model, FunctionModel)
    request = ModelRequest(parts=[UserPromptPart("go"), ToolReturnPart("lookup", "k", tool_call_id="t1")])
    count = 0
    async with model.request_stream([request], None, ModelRequestParameters()) as response:
        async for _ in response:
            count += 1
    return count


async def raw_pydantic_ai(agent: Agent[None, str]) -> int:
    count = 0
    async with agent.run_stream_events("go") as events:
        async for _ in events:
            count += 1
    return count


async def ours(agent: Agent[None, str]) -> int:
    count = 0
    async for _ in run_stream(agent, "go"):
        count += 1
    return count


Runner = Callable[[Agent[None, str]], Awaitable[int]]


async def timed(runner: Runner, agent: Agent[None, str]) -> tuple[float, int]:
    gc.collect()
    start = time.perf_counter()
    count = await runner(agent)
    return time.perf_counter() - start, count


async def speed(chunks: int, repeats: int) -> None:
    agent = scripted_agent(chunks)
    runners: dict[str, Runner] = {
        "pydantic-ai run_stream_events": raw_pydantic_ai,
        "pydantic-deep run_stream": ours,
        "the model's own stream (floor)": model_stream_alone,
    }
    for runner in runners.values():  # warm-up
        await runner(scripted_agent(50))
    times: dict[str, list[float]] = {name: [] for name in runners}
    counts: dict[str, int] = {}
    for _ in range(repeats):
        for name, runner in runners.items():  # alternate, so drift hits both alike
            seconds, counts[name] = await timed(runner, agent)
            times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{chunks} chunks, median of {repeats}")
    print(f"{'path':34} {'µs/chunk':>9} {'events':>7} {'µs/event':>9}")
    for name, median in medians.items():
        print(f"{name:34} {median / chunks * 1e6:9.2f} {counts[name]:7d} {median / counts[name] * 1e6:9.2f}")
    raw, deep = medians["pydantic-ai run_stream_events"], medians["pydantic-deep run_stream"]
    floor = medians["the model's own stream (floor)"] / counts["the model's own stream (floor)"] * 1e6
    print(f"ratio ours/raw: {deep / raw:.3f}   overhead per chunk: {(deep - raw) / chunks * 1e6:+.2f} µs")
    # Every event of a run comes out of the model's StreamedResponse first: what it costs alone bounds any
    # stream built on Pydantic AI's models from below.
    print(f"ours above the model's own stream: {deep / counts['pydantic-deep run_stream'] * 1e6 - floor:+.2f} µs/event")


async def peak_memory(runner: Runner, chunks: int) -> int:
    agent = scripted_agent(chunks)
    gc.collect()
    tracemalloc.start()
    await runner(agent)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


async def memory() -> None:
    print("\npeak traced memory (KiB); the engine itself keeps the growing response text")
    print(f"{'chunks':>8} {'raw':>10} {'ours':>10} {'ours - raw':>11}")
    for chunks in (20_000, 200_000):
        raw = await peak_memory(raw_pydantic_ai, chunks)
        deep = await peak_memory(ours, chunks)
        print(f"{chunks:8d} {raw / 1024:10.0f} {deep / 1024:10.0f} {(deep - raw) / 1024:11.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    asyncio.run(speed(args.chunks, args.repeats))
    if not args.no_memory:
        asyncio.run(memory())


if __name__ == "__main__":
    main()
