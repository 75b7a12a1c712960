"""Short text for the terminal: arguments, results, durations, numbers and the one-line summary.

Shared by the live view and the plain printer so both say the same thing the same way.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..streaming.state import RunState

__all__ = ("format_duration", "short_args", "short_result", "short_value", "summary_line")

STATUS_MARKS = {
    "waiting": "…",
    "running": "…",
    "succeeded": "✔",
    "failed": "✘",
    "cancelled": "■",
}


def clip(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: max(0, limit - 1)] + "…"


def short_value(value: Any, limit: int = 40) -> str:
    """A tool argument as a user would want to glance at it: strings quoted and cut, collections counted."""
    if isinstance(value, str):
        return repr(clip(value, limit))
    if isinstance(value, list | tuple):
        count = len(value)  # pyright: ignore[reportUnknownArgumentType]
        return f"[{count} item{'s' if count != 1 else ''}]"
    if isinstance(value, dict):
        count = len(value)  # pyright: ignore[reportUnknownArgumentType]
        return f"{{{count} key{'s' if count != 1 else ''}}}"
    return clip(repr(value), limit)


def short_args(args: dict[str, Any], limit: int = 40) -> str:
    """`key=value, ...` for a tool call's arguments."""
    return ", ".join(f"{key}={short_value(value, limit)}" for key, value in args.items())


def short_result(result: Any, limit: int = 60) -> str:
    """The first line of a tool result, cut to `limit` characters; empty for `None`."""
    if result is None:
        return ""
    if isinstance(result, str):
        text = result.strip()
    else:
        try:
            text = json.dumps(result, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(result)
    first = text.splitlines()[0] if text else ""
    return clip(first, limit)


def format_duration(seconds: float | None) -> str:
    """`12ms`, `1.4s`, `2m05s`."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def format_cost(cost: float) -> str:
    return f"${cost:.2f}" if cost >= 1 else f"${cost:.4f}"


def summary_line(state: RunState, now: datetime | None = None) -> str:
    """`✔ succeeded · 4 steps · 358 tokens · $0.0012 · 1.2s`: status, steps, tokens, cost when known, wall time.

    While the run is going it reads `running · step 3 · ...`, counting the step in progress.
    """
    if state.finished:
        parts = [f"{STATUS_MARKS[state.phase]} {state.phase}", f"{state.steps} step{'s' if state.steps != 1 else ''}"]
    else:
        parts = [state.phase, f"step {state.steps + 1}"]
    if state.total_tokens is not None:
        parts.append(f"{state.total_tokens:,} tokens")
    if state.total_cost_usd is not None:
        parts.append(format_cost(state.total_cost_usd))
    parts.append(format_duration(state.elapsed(now)))
    return " · ".join(parts)
