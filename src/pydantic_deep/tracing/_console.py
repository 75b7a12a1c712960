"""`ConsoleExporter`: an indented tree of spans on the terminal, one line per span."""

from __future__ import annotations

import json
import sys
import threading
from typing import TextIO

from rich.console import Console
from rich.text import Text

from ._exporter import SpanExporter
from ._span import AgentRunData, ModelRequestData, Span, ToolCallData

__all__ = ("ConsoleExporter",)

_MARKS = {"ok": ("✓", "green"), "error": ("✗", "bold red"), "cancelled": ("⊘", "yellow"), "running": ("▶", "cyan")}
_KIND_LABELS = {"agent_run": "run", "model_request": "model", "tool_call": "tool"}
_PREVIEW_CHARS = 80


class ConsoleExporter(SpanExporter):
    """Prints each span as it ends, indented under its parent, with its duration, tokens and errors.

    ```python
    import asyncio
    import io

    from pydantic_deep import DeepAgentDeps, create_deep_agent
    from pydantic_deep.tracing import ConsoleExporter, TraceContext

    out = io.StringIO()
    trace = TraceContext(exporters=[ConsoleExporter(file=out)])
    asyncio.run(create_deep_agent().run("Plan a picnic", deps=DeepAgentDeps(trace_context=trace)))
    assert out.getvalue().splitlines()[-1].startswith("✓ run assistant")
    ```

    Children end before their parents, so a run's line comes after its model requests and tool calls.
    `verbose=True` also prints a `▶` line when each span starts (prompt, model, tool arguments), which
    reads top-down. Output goes to `file`, by default standard error, so it stays out of an answer
    printed to standard output; it is styled with Rich when it is a terminal and plain text otherwise.
    """

    def __init__(self, verbose: bool = False, *, file: TextIO | None = None) -> None:
        self.verbose = verbose
        self.file = file
        self._consoles: tuple[TextIO, Console] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ConsoleExporter(verbose={self.verbose!r})"

    def on_span_start(self, span: Span) -> None:
        if self.verbose:
            self._print(self._start_line(span))

    def on_span_end(self, span: Span) -> None:
        self._print(self._end_line(span))

    def _console(self) -> Console:
        target = self.file if self.file is not None else sys.stderr
        cached = self._consoles
        if cached is None or cached[0] is not target:
            is_terminal = _isatty(target)
            console = Console(
                file=target,
                force_terminal=is_terminal,
                no_color=not is_terminal,
                highlight=False,
                markup=False,
                emoji=False,
                soft_wrap=True,
            )
            self._consoles = cached = (target, console)
        return cached[1]

    def _print(self, line: Text) -> None:
        with self._lock:
            self._console().print(line)

    def _head(self, span: Span, mark: str, style: str) -> Text:
        line = Text("  " * span.depth)
        line.append(mark, style=style)
        line.append(f" {_KIND_LABELS[span.kind]} ", style="dim")
        line.append(span.name, style="bold")
        return line

    def _start_line(self, span: Span) -> Text:
        mark, style = _MARKS["running"]
        line = self._head(span, mark, style)
        data = span.data
        detail: str | None = None
        if isinstance(data, AgentRunData):
            detail = f"{data.model} · {data.prompt!r}" if data.prompt is not None else data.model
        elif isinstance(data, ToolCallData):
            detail = _preview(json.dumps(data.args, ensure_ascii=False)) if data.args is not None else None
        elif data.provider is not None:  # a model request
            detail = data.provider
        if detail:
            line.append(f"  {detail}", style="dim")
        return line

    def _end_line(self, span: Span) -> Text:
        mark, style = _MARKS[span.status]
        line = self._head(span, mark, style)
        parts = [_duration(span.duration_seconds or 0.0)]
        data = span.data
        if isinstance(data, AgentRunData):
            parts.append(f"{data.input_tokens} in / {data.output_tokens} out tokens")
            parts.append(f"{data.requests} requests, {data.tool_calls} tool calls")
            if data.cost_usd is not None:
                parts.append(f"${data.cost_usd:.4f}")
        elif isinstance(data, ModelRequestData):
            if data.input_tokens is not None:
                parts.append(f"{data.input_tokens} in / {data.output_tokens} out tokens")
            if data.cost_usd is not None:
                parts.append(f"${data.cost_usd:.4f}")
            if data.finish_reason is not None:
                parts.append(f"finish {data.finish_reason}")
        elif self.verbose and data.result is not None:  # a tool call
            parts.append(f"→ {_preview(data.result)}")
        line.append("  " + " · ".join(parts), style="dim")
        if span.status == "cancelled":
            line.append("  cancelled", style="yellow")
        if span.error is not None:
            line.append(f"  {_preview(span.error)}", style="red")
        return line


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 1] + "…"
