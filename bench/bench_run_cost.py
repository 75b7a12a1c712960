"""The fixed cost of one run: the demo run (no token delay) by `agent.run()`, streamed in process by
`run_stream`, and through a real `pydantic-deep serve` process (POST /runs, then its SSE events).

CPU seconds, not wall time: in process, this process's CPU per run (median of several rounds, the ways
taking turns run by run); for the server, the server process's own CPU per run (from /proc), so the client's
work is left out.

Pydantic AI's own ways of streaming the same run are printed next to ours for reference.

    make bench        # or: .venv/bin/python bench/bench_run_cost.py [--runs 20] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
from collections.abc import AsyncIterable, Awaitable, Callable

import httpx
from pydantic_ai import RunContext
from pydantic_ai.messages import AgentStreamEvent

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


async def by_pydantic_ai_events() -> None:
    """Pydantic AI's own event stream of the same run, for reference."""
    async with AGENT.run_stream_events(PROMPT, deps=DeepAgentDeps()) as events:
        async for _ in events:
            pass


async def by_event_handler() -> None:
    """`agent.run()` with an `event_stream_handler` that drops the events: Pydantic AI's cheapest stream."""

    async def handler(ctx: RunContext[DeepAgentDeps], events: AsyncIterable[AgentStreamEvent]) -> None:
        async for _event in events:
            pass

    await AGENT.run(PROMPT, deps=DeepAgentDeps(), event_stream_handler=handler)


AGENT = create_deep_agent(demo_model(delay=0))


IN_PROCESS: dict[str, Callable[[], Awaitable[None]]] = {
    "agent.run()": by_run,
    "run_stream": by_stream,
    "Pydantic AI run_stream_events": by_pydantic_ai_events,
    "agent.run(event_stream_handler)": by_event_handler,
}


async def in_process_round(runs: int) -> dict[str, float]:
    """CPU ms per run of each way, the ways taking turns run by run (drift hits all alike)."""
    spent = dict.fromkeys(IN_PROCESS, 0.0)
    for _ in range(runs):
        for name, run in IN_PROCESS.items():
            start = time.process_time()
            await run()
            spent[name] += time.process_time() - start
    return {name: seconds / runs * 1000 for name, seconds in spent.items()}


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
    parser.add_argument("--runs", type=int, default=20, help="runs of each way per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    server, url = start_server()
    rounds: list[dict[str, float]] = []
    try:
        for run in IN_PROCESS.values():  # warm up
            await run()
        await server_runs(url, 3)
        for _ in range(args.rounds):
            cost = await in_process_round(args.runs)
            before = server_cpu_seconds(server.pid)
            await server_runs(url, args.runs)
            cost["server"] = (server_cpu_seconds(server.pid) - before) / args.runs * 1000
            rounds.append(cost)
    finally:
        server.terminate()
        server.wait(timeout=30)

    def median(name: str) -> float:
        return statistics.median(r[name] for r in rounds)

    def ratio(name: str, base: str) -> float:  # the median of the rounds' own ratios
        return statistics.median(r[name] / r[base] for r in rounds)

    print(f"the demo run's fixed cost, CPU ms per run (median of {args.rounds} rounds of {args.runs} runs each way)")
    print(f"  agent.run()                       {median('agent.run()'):7.2f}")
    for name in ("run_stream", "Pydantic AI run_stream_events", "agent.run(event_stream_handler)"):
        print(f"  {name:32}  {median(name):7.2f}   {ratio(name, 'agent.run()'):.2f}x agent.run()")
    served = ratio("server", "run_stream")
    print(f"  pydantic-deep serve               {median('server'):7.2f}   {served:.2f}x run_stream")


if __name__ == "__main__":
    asyncio.run(main())
