"""JSONL event logs: one `StreamEvent.to_json()` per line, written as events happen, read back for replay."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from ..streaming.types import AnyStreamEvent, StreamEvent, StreamEventType

__all__ = ("MAX_LINE_BYTES", "EventLog", "EventLogError", "read_event_log", "split_runs", "write_event")


class EventLogError(ValueError):
    """A file that is not a pydantic-deep event log (or not readable); the message is one line."""


@dataclass(frozen=True, kw_only=True)
class EventLog:
    """The events of a log file, and whether its last line was cut off (a run that crashed mid-write)."""

    events: list[AnyStreamEvent]
    truncated: bool = False


def write_event(out: TextIO, event: AnyStreamEvent) -> None:
    """Write one event as a line of JSON and flush, so a reader (or a crash) sees every event so far."""
    out.write(event.to_json() + "\n")
    out.flush()


MAX_LINE_BYTES = 32 * 1024 * 1024
"""The longest line `read_event_log` takes: an event is one line, and a file without line breaks
(`/dev/zero`, a binary file) must not be read into memory whole."""


def read_event_log(path: str | Path) -> EventLog:
    """Read a log written by `--json` or `--log`.

    Blank lines are skipped. An unreadable last line is taken for a write cut off by a crash and left
    out (`truncated=True`); a file whose first line, or any line before the last, is not an event, or
    has a line over `MAX_LINE_BYTES`, raises `EventLogError`.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            lines = _lines(file, path)
    except OSError as exc:
        raise EventLogError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if not lines:
        raise EventLogError(f"{str(path)!r} is empty: an event log has one JSON event per line")
    events: list[AnyStreamEvent] = []
    for index, (number, line) in enumerate(lines):
        try:
            events.append(StreamEvent.from_json(line))
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep to decode
            if index == len(lines) - 1 and events:
                return EventLog(events=events, truncated=True)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, RecursionError):
                reason = "nested too deeply"
            raise EventLogError(f"{str(path)!r} is not a pydantic-deep event log (line {number}: {reason})") from None
    return EventLog(events=events)


def _lines(file: BinaryIO, path: Path) -> list[tuple[int, str]]:
    """The file's non-blank lines with their numbers, each read with a bound on its length."""
    lines: list[tuple[int, str]] = []
    number = 0
    while raw := file.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise EventLogError(
                f"{str(path)!r} is not a pydantic-deep event log "
                f"(line {number} is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB)"
            )
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EventLogError(f"{str(path)!r} is not a pydantic-deep event log (not UTF-8 text)") from None
        if line.strip():
            lines.append((number, line))
    return lines


def split_runs(events: Iterable[AnyStreamEvent]) -> list[list[AnyStreamEvent]]:
    """Split a log's events into runs: `--log` appends, so one file may hold several, each opened by `agent_start`."""
    runs: list[list[AnyStreamEvent]] = []
    for event in events:
        if not runs or (event.event_type is StreamEventType.AGENT_START and event.depth == 0):
            runs.append([])
        runs[-1].append(event)
    return runs
