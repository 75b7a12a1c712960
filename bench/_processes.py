"""Real `pydantic-deep serve` processes for the benchmarks: a free port, started, answering."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(*args: str, env: Mapping[str, str], deadline: float = 60.0) -> tuple[subprocess.Popen[bytes], str]:
    """`pydantic-deep serve --port <free> ARGS`, once `GET /runs` answers; exits with its log if it never does."""
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - the server writes to it as long as it runs
    command = [sys.executable, "-m", "pydantic_deep.cli", "serve", "--port", str(port), *args]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(env))
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + deadline
    while True:
        try:
            if httpx.get(f"{url}/runs", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > end:
            log.seek(0)
            raise SystemExit(f"the server did not start:\n{log.read().decode()}")
        time.sleep(0.05)
