"""JSONL event logs: one `StreamEvent.to_json()` per line, written as events happen, read back for replay."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..streaming.types import AnyStreamEvent, StreamEvent, StreamEventType

__all__ = ("EventLog", "EventLogError", "read_event_log", "split_runs", "write_event")


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


def read_event_log(path: str | Path) -> EventLog:
    """Read a log written by `--json` or `--log`.

    Blank lines are skipped. An unreadable last line is taken for a write cut off by a crash and left
    out (`truncated=True`); a file whose first line, or any line before the last, is not an event
    raises `EventLogError`.
    """
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EventLogError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise EventLogError(f"{str(path)!r} is not a pydantic-deep event log (not UTF-8 text)") from None
    lines = [(number, line) for number, line in enumerate(raw.split("\n"), start=1) if line.strip()]
    if not lines:
        raise EventLogError(f"{str(path)!r} is empty: an event log has one JSON event per line")
    events: list[AnyStreamEvent] = []
    for index, (number, line) in enumerate(lines):
        try:
            events.append(StreamEvent.from_json(line))
        except (ValueError, json.JSONDecodeError) as exc:
            if index == len(lines) - 1 and events:
                return EventLog(events=events, truncated=True)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise EventLogError(f"{str(path)!r} is not a pydantic-deep event log (line {number}: {reason})") from None
    return EventLog(events=events)


def split_runs(events: Iterable[AnyStreamEvent]) -> list[list[AnyStreamEvent]]:
    """Split a log's events into runs: `--log` appends, so one file may hold several, each opened by `agent_start`."""
    runs: list[list[AnyStreamEvent]] = []
    for event in events:
        if not runs or (event.event_type is StreamEventType.AGENT_START and event.depth == 0):
            runs.append([])
        runs[-1].append(event)
    return runs
