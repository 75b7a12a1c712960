"""Fan-out cost of the server: CPU to frame one run's events for many SSE readers.

Every reader of a run follows the same event log; the log encodes each event's JSON once and all
readers share it. Measured here against encoding per reader (what a naive server does), in one
process: CPU microseconds per event per reader for a 2,000-chunk run read by 200 readers.

    make bench            # or: .venv/bin/python bench/bench_fanout.py [--chunks 2000] [--readers 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from pydantic_deep.bus import InMemoryEventBus
from pydantic_deep.server._sse import event_frame, follow_log
from pydantic_deep.streaming import llm_chunk_event


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


async def main(chunks: int, readers: int) -> None:
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--readers", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.chunks, args.readers))
