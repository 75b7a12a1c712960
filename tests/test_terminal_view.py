"""The terminal renderers: `RunState` folds events, `RunView` and `PlainPrinter` show them as text.

The events come from a real scripted deep-agent run (plan, tools, a sub-agent, a failing tool and a
model error; see `_terminal_helpers`) with fixed timestamps, and the rendered text is compared whole.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import types
from datetime import timedelta

import pytest
from rich.console import Console

from _terminal_helpers import START, scripted_events
from pydantic_deep import cli
from pydantic_deep.cli import PlainPrinter, RunState, RunView, summary_line
from pydantic_deep.streaming import (
    ApprovalRequiredData,
    GuardrailData,
    RunResumedData,
    StreamEvent,
    StreamEventType,
    agent_end_event,
    agent_start_event,
    llm_chunk_event,
    progress_event,
    tool_start_event,
)


def fold(events: list[StreamEvent]) -> RunState:
    state = RunState()
    for event in events:
        state.apply(event)
    return state


def render(state: RunState, *, width: int = 100, height: int | None = None, fit_height: bool = False) -> str:
    console = Console(file=io.StringIO(), width=width, height=height)
    console.print(RunView(state, fit_height=fit_height))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in output.splitlines())


@pytest.fixture
async def events() -> list[StreamEvent]:
    return await scripted_events()


async def test_scripted_run_events_are_what_the_view_is_built_from(events: list[StreamEvent]) -> None:
    assert [(e.event_type.value, e.depth) for e in events] == [
        ("agent_start", 0),
        ("progress", 0),
        ("tool_start", 0),
        ("plan_update", 0),
        ("plan_update", 0),
        ("plan_update", 0),
        ("tool_end", 0),
        ("progress", 0),
        ("tool_start", 0),
        ("subagent_start", 0),
        ("tool_start", 1),
        ("tool_end", 1),
        ("llm_chunk", 1),
        ("llm_chunk", 1),
        ("subagent_end", 0),
        ("tool_end", 0),
        ("progress", 0),
        ("tool_start", 0),
        ("tool_end", 0),
        ("llm_chunk", 0),
        ("llm_chunk", 0),
        ("error", 0),
        ("agent_end", 0),
    ]


async def test_finished_run_renders_plan_tools_subagent_answer_and_error(events: list[StreamEvent]) -> None:
    assert render(fold(events)) == (
        """\
❯ Why does streaming matter?
  lead · function:function::lead
╭─ Plan 0/3 ───────────────────────────────────────────────────────────────────────────────────────╮
│ ◐ Researching the topic                                                                          │
│ ○ Check the numbers                                                                              │
│ ○ Write the answer                                                                               │
╰──────────────────────────────────────────────────────────────────────────────────────────────────╯
╭─ Tools (4) ──────────────────────────────────────────────────────────────────────────────────────╮
│ ✔ write_plan(items=[3 items]) · 250ms → Plan updated: 3 step(s).                                 │
│ ✔ delegate_task(agent_name='researcher', task='Find why streaming matters') · 250ms → Users see… │
│   ↳ researcher: Find why streaming matters                                                       │
│     ✔ search(query='why streaming matters') · 250ms → 3 sources about why streaming matters      │
│   ↲ researcher ✔ 1.5s → Users see progress at once.                                              │
│ ✘ fetch_stats(url='https://example.com/stats') · 250ms · https://example.com/stats answered 503  │
╰──────────────────────────────────────────────────────────────────────────────────────────────────╯
╭─ Answer ─────────────────────────────────────────────────────────────────────────────────────────╮
│ Streaming matters because users see work as it happens.                                          │
╰──────────────────────────────────────────────────────────────────────────────────────────────────╯
╭─ Error ──────────────────────────────────────────────────────────────────────────────────────────╮
│ ModelConnectionLost: connection to the model was lost                                            │
╰──────────────────────────────────────────────────────────────────────────────────────────────────╯
✘ failed · 3 steps · 380 tokens · 4.2s"""
    )


async def test_running_view_shows_spinners_elapsed_time_and_the_subagent_at_work(events: list[StreamEvent]) -> None:
    # Up to the sub-agent's first line of text: the delegation is still running, 0.4s after it started.
    assert render(fold(events[:13])) == (
        """\
❯ Why does streaming matter?
  lead · function:function::lead
╭─ Plan 0/3 ───────────────────────────────────────────────────────────────────────────────────────╮
│ ⠧ Researching the topic                                                                          │
│ ○ Check the numbers                                                                              │
│ ○ Write the answer                                                                               │
╰──────────────────────────────────────────────────────────────────────────────────────────────────╯
╭─ Tools (3) ──────────────────────────────────────────────────────────────────────────────────────╮
│ ✔ write_plan(items=[3 items]) · 250ms → Plan updated: 3 step(s).                                 │
│ ⠧ delegate_task(agent_name='researcher', task='Find why streaming matters') · 400ms              │
│   ↳ researcher: Find why streaming matters                                                       │
│     ✔ search(query='why streaming matters') · 250ms → 3 sources about why streaming matters      │
│     │ Users see progress at once.                                                                │
╰──────────────────────────────────────────────────────────────────────────────────────────────────╯
⠧ running · step 3 · 143 tokens · 1.2s"""
    )


async def test_plain_printer_streams_one_line_per_happening(events: list[StreamEvent]) -> None:
    out = io.StringIO()
    printer = PlainPrinter(out)
    for event in events:
        printer.handle(event)
    assert out.getvalue() == (
        """\
❯ Why does streaming matter?
  lead · function:function::lead
▸ write_plan(items=[3 items])
  plan 0/3: ◐ Research the topic · ○ Check the numbers · ○ Write the answer
✔ write_plan · 250ms → Plan updated: 3 step(s).
▸ delegate_task(agent_name='researcher', task='Find why streaming matters')
↳ researcher: Find why streaming matters
  ▸ search(query='why streaming matters')
  ✔ search · 250ms → 3 sources about why streaming matters
  │ Users see progress at once.
  │ They can stop a run that goes wrong.
↲ researcher ✔ 1.5s → Users see progress at once.
✔ delegate_task · 250ms → Users see progress at once.
▸ fetch_stats(url='https://example.com/stats')
✘ fetch_stats · 250ms · https://example.com/stats answered 503

Streaming matters because users see work as it happens.

✘ ModelConnectionLost: connection to the model was lost

✘ failed · 3 steps · 380 tokens · 4.2s
"""
    )
    assert printer.state.phase == "failed"


async def test_quiet_printer_prints_only_the_answer(events: list[StreamEvent]) -> None:
    out = io.StringIO()
    printer = PlainPrinter(out, quiet=True)
    for event in events:
        printer.handle(event)
    assert out.getvalue() == "Streaming matters because users see work as it happens.\n"


async def test_state_keeps_the_tree_of_calls(events: list[StreamEvent]) -> None:
    state = fold(events)
    assert [(c.tool_name, c.status) for c in state.tools] == [
        ("write_plan", "done"),
        ("delegate_task", "done"),
        ("fetch_stats", "failed"),
    ]
    delegate = state.tools[1]
    assert delegate.subagent is not None
    assert (delegate.subagent.name, delegate.subagent.status, delegate.subagent.text) == (
        "researcher",
        "succeeded",
        "Users see progress at once.\nThey can stop a run that goes wrong.",
    )
    assert [(c.tool_name, c.depth, c.result) for c in delegate.children] == [
        ("search", 1, "3 sources about why streaming matters")
    ]
    assert [(s.content, s.status) for s in state.plan.values()] == [
        ("Research the topic", "in_progress"),
        ("Check the numbers", "pending"),
        ("Write the answer", "pending"),
    ]
    assert (state.phase, state.steps, state.total_tokens, state.exception_type) == (
        "failed",
        3,
        380,
        "ModelConnectionLost",
    )
    assert state.running_calls() == []


async def test_view_of_a_replayed_log_is_the_same(events: list[StreamEvent]) -> None:
    replayed = [StreamEvent.from_json(event.to_json()) for event in events]
    assert render(fold(replayed)) == render(fold(events))


async def test_live_view_keeps_within_the_terminal_height(events: list[StreamEvent]) -> None:
    # The same moment as the full view above, on a 16-line terminal: the oldest tool lines give way.
    text = render(fold(events[:21]), height=16, fit_height=True)
    lines = text.splitlines()
    assert len(lines) == 15
    assert lines[8:10] == [
        "│ … 5 earlier lines                                                                                │",
        "│ ✘ fetch_stats(url='https://example.com/stats') · 250ms · https://example.com/stats answered 503  │",
    ]
    assert lines[12] == (
        "│ Streaming matters because users see work as it happens.                                          │"
    )
    assert lines[-1] == "⠧ running · step 4 · 320 tokens · 2.0s"


def test_live_view_shows_the_latest_lines_of_a_long_answer() -> None:
    events = [
        agent_start_event(agent_name="a", prompt="Count"),
        *(llm_chunk_event(text=f"line {n}\n\n") for n in range(1, 31)),
    ]
    state = fold([dataclasses.replace(e, timestamp=START + timedelta(seconds=i)) for i, e in enumerate(events)])
    assert render(state, width=40, height=12, fit_height=True) == (
        """\
❯ Count
  a
╭─ Answer (last 6 of 59 lines) ────────╮
│                                      │
│ line 28                              │
│                                      │
│ line 29                              │
│                                      │
│ line 30                              │
╰──────────────────────────────────────╯
⠧ running · step 1 · 30.0s"""
    )
    # Without fitting (the final picture, and replay --instant), all of it.
    assert render(state, width=40).count("line ") == 30


def test_summary_line_says_running_then_how_it_ended() -> None:
    state = fold([agent_start_event(agent_name="a")])
    assert summary_line(state) == "running · step 1 · 0ms"


@pytest.mark.parametrize("name", ["RunState", "RunView", "PlainPrinter"])
def test_docstring_example_runs(name: str) -> None:
    doc = inspect.getdoc(getattr(cli, name)) or ""
    blocks = re.findall(r"```python\n(.*?)```", doc, re.DOTALL)
    assert blocks, f"{name} has no example"
    for block in blocks:
        exec(compile(block, f"<{name} docstring>", "exec"), types.ModuleType("example").__dict__)


def test_unknown_and_partial_events_do_not_break_the_state() -> None:
    # A log that starts mid-run: a tool ends that never started, then text.
    end = StreamEvent(
        event_type=StreamEventType.TOOL_END,
        data={"tool_name": "read_file", "tool_call_id": "x", "result": "ok", "duration_seconds": 0.5, "error": None},
    )
    state = fold([end, llm_chunk_event(text="done")])
    assert [(c.tool_name, c.status, c.duration_seconds) for c in state.tools] == [("read_file", "done", 0.5)]
    assert state.text == "done" and state.phase == "waiting"


def test_a_call_waiting_for_approval_and_the_guardrails_show_under_the_tools() -> None:
    redacted: GuardrailData = {
        "kind": "input",
        "action": "redact",
        "metric": None,
        "limit": None,
        "used": None,
        "message": "input redacted by no_names",
    }
    asked: ApprovalRequiredData = {
        "tool_call_id": "c1",
        "tool_name": "launch",
        "args": {"target": "moon"},
        "reason": "launches cost money",
    }
    state = fold(
        [
            agent_start_event(agent_name="a", prompt="launch it"),
            tool_start_event(tool_name="launch", args={"target": "moon"}, tool_call_id="c1"),
            StreamEvent(event_type=StreamEventType.GUARDRAIL, data=redacted, seq=2),
            StreamEvent(event_type=StreamEventType.APPROVAL_REQUIRED, data=asked, seq=3),
        ]
    )
    shown = render(state)
    assert re.search(r"launch\(target='moon'\) · \S+ · waits for approval: launches cost money", shown)
    assert "✎ input redact · input redacted by no_names" in shown


def _taken_over_run() -> list[StreamEvent]:
    """A durable run's events: half an answer, then `run_resumed` voids it and the answer comes whole."""
    resumed = StreamEvent(
        event_type=StreamEventType.RUN_RESUMED,
        data=RunResumedData(from_step=1, void_after_seq=1, void_events=1, owner="web2:41:ab12cd", attempt=2),
    )
    events: list[StreamEvent] = [
        agent_start_event(agent_name="lead", prompt="Why?", model="test"),
        progress_event(iteration=1),
        llm_chunk_event(text="Because users "),
        resumed,
        llm_chunk_event(text="Because users "),
        llm_chunk_event(text="see progress."),
        progress_event(iteration=2),
        agent_end_event(agent_name="lead", output="Because users see progress.", duration_seconds=1.0),
    ]
    for seq, event in enumerate(events):
        event.seq = seq
        event.timestamp = START + timedelta(seconds=seq / 10)
    return events


def test_the_views_show_an_answer_a_takeover_redid_once() -> None:
    state = fold(_taken_over_run())
    assert (state.text, state.resumed) == ("Because users see progress.", 1)
    view = render(state)
    assert view.count("Because users") == 1 and "Because users see progress." in view
    out = io.StringIO()
    printer = PlainPrinter(out)
    for event in _taken_over_run():
        printer.handle(event)
    # Printed lines cannot be taken back: the plain output says which text was void, then the answer.
    assert (
        "⟲ resumed by web2:41:ab12cd from step 1: the 1 events above since #1 are void, redone below\n"
        "\nBecause users see progress.\n"
    ) in out.getvalue()
