"""The scripted streaming run in every framework our users compare us with, side by side.

Each peer runs in a virtual environment of its own (built here with uv, latest releases, under
`bench/.peers/`; `--upgrade` rebuilds them), on the same scripted run (`bench/peers/_harness.py`: one
tool call, then N four-character chunks from an in-process fake model; paced means it yields to the event
loop after each chunk, as a network stream does). Configurations alternate between peers, each round in
a fresh process per peer; the table shows the median over rounds of each process's median.

    make bench                                   # or: .venv/bin/python bench/bench_peers.py
    .venv/bin/python bench/bench_peers.py --quick  # one round, N = 2,000 only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
PEERS = HERE / "peers"
ENVS = HERE / ".peers"


@dataclass(frozen=True)
class Peer:
    key: str
    script: str
    packages: tuple[str, ...]
    """What its environment installs; empty for ours (the project's own environment)."""


ROSTER = (
    Peer("pydantic-deep", "pydantic_deep_stream.py", ()),
    Peer("pydantic-ai", "pydantic_ai_events.py", ("pydantic-ai-slim",)),
    Peer("openai-agents", "openai_agents_stream.py", ("openai-agents",)),
    Peer("langgraph", "langgraph_agent.py", ("langgraph", "langchain")),
    Peer("deepagents", "deepagents_agent.py", ("deepagents",)),
)


def uv() -> list[str]:
    """The uv command: `$UV` (the Makefile passes its own), else uv on PATH, else `python3 -m uv`."""
    given = os.environ.get("UV", "").split()
    if given:
        return given
    found = shutil.which("uv")
    return [found] if found else ["python3", "-m", "uv"]


def python_for(peer: Peer, upgrade: bool) -> str:
    """The interpreter of the peer's environment, built (or rebuilt) first when needed."""
    if not peer.packages:
        return sys.executable
    env = ENVS / peer.key
    python = env / "bin" / "python"
    marker = env / ".installed"
    wanted = " ".join(peer.packages)
    if upgrade or not python.exists() or not marker.exists() or marker.read_text() != wanted:
        print(f"building {env} ({wanted}) ...", file=sys.stderr, flush=True)
        shutil.rmtree(env, ignore_errors=True)
        subprocess.run([*uv(), "venv", "--quiet", "--python", sys.executable, str(env)], check=True)
        subprocess.run([*uv(), "pip", "install", "--quiet", "--python", str(python), *peer.packages], check=True)
        marker.write_text(wanted)
    return str(python)


def measure(python: str, peer: Peer, chunks: int, paced: bool, repeats: int) -> dict[str, Any]:
    command = [python, str(PEERS / peer.script), f"--chunks={chunks}", f"--repeats={repeats}"]
    command.append("--paced" if paced else "--no-paced")
    done = subprocess.run(command, cwd=PEERS, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{peer.key} failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per peer and configuration")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs inside each process (median)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--quick", action="store_true", help="one round at 2,000 chunks")
    parser.add_argument("--upgrade", action="store_true", help="rebuild the peers' environments (latest releases)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.chunks = 1, [2000]
    pythons = {peer.key: python_for(peer, args.upgrade) for peer in ROSTER}
    started = time.perf_counter()
    results: dict[tuple[str, int, bool], list[dict[str, Any]]] = {}
    configurations = [(chunks, paced) for chunks in args.chunks for paced in (True, False)]
    for round_ in range(args.rounds):
        for chunks, paced in configurations:
            order = ROSTER if round_ % 2 == 0 else tuple(reversed(ROSTER))  # alternate who goes first
            for peer in order:
                line = measure(pythons[peer.key], peer, chunks, paced, args.repeats)
                results.setdefault((peer.key, chunks, paced), []).append(line)
                print(
                    f"  round {round_ + 1} {peer.key:14} N={chunks:>6} {'paced' if paced else 'unpaced':8} "
                    f"{line['us_per_event']:8.1f} µs/event",
                    file=sys.stderr,
                    flush=True,
                )
    print()
    print(f"The scripted run in each framework: median of {args.rounds} processes x {args.repeats} runs")
    header = f"{'framework':46} {'N':>6} {'mode':8} {'µs/event':>9} {'× ours':>7} {'lag':>6} {'peak KiB':>9}"
    print(header)
    print("-" * len(header))
    for chunks, paced in configurations:
        ours = statistics.median(float(r["us_per_event"]) for r in results[("pydantic-deep", chunks, paced)])
        for peer in ROSTER:
            lines = results[(peer.key, chunks, paced)]
            us = statistics.median(float(r["us_per_event"]) for r in lines)
            lag = max(int(r["lag"]) for r in lines)
            peak = statistics.median(float(r["peak_kib"]) for r in lines)
            versions: dict[str, str] = lines[0]["versions"]
            name = f"{lines[0]['framework']} {next(iter(versions.values()))}"
            mode = "paced" if paced else "unpaced"
            print(f"{name:46} {chunks:>6} {mode:8} {us:9.1f} {us / ours:7.2f} {lag:>6} {peak:9.0f}")
        print()
    print(f"({time.perf_counter() - started:.0f} s; × ours: a peer's µs per event over ours; above 1, we are cheaper)")


if __name__ == "__main__":
    main()
