"""Assertions over whole event streams, and golden files of normalised streams.

```python
from pydantic_deep.streaming import agent_end_event, agent_start_event, llm_chunk_event
from pydantic_deep.testing import ANY, assert_events

events = [agent_start_event(agent_name="a"), llm_chunk_event(text="Hel"), llm_chunk_event(text="lo"), agent_end_event()]
assert_events(events, ["agent_start", ("llm_chunk", {"text": "Hello"}), ("agent_end", {"status": ANY})])
```
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..streaming.types import AnyStreamEvent, StreamEventType

__all__ = ("ANY", "UPDATE_GOLDEN_ENV", "ExpectedEvent", "assert_events", "assert_golden", "normalize_events")

UPDATE_GOLDEN_ENV = "PYDANTIC_DEEP_UPDATE_GOLDEN"
"""Set to `1` to (re)write golden files instead of comparing with them."""

_MERGED = {StreamEventType.LLM_CHUNK, StreamEventType.THINKING_CHUNK, StreamEventType.TOOL_ARGS_DELTA}
_TEXT_KEY = {
    StreamEventType.LLM_CHUNK: "text",
    StreamEventType.THINKING_CHUNK: "text",
    StreamEventType.TOOL_ARGS_DELTA: "args_delta",
}


class _Any:
    """Matches any value: `ANY` in an expected event."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()

ExpectedEvent = str | tuple[str, Mapping[str, Any]] | Mapping[str, Any]
"""An event type; `(event_type, data)` where `data` lists the keys to check; or a dict of normalised fields."""


def normalize_events(events: Iterable[AnyStreamEvent]) -> list[dict[str, Any]]:
    """The stream with what varies between runs taken out, for comparing and golden files.

    Runs and tool calls get stable names in order of appearance (`run-1`, `call-1`, ...); timestamps
    and `seq` are dropped and durations become `None`; consecutive text, thinking and tool-argument
    deltas of one run (or one call) are joined into one event, so how the text was chunked does not
    matter; and parallel tool calls that end back to back are listed in the order they started.
    """
    names: dict[str, str] = {}
    counts = {"run": 0, "call": 0}

    def stable(kind: str, value: str | None) -> str | None:
        if value is None:
            return None
        key = f"{kind}:{value}"
        if key not in names:
            counts[kind] += 1
            names[key] = f"{kind}-{counts[kind]}"
        return names[key]

    out: list[dict[str, Any]] = []
    for event in events:
        data: dict[str, Any] = dict(event.data)
        if "tool_call_id" in data:
            data["tool_call_id"] = stable("call", data["tool_call_id"])
        if "duration_seconds" in data:
            data["duration_seconds"] = None
        row: dict[str, Any] = {
            "event_type": event.event_type.value,
            "run": stable("run", event.run_id),
            "depth": event.depth,
            "agent_name": event.agent_name,
            "parent_run": stable("run", event.parent_run_id),
            "parent_call": stable("call", event.parent_tool_call_id),
            "data": data,
        }
        previous = out[-1] if out else None
        if (
            event.event_type in _MERGED
            and previous is not None
            and previous["event_type"] == row["event_type"]
            and previous["run"] == row["run"]
            and previous["data"].get("tool_call_id") == data.get("tool_call_id")
        ):
            key = _TEXT_KEY[event.event_type]
            previous["data"][key] += data[key]
            continue
        out.append(row)
    return _parallel_ends_in_start_order(out)


def _parallel_ends_in_start_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls that end back to back end in the order they started: the engine does not fix which finishes first."""
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end]["event_type"] == "tool_end" and rows[end]["run"] == rows[start]["run"]:
            end += 1
        if end - start > 1:
            rows[start:end] = sorted(rows[start:end], key=lambda row: _call_number(row["data"].get("tool_call_id")))
        start = max(end, start + 1)
    return rows


def _call_number(name: str | None) -> int:
    return int(name.rpartition("-")[2]) if name else 0


def _expected(item: ExpectedEvent) -> dict[str, Any]:
    if isinstance(item, str):
        return {"event_type": item}
    if isinstance(item, tuple):
        event_type, data = item
        return {"event_type": event_type, "data": dict(data)}
    return dict(item)


def _matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        wanted: Mapping[str, Any] = expected  # pyright: ignore[reportUnknownVariableType]
        got: Mapping[str, Any] = actual  # pyright: ignore[reportUnknownVariableType]
        return all(key in got and _matches(value, got[key]) for key, value in wanted.items())
    return bool(expected == actual)


def _line(row: Mapping[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=repr, ensure_ascii=False)


def assert_events(events: Iterable[AnyStreamEvent], expected: Sequence[ExpectedEvent]) -> None:
    """Check a whole stream against `expected`, one item per normalised event (see `normalize_events`).

    Each item names the event type and, optionally, the payload keys to check (`ANY` matches any
    value); keys not listed are not checked. On a mismatch the error shows a diff of the stream as
    it came against what was expected, one event per line.
    """
    actual = normalize_events(events)
    wanted = [_expected(item) for item in expected]
    if len(actual) == len(wanted) and all(_matches(w, a) for w, a in zip(wanted, actual, strict=True)):
        return
    # Show the actual events cut down to the fields each expected item checks, so the diff is about them.
    shown: list[str] = []
    for index, row in enumerate(actual):
        w: dict[str, Any] = wanted[index] if index < len(wanted) else {"event_type": None, "data": row["data"]}
        cut = {k: row[k] for k in w if k != "data"}
        checked: Mapping[str, Any] = w.get("data") or {}
        if "data" in w:
            cut["data"] = {k: row["data"].get(k, "(absent)") for k in checked}
        else:
            cut.setdefault("event_type", row["event_type"])
        shown.append(_line(cut))
    diff = "\n".join(difflib.unified_diff([_line(w) for w in wanted], shown, "expected", "actual", lineterm="", n=2))
    raise AssertionError(f"the stream differs from the expected events ({len(actual)} vs {len(wanted)}):\n{diff}")


def assert_golden(events: Iterable[AnyStreamEvent], path: str | Path, *, update: bool | None = None) -> None:
    """Compare the normalised stream with the golden file at `path` (JSON, one event per line).

    With `update=True`, or `PYDANTIC_DEEP_UPDATE_GOLDEN=1` in the environment, or pytest's
    `--update-golden` (with the plugin), the file is written instead.
    """
    path = Path(path)
    lines = [_line(row) for row in normalize_events(events)]
    if update is None:
        update = os.environ.get(UPDATE_GOLDEN_ENV) == "1"
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    if not path.exists():
        raise AssertionError(
            f"no golden file at {str(path)!r}: write it with {UPDATE_GOLDEN_ENV}=1 (or --update-golden)"
        )
    golden = path.read_text(encoding="utf-8").splitlines()
    if golden != lines:
        diff = "\n".join(difflib.unified_diff(golden, lines, str(path), "this run", lineterm="", n=1))
        raise AssertionError(
            f"the stream differs from the golden file {str(path)!r} "
            f"(if the change is right, update it with {UPDATE_GOLDEN_ENV}=1):\n{diff}"
        )
