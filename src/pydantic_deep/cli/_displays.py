"""Where the command sends a run's events: the live view, plain lines, or JSON lines.

Each display owns the `RunState` it folds events into, is driven from the event loop's thread only
(so the state never changes under a render), and has the same four methods the runner calls.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, TextIO

from rich.console import Console
from rich.live import Live

from ..streaming.state import RunState
from ..streaming.types import AnyStreamEvent, StreamEventType
from ._log import write_event
from ._plain import PlainPrinter
from ._view import RunView

__all__ = ("Display", "JsonDisplay", "LiveDisplay", "PlainDisplay", "StaticDisplay")

_REFRESH_SECONDS = 1 / 20


class Display(Protocol):
    """What the runner needs from a display."""

    state: RunState

    def handle(self, event: AnyStreamEvent) -> None:
        """Take one event, as it happens."""
        ...

    def tick(self) -> None:
        """Called a few times a second while nothing happens, to move spinners and clocks."""
        ...

    def notice(self, text: str) -> None:
        """Tell the user something about the run that is not an event (cancelling, timed out)."""
        ...

    def close(self, outcome: str | None = None) -> None:
        """The run is over: leave the final picture on screen, with `outcome` if it ended for a reason of ours."""
        ...

    def abort(self) -> None:
        """Leave the terminal usable at once (second Ctrl-C), skipping the final picture."""
        ...

    def pause(self, paused: bool) -> None:
        """Stop drawing while a question is asked at the terminal (`True`), and go on after it (`False`)."""
        ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LiveDisplay:
    """The live Rich view: one `Live` redrawn from `RunView`, at most every 50ms, then the full final view."""

    def __init__(self, console: Console, *, clock: Callable[[], datetime] | None = None) -> None:
        self.console = console
        self.state = RunState()
        self.view = RunView(self.state, clock=clock or _utcnow, fit_height=True)
        # Refreshed by hand from the loop's thread: Rich's own refresh thread would render while events
        # are being applied. Transient, because the last frame is cut to the screen's height; the full
        # final view is printed once the run is over.
        self.live = Live(
            self.view,
            console=console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._last_refresh = 0.0
        self._started = False

    def _refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_refresh >= _REFRESH_SECONDS:
            self._last_refresh = now
            self.live.refresh()

    def handle(self, event: AnyStreamEvent) -> None:
        if not self._started:
            self._started = True
            self.live.start()
        self.state.apply(event)
        self._refresh(force=event.event_type is not StreamEventType.LLM_CHUNK)

    def tick(self) -> None:
        if self._started:
            self._refresh()

    def notice(self, text: str) -> None:
        self.view.notice = text
        self.tick()

    def close(self, outcome: str | None = None) -> None:
        if self._started:
            self.live.stop()
        if self.state.event_count:
            self.console.print(RunView(self.state, notice=outcome))

    def abort(self) -> None:
        if self._started:
            self.live.stop()

    def pause(self, paused: bool) -> None:
        if not self._started:
            return
        if paused:
            self.live.stop()  # transient: the live region is cleared, the question goes below what was printed
        else:
            self.live.start()
            self._refresh(force=True)


class StaticDisplay:
    """The final view only, printed once (`replay --instant` on a terminal)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.state = RunState()
        self._notice: str | None = None

    def handle(self, event: AnyStreamEvent) -> None:
        self.state.apply(event)

    def tick(self) -> None:
        pass

    def notice(self, text: str) -> None:
        self._notice = text

    def close(self, outcome: str | None = None) -> None:
        if self.state.event_count:
            self.console.print(RunView(self.state, notice=outcome or self._notice))

    def abort(self) -> None:
        pass

    def pause(self, paused: bool) -> None:
        pass


class _LineDisplay:
    """What the line-oriented displays share: no animation, notices on stderr, nothing to undo on abort."""

    err: TextIO

    def tick(self) -> None:
        pass

    def notice(self, text: str) -> None:
        self.err.write(f"pydantic-deep: {text}\n")
        self.err.flush()

    def abort(self) -> None:
        pass

    def pause(self, paused: bool) -> None:
        self.err.flush()


class PlainDisplay(_LineDisplay):
    """Plain streaming lines on `out` (not a terminal, or `--quiet`); notices go to stderr."""

    def __init__(self, out: TextIO, *, quiet: bool = False, err: TextIO | None = None) -> None:
        self.printer = PlainPrinter(out, quiet=quiet)
        self.state = self.printer.state
        self.err = err if err is not None else sys.stderr

    def handle(self, event: AnyStreamEvent) -> None:
        self.printer.handle(event)

    def close(self, outcome: str | None = None) -> None:
        self.printer.close()  # the reason was on stderr when it happened


class JsonDisplay(_LineDisplay):
    """`--json`: each event as one line of JSON on `out`, flushed; notices go to stderr."""

    def __init__(self, out: TextIO, *, err: TextIO | None = None) -> None:
        self.out = out
        self.state = RunState()
        self.err = err if err is not None else sys.stderr

    def handle(self, event: AnyStreamEvent) -> None:
        self.state.apply(event)
        write_event(self.out, event)

    def close(self, outcome: str | None = None) -> None:
        pass
