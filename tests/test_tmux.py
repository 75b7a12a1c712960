"""The live view in a real terminal: `pydantic-deep run` inside tmux, read back with `capture-pane`.

`make test` installs tmux first (`make services`); without it these tests skip and say why.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pydantic_deep.cli import read_event_log

TMUX = shutil.which("tmux")
pytestmark = [
    pytest.mark.tmux,
    pytest.mark.skipif(TMUX is None, reason="tmux is not installed; `make services` installs it"),
]
PROMPT = "Explain why streaming matters for agent UIs"


class Pane:
    """One tmux session on a private server socket, so nothing else's sessions are touched."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        return subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True, check=True).stdout

    def start(self, command: str, *, width: int, height: int) -> None:
        # The shell stays after the command, so the final screen (and the exit status) can be read.
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), command)

    def capture(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, ready: Callable[[str], bool], what: str, deadline: float = 90) -> str:
        """Handshake on the screen: return it as soon as `ready(screen)` holds."""
        end = time.monotonic() + deadline
        screen = ""
        while time.monotonic() < end:
            screen = self.capture()
            if ready(screen):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"never saw {what}; the screen was:\n{screen}")


@pytest.fixture
def pane() -> Iterator[Pane]:
    pane = Pane(f"pydantic-deep-test-{os.getpid()}")
    yield pane
    subprocess.run([TMUX or "tmux", "-L", pane.socket, "kill-server"], capture_output=True)


def command(*args: str | Path, delay: str) -> str:
    cli = shlex.join([sys.executable, "-m", "pydantic_deep.cli", *map(str, args)])
    env = f"env -u PYDANTIC_DEEP_MODEL PYDANTIC_DEEP_DEMO_DELAY={delay} TERM=xterm-256color"
    return f"{env} {cli}; echo EXIT=$?; sleep 600"


def test_live_view_draws_panels_while_running_and_leaves_the_full_view(pane: Pane, tmp_path: Path) -> None:
    log = tmp_path / "live.jsonl"
    pane.start(command("run", PROMPT, "--log", log, delay="0.05"), width=110, height=40)

    # While the answer streams, the live region shows the panels and a running footer.
    live = pane.wait_for(lambda s: "╭─ Answer" in s and "running · step" in s, "the live view mid-answer")
    assert f"❯ {PROMPT}" in live
    assert "╭─ Plan 0/3" in live and "Writing notes" in live
    assert "╭─ Tools (3)" in live
    for line in (
        "✔ write_plan(items=[3 items])",
        "✔ write_file(path='notes-explain-why-streaming-matters-for.md'",
        "✔ read_file(",
    ):
        assert line in live

    final = pane.wait_for(lambda s: "EXIT=" in s, "the command to finish")
    assert "EXIT=0" in final
    lines = [line.rstrip() for line in final.splitlines() if line.strip()]
    # The live region was replaced by the full final view, drawn once (not stacked frames).
    assert final.count(f"❯ {PROMPT}") == 1
    assert final.count("╭─ Answer") == 1
    answer = read_event_log(log).events[-1].data["output"]
    # The whole answer is on screen, wrapped inside its panel.
    assert " ".join(answer.replace("`", "").split()) in " ".join(final.replace("│", " ").split())
    assert lines[-2].startswith("✔ succeeded · 4 steps · ")
    assert lines[-1] == "EXIT=0"
    assert "Traceback" not in final


def test_replay_plays_a_log_through_the_same_view(pane: Pane, tmp_path: Path) -> None:
    log = tmp_path / "demo.jsonl"
    env = {**os.environ, "PYDANTIC_DEEP_DEMO_DELAY": "0"}
    env.pop("PYDANTIC_DEEP_MODEL", None)
    recorded = subprocess.run(
        [sys.executable, "-m", "pydantic_deep.cli", "run", PROMPT, "--json"], capture_output=True, text=True, env=env
    )
    log.write_text(recorded.stdout)

    pane.start(command("replay", log, "--instant", delay="0"), width=110, height=40)
    final = pane.wait_for(lambda s: "EXIT=" in s, "the replay to finish")
    assert "EXIT=0" in final
    for panel in ("╭─ Plan 0/3", "╭─ Tools (3)", "╭─ Answer"):
        assert final.count(panel) == 1
    lines = [line.rstrip() for line in final.splitlines() if line.strip()]
    assert lines[-2].startswith("✔ succeeded · 4 steps · ")
