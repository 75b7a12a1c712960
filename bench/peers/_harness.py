"""What every peer scenario shares: the scripted run's shape, and how it is measured.

A scenario script defines `run_once(chunks, paced, probe)`: one tool call, then `chunks` four-character
text chunks from an in-process fake model that calls `probe.produced()` as it yields each chunk (and,
paced, yields to the event loop after it, as a network stream does); the consumer calls `probe.seen()`
for each text event it receives. `main(run_once, framework)` measures it and prints one JSON line:
microseconds per event received, the most chunks the model was ever ahead of the consumer, and the peak
traced memory of a run (a separate run: tracing memory slows everything).

This file imports nothing outside the standard library: each peer runs it in its own environment.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from importlib import metadata


class Probe:
    """Counts chunks produced and seen; `lag` is the most the producer was ever ahead."""

    def __init__(self) -> None:
        self.made = 0
        self.got = 0
        self.lag = 0

    def produced(self) -> None:
        self.made += 1

    def seen(self) -> None:
        self.got += 1
        ahead = self.made - self.got
        if ahead > self.lag:
            self.lag = ahead


RunOnce = Callable[[int, bool, Probe], Awaitable[int]]
"""A scenario: run the scripted agent once, consuming its stream; returns how many events it received."""


def main(run_once: RunOnce, framework: str, packages: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--paced", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    async def timed() -> tuple[list[float], int, int]:
        await run_once(50, args.paced, Probe())  # warm up: imports, caches, first-call costs
        samples: list[float] = []
        events = lag = 0
        for _ in range(args.repeats):
            gc.collect()
            probe = Probe()
            start = time.perf_counter()
            events = await run_once(args.chunks, args.paced, probe)
            samples.append((time.perf_counter() - start) / events * 1e6)
            lag = max(lag, probe.lag)
            if probe.got != args.chunks:
                raise SystemExit(f"{framework}: the consumer saw {probe.got} of {args.chunks} chunks")
        return samples, events, lag

    samples, events, lag = asyncio.run(timed())
    gc.collect()
    tracemalloc.start()
    asyncio.run(run_once(args.chunks, args.paced, Probe()))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "?"
    line = {
        "framework": framework,
        "versions": versions,
        "chunks": args.chunks,
        "paced": args.paced,
        "us_per_event": statistics.median(samples),
        "events": events,
        "lag": lag,
        "peak_kib": peak / 1024,
    }
    print(json.dumps(line))
