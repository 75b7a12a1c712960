"""Fan-out cost of the server: CPU per delivered event for live readers, replay, and a bare endpoint.

1. In process: frames for 200 readers of one 2,000-event log, JSON encoded once per log against once
   per reader (what a naive server does).
2. A real uvicorn process (`bench/_fanout_server.py`), 50 logs written at once, each `--chunks` text
   chunks paced like a network stream, one SSE reader each. Server CPU per delivered event (read from
   the server itself):
   - live: readers connected while the logs are written (the writers' own CPU, measured without
     readers in the same run, is subtracted);
   - replay: the same readers on the finished logs;
   - bare: a minimal Starlette endpoint streaming the same frames, encoded beforehand, in the same chunks.
   Targets: live within 1.5x replay, and within 2x bare. Medians of 7 rounds.

    make bench            # or: .venv/bin/python bench/bench_fanout.py [--runs 50] [--chunks 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from _processes import free_port
from pydantic_deep.bus import InMemoryEventBus
from pydantic_deep.server._sse import event_frame, follow_log
from pydantic_deep.streaming import llm_chunk_event

# ---- 1. encoding once per log ------------------------------------------------------------------------


async def filled_bus(chunks: int) -> InMemoryEventBus:
    bus = InMemoryEventBus()
    await bus.open("run")
    for seq in range(chunks):
        event = llm_chunk_event(text=f"chunk {seq} ")
        event.seq = seq
        await bus.append("run", event)
    await bus.close("run")
    return bus


async def serve_readers(bus: InMemoryEventBus, readers: int, *, shared: bool) -> tuple[float, int]:
    """CPU seconds to produce every reader's SSE bytes, and how many bytes one reader got."""
    sent = 0
    start = time.process_time()
    for _ in range(readers):
        sent = 0
        async for batch in follow_log(bus, "run", -1, keepalive=1):
            lines = batch.lines if shared else [None] * len(batch.events)
            sent += len(b"".join(map(event_frame, batch.events, lines)))
    return time.process_time() - start, sent


async def encoding(chunks: int, readers: int) -> None:
    per_reader, shared = [], []
    for _ in range(3):  # alternating, best of 3 each
        bus = await filled_bus(chunks)  # a fresh log: the shared run pays for encoding once
        cpu, naive_bytes = await serve_readers(bus, readers, shared=False)
        per_reader.append(cpu)
        bus = await filled_bus(chunks)
        cpu, shared_bytes = await serve_readers(bus, readers, shared=True)
        shared.append(cpu)
        assert naive_bytes == shared_bytes
    events = chunks * readers
    naive, ours = min(per_reader) / events * 1e6, min(shared) / events * 1e6
    print(f"{chunks} events x {readers} SSE readers, CPU µs per event per reader (best of 3)")
    print(f"  encoding per reader   {naive:6.2f}")
    print(f"  encoded once per log  {ours:6.2f}")
    print(f"ratio shared/per-reader: {ours / naive:.3f}")


ROUNDS = 7

# ---- 2. a real server ----------------------------------------------------------------------------------


async def cpu(http: httpx.AsyncClient, url: str) -> float:
    return (await http.get(f"{url}/cpu")).json()["cpu"]


async def read_all(http: httpx.AsyncClient, url: str) -> int:
    events = 0
    async with http.stream("GET", url) as response:
        async for chunk in response.aiter_raw():
            events += chunk.count(b"\nevent: ")
    return events


async def wait_finished(http: httpx.AsyncClient, url: str, run_ids: list[str]) -> None:
    for run_id in run_ids:  # each answers once its producer has appended the last event
        assert (await http.get(f"{url}/synthetic/{run_id}/done")).json()["done"]


async def start_runs(http: httpx.AsyncClient, url: str, runs: int) -> list[str]:
    created = await asyncio.gather(*(http.post(f"{url}/synthetic") for _ in range(runs)))
    return [response.json()["run_id"] for response in created]


async def runs_alone(http: httpx.AsyncClient, url: str, runs: int) -> float:
    """CPU seconds the runs cost with no reader."""
    await http.post(f"{url}/reset")
    before = await cpu(http, url)
    run_ids = await start_runs(http, url, runs)
    await wait_finished(http, url, run_ids)
    return await cpu(http, url) - before


async def one_round(http: httpx.AsyncClient, url: str, runs: int) -> dict[str, float]:
    # The runs alone, before and after the live phase: their mean is what the live runs cost themselves,
    # with the machine's drift between phases cancelled.
    alone = await runs_alone(http, url, runs)

    # The same runs with one live reader each, connected as they start, on the same heap.
    await http.post(f"{url}/reset")
    before = await cpu(http, url)
    run_ids = await start_runs(http, url, runs)
    delivered = await asyncio.gather(*(read_all(http, f"{url}/runs/{r}/events") for r in run_ids))
    await wait_finished(http, url, run_ids)
    with_readers = await cpu(http, url) - before

    before = await cpu(http, url)
    replayed = await asyncio.gather(*(read_all(http, f"{url}/runs/{r}/events") for r in run_ids))
    replay = (await cpu(http, url) - before) / sum(replayed)

    await asyncio.gather(*(read_all(http, f"{url}/frames/{r}") for r in run_ids))  # encodes the frames once
    before = await cpu(http, url)
    bare_delivered = await asyncio.gather(*(read_all(http, f"{url}/frames/{r}") for r in run_ids))
    bare = (await cpu(http, url) - before) / sum(bare_delivered)

    alone = (alone + await runs_alone(http, url, runs)) / 2
    live = (with_readers - alone) / sum(delivered)
    return {"live": live * 1e6, "replay": replay * 1e6, "bare": bare * 1e6}


def start_server(chunks: int, flush_interval: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    script = Path(__file__).with_name("_fanout_server.py")
    command = [sys.executable, str(script), str(port), str(chunks), str(flush_interval)]
    proc = subprocess.Popen(command, env=dict(os.environ))
    return proc, f"http://127.0.0.1:{port}"


async def server(runs: int, chunks: int, flush_interval: float) -> None:
    proc, url = start_server(chunks, flush_interval)
    try:
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=runs * 2 + 10)) as http:
            while True:
                try:
                    await cpu(http, url)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            rounds = [await one_round(http, url, runs) for _ in range(ROUNDS)]
    finally:
        proc.terminate()
        proc.wait()
    # Medians over rounds: "live" is a difference of CPU totals, so single rounds are noisy; each ratio is
    # the median of the rounds' own ratios (both sides measured minutes apart at most).
    best = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    to_replay = statistics.median(r["live"] / r["replay"] for r in rounds)
    to_bare = statistics.median(r["live"] / r["bare"] for r in rounds)
    print(
        f"{runs} logs at once x {chunks} chunks, one SSE reader each, flush interval {flush_interval:g} s: "
        f"server CPU µs per delivered event (median of {ROUNDS})"
    )
    for name, value in best.items():
        print(f"  {name:7s} {value:7.2f}")
    print(f"ratio live/replay: {to_replay:.2f}  (target <= 1.5)")
    print(f"ratio live/bare:   {to_bare:.2f}  (target <= 2)")


async def main(args: argparse.Namespace) -> None:
    await encoding(2000, 200)
    for flush_interval in args.flush_interval:
        await server(args.runs, args.chunks, flush_interval)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--flush-interval", type=float, nargs="+", default=[0.02, 0.0])
    asyncio.run(main(parser.parse_args()))
