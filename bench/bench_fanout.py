"""Fan-out cost of the server: CPU per delivered event for live readers, replay, and a bare endpoint.

1. In process: frames for 200 readers of one 2,000-event log, JSON encoded once per log against once
   per reader (what a naive server does).
2. A real uvicorn process (`bench/_fanout_server.py`), 50 logs written at once, each `--chunks` text
   chunks paced like a network stream, one SSE reader each. Server CPU per delivered event (read from
   the server itself):
   - live: readers connected while the logs are written (the writers' own CPU, measured without
     readers in the same run, is subtracted);
   - replay: the same readers on the finished logs;
   - bare: a minimal Starlette endpoint streaming the same frames, encoded beforehand, in chunks of 256,
     and again in chunks as large as the live readers' writes were, one per flush interval (what those
     writes cost at that pace with nothing of ours in the way).
   Each is measured two ways: the whole process's CPU (for live, minus the writers' own, which is a
   difference of two large numbers), and by task: the CPU of every callback the server's loop ran in the
   phase but the producers' steps (timed in the server, no subtraction). Also printed: how many events a
   live reader sends per wake-up (one write each). Targets: live within 1.5x replay, and within 2x bare.
   Medians of 7 rounds.

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
from dataclasses import dataclass
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


@dataclass
class Snapshot:
    """The server's CPU seconds so far: the whole process, and what its event loop ran, by task coroutine."""

    cpu: float
    spent: dict[str, float]
    steps: dict[str, int]

    def since(self, earlier: Snapshot) -> Snapshot:
        return Snapshot(
            self.cpu - earlier.cpu,
            {name: value - earlier.spent.get(name, 0.0) for name, value in self.spent.items()},
            {name: value - earlier.steps.get(name, 0) for name, value in self.steps.items()},
        )

    def readers(self) -> float:
        """CPU the loop spent on anything but the producers: the readers' tasks, their timers and transports."""
        return sum(value for name, value in self.spent.items() if name != PRODUCER)


PRODUCER = "main.<locals>.produce"
WRITER = "EventStreamResponse._write"


async def snapshot(http: httpx.AsyncClient, url: str) -> Snapshot:
    answer = (await http.get(f"{url}/cpu")).json()
    return Snapshot(answer["cpu"], answer["spent"], answer["steps"])


async def cpu(http: httpx.AsyncClient, url: str) -> float:
    return (await snapshot(http, url)).cpu


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


async def one_round(http: httpx.AsyncClient, url: str, runs: int, flush_interval: float) -> dict[str, float]:
    """µs per delivered event, two ways.

    Whole process: the server's CPU in each phase; for live, minus what the runs cost alone (measured before
    and after the live phase, their mean cancelling the machine's drift). By task: the CPU of every callback
    the server's loop ran in the phase except the producers' steps; no subtraction, so no noise from it.
    """
    alone = await runs_alone(http, url, runs)

    # The same runs with one live reader each, connected as they start, on the same heap.
    await http.post(f"{url}/reset")
    before = await snapshot(http, url)
    run_ids = await start_runs(http, url, runs)
    delivered = sum(await asyncio.gather(*(read_all(http, f"{url}/runs/{r}/events") for r in run_ids)))
    await wait_finished(http, url, run_ids)
    live = (await snapshot(http, url)).since(before)

    before = await snapshot(http, url)
    replayed = sum(await asyncio.gather(*(read_all(http, f"{url}/runs/{r}/events") for r in run_ids)))
    replay = (await snapshot(http, url)).since(before)

    await asyncio.gather(*(read_all(http, f"{url}/frames/{r}") for r in run_ids))  # encodes the frames once
    before = await snapshot(http, url)
    bare_delivered = sum(await asyncio.gather(*(read_all(http, f"{url}/frames/{r}") for r in run_ids)))
    bare = (await snapshot(http, url)).since(before)

    # The bare endpoint again, in writes of as many events as the live readers' writes held, as far apart as
    # the flush interval: what the same writes at the same pace cost with nothing of ours in the way.
    per_write = max(round(delivered / max(live.steps.get(WRITER, 0), 1)), 1)
    same = [f"{url}/frames/{r}?chunk={per_write}&pace={flush_interval}" for r in run_ids]
    await asyncio.gather(*(read_all(http, u) for u in same))  # encodes the frames once
    before = await snapshot(http, url)
    same_delivered = sum(await asyncio.gather(*(read_all(http, u) for u in same)))
    bare_same = (await snapshot(http, url)).since(before)

    alone = (alone + await runs_alone(http, url, runs)) / 2
    return {
        "live": (live.cpu - alone) / delivered * 1e6,
        "replay": replay.cpu / replayed * 1e6,
        "bare": bare.cpu / bare_delivered * 1e6,
        "live, by task": live.readers() / delivered * 1e6,
        "replay, by task": replay.readers() / replayed * 1e6,
        "bare, by task": bare.readers() / bare_delivered * 1e6,
        "bare, live's writes, by task": bare_same.readers() / same_delivered * 1e6,
        "events per live wake-up": delivered / max(live.steps.get(WRITER, 0), 1),
    }


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
            rounds = [await one_round(http, url, runs, flush_interval) for _ in range(ROUNDS)]
    finally:
        proc.terminate()
        proc.wait()
    # Medians over rounds: "live" is a difference of CPU totals, so single rounds are noisy; each ratio is
    # the median of the rounds' own ratios (both sides measured minutes apart at most).
    best = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}

    def ratio(a: str, b: str) -> float:  # the median of the rounds' own ratios
        return statistics.median(r[a] / r[b] for r in rounds)

    print(
        f"{runs} logs at once x {chunks} chunks, one SSE reader each, flush interval {flush_interval:g} s: "
        f"server CPU µs per delivered event (median of {ROUNDS})"
    )
    for name, value in best.items():
        print(f"  {name:24s} {value:7.2f}")
    for other, target in (("replay", 1.5), ("bare", 2)):
        whole, by_task = ratio("live", other), ratio("live, by task", f"{other}, by task")
        print(f"ratio live/{other}: {whole:.2f} whole process, {by_task:.2f} by task  (target <= {target:g})")
    same = ratio("live, by task", "bare, live's writes, by task")
    print(f"ratio live/bare in the same writes at the same pace: {same:.2f} by task  (ours beyond the writes)")


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
