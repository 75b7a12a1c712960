"""The fixed cost of one run: the demo run (no token delay) by `agent.run()`, streamed in process by
`run_stream`, and through a real `pydantic-deep serve` process (POST /runs, then its SSE events).

CPU seconds, not wall time: in process, this process's CPU per run (median of several batches, the three
ways alternating); for the server, the server process's own CPU per run (from /proc), so the client's
work is left out.

    make bench        # or: .venv/bin/python bench/bench_run_cost.py [--runs 40] [--batches 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable

import httpx

from _processes import serve
from pydantic_deep import DeepAgentDeps, create_deep_agent
from pydantic_deep.models import demo_model
from pydantic_deep.streaming import run_stream

PROMPT = "Explain why streaming matters for agent UIs"


async def by_run() -> None:
    await AGENT.run(PROMPT, deps=DeepAgentDeps())


async def by_stream() -> None:
    async for _ in run_stream(AGENT, PROMPT, DeepAgentDeps()):
        pass


AGENT = create_deep_agent(demo_model(delay=0))


async def batch_cpu(run: Callable[[], Awaitable[None]], runs: int) -> float:
    start = time.process_time()
    for _ in range(runs):
        await run()
    return (time.process_time() - start) / runs * 1000


def server_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def server_runs(url: str, runs: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for _ in range(runs):
            run_id = (await http.post("/runs", json={"prompt": PROMPT})).json()["run_id"]
            async with http.stream("GET", f"/runs/{run_id}/events") as response:
                async for _ in response.aiter_bytes():
                    pass


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    env = {key: value for key, value in os.environ.items() if key != "PYDANTIC_DEEP_MODEL"}
    env["PYDANTIC_DEEP_DEMO_DELAY"] = "0"
    return serve(env=env)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40, help="runs per batch")
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    server, url = start_server()
    try:
        await by_run()  # warm up
        await by_stream()
        await server_runs(url, 3)
        cost: dict[str, list[float]] = {"agent.run()": [], "run_stream": [], "server": []}
        for _ in range(args.batches):
            cost["agent.run()"].append(await batch_cpu(by_run, args.runs))
            cost["run_stream"].append(await batch_cpu(by_stream, args.runs))
            before = server_cpu_seconds(server.pid)
            await server_runs(url, args.runs)
            cost["server"].append((server_cpu_seconds(server.pid) - before) / args.runs * 1000)
    finally:
        server.terminate()
        server.wait(timeout=30)
    median = {name: statistics.median(values) for name, values in cost.items()}
    run, stream, served = median["agent.run()"], median["run_stream"], median["server"]
    print(f"the demo run's fixed cost, CPU ms per run (median of {args.batches} batches of {args.runs})")
    print(f"  agent.run()               {run:7.2f}")
    print(f"  run_stream (in process)   {stream:7.2f}   {stream / run:.2f}x agent.run()")
    print(f"  pydantic-deep serve       {served:7.2f}   {served / stream:.2f}x run_stream")


if __name__ == "__main__":
    asyncio.run(main())
