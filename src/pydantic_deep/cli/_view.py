"""`RunView`: the Rich renderable of a `RunState`, shared by the live view, replay and tests.

The view is rebuilt from the state on every render (the Rich way: one `Live` whose renderable reads
state), so it holds no copy of what it shows. Everything time-dependent (spinner frame, elapsed time of
a running call) is computed from `clock()`, which defaults to the time of the last event: rendering a
finished run, or a run in a test, gives the same text every time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.markdown import Markdown
from rich.panel import Panel
from rich.segment import Segment
from rich.text import Text

from ..streaming.state import PlanStep, RunState, SubagentActivity, ToolCall
from ..streaming.types import GuardrailData
from ._format import STATUS_MARKS, clip, format_duration, short_args, short_result, summary_line

__all__ = ("RunView",)

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"  # Rich's "dots" spinner, drawn from `clock()` so a render is reproducible
_FRAME_SECONDS = 0.08

_PLAN_MARKS = {
    "completed": ("✔", "green"),
    "in_progress": ("◐", "yellow"),
    "pending": ("○", "dim"),
    "cancelled": ("✘", "dim"),
    "blocked": ("■", "red"),
}
_RUN_STYLES = {"waiting": "yellow", "running": "yellow", "succeeded": "green", "failed": "red", "cancelled": "magenta"}
_MIN_ANSWER_LINES = 6


class RunView:
    """A Rich renderable showing one run: plan, tool calls (sub-agents nested under theirs), answer, footer.

    ```python
    import io

    from rich.console import Console

    from pydantic_deep.cli import RunState, RunView
    from pydantic_deep.streaming import agent_end_event, agent_start_event, llm_chunk_event

    state = RunState()
    for event in [
        agent_start_event(agent_name="assistant", prompt="Say hi", model="demo"),
        llm_chunk_event(text="Hi **there**"),
        agent_end_event(agent_name="assistant", total_iterations=1, duration_seconds=0.5),
    ]:
        state.apply(event)
    console = Console(file=io.StringIO(), width=40)
    console.print(RunView(state))
    assert console.file.getvalue().splitlines()[-1] == "✔ succeeded · 1 step · 500ms"
    ```

    `clock` gives "now" for running calls and the spinner; it defaults to the last event's time.
    With `fit_height=True` the view keeps within the console's height (the live view): the answer
    shows its latest lines and the tool list its latest calls. `notice` is shown in the footer
    (e.g. "cancelling…").
    """

    def __init__(
        self,
        state: RunState,
        *,
        clock: Callable[[], datetime] | None = None,
        fit_height: bool = False,
        notice: str | None = None,
    ) -> None:
        self.state = state
        self.clock = clock
        self.fit_height = fit_height
        self.notice = notice

    def now(self) -> datetime | None:
        if self.clock is not None and not self.state.finished:
            return self.clock()
        return self.state.last_event_at

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        state = self.state
        now = self.now()
        frame = _spinner_frame(now)
        header = _header(state)
        plan = _plan_panel(state.plan, frame, running=not state.finished) if state.plan else None
        tool_lines = _tool_lines(state.tools, now, frame) + [_guardrail_line(note) for note in state.guardrails[-3:]]
        error = _error_panel(state) if state.error else None
        footer = _footer(state, now, frame, self.notice)

        budget: int | None = None
        if self.fit_height:
            height = options.max_height - 1  # a full-height live region makes the terminal scroll
            fixed = (len(header.split("\n")) if header else 0) + 1  # header and footer
            fixed += len(state.plan) + 2 if plan is not None else 0
            fixed += _measure(console, options, error) if error is not None else 0
            tools_height = len(tool_lines) + 2 if tool_lines else 0
            answer_lines = _answer_height(console, options, state) if state.text else 0
            spare = height - fixed - tools_height - (answer_lines + 2 if answer_lines else 0)
            if spare < 0 and tool_lines:
                # Make room for (the start of) the answer by hiding the oldest tool lines; keep the latest one.
                reserve = min(answer_lines, _MIN_ANSWER_LINES) + 2 if answer_lines else 0
                keep = max(2, len(tool_lines) + min(0, height - fixed - tools_height - reserve))
                if keep < len(tool_lines):
                    hidden = len(tool_lines) - keep + 1
                    tool_lines = [Text(f"… {hidden} earlier lines", style="dim"), *tool_lines[-(keep - 1) :]]
                tools_height = len(tool_lines) + 2
            budget = max(1, height - fixed - tools_height - 2)

        parts: list[RenderableType] = []
        if header is not None:
            parts.append(header)
        if plan is not None:
            parts.append(plan)
        if tool_lines:
            parts.append(_tools_panel(state, tool_lines))
        answer = _answer_panel(console, options, state, budget)
        if answer is not None:
            parts.append(answer)
        if error is not None:
            parts.append(error)
        parts.append(footer)
        yield Group(*parts)


def _spinner_frame(now: datetime | None) -> str:
    if now is None:
        return _FRAMES[0]
    return _FRAMES[int(now.timestamp() / _FRAME_SECONDS) % len(_FRAMES)]


def _header(state: RunState) -> Text | None:
    if state.prompt is None and state.agent_name is None:
        return None
    text = Text()
    if state.prompt:
        text.append("❯ ", style="bold cyan")
        text.append(clip(state.prompt, 400), style="bold")
        text.append("\n")
    who = " · ".join(part for part in (state.agent_name, state.model) if part)
    text.append(f"  {who}", style="dim")
    return text


def _plan_panel(plan: dict[str, PlanStep], frame: str, *, running: bool) -> Panel:
    lines: list[Text] = []
    for step in plan.values():
        mark, style = _PLAN_MARKS.get(step.status, ("•", ""))
        if step.status == "in_progress":
            line = Text(f"{frame if running else mark} ", style="yellow")
            line.append(step.active_form or step.content, style="bold")
        else:
            line = Text(f"{mark} ", style=style)
            line.append(step.content, style="dim strike" if step.status == "cancelled" else "")
        line.no_wrap, line.overflow = True, "ellipsis"
        lines.append(line)
    done = sum(1 for step in plan.values() if step.status == "completed")
    return Panel(Group(*lines), title=f"Plan {done}/{len(plan)}", title_align="left", border_style="blue")


def _tool_lines(calls: Iterable[ToolCall], now: datetime | None, frame: str, indent: int = 0) -> list[Text]:
    lines: list[Text] = []
    for call in calls:
        lines.append(_call_line(call, now, frame, indent))
        if call.subagent is not None:
            lines.extend(_subagent_lines(call, call.subagent, now, frame, indent + 2))
        elif call.children:
            lines.extend(_tool_lines(call.children, now, frame, indent + 2))
    return lines


def _call_line(call: ToolCall, now: datetime | None, frame: str, indent: int) -> Text:
    line = Text(" " * indent, no_wrap=True, overflow="ellipsis")
    status = call.status
    if status == "running":
        line.append(f"{frame} ", style="yellow")
    elif status == "failed":
        line.append("✘ ", style="bold red")
    else:
        line.append("✔ ", style="green")
    line.append(call.tool_name, style="bold")
    line.append(f"({clip(short_args(call.args, 48), 80)})", style="dim")
    elapsed = call.elapsed(now) if now is not None else call.duration_seconds
    if elapsed is not None:
        line.append(f" · {format_duration(elapsed)}", style="yellow" if status == "running" else "cyan")
    if status == "running" and call.approval == "waiting":
        reason = f": {clip(call.approval_reason, 60)}" if call.approval_reason else ""
        line.append(f" · waits for approval{reason}", style="bold magenta")
    elif status == "running" and call.progress is not None:
        percent = f" ({call.fraction:.0%})" if call.fraction is not None else ""
        line.append(f" · {clip(call.progress, 60)}{percent}", style="yellow")
    elif status == "failed":
        line.append(f" · {clip(call.error or '', 80)}", style="red")
    else:
        result = short_result(call.result)
        if result:
            line.append(f" → {result}", style="dim")
    return line


def _subagent_lines(
    call: ToolCall, activity: SubagentActivity, now: datetime | None, frame: str, indent: int
) -> list[Text]:
    head = Text(" " * indent + "↳ ", style="magenta", no_wrap=True, overflow="ellipsis")
    head.append(activity.name, style="bold magenta")
    if activity.task:
        head.append(f": {clip(activity.task, 80)}", style="magenta")
    lines = [head, *_tool_lines(call.children, now, frame, indent + 2)]
    if activity.status == "running":
        tail = activity.text.rstrip().splitlines()[-1] if activity.text.strip() else ""
        if tail:
            lines.append(
                Text(" " * (indent + 2) + "│ " + clip(tail, 200), style="italic dim", no_wrap=True, overflow="ellipsis")
            )
    else:
        mark = STATUS_MARKS[activity.status]
        end = Text(" " * indent + f"↲ {activity.name} {mark} ", style="magenta", no_wrap=True, overflow="ellipsis")
        if activity.duration_seconds is not None:
            end.append(format_duration(activity.duration_seconds), style="cyan")
        output = short_result(activity.output)
        if output:
            end.append(f" → {output}", style="dim")
        lines.append(end)
    return lines


def _tools_panel(state: RunState, lines: list[Text]) -> Panel:
    count = _count_calls(state.tools)
    subtitle = None
    if state.files:
        names = ", ".join(state.files)
        subtitle = Text(clip(f"files: {names}", 70), style="dim")
    return Panel(
        Group(*lines),
        title=f"Tools ({count})",
        title_align="left",
        subtitle=subtitle,
        subtitle_align="right",
        border_style="cyan",
    )


def _count_calls(calls: list[ToolCall]) -> int:
    return sum(1 + _count_calls(call.children) for call in calls)


def _answer_renderable(state: RunState) -> RenderableType:
    return Markdown(state.text)


def _answer_height(console: Console, options: ConsoleOptions, state: RunState) -> int:
    return len(console.render_lines(_answer_renderable(state), options.update(width=options.max_width - 4), pad=False))


def _answer_panel(console: Console, options: ConsoleOptions, state: RunState, budget: int | None) -> Panel | None:
    style = "green" if state.phase == "succeeded" else "white"
    if state.text:
        body: RenderableType = _answer_renderable(state)
        title = "Answer"
        if budget is not None:
            lines = console.render_lines(body, options.update(width=options.max_width - 4), pad=False)
            if len(lines) > budget:
                title = f"Answer (last {budget} of {len(lines)} lines)"
                body = _Lines(lines[-budget:])
        return Panel(body, title=title, title_align="left", border_style=style)
    if state.thinking and not state.finished:
        tail = state.thinking.rstrip().splitlines()[-3:]
        return Panel(
            Text("\n".join(tail), style="italic dim"), title="Thinking", title_align="left", border_style="dim"
        )
    return None


def _error_panel(state: RunState) -> Panel:
    label = f"{state.exception_type}: " if state.exception_type else ""
    return Panel(Text(f"{label}{state.error}", style="red"), title="Error", title_align="left", border_style="red")


def _guardrail_line(note: GuardrailData) -> Text:
    """A guardrail's decision under the tool calls: a budget warning, a redaction, a refusal or a stop."""
    action = note["action"]
    mark, style = {"warn": ("⚠", "yellow"), "redact": ("✎", "cyan")}.get(action, ("■", "bold red"))
    line = Text(f"{mark} {note['kind']} {action}", style=style, no_wrap=True, overflow="ellipsis")
    line.append(f" · {clip(note['message'], 100)}", style="dim")
    return line


def _footer(state: RunState, now: datetime | None, frame: str, notice: str | None) -> Text:
    if state.finished:
        text = Text(summary_line(state), style=f"bold {_RUN_STYLES[state.phase]}")
    else:
        text = Text(f"{frame} ", style="yellow")
        text.append(summary_line(state, now), style="yellow")
    if notice:
        text.append(f" · {notice}", style="bold magenta")
    return text


def _measure(console: Console, options: ConsoleOptions, renderable: RenderableType) -> int:
    return len(console.render_lines(renderable, options, pad=False))


class _Lines:
    """Already rendered lines, so the live view can show only the tail of a long answer."""

    def __init__(self, lines: list[list[Segment]]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        newline = Segment.line()
        for line in self.lines:
            yield from line
            yield newline
