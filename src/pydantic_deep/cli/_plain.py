"""`PlainPrinter`: a run as plain streaming lines, for pipes, CI logs and terminals that cannot redraw.

The answer's text is written as it arrives; every other event that matters becomes one line (tool
started, tool ended with its duration and a short result or error, plan steps, file changes, sub-agents
indented under the call that started them), and the run ends with the summary line. Nothing is ever
redrawn, and everything printed comes from the events, so a replayed log prints the same lines as
the run that wrote it.
"""

from __future__ import annotations

from typing import TextIO

from ..streaming.state import RunState
from ..streaming.types import AnyStreamEvent, StreamEventType
from ._format import STATUS_MARKS, clip, format_duration, short_args, short_result, summary_line

__all__ = ("PlainPrinter",)

_PLAN_MARKS = {"completed": "✔", "in_progress": "◐", "pending": "○", "cancelled": "✘", "blocked": "■"}


class PlainPrinter:
    """Print each event of a run to `out` as it comes; `quiet=True` prints only the answer's text.

    ```python
    import io

    from pydantic_deep.cli import PlainPrinter
    from pydantic_deep.streaming import (
        agent_end_event,
        agent_start_event,
        llm_chunk_event,
        tool_end_event,
        tool_start_event,
    )

    out = io.StringIO()
    printer = PlainPrinter(out)
    for event in [
        agent_start_event(agent_name="assistant", prompt="Add 2 and 3", model="demo"),
        tool_start_event(tool_name="add", args={"a": 2, "b": 3}, tool_call_id="c1"),
        tool_end_event(tool_name="add", result=5, duration_seconds=0.002, tool_call_id="c1"),
        llm_chunk_event(text="It is "),
        llm_chunk_event(text="5."),
        agent_end_event(agent_name="assistant", total_iterations=2, duration_seconds=1.25),
    ]:
        printer.handle(event)
    assert out.getvalue().splitlines() == [
        "❯ Add 2 and 3",
        "  assistant · demo",
        "▸ add(a=2, b=3)",
        "✔ add · 2ms → 5",
        "",
        "It is 5.",
        "",
        "✔ succeeded · 2 steps · 1.2s",
    ]
    ```

    The printer folds every event into its own `state` (a `RunState`) before printing it.
    """

    def __init__(self, out: TextIO, *, quiet: bool = False, state: RunState | None = None) -> None:
        self.out = out
        self.quiet = quiet
        self.state = state if state is not None else RunState()
        self._in_text = False  # the last thing written was answer text without its closing newline
        self._after_text = False  # the last block written was answer text
        self._started = False
        self._plan_changed = False  # the top-level plan changed and has not been printed yet
        self._partial: dict[str, tuple[str, str]] = {}  # sub-agent text not yet ending in a newline

    def handle(self, event: AnyStreamEvent) -> None:
        """Fold `event` into `state` and print what it means."""
        self.state.apply(event)
        if self.quiet:
            if event.event_type is StreamEventType.LLM_CHUNK and event.depth == 0:
                self._write_text(event.data["text"])
            elif event.event_type is StreamEventType.AGENT_END and event.depth == 0 and self._in_text:
                self._write("\n")
                self._in_text = False
            return
        indent = "  " * event.depth
        if self._plan_changed and event.event_type is not StreamEventType.PLAN_UPDATE:
            self._plan_changed = False
            self._line(_plan_line(self.state))
        match event.event_type:
            case StreamEventType.AGENT_START if event.depth == 0:
                if prompt := event.data["prompt"]:
                    self._line(f"❯ {clip(prompt, 400)}")
                who = " · ".join(
                    part for part in (event.data.get("agent_name") or event.agent_name, event.data.get("model")) if part
                )
                if who:
                    self._line(f"  {who}")
            case StreamEventType.LLM_CHUNK if event.depth == 0:
                if not self._in_text:
                    self._flush_partials()
                    if self._started and not self._after_text:
                        self._write("\n")
                self._write_text(event.data["text"])
            case StreamEventType.LLM_CHUNK | StreamEventType.THINKING_CHUNK:
                label = "" if event.event_type is StreamEventType.LLM_CHUNK else "thinking: "
                self._sub_text(event.run_id, indent + ("│ " if event.depth else "  ") + label, event.data["text"])
            case StreamEventType.TOOL_START:
                self._line(
                    f"{indent}▸ {event.data['tool_name']}({clip(short_args(event.data.get('args') or {}, 40), 100)})"
                )
            case StreamEventType.TOOL_PROGRESS:
                if event.data.get("message") is not None or event.data.get("fraction") is not None:
                    percent = f" ({event.data['fraction']:.0%})" if event.data.get("fraction") is not None else ""
                    self._line(f"{indent}  · {clip(event.data.get('message') or '', 100)}{percent}")
            case StreamEventType.TOOL_END:
                duration = format_duration(event.data.get("duration_seconds"))
                timing = f" · {duration}" if duration else ""
                if (error := event.data["error"]) is not None:
                    self._line(f"{indent}✘ {event.data['tool_name']}{timing} · {clip(error, 120)}")
                else:
                    result = short_result(event.data.get("result"), 80)
                    self._line(f"{indent}✔ {event.data['tool_name']}{timing}" + (f" → {result}" if result else ""))
            case StreamEventType.APPROVAL_REQUIRED:
                reason = f": {event.data['reason']}" if event.data["reason"] else ""
                self._line(f"{indent}? {event.data['tool_name']} waits for approval{reason}")
            case StreamEventType.APPROVAL_RESOLVED:
                verdict = "approved" if event.data["approved"] else "denied"
                by = f" by {event.data['decided_by']}" if event.data["decided_by"] else ""
                edited = f" with {clip(short_args(event.data['args'], 40), 100)}" if event.data["args"] else ""
                self._line(f"{indent}  {verdict}{by}{edited}")
            case StreamEventType.RUN_RESUMED:
                resumed = event.data
                self._line(
                    f"⟲ resumed by {resumed['owner']} from step {resumed['from_step']}: the "
                    f"{resumed['void_events']} events above since #{resumed['void_after_seq']} are void, redone below"
                )
            case StreamEventType.GUARDRAIL:
                mark = {"warn": "⚠", "redact": "✎"}.get(event.data["action"], "■")
                self._line(
                    f"{indent}{mark} {event.data['kind']} {event.data['action']}: {clip(event.data['message'], 160)}"
                )
            case StreamEventType.PLAN_UPDATE if event.depth == 0:
                self._plan_changed = True
            case StreamEventType.PLAN_UPDATE:
                if event.data.get("action") == "deleted":
                    self._line(f"{indent}  plan − {clip(event.data.get('content') or '', 100)}")
                else:
                    mark = _PLAN_MARKS.get(event.data.get("status") or "", "•")
                    self._line(f"{indent}  plan {mark} {clip(event.data.get('content') or '', 100)}")
            case StreamEventType.FILE_CHANGE:
                self._line(f"{indent}  file {event.data['operation']} {event.data['path']}")
            case StreamEventType.SUBAGENT_START:
                self._line(f"{indent}↳ {event.data['subagent_name']}: {clip(event.data.get('task') or '', 100)}")
            case StreamEventType.SUBAGENT_END:
                mark = STATUS_MARKS["succeeded" if event.data.get("success") else "failed"]
                duration = format_duration(event.data.get("duration_seconds"))
                output = short_result(event.data.get("output"), 80)
                self._line(
                    f"{indent}↲ {event.data['subagent_name']} {mark}"
                    + (f" {duration}" if duration else "")
                    + (f" → {output}" if output else "")
                )
            case StreamEventType.ERROR if event.depth == 0:
                self._line(f"✘ {event.data.get('exception_type') or 'Error'}: {event.data['error']}")
            case StreamEventType.AGENT_END if event.depth == 0:
                self._flush_partials()
                if not self._in_text and not self._after_text:
                    self._write("\n")
                self._line(summary_line(self.state))
            case _:
                pass  # progress numbers reach the summary line; argument deltas are complete in `tool_start`

    def close(self) -> None:
        """End the last line, if the stream stopped in the middle of one (a log that ends before its run did)."""
        self._flush_partials()
        if self._in_text:
            self._write("\n")
            self._in_text = False

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _write_text(self, text: str) -> None:
        if text:
            self._write(text)
            self._in_text = not text.endswith("\n")
            self._after_text = True
            self._started = True

    def _line(self, line: str) -> None:
        self._flush_partials()
        if self._in_text:
            self._write("\n")
            self._in_text = False
        if self._after_text:
            self._write("\n")
            self._after_text = False
        self._write(line + "\n")
        self._started = True

    def _sub_text(self, run_id: str, prefix: str, text: str) -> None:
        _, pending = self._partial.get(run_id, (prefix, ""))
        *complete, rest = (pending + text).split("\n")
        if complete:
            self._partial.pop(run_id, None)
            for line in complete:
                self._line(f"{prefix}{line}".rstrip())
        if rest:
            self._partial[run_id] = (prefix, rest)

    def _flush_partials(self) -> None:
        partial, self._partial = self._partial, {}
        for prefix, rest in partial.values():
            self._line(f"{prefix}{rest}".rstrip())


def _plan_line(state: RunState) -> str:
    """The whole top-level plan on one line, printed once per change rather than once per step event."""
    steps = list(state.plan.values())
    done = sum(1 for step in steps if step.status == "completed")
    items = " · ".join(f"{_PLAN_MARKS.get(step.status, '•')} {clip(step.content, 60)}" for step in steps)
    return f"  plan {done}/{len(steps)}: {items}" if steps else "  plan cleared"
