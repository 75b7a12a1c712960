"""`pydantic-deep` as users run it: a subprocess on the offline demo model, stdout not a terminal.

Bad-input cases that need no run are also checked in-process through `main(argv)`, which is faster
and exercises the same code.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from pydantic_deep.cli import PlainPrinter, main, read_event_log
from pydantic_deep.streaming import StreamEvent, StreamEventType
from pydantic_deep.testing import FakeOpenAIServer, ScriptReply, ScriptRequest, ScriptResult, ScriptToolCall

PROMPT = "Explain why streaming matters for agent UIs"


def cli_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYDANTIC_DEEP_MODEL", "OPENAI_API_KEY")}
    env.update({"PYDANTIC_DEEP_DEMO_DELAY": "0", "NO_COLOR": "1", "COLUMNS": "100"})
    env.update(extra)
    return env


def cli(
    *args: str | Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pydantic_deep.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else cli_env(),
        cwd=cwd,
        timeout=90,
    )


def start(*args: str | Path, env: Mapping[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pydantic_deep.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env),
    )


def wait_for_line(path: Path, needle: str, proc: subprocess.Popen[str], deadline: float = 60) -> None:
    """Handshake on a file the process writes: return once a line containing `needle` is there."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if path.exists() and any(needle in line for line in path.read_text().splitlines()):
            return
        assert proc.poll() is None, f"the process ended first: {proc.communicate()}"
        time.sleep(0.02)
    raise AssertionError(f"{needle!r} never appeared in {path}")


def parse_json_lines(stdout: str) -> list[StreamEvent]:
    return [StreamEvent.from_json(line) for line in stdout.splitlines()]


def collapsed(events: list[StreamEvent]) -> list[str]:
    """Event types in order, a run of `llm_chunk`s shown once, tools with their names."""
    out: list[str] = []
    for event in events:
        name = event.event_type.value
        if event.event_type in (StreamEventType.TOOL_START, StreamEventType.TOOL_END):
            name = f"{name}:{event.data['tool_name']}"
        if not (out and out[-1] == name == "llm_chunk"):
            out.append(name)
    return out


def assert_contract_order(events: list[StreamEvent]) -> None:
    """The ordering guarantees of the event contract, checked on one run's events."""
    assert events[0].event_type is StreamEventType.AGENT_START
    assert events[-1].event_type is StreamEventType.AGENT_END
    assert [e.seq for e in events] == list(range(len(events)))
    assert len({e.run_id for e in events if e.depth == 0}) == 1
    open_calls: dict[str | None, str] = {}
    for event in events:
        if event.event_type is StreamEventType.TOOL_START:
            assert event.data["tool_call_id"] not in open_calls
            open_calls[event.data["tool_call_id"]] = event.data["tool_name"]
        elif event.event_type is StreamEventType.TOOL_END:
            assert open_calls.pop(event.data["tool_call_id"]) == event.data["tool_name"]
    assert open_calls == {}
    steps = [e.data["iteration"] for e in events if e.event_type is StreamEventType.PROGRESS]
    assert steps == list(range(1, len(steps) + 1))


@pytest.fixture(scope="module")
def recorded_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log = tmp_path_factory.mktemp("logs") / "demo.jsonl"
    result = cli("run", PROMPT, "--json")
    assert result.returncode == 0
    log.write_text(result.stdout)
    return log


# --- run -------------------------------------------------------------------------------------------


def test_json_prints_one_event_per_line_in_contract_order() -> None:
    result = cli("run", PROMPT, "--json")
    assert (result.returncode, result.stderr) == (0, "")
    events = parse_json_lines(result.stdout)
    assert_contract_order(events)
    assert collapsed(events) == [
        "agent_start",
        "progress",
        "tool_start:write_plan",
        "plan_update",
        "plan_update",
        "plan_update",
        "tool_end:write_plan",
        "progress",
        "tool_start:write_file",
        "file_change",
        "tool_end:write_file",
        "progress",
        "tool_start:update_task_statuses",
        *["plan_update"] * 5,  # notes: updated, status_changed, completed; read: updated, status_changed
        "tool_end:update_task_statuses",
        "progress",
        "tool_start:read_file",
        "tool_end:read_file",
        "progress",
        "tool_start:update_task_statuses",
        *["plan_update"] * 6,  # read and answer: updated, status_changed, completed each
        "tool_end:update_task_statuses",
        "llm_chunk",
        "progress",
        "agent_end",
    ]
    end = events[-1].data
    assert (end["status"], end["success"]) == ("succeeded", True)
    answer = "".join(e.data["text"] for e in events if e.event_type is StreamEventType.LLM_CHUNK)
    assert answer == end["output"]
    assert PROMPT in answer and "demo model" in answer


def test_log_then_replay_instant_reproduces_the_run(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    run = cli("run", PROMPT, "--log", log)
    assert (run.returncode, run.stderr) == (0, "")
    events = read_event_log(log).events
    assert_contract_order(events)
    answer = events[-1].data["output"]
    assert answer in run.stdout
    lines = run.stdout.splitlines()
    assert lines[:2] == [f"❯ {PROMPT}", "  assistant · function:pydantic-deep-demo"]
    assert lines[-1].startswith("✔ succeeded · 6 steps · ")

    replay = cli("replay", log, "--instant")
    assert (replay.returncode, replay.stderr) == (0, "")
    assert replay.stdout == run.stdout


def test_paced_replay_prints_the_same_lines(recorded_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as instant:
        main(["replay", str(recorded_log), "--instant"])
    at_once = capsys.readouterr().out
    with pytest.raises(SystemExit) as paced:
        main(["replay", str(recorded_log), "--speed", "1000"])  # recorded pace, sped up
    assert (instant.value.code, paced.value.code) == (0, 0)
    assert capsys.readouterr().out == at_once
    assert at_once.splitlines()[-1].startswith("✔ succeeded · 6 steps · ")


def test_log_appends_and_replay_shows_each_run(recorded_log: Path, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    log.write_text(recorded_log.read_text())  # an earlier run's log
    second = cli("run", "Second task", "--log", log)
    assert second.returncode == 0
    first = io.StringIO()
    printer = PlainPrinter(first)
    for event in read_event_log(recorded_log).events:
        printer.handle(event)
    replay = cli("replay", log, "--instant")
    assert replay.stdout == first.getvalue() + second.stdout


def test_quiet_prints_only_the_answer(recorded_log: Path) -> None:
    quiet = cli("run", PROMPT, "--quiet")
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert quiet.stdout == read_event_log(recorded_log).events[-1].data["output"] + "\n"


def test_a_real_provider_through_openai_base_url(tmp_path: Path) -> None:
    # `--model openai:gpt-4o` goes through Pydantic AI's real OpenAI model (the Responses API) to our local server.
    def script(request: ScriptRequest) -> ScriptResult:
        if not request.tool_results:
            call = ScriptToolCall("write_file", {"path": "a.txt", "content": "alpha"})
            return ScriptReply(tool_calls=[call], input_tokens=1000, output_tokens=20)
        return ScriptReply(text=["Saved ", "a.txt", "."], input_tokens=1100, output_tokens=3)

    with FakeOpenAIServer(script, api_key="sk-local") as server:
        env = cli_env(**server.env)
        plain = cli("run", "Save a file", "--model", "openai:gpt-4o", "--workdir", tmp_path, env=env)
        logged = cli("run", "Save a file", "--model", "openai:gpt-4o", "--json", env=env)
    assert (plain.returncode, plain.stderr) == (0, "")
    assert (tmp_path / "a.txt").read_text() == "alpha"
    lines = plain.stdout.splitlines()
    assert lines[:3] == ["❯ Save a file", "  assistant · openai:gpt-4o", "▸ write_file(path='a.txt', content='alpha')"]
    assert "Saved a.txt." in lines
    # gpt-4o's genai-prices rates: $2.50 and $10 per million input and output tokens.
    assert lines[-1].startswith("✔ succeeded · 2 steps · 2,123 tokens · $0.0055 · ")
    assert logged.returncode == 0
    events = parse_json_lines(logged.stdout)
    assert_contract_order(events)
    assert collapsed(events) == [
        "agent_start",
        "progress",
        "tool_start:write_file",
        "file_change",
        "tool_end:write_file",
        "llm_chunk",
        "progress",
        "agent_end",
    ]
    assert round(events[-1].data["total_cost_usd"], 8) == 0.00548
    assert [request["model"] for request in server.requests] == ["gpt-4o"] * 4
    assert all("input" in request for request in server.requests)  # the Responses API


def test_workdir_puts_the_agents_files_on_disk(tmp_path: Path) -> None:
    result = cli("run", "Plan a picnic", "--workdir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["notes-plan-a-picnic.md"]
    assert "Request: Plan a picnic" in (tmp_path / "notes-plan-a-picnic.md").read_text()


def test_max_steps_fails_the_run_with_the_usage_limit() -> None:
    result = cli("run", PROMPT, "--json", "--max-steps", "2")
    assert result.returncode == 1
    events = parse_json_lines(result.stdout)
    assert_contract_order(events)
    assert [e.event_type.value for e in events[-2:]] == ["error", "agent_end"]
    assert events[-2].data["exception_type"] == "UsageLimitExceeded"
    assert (events[-1].data["status"], events[-1].data["total_iterations"]) == ("failed", 2)


def test_timeout_cancels_the_run(tmp_path: Path) -> None:
    # 0.2s a token makes the demo answer take far longer than the 1s allowed.
    result = cli("run", PROMPT, "--json", "--timeout", "1", env=cli_env(PYDANTIC_DEEP_DEMO_DELAY="0.2"))
    assert result.returncode == 124
    assert result.stderr == "pydantic-deep: timed out after 1s, cancelling…\n"
    events = parse_json_lines(result.stdout)
    assert_contract_order(events)
    assert (events[-1].data["status"], events[-1].data["success"]) == ("cancelled", False)


def test_ctrl_c_cancels_cleanly_with_exit_130(tmp_path: Path) -> None:
    log = tmp_path / "cancelled.jsonl"
    proc = start("run", PROMPT, "--log", log, env=cli_env(PYDANTIC_DEEP_DEMO_DELAY="0.2"))
    try:
        wait_for_line(log, '"llm_chunk"', proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert stderr == "pydantic-deep: cancelling… (Ctrl-C again to quit at once)\n"
    events = read_event_log(log).events
    assert_contract_order(events)
    assert (events[-1].event_type, events[-1].data["status"]) == (StreamEventType.AGENT_END, "cancelled")
    assert stdout.splitlines()[-1].startswith("■ cancelled · ")


SECOND_CTRL_C = """
import asyncio
from pydantic_deep.cli._app import _stream_to_display
from pydantic_deep.cli._displays import PlainDisplay
from pydantic_deep.streaming import agent_start_event
import sys


async def stubborn(token):
    yield agent_start_event(agent_name="stubborn", prompt="wait")
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # a run that will not stop


asyncio.run(_stream_to_display(stubborn, PlainDisplay(sys.stdout), None, cancel_after=None))
"""


def test_second_ctrl_c_exits_at_once() -> None:
    # The public command's runs always honour cancellation, so this drives the runner with one that does not.
    with subprocess.Popen(
        [sys.executable, "-c", SECOND_CTRL_C], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            assert proc.stdout.readline() == "❯ wait\n"  # handshake: the run is under way
            proc.send_signal(signal.SIGINT)
            assert proc.stderr.readline() == "pydantic-deep: cancelling… (Ctrl-C again to quit at once)\n"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130
            assert proc.stderr.read() == "pydantic-deep: interrupted\n"
        finally:
            if proc.poll() is None:
                proc.kill()


# --- serve ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_answers_http_until_ctrl_c() -> None:
    port = free_port()
    proc = start("serve", "--port", str(port), env=cli_env())
    try:
        end = time.monotonic() + 60
        while True:  # handshake: the dashboard page answers once the server is up
            assert proc.poll() is None, proc.communicate()
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < end, "the server never answered"
                time.sleep(0.05)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# --- replay ----------------------------------------------------------------------------------------


def test_replay_tolerates_a_cut_off_last_line_and_says_so(recorded_log: Path, tmp_path: Path) -> None:
    lines = recorded_log.read_text().splitlines(keepends=True)
    crashed = tmp_path / "crashed.jsonl"
    crashed.write_text("".join(lines[:20]) + lines[20][: len(lines[20]) // 2])
    result = cli("replay", crashed, "--instant")
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"pydantic-deep: {str(crashed)!r} ends in a cut-off line (the run stopped mid-write); "
        "replaying the events before it",
        "pydantic-deep: the log ends before the run did (no agent_end event)",
    ]
    assert result.stdout.startswith(f"❯ {PROMPT}\n")
    assert "succeeded" not in result.stdout


def test_replay_rejects_a_file_that_is_not_an_event_log(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("just some notes\nnot events\n")
    result = cli("replay", notes)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"pydantic-deep: error: {str(notes)!r} is not a pydantic-deep event log "
        "(line 1: not a StreamEvent: not JSON (expected value at line 1 column 1))\n"
    )


def test_replay_refuses_deep_nesting_and_endless_lines(
    recorded_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nested = tmp_path / "nested.jsonl"
    nested.write_text("[" * 100_000 + "]" * 100_000 + "\n" + recorded_log.read_text())
    answers: list[tuple[object, str]] = []
    for path in (nested, Path("/dev/zero")):  # /dev/zero: no line break, ever
        with pytest.raises(SystemExit) as exit_info:
            main(["replay", str(path), "--instant"])
        answers.append((exit_info.value.code, capsys.readouterr().err))
    assert answers == [
        (
            2,
            f"pydantic-deep: error: {str(nested)!r} is not a pydantic-deep event log "
            "(line 1: not a StreamEvent: not JSON (recursion limit exceeded at line 1 column 202))\n",
        ),
        (
            2,
            "pydantic-deep: error: '/dev/zero' is not a pydantic-deep event log (line 1 is longer than 32 MiB)\n",
        ),
    ]


def test_replay_shortens_long_gaps(recorded_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A timestamp far in the future (or a long quiet spell) is a pause of at most MAX_REPLAY_GAP."""
    import pydantic_deep.cli._app as cli_app

    pauses: list[float] = []

    async def record(seconds: float) -> None:
        pauses.append(seconds)

    events = read_event_log(recorded_log).events
    events[-1].timestamp = events[-1].timestamp.replace(year=9999)
    far = tmp_path / "far.jsonl"
    far.write_text("".join(event.to_json() + "\n" for event in events))
    monkeypatch.setattr(cli_app.asyncio, "sleep", record)
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(far)])
    assert exit_info.value.code == 0
    assert max(pauses) == cli_app.MAX_REPLAY_GAP == 5.0


# --- bad input: exit 2, one line on stderr, no traceback -------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", ""], "the prompt is empty"),
        (["run", "x", "--model", "nonsense"], "unknown model 'nonsense'"),
        (["run", "x", "--model", "openai:gpt-4o"], "cannot use model 'openai:gpt-4o': Set the `OPENAI_API_KEY`"),
    ],
    ids=["empty-prompt", "unknown-model", "missing-api-key"],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = cli(*args)
    assert (result.returncode, result.stdout) == (2, "")
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"pydantic-deep: error: {message}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "   "], "the prompt is empty"),
        (["run"], "Missing argument 'prompt'. (see pydantic-deep run --help)"),
        (["run", "x", "--max-steps", "0"], "--max-steps must be at least 1, got 0"),
        (["run", "x", "--max-steps", "many"], "Invalid value for '--max-steps'"),
        (["run", "x", "--timeout", "0"], "--timeout must be a positive number of seconds, got 0.0"),
        (["run", "x", "--json", "--quiet"], "--json and --quiet cannot be combined"),
        (["run", "x", "--workdir", "/no/such/dir"], "--workdir '/no/such/dir' is not a directory"),
        (["run", "x", "--log", "/no/such/dir/log.jsonl"], "cannot open log file '/no/such/dir/log.jsonl'"),
        (["replay", "/no/such/log.jsonl"], "cannot read '/no/such/log.jsonl': No such file or directory"),
        (["replay", "x.jsonl", "--speed", "2", "--instant"], "--speed and --instant cannot be combined"),
        (["replay", "x.jsonl", "--speed", "-1"], "--speed must be a positive number, got -1.0"),
        (["serve", "--model", "nonsense"], "unknown model 'nonsense'"),
        (["serve", "--host", "0.0.0.0"], "refusing to listen on '0.0.0.0' without a token"),
        (["serve", "--bus", "kafka://x"], "unknown bus 'kafka://x': use 'memory' or a Redis URL"),
        (["serve", "--bus", "redis://127.0.0.1:1/0"], "cannot reach the Redis bus at redis://127.0.0.1:1/0"),
        (["serve", "--durable", "postgresql://127.0.0.1/x"], "--durable needs a Redis bus the fleet shares"),
        (["serve", "--agent", "nomodule"], "--agent 'nomodule': expected MODULE:NAME"),
        (["serve", "--agent", "no_such_module_here:agent"], "--agent 'no_such_module_here:agent': No module named"),
        (["serve", "--agent", "json:loads"], "--agent 'json:loads' is neither an agent nor a function of no arguments"),
        (["serve", "--agent", "json:__name__"], "--agent 'json:__name__' is a str, not a Pydantic AI agent"),
        (["serve", "--agent", "pydantic_deep:create_deep_agent", "--model", "demo"], "give --agent or --model"),
        (["serve", "--max-runs", "0"], "Invalid value for '--max-runs' (env var: 'PYDANTIC_DEEP_MAX_RUNS')"),
        (["serve", "--run-timeout", "0"], "run_timeout must be a positive number of seconds or None, got 0.0"),
        (["serve", "--idle-timeout", "-1"], "idle_timeout must be a positive number of seconds or None"),
        (["serve", "--token", " "], "the token is blank: give a secret (--token or PYDANTIC_DEEP_TOKEN)"),
        (["serve", "--cors-origin", "*"], "cors origin '*' lets any web page call this server: it needs a token"),
        (["serve", "--cors-origin", "localhost:3000"], "cors origin 'localhost:3000' is not an origin"),
        (["frobnicate"], "No such command 'frobnicate'."),
    ],
)
def test_bad_input_in_process(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYDANTIC_DEEP_MODEL", raising=False)
    monkeypatch.delenv("PYDANTIC_DEEP_TOKEN", raising=False)
    monkeypatch.delenv("PYDANTIC_DEEP_BUS", raising=False)
    (tmp_path / "x.jsonl").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    assert (exit_info.value.code, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert err.startswith(f"pydantic-deep: error: {message}")


def test_serve_durable_without_postgres_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from _fleet_helpers import REDIS_URL, redis_or_skip

    redis_or_skip()
    monkeypatch.delenv("PYDANTIC_DEEP_MODEL", raising=False)
    for durable, message in [
        (
            "postgresql://postgres@127.0.0.1:1/x",
            "cannot reach the durable store (PostgreSQL) at postgresql://postgres@127.0.0.1:1/x",
        ),
        (
            "postgresql://me:secret@127.0.0.1:1/x",
            "cannot reach the durable store (PostgreSQL) at postgresql://me:***@127.0.0.1:1/x",
        ),
        ("mysql://127.0.0.1/x", "durable mode needs a PostgreSQL URL (postgresql://...), got 'mysql://127.0.0.1/x'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", "--bus", REDIS_URL, "--durable", durable])
        out, err = capsys.readouterr()
        assert (exit_info.value.code, out, len(err.splitlines())) == (2, "", 1), err
        assert err.startswith(f"pydantic-deep: error: {message}")
        assert "secret" not in err


def test_serve_reads_every_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydantic_deep.server as server_module

    given: list[object] = []
    monkeypatch.setattr(server_module, "serve", given.append)
    settings = {
        "HOST": "127.0.0.2", "PORT": "9001", "TOKEN": "t0k", "BUS": "redis://127.0.0.1:6379/3",
        "BUS_PREFIX": "fleet-a:", "MAX_RUNS": "5", "RUN_TIMEOUT": "60", "IDLE_TIMEOUT": "20",
        "DRAIN_TIMEOUT": "7", "RETENTION": "30", "MAX_RETAINED_RUNS": "9", "MAX_PROMPT_CHARS": "99",
        "MAX_REQUEST_BYTES": "1000", "KEEPALIVE": "3", "LEASE": "4", "FLUSH_INTERVAL": "0",
        "CORS_ORIGINS": "http://localhost:3000,https://app.example.com", "ALLOWED_HOSTS": "a.example b.example",
        "TOKENS_FILE": "/etc/pydantic-deep/tokens", "REQUIRE_APPROVAL": "send_invoice,delete_file",
        "AGENT": "myapp.agents:support", "DURABLE": "postgresql://db/agents", "DURABLE_WORKER": "false",
    }  # fmt: skip
    for name, value in settings.items():
        monkeypatch.setenv(f"PYDANTIC_DEEP_{name}", value)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve"])
    assert exit_info.value.code == 0
    assert given == [
        server_module.ServeOptions(
            host="127.0.0.2", port=9001, model=None, token="t0k", bus="redis://127.0.0.1:6379/3",
            bus_prefix="fleet-a:", max_runs=5, run_timeout=60.0, idle_timeout=20.0, drain_timeout=7.0,
            retention_seconds=30.0, max_retained_runs=9, max_prompt_chars=99, max_request_bytes=1000,
            keepalive_seconds=3.0, lease_seconds=4.0, flush_interval=0.0,
            cors_origins=["http://localhost:3000", "https://app.example.com"], allowed_hosts=["a.example", "b.example"],
            tokens_file="/etc/pydantic-deep/tokens", require_approval=["send_invoice", "delete_file"],
            agent="myapp.agents:support", durable="postgresql://db/agents", durable_worker=False,
        )
    ]  # fmt: skip


def test_replay_of_an_empty_file_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(empty)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"pydantic-deep: error: {str(empty)!r} is empty: an event log has one JSON event per line\n"
    )


def test_json_schema_of_logged_lines_is_the_events(recorded_log: Path) -> None:
    # Every line is a complete JSON object with the contract's fields, so `jq` can read the log.
    for line in recorded_log.read_text().splitlines():
        value = json.loads(line)
        assert set(value) == {
            "event_type",
            "data",
            "timestamp",
            "seq",
            "run_id",
            "agent_name",
            "parent_run_id",
            "parent_tool_call_id",
            "depth",
        }
