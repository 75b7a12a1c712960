"""The live view in a real terminal: `pydantic-deep` inside tmux, read back with `capture-pane`.

`make test` installs tmux first (`make services`); without it these tests skip and say why.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
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
    """One tmux pane on a private server socket (nothing else's sessions are touched) that outlives its command."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        return subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True, check=True).stdout

    def start(self, *args: str | Path, delay: str, width: int = 110, height: int = 40) -> None:
        cli = shlex.join([sys.executable, "-m", "pydantic_deep.cli", *map(str, args)])
        env = f"env -u PYDANTIC_DEEP_MODEL PYDANTIC_DEEP_DEMO_DELAY={delay} TERM=xterm-256color"
        # bash goes on after a child that handled Ctrl-C itself, so the exit status gets printed; remain-on-exit
        # keeps the final screen readable after that.
        command = shlex.join(["bash", "-c", f"{env} {cli}; echo EXIT=$?"])
        self.tmux(
            *("-f", "/dev/null", "start-server", ";", "set-option", "-g", "remain-on-exit", "on", ";"),
            *("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), command),
        )

    def capture(self, *, history: bool = False) -> str:
        """The screen; with `history`, everything since the start (tmux's "Pane is dead" line scrolls it by one)."""
        return self.tmux("capture-pane", "-p", "-t", "t", *(("-S", "-") if history else ()))

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

    def exit_status(self) -> int:
        """Wait for the command to end; its exit status."""
        screen = self.wait_for(lambda s: "EXIT=" in s, "the command to end")
        return int(screen.split("EXIT=")[1].split()[0])

    def lines(self) -> list[str]:
        """The command's own lines on screen: without blanks, the `EXIT=` line and tmux's "Pane is dead" note."""
        return [
            line.rstrip()
            for line in self.capture().splitlines()
            if line.strip() and not line.startswith(("Pane is dead", "EXIT="))
        ]


@pytest.fixture
def pane() -> Iterator[Pane]:
    pane = Pane(f"pydantic-deep-test-{uuid.uuid4().hex[:12]}")
    yield pane
    subprocess.run([TMUX or "tmux", "-L", pane.socket, "kill-server"], capture_output=True)


def flat(text: str) -> str:
    return " ".join(text.replace("│", " ").replace("`", "").split())


def test_live_view_draws_panels_while_running_and_leaves_the_full_view(pane: Pane, tmp_path: Path) -> None:
    log = tmp_path / "live.jsonl"
    pane.start("run", PROMPT, "--log", log, delay="0.05")

    # While the answer streams, the live region shows the panels and a running footer.
    live = pane.wait_for(lambda s: "╭─ Answer" in s and "running · step" in s, "the live view mid-answer")
    assert f"❯ {PROMPT}" in live
    assert "╭─ Plan 3/3" in live and "✔ Answer" in live  # the demo marks its steps done before answering
    assert "╭─ Tools (5)" in live
    for line in (
        "✔ write_plan(items=[3 items])",
        "✔ write_file(path='notes-explain-why-streaming-matters-for.md'",
        "✔ read_file(path='notes-explain-why-streaming-matters-for.md')",
    ):
        assert line in live

    assert pane.exit_status() == 0
    final = pane.capture(history=True)
    # The live region was replaced by the full final view, drawn once (not stacked frames).
    assert final.count(f"❯ {PROMPT}") == 1
    assert final.count("╭─ Answer") == 1
    assert flat(read_event_log(log).events[-1].data["output"]) in flat(final)
    assert pane.lines()[-1].startswith("✔ succeeded · 6 steps · ")
    assert "Traceback" not in final


def test_ctrl_c_in_the_live_view_cancels_and_says_so(pane: Pane, tmp_path: Path) -> None:
    log = tmp_path / "cancelled.jsonl"
    pane.start("run", PROMPT, "--log", log, delay="0.2")
    pane.wait_for(lambda s: "╭─ Answer" in s, "the answer starting")
    pane.tmux("send-keys", "-t", "t", "C-c")
    assert pane.exit_status() == 130
    final = pane.capture(history=True)
    assert final.count(f"❯ {PROMPT}") == 1
    assert pane.lines()[-1].startswith("■ cancelled · 5 steps · ")
    assert pane.lines()[-1].endswith(" · interrupted (Ctrl-C)")
    assert read_event_log(log).events[-1].data["status"] == "cancelled"


def test_replay_plays_a_log_through_the_same_view(pane: Pane, tmp_path: Path) -> None:
    log = tmp_path / "demo.jsonl"
    env = {**os.environ, "PYDANTIC_DEEP_DEMO_DELAY": "0"}
    env.pop("PYDANTIC_DEEP_MODEL", None)
    recorded = subprocess.run(
        [sys.executable, "-m", "pydantic_deep.cli", "run", PROMPT, "--json"], capture_output=True, text=True, env=env
    )
    log.write_text(recorded.stdout)

    pane.start("replay", log, "--speed", "50", delay="0")
    assert pane.exit_status() == 0
    final = pane.capture(history=True)
    for panel in (f"❯ {PROMPT}", "╭─ Plan 3/3", "╭─ Tools (5)", "╭─ Answer"):
        assert final.count(panel) == 1
    assert pane.lines()[-1].startswith("✔ succeeded · 6 steps · ")
