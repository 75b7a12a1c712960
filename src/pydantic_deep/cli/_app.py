"""The `pydantic-deep` command: `run`, `replay` and `serve`.

Exit statuses: 0 the run succeeded (or the replay/serve ended normally); 1 the run failed; 2 bad input
(empty prompt, unknown model, missing API key, unreadable file, a file that is not an event log),
always with one line on stderr; 124 `--timeout` cancelled the run; 130 Ctrl-C cancelled it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from rich.console import Console

from ..streaming.types import AnyStreamEvent
from ._displays import Display, JsonDisplay, LiveDisplay, PlainDisplay, StaticDisplay
from ._log import EventLogError, read_event_log, split_runs, write_event

if TYPE_CHECKING:  # `--help` and `replay` never import Pydantic AI: only `run` needs it
    from pydantic_ai import CancellationToken

    from ..backends import FilesystemBackend
    from ..server import ServeOptions

__all__ = ("app", "main")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130
_TICK_SECONDS = 0.08


class BadInput(Exception):
    """Something the user gave us cannot work; the message is the one line they see."""


app = typer.Typer(
    name="pydantic-deep",
    help="Run a deep agent and watch everything it does, live; keep its events and replay them.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _env(name: str) -> str:
    return f"PYDANTIC_DEEP_{name}"


@app.command()
def run(
    prompt: Annotated[str, typer.Argument(help="What you want the agent to do.", show_default=False)],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="'provider:name', e.g. openai:gpt-4o. Default: $PYDANTIC_DEEP_MODEL, else the offline demo model.",
            show_default=False,
        ),
    ] = None,
    instructions: Annotated[
        str | None, typer.Option(help="Instructions that replace the agent's default ones.", show_default=False)
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="Give the agent's file tools this directory instead of an in-memory workspace.", show_default=False
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Cancel the run after this many seconds (exit status 124).", show_default=False)
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(help="Fail the run rather than make more than this many model requests.", show_default=False),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print each event as one line of JSON and nothing else (for jq).")
    ] = False,
    log: Annotated[
        Path | None, typer.Option(help="Also append each event as a line of JSON to this file.", show_default=False)
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the answer's text.")] = False,
    require_approval: Annotated[
        list[str] | None,
        typer.Option(
            help="A tool whose calls wait for your decision (asked on the terminal); repeat for more.",
            envvar=_env("REQUIRE_APPROVAL"),
            show_default=False,
        ),
    ] = None,
    approve_all: Annotated[
        bool, typer.Option("--approve-all", help="Approve every call that waits for approval, without asking.")
    ] = False,
    deny_all: Annotated[
        bool, typer.Option("--deny-all", help="Deny every call that waits for approval, without asking.")
    ] = False,
) -> None:
    """Run the agent on PROMPT and show it working: answer, tool calls, plan, sub-agents, usage."""
    options = RunOptions(
        prompt=prompt,
        model=model,
        instructions=instructions,
        workdir=workdir,
        timeout=timeout,
        max_steps=max_steps,
        json_output=json_output,
        log=log,
        quiet=quiet,
        require_approval=_listed(require_approval),
        approve_all=approve_all,
        deny_all=deny_all,
    )
    raise typer.Exit(run_command(options))


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="An event log written by --log or --json.", show_default=False)],
    speed: Annotated[
        float | None, typer.Option(help="Play at this multiple of the recorded pace (default 1).", show_default=False)
    ] = None,
    instant: Annotated[bool, typer.Option("--instant", help="Show the end result at once.")] = False,
) -> None:
    """Show a recorded run through the same view, at its recorded pace or at once."""
    raise typer.Exit(replay_command(file, speed=speed, instant=instant))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.", envvar=_env("HOST"))] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", envvar=_env("PORT"))] = 8000,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model for the served agent (as for `run`).", show_default=False)
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Bearer token clients must send.", envvar=_env("TOKEN"), show_default=False),
    ] = None,
    bus: Annotated[
        str,
        typer.Option(help="Event bus: memory (one process) or redis://HOST:PORT/DB (a fleet).", envvar=_env("BUS")),
    ] = "memory",
    bus_prefix: Annotated[
        str | None,
        typer.Option(help="Key prefix on the Redis bus, one per fleet.", envvar=_env("BUS_PREFIX"), show_default=False),
    ] = None,
    max_runs: Annotated[int, typer.Option(help="Runs at once before 429.", envvar=_env("MAX_RUNS"), min=1)] = 32,
    run_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds a run may take; then it fails.", envvar=_env("RUN_TIMEOUT"), show_default=False),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds without an event from the model or a tool; then the run fails.",
            envvar=_env("IDLE_TIMEOUT"),
            show_default=False,
        ),
    ] = None,
    drain_timeout: Annotated[
        float,
        typer.Option(help="On SIGTERM, seconds running runs get to finish.", envvar=_env("DRAIN_TIMEOUT"), min=0),
    ] = 30.0,
    retention: Annotated[
        float, typer.Option(help="Seconds finished runs stay readable.", envvar=_env("RETENTION"), min=0)
    ] = 3600.0,
    max_retained_runs: Annotated[
        int, typer.Option(help="Finished runs kept at most.", envvar=_env("MAX_RETAINED_RUNS"), min=0)
    ] = 1000,
    max_prompt_chars: Annotated[
        int, typer.Option(help="Longest prompt accepted (413 above).", envvar=_env("MAX_PROMPT_CHARS"), min=1)
    ] = 100_000,
    max_request_bytes: Annotated[
        int, typer.Option(help="Largest request body (413 above).", envvar=_env("MAX_REQUEST_BYTES"), min=1)
    ] = 16 * 1024 * 1024,
    keepalive: Annotated[
        float, typer.Option(help="Seconds between keep-alives on idle streams.", envvar=_env("KEEPALIVE"))
    ] = 15.0,
    lease: Annotated[
        float,
        typer.Option(help="Seconds before the fleet ends the runs of a dead process.", envvar=_env("LEASE")),
    ] = 10.0,
    flush_interval: Annotated[
        float,
        typer.Option(
            help="Seconds a live stream gathers events into one write (0: a write per event).",
            envvar=_env("FLUSH_INTERVAL"),
            min=0,
        ),
    ] = 0.02,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="A web page origin (scheme://host[:port]) that may call the server; repeatable; * needs a token.",
            envvar=_env("CORS_ORIGINS"),
            show_default=False,
        ),
    ] = None,
    tokens_file: Annotated[
        str | None,
        typer.Option(
            help="A file of NAME TOKEN lines: each token's holder sees only their own runs ('admin' sees all).",
            envvar=_env("TOKENS_FILE"),
            show_default=False,
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A host name clients may address the server by, besides loopback ones; repeat for more.",
            envvar=_env("ALLOWED_HOSTS"),
            show_default=False,
        ),
    ] = None,
    require_approval: Annotated[
        list[str] | None,
        typer.Option(
            help="A tool whose calls wait for a decision (POST /runs/{id}/approvals); repeat for more.",
            envvar=_env("REQUIRE_APPROVAL"),
            show_default=False,
        ),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            help="Serve this agent instead of a deep agent: MODULE:NAME (an agent, or a function returning one).",
            envvar=_env("AGENT"),
            show_default=False,
        ),
    ] = None,
    durable: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL URL: runs are kept as they settle and go on in another process after a crash "
            "(needs --bus redis://...).",
            envvar=_env("DURABLE"),
            show_default=False,
        ),
    ] = None,
    durable_worker: Annotated[
        bool,
        typer.Option(
            help="With --durable: whether this process runs runs too (--no-durable-worker: it only takes requests "
            "and serves streams; other processes run them).",
            envvar=_env("DURABLE_WORKER"),
        ),
    ] = True,
) -> None:
    """Serve agent runs over HTTP (SSE, WebSocket, AG-UI, Vercel AI) with a live dashboard page."""
    from ..server import ServeOptions

    options = ServeOptions(
        host=host,
        port=port,
        model=model,
        token=token,
        bus=bus,
        bus_prefix=bus_prefix,
        max_runs=max_runs,
        run_timeout=run_timeout,
        idle_timeout=idle_timeout,
        drain_timeout=drain_timeout,
        retention_seconds=retention,
        max_retained_runs=max_retained_runs,
        max_prompt_chars=max_prompt_chars,
        max_request_bytes=max_request_bytes,
        keepalive_seconds=keepalive,
        lease_seconds=lease,
        flush_interval=flush_interval,
        cors_origins=_listed(cors_origin),
        allowed_hosts=_listed(allowed_host) or None,
        tokens_file=tokens_file,
        require_approval=_listed(require_approval),
        agent=agent,
        durable=durable,
        durable_worker=durable_worker,
    )
    raise typer.Exit(serve_command(options))


def _listed(values: list[str] | None) -> list[str]:
    """Repeated options, each of which may also hold several values separated by commas (as env vars do)."""
    return [item.strip() for value in values or () for item in value.split(",") if item.strip()]


# --- run ---------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class RunOptions:
    """Everything `pydantic-deep run` was given."""

    prompt: str
    model: str | None = None
    instructions: str | None = None
    workdir: Path | None = None
    timeout: float | None = None
    max_steps: int | None = None
    json_output: bool = False
    log: Path | None = None
    quiet: bool = False
    require_approval: list[str] = field(default_factory=list[str])
    approve_all: bool = False
    deny_all: bool = False


def run_command(options: RunOptions) -> int:
    """Check the options, build the agent, stream the run to the chosen display; return the exit status."""
    import pydantic_ai
    from pydantic_ai.usage import UsageLimits

    from ..agent import create_deep_agent
    from ..deps import DeepAgentDeps
    from ..models import ModelConfigError, resolve_model
    from ._approve import approval_callback

    if not options.prompt.strip():
        raise BadInput('the prompt is empty: say what the agent should do, e.g. pydantic-deep run "Plan a picnic"')
    if options.json_output and options.quiet:
        raise BadInput("--json and --quiet cannot be combined: --json already prints nothing but events")
    if options.timeout is not None and not options.timeout > 0:
        raise BadInput(f"--timeout must be a positive number of seconds, got {options.timeout!r}")
    if options.max_steps is not None and options.max_steps < 1:
        raise BadInput(f"--max-steps must be at least 1, got {options.max_steps!r}")
    if options.approve_all and options.deny_all:
        raise BadInput("--approve-all and --deny-all cannot be combined: pick one")
    try:
        model = resolve_model(options.model)
    except ModelConfigError as exc:
        raise BadInput(str(exc)) from None
    deps = DeepAgentDeps(backend=_workdir_backend(options.workdir)) if options.workdir is not None else DeepAgentDeps()
    agent = create_deep_agent(
        model, instructions=options.instructions, require_approval=options.require_approval or None
    )
    limits = UsageLimits(request_limit=options.max_steps) if options.max_steps is not None else None

    # Pydantic AI's first-run banner would be written into our view; this command owns its output.
    pydantic_ai.BANNER_ENABLED = False
    log_file = _open_log(options.log) if options.log is not None else None
    try:
        display = _run_display(options)
        decide = approval_callback(
            approve_all=options.approve_all,
            deny_all=options.deny_all,
            interactive=sys.stdin.isatty() and not options.json_output,
            pause=display.pause,
        )

        def events(token: CancellationToken) -> AsyncIterator[AnyStreamEvent]:
            from ..streaming import run_stream

            return run_stream(
                agent, options.prompt, deps, cancellation_token=token, usage_limits=limits, on_approval=decide
            )

        return asyncio.run(_stream_to_display(events, display, log_file, cancel_after=options.timeout))
    finally:
        if log_file is not None:
            log_file.close()


def _workdir_backend(workdir: Path) -> FilesystemBackend:
    from ..backends import FilesystemBackend

    if not workdir.is_dir():
        raise BadInput(f"--workdir {str(workdir)!r} is not a directory: create it first, or pick another")
    return FilesystemBackend(workdir)


def _open_log(path: Path) -> TextIO:
    try:
        return path.open("a", encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot open log file {str(path)!r}: {exc.strerror or exc}") from None


def _stdout_console() -> Console:
    return Console(highlight=False)


def _is_interactive(console: Console) -> bool:
    return console.is_terminal and not console.is_dumb_terminal


def _run_display(options: RunOptions) -> Display:
    if options.json_output:
        return JsonDisplay(sys.stdout)
    console = _stdout_console()
    if options.quiet or not _is_interactive(console):
        return PlainDisplay(sys.stdout, quiet=options.quiet)
    return LiveDisplay(console)


async def _stream_to_display(
    events: Callable[[CancellationToken], AsyncIterator[AnyStreamEvent]],
    display: Display,
    log_file: TextIO | None,
    *,
    cancel_after: float | None,
) -> int:
    """Drive one run into `display` (and `log_file`), with Ctrl-C and `--timeout` cancelling it cleanly."""
    from pydantic_ai import CancellationToken

    token = CancellationToken()
    loop = asyncio.get_running_loop()
    reasons: list[str] = []

    def interrupt() -> None:
        if reasons and reasons[-1] == "interrupted":  # the second Ctrl-C: leave now
            display.abort()
            for stream in (sys.stdout, log_file):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.flush()
            sys.stderr.write("pydantic-deep: interrupted\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        reasons.append("interrupted")
        display.notice("cancelling… (Ctrl-C again to quit at once)")
        token.cancel()

    def time_out() -> None:
        reasons.append("timeout")
        display.notice(f"timed out after {cancel_after:g}s, cancelling…")
        token.cancel()

    restore_signal = _on_sigint(loop, interrupt)
    timer = loop.call_later(cancel_after, time_out) if cancel_after is not None else None
    ticker = asyncio.create_task(_tick(display))
    failure: BaseException | None = None
    try:
        stream = events(token)
        try:
            async for event in stream:
                if log_file is not None:
                    write_event(log_file, event)
                display.handle(event)
        finally:
            closer = getattr(stream, "aclose", None)  # leaving early must stop the run at once
            if closer is not None:
                await closer()
    except BrokenPipeError:
        raise
    except Exception as exc:  # the stream has reported it as `error` + `agent_end`, unless it failed before that
        failure = exc
    finally:
        if timer is not None:
            timer.cancel()
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        restore_signal()
        outcome = None
        if reasons and display.state.phase == "cancelled":
            interrupted = reasons[0] == "interrupted"
            outcome = "interrupted (Ctrl-C)" if interrupted else f"timed out after {cancel_after or 0:g}s"
        display.close(outcome)
    state = display.state
    if failure is not None and state.phase != "failed":
        _error_line(f"the run stopped: {type(failure).__name__}: {failure}")
        return EXIT_FAILED
    if state.phase == "succeeded":
        return EXIT_OK
    if state.phase == "cancelled":
        return EXIT_TIMEOUT if reasons and reasons[0] == "timeout" else EXIT_INTERRUPTED
    if isinstance(display, PlainDisplay) and display.printer.quiet and state.error is not None:
        _error_line(f"the run failed: {state.exception_type}: {state.error}")
    return EXIT_FAILED


def _on_sigint(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> Callable[[], None]:
    """Route SIGINT to `handler` on the loop; returns the function that puts the old handling back."""
    try:
        loop.add_signal_handler(signal.SIGINT, handler)
    except (NotImplementedError, RuntimeError):  # no signal handlers on this loop (Windows, not main thread)
        return _on_sigint_threadsafe(loop, handler)

    def restore() -> None:
        loop.remove_signal_handler(signal.SIGINT)

    return restore


def _on_sigint_threadsafe(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> Callable[[], None]:
    def on_signal(signum: int, frame: object) -> None:
        loop.call_soon_threadsafe(handler)

    try:
        previous = signal.signal(signal.SIGINT, on_signal)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        return lambda: None

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    return restore


async def _tick(display: Display) -> None:
    while True:
        await asyncio.sleep(_TICK_SECONDS)
        display.tick()


# --- replay ------------------------------------------------------------------------------------------


def replay_command(file: Path, *, speed: float | None = None, instant: bool = False) -> int:
    """Render a recorded log through the run's own displays; returns the exit status."""
    if speed is not None and instant:
        raise BadInput("--speed and --instant cannot be combined: pick one")
    if speed is not None and not speed > 0:
        raise BadInput(f"--speed must be a positive number, got {speed!r}")
    try:
        log = read_event_log(file)
    except EventLogError as exc:
        raise BadInput(str(exc)) from None
    if log.truncated:
        _error_line(f"{str(file)!r} ends in a cut-off line (the run stopped mid-write); replaying the events before it")
    console = _stdout_console()
    interactive = _is_interactive(console)
    for events in split_runs(log.events):
        clock: _ReplayClock | None = None
        if not interactive:
            display: Display = PlainDisplay(sys.stdout)
        elif instant:
            display = StaticDisplay(console)
        else:
            clock = _ReplayClock(speed or 1.0)
            display = LiveDisplay(console, clock=clock)
        asyncio.run(_replay_run(events, display, speed=None if instant else (speed or 1.0), clock=clock))
        if not display.state.finished:
            _error_line("the log ends before the run did (no agent_end event)")
    return EXIT_OK


MAX_REPLAY_GAP = 5.0
"""The longest pause a replay makes between two events, in seconds: a long quiet spell (or a timestamp
far in the future) is shortened to it."""


class _ReplayClock:
    """Recorded time for the live view: the last event's timestamp plus the scaled time since it was shown."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.event_time: datetime | None = None
        self.shown_at = time.monotonic()

    def mark(self, event: AnyStreamEvent) -> None:
        self.event_time = event.timestamp
        self.shown_at = time.monotonic()

    def __call__(self) -> datetime:
        if self.event_time is None:
            return datetime.now(UTC)
        return self.event_time + timedelta(seconds=(time.monotonic() - self.shown_at) * self.speed)


async def _replay_run(
    events: list[AnyStreamEvent], display: Display, *, speed: float | None, clock: _ReplayClock | None
) -> None:
    ticker = asyncio.create_task(_tick(display))
    previous: datetime | None = None
    try:
        for event in events:
            if speed is not None and previous is not None:
                gap = min((event.timestamp - previous).total_seconds() / speed, MAX_REPLAY_GAP)
                if gap > 0:
                    await asyncio.sleep(gap)
            previous = event.timestamp
            if clock is not None:
                clock.mark(event)
            display.handle(event)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        display.close()


# --- serve -------------------------------------------------------------------------------------------


def serve_command(options: ServeOptions) -> int:
    """Check the model, then hand over to `pydantic_deep.server.serve` (imported here: it needs the extra)."""
    from ..models import ModelConfigError, resolve_model

    model = options.model if isinstance(options.model, str) or options.model is None else None
    try:
        resolve_model(model)
    except ModelConfigError as exc:
        raise BadInput(str(exc)) from None
    try:
        from ..server import ServerConfigError, serve
    except ImportError as exc:
        raise BadInput(
            f"the server needs the project's server extra: uv sync --extra server in the clone ({exc})"
        ) from None
    try:
        serve(options)
    except ServerConfigError as exc:
        raise BadInput(str(exc)) from None
    return EXIT_OK


# --- entry point -------------------------------------------------------------------------------------


def _error_line(message: str) -> None:
    sys.stderr.write(f"pydantic-deep: {message}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> None:
    """The `pydantic-deep` console script: parse `argv` (default `sys.argv[1:]`), run, exit with the status."""
    command = typer.main.get_command(app)
    try:
        code = command.main(
            args=list(argv) if argv is not None else None, prog_name="pydantic-deep", standalone_mode=False
        )
    except BadInput as exc:
        _error_line(f"error: {exc}")
        code = EXIT_BAD_INPUT
    except typer.TyperException as exc:  # usage errors: one line, not a usage block
        message = exc.format_message()
        if message:  # (no message: the help was shown because no command was given)
            _error_line(f"error: {message} (see pydantic-deep {_subcommand(argv)}--help)")
        code = EXIT_BAD_INPUT
    except typer.Abort:
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_FAILED
    raise SystemExit(code if isinstance(code, int) else EXIT_OK)


def _subcommand(argv: Sequence[str] | None) -> str:
    args = list(argv) if argv is not None else sys.argv[1:]
    for arg in args:
        if arg in ("run", "replay", "serve"):
            return f"{arg} "
    return ""
