"""How long a durable run waits for another process after `kill -9` of its own, with the default lease.

Two `pydantic-deep serve --durable` processes (default `--lease` 10) serve the tests' scripted agent
(`tests/_durable_app.py`); each round starts a run that stops halfway through its answer, kills the
process running it, and times the kill until `run_resumed` is in the run's log (read on the survivor).
The issue's bound is 20 s.

    make bench        # or: .venv/bin/python bench/bench_takeover.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from _processes import serve

TESTS = Path(__file__).resolve().parent.parent / "tests"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/0"


def start(database: str, prefix: str, directory: str) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYDANTIC_DEEP_")}
    env.update(DURABLE_TEST_DIR=directory, PYTHONPATH=str(TESTS))
    args = ["--bus", REDIS, "--bus-prefix", prefix, "--agent", "_durable_app:make_agent", "--durable", database]
    return serve(*args, env=env)


def wait_for(path: Path) -> int:
    while not (path.exists() and path.read_text()):
        time.sleep(0.01)
    return int(path.read_text())


def main(rounds: int) -> None:
    name = f"pydantic_deep_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES}/test", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    database, prefix = f"{POSTGRES}/{name}", f"pydantic-deep-bench:{uuid.uuid4().hex}:"
    waits: list[float] = []
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as directory:
            servers = [start(database, prefix, directory) for _ in range(2)]
            processes += [proc for proc, _ in servers]
            for n in range(rounds):
                prompt = f"mid-answer takeover {n}"
                live = [(proc, url) for proc, url in servers if proc.poll() is None]
                run_id = httpx.post(f"{live[0][1]}/runs", json={"prompt": prompt}, timeout=30).json()["run_id"]
                pid = wait_for(Path(directory) / f"{prompt}-answer.reached")
                (owner,) = [proc for proc, _ in live if proc.pid == pid]
                survivor = next(url for proc, url in live if proc is not owner)
                (Path(directory) / f"{prompt}-answer.open").touch()  # the run that goes on passes the gate
                killed = time.monotonic()
                owner.send_signal(signal.SIGKILL)
                owner.wait()
                while True:
                    events = httpx.get(f"{survivor}/runs/{run_id}/events", timeout=60).text
                    if "event: run_resumed" in events:
                        break
                    time.sleep(0.05)
                waits.append(time.monotonic() - killed)
                servers = [s for s in servers if s[0] is not owner] + [start(database, prefix, directory)]
                processes.append(servers[-1][0])
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        with psycopg.connect(f"{POSTGRES}/test", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    print(f"durable takeover after kill -9 (default lease, {rounds} rounds): seconds until run_resumed")
    print(f"  median {statistics.median(waits):.1f} s, max {max(waits):.1f} s (bound: 20 s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    main(parser.parse_args().rounds)
