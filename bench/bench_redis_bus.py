"""The Redis bus against raw redis-py in the same run, and latency from a run to an SSE client elsewhere.

1. Publish: `RedisEventBus.append` one event at a time, and `append_many` in batches of 64 (what a
   server's outbox does when events queue up), against raw `XADD` one at a time of lines encoded
   beforehand, and of events encoded as they go (`+json`). Read: a fresh `RedisEventBus.read` (a new
   process's mirror: it fetches and decodes every event) against raw `XREAD COUNT 1000`, bare and
   with each event decoded (`+json`). Events per second, best of 5, and the ratios (target: >= 0.8).
2. End-to-end latency: two `pydantic-deep serve` processes on Redis; a run on A streams the demo
   model's chunks (one every 2 ms) and an SSE client follows it on B (and one on A), with each event
   written on its own (`--flush-interval 0`) and gathered for 20 ms (the default). Latency is from the event's
   creation in the run (its timestamp) to its arrival at the client: median, p90 and p99.

    make bench            # or: .venv/bin/python bench/bench_redis_bus.py [--events 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
import uuid
from datetime import datetime

import httpx
from redis.asyncio import Redis

from _processes import serve
from pydantic_deep.bus import RedisEventBus
from pydantic_deep.streaming import AnyStreamEvent, StreamEvent, llm_chunk_event

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def events(count: int, run_id: str) -> list[AnyStreamEvent]:
    made: list[AnyStreamEvent] = []
    for seq in range(count):
        event = llm_chunk_event(text=f"chunk {seq} of the answer ")
        event.seq, event.run_id = seq, run_id
        made.append(event)
    return made


async def throughput(count: int) -> dict[str, float]:
    prefix = f"pydantic-deep-bench:{uuid.uuid4().hex}:"
    raw = Redis.from_url(REDIS_URL, decode_responses=True)  # pyright: ignore[reportUnknownMemberType]
    names = ["raw xadd", "raw xadd+json", "append", "append_many(64)", "raw xread", "raw xread+json", "read"]
    results: dict[str, list[float]] = {name: [] for name in names}
    try:
        for _ in range(5):  # every measurement once per round, alternating; the best round of each counts
            batch = events(count, "r")
            lines = [event.to_json() for event in batch]
            key = f"{prefix}raw:{uuid.uuid4().hex}"
            start = time.perf_counter()
            for seq, line in enumerate(lines):
                await raw.xadd(key, {"event": line}, id=f"0-{seq + 2}")
            results["raw xadd"].append(count / (time.perf_counter() - start))
            await raw.delete(key)
            start = time.perf_counter()
            for event in batch:  # a hand-written publisher encodes each event too
                await raw.xadd(key, {"event": event.to_json()}, id=f"0-{event.seq + 2}")
            results["raw xadd+json"].append(count / (time.perf_counter() - start))

            start = time.perf_counter()
            last, read = "0-0", 0
            while read < count:
                reply = await raw.xread({key: last}, count=1000)
                entries = reply[0][1]
                read += len(entries)
                last = entries[-1][0]
            results["raw xread"].append(count / (time.perf_counter() - start))
            start = time.perf_counter()
            last, read = "0-0", 0
            while read < count:  # a hand-written reader decodes each event too
                reply = await raw.xread({key: last}, count=1000)
                entries = reply[0][1]
                decoded = [StreamEvent.from_json(fields["event"]) for _, fields in entries]
                read += len(decoded)
                last = entries[-1][0]
            results["raw xread+json"].append(count / (time.perf_counter() - start))
            await raw.delete(key)

            bus = RedisEventBus(REDIS_URL, prefix=prefix)
            await bus.open("one")
            start = time.perf_counter()
            for event in events(count, "one"):
                await bus.append("one", event)
            results["append"].append(count / (time.perf_counter() - start))
            await bus.open("many")
            many = events(count, "many")
            start = time.perf_counter()
            for index in range(0, count, 64):
                await bus.append_many("many", many[index : index + 64])
            results["append_many(64)"].append(count / (time.perf_counter() - start))
            await bus.close("one")
            await bus.aclose()

            reader = RedisEventBus(REDIS_URL, prefix=prefix)  # a new process: nothing mirrored yet
            start = time.perf_counter()
            after = -1
            while after < count - 1:
                got = await reader.read("one", after, limit=1000)
                after = got.events[-1].seq
            results["read"].append(count / (time.perf_counter() - start))
            for run_id in ("one", "many"):
                await reader.discard(run_id)
            await reader.aclose()
    finally:
        await raw.aclose()
    return {name: max(values) for name, values in results.items()}


def start_server(prefix: str, flush_interval: str) -> tuple[subprocess.Popen[bytes], str]:
    env = {
        **os.environ,
        "PYDANTIC_DEEP_DEMO_DELAY": "0.002",
        "PYDANTIC_DEEP_MODEL": "demo",
        "PYDANTIC_DEEP_FLUSH_INTERVAL": flush_interval,
    }
    return serve("--bus", REDIS_URL, "--bus-prefix", prefix, env=env)


async def follow(http: httpx.AsyncClient, url: str, run_id: str) -> list[float]:
    """Latency in ms of each llm_chunk: arrival here minus the event's timestamp."""
    latencies: list[float] = []
    async with http.stream("GET", f"{url}/runs/{run_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                arrived = time.time()
                event = json.loads(line[6:])
                if event["event_type"] == "llm_chunk":
                    sent = datetime.fromisoformat(event["timestamp"]).timestamp()
                    latencies.append((arrived - sent) * 1000)
    return latencies


async def latency(runs: int, flush_interval: str) -> dict[str, list[float]]:
    prefix = f"pydantic-deep-bench:{uuid.uuid4().hex}:"
    (a, url_a), (b, url_b) = start_server(prefix, flush_interval), start_server(prefix, flush_interval)
    found: dict[str, list[float]] = {"same process": [], "another process": []}
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            for _ in range(runs):
                run_id = (await http.post(f"{url_a}/runs", json={"prompt": "Explain latency"})).json()["run_id"]
                here, there = await asyncio.gather(follow(http, url_a, run_id), follow(http, url_b, run_id))
                found["same process"] += here[1:]  # the first may predate the connection
                found["another process"] += there[1:]
    finally:
        for proc in (a, b):
            proc.terminate()
            proc.wait()
    return found


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def main(count: int, runs: int) -> None:
    rates = await throughput(count)
    print(f"Redis bus throughput, {count} events, events/s (best of 5)")
    for name, rate in rates.items():
        print(f"  {name:18s} {rate:10,.0f}")
    for ours, theirs in (
        ("append", "raw xadd"),
        ("append", "raw xadd+json"),
        ("append_many(64)", "raw xadd"),
        ("read", "raw xread"),
        ("read", "raw xread+json"),
    ):
        print(f"ratio {ours}/{theirs}: {rates[ours] / rates[theirs]:.2f}  (target >= 0.8)")
    for flush_interval in ("0", "0.02"):
        found = await latency(runs, flush_interval)
        print(
            f"latency from a run's event to an SSE client, ms ({runs} demo runs, a chunk every 2 ms, "
            f"--flush-interval {flush_interval})"
        )
        for name, values in found.items():
            print(
                f"  {name:16s} median {statistics.median(values):6.2f}  p90 {percentile(values, 0.9):6.2f}"
                f"  p99 {percentile(values, 0.99):6.2f}  ({len(values)} events)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.runs))
