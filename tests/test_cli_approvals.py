"""`pydantic-deep run --require-approval`: decided by `--approve-all`/`--deny-all`, denied when nobody can be
asked, and asked at a real terminal (tmux) with approve, deny and edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pydantic_deep.cli import main, read_event_log
from pydantic_deep.cli._approve import NOBODY_TO_ASK
from test_tmux import TMUX, Pane
from test_tmux import pane as pane  # the fixture

PROMPT = "Plan a picnic"


def run(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYDANTIC_DEEP_DEMO_DELAY", "0")
    monkeypatch.delenv("PYDANTIC_DEEP_MODEL", raising=False)
    log = tmp_path / "events.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", PROMPT, "--require-approval", "write_file", "--log", str(log), *args])
    out, err = capsys.readouterr()
    events = read_event_log(log).events
    return exit_info.value.code, out, err, events


@pytest.mark.parametrize(
    ("flags", "approved", "decided_by", "reason"),
    [
        (["--approve-all"], True, "--approve-all", None),
        (["--deny-all"], False, "--deny-all", "denied by --deny-all"),
        ([], False, "pydantic-deep run", NOBODY_TO_ASK),  # stdin is not a terminal here
    ],
)
def test_the_flags_decide_and_without_one_nobody_is_asked(
    flags: list[str],
    approved: bool,
    decided_by: str,
    reason: str | None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    status, out, _, events = run(flags, capsys, monkeypatch, tmp_path)
    assert status == 0
    resolved = [e.data for e in events if e.event_type == "approval_resolved"]
    assert resolved == [
        {"tool_call_id": resolved[0]["tool_call_id"], "approved": approved, "decided_by": decided_by,
         "reason": None if approved else reason, "args": None}
    ]  # fmt: skip
    assert "? write_file waits for approval: write_file needs approval" in out
    assert f"  {'approved' if approved else 'denied'} by {decided_by}" in out
    write = next(e.data for e in events if e.event_type == "tool_end" and e.data["tool_name"] == "write_file")
    assert (write["error"] is None) == approved
    assert events[-1].data["status"] == "succeeded"


def test_both_flags_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", PROMPT, "--approve-all", "--deny-all"])
    assert exit_info.value.code == 2
    assert "--approve-all and --deny-all cannot be combined" in capsys.readouterr().err


@pytest.mark.tmux
@pytest.mark.skipif(TMUX is None, reason="tmux is not installed; `make services` installs it")
def test_asked_at_the_terminal_edit_then_deny(pane: Pane, tmp_path: Path) -> None:
    log = tmp_path / "asked.jsonl"
    pane.start("run", PROMPT, "--require-approval", "write_file,read_file", "--log", log, delay="0")
    pane.wait_for(lambda s: "write_file(path='notes-plan-a-picnic.md'" in s and "[e] edit" in s, "the question")
    pane.tmux("send-keys", "-t", "t", "e", "Enter")
    pane.wait_for(lambda s: "arguments as JSON" in s, "the arguments prompt")
    edited = {"path": "edited.md", "content": "by hand"}
    pane.tmux("send-keys", "-t", "t", "-l", json.dumps(edited))
    pane.tmux("send-keys", "-t", "t", "Enter")
    pane.wait_for(lambda s: "read_file(path='notes-plan-a-picnic.md')" in s and "[e] edit" in s, "the second question")
    pane.tmux("send-keys", "-t", "t", "n", "Enter")
    pane.wait_for(lambda s: "why (optional)" in s, "the reason prompt")
    pane.tmux("send-keys", "-t", "t", "-l", "not now")
    pane.tmux("send-keys", "-t", "t", "Enter")
    assert pane.exit_status() == 0
    events = read_event_log(log).events
    resolved = [(e.data["approved"], e.data["decided_by"], e.data["args"], e.data["reason"])
                for e in events if e.event_type == "approval_resolved"]  # fmt: skip
    assert resolved == [(True, "terminal", edited, None), (False, "terminal", None, "not now")]
    ends = {e.data["tool_name"]: (e.data["result"], e.data["error"]) for e in events if e.event_type == "tool_end"}
    assert ends["write_file"][0].startswith("Wrote 7 chars") and ends["read_file"] == (None, "not now")
    assert pane.lines()[-1].startswith("✔ succeeded")
    assert "Traceback" not in pane.capture(history=True)
