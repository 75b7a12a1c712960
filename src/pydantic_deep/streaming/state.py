"""`RunState`: everything the terminal shows about one run, folded from its `StreamEvent`s.

The state is a plain dataclass with one method that matters, `apply(event)`. It keeps no reference to
the events themselves and knows nothing about Rich, so the live view, the plain printer, replay and
the tests all read the same facts. Times come from the events' own timestamps, never from the clock,
so a replayed log gives the same state as the run that wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Never

from ..streaming.types import StreamEvent, StreamEventType

__all__ = ("PlanStep", "RunState", "SubagentActivity", "ToolCall")

CallStatus = Literal["running", "done", "failed"]
RunPhase = Literal["waiting", "running", "succeeded", "failed", "cancelled"]


@dataclass(kw_only=True)
class PlanStep:
    """One step of the agent's plan as the planning tools last left it."""

    item_id: str
    content: str
    status: str
    """`pending`, `in_progress`, `completed`, `cancelled` or `blocked` (the harness's `TaskStatus`)."""
    active_form: str | None = None


@dataclass(kw_only=True)
class SubagentActivity:
    """What a sub-agent started by a tool call is doing: its task, its text so far, how it ended."""

    name: str
    task: str = ""
    text: str = ""
    status: RunPhase = "running"
    output: str | None = None
    duration_seconds: float | None = None
    plan: dict[str, PlanStep] = field(default_factory=dict[str, PlanStep])


@dataclass(kw_only=True)
class ToolCall:
    """One tool call: its arguments, how long it has run, its result or error, and any sub-agent under it."""

    tool_name: str
    tool_call_id: str | None
    args: dict[str, Any]
    run_id: str
    depth: int
    started_at: datetime
    ended_at: datetime | None = None
    duration_seconds: float | None = None
    result: Any = None
    error: str | None = None
    progress: str | None = None
    """The last message the tool reported with `report_progress`."""
    fraction: float | None = None
    subagent: SubagentActivity | None = None
    children: list[ToolCall] = field(default_factory=list["ToolCall"])
    """Calls made by the sub-agent this call started, in the order they started."""

    @property
    def status(self) -> CallStatus:
        if self.ended_at is None:
            return "running"
        return "failed" if self.error is not None else "done"

    def elapsed(self, now: datetime) -> float:
        """Seconds this call took (its reported duration once ended) or has been running at `now`."""
        if self.ended_at is not None:
            if self.duration_seconds is not None:
                return self.duration_seconds
            return (self.ended_at - self.started_at).total_seconds()
        return max(0.0, (now - self.started_at).total_seconds())


@dataclass(kw_only=True)
class RunState:
    """The terminal's model of one run, built by `apply`-ing its events in order.

    ```python
    from pydantic_deep.cli import RunState
    from pydantic_deep.streaming import agent_start_event, llm_chunk_event

    state = RunState()
    for event in [agent_start_event(agent_name="assistant"), llm_chunk_event(text="Hi"), llm_chunk_event(text="!")]:
        state.apply(event)
    assert (state.phase, state.text) == ("running", "Hi!")
    ```

    Only the top-level run's text, plan and usage feed `text`, `plan` and the numbers; a sub-agent's
    events land on the `ToolCall` that started it (`ToolCall.subagent` and `ToolCall.children`).
    """

    agent_name: str | None = None
    model: str | None = None
    prompt: str | None = None
    run_id: str | None = None
    phase: RunPhase = "waiting"
    text: str = ""
    """The top-level answer so far, exactly as streamed."""
    thinking: str = ""
    tools: list[ToolCall] = field(default_factory=list[ToolCall])
    """Top-level tool calls in the order they started."""
    plan: dict[str, PlanStep] = field(default_factory=dict[str, PlanStep])
    files: dict[str, str] = field(default_factory=dict[str, str])
    """Path to the last operation on it (`write`, `edit`, `create_directory`)."""
    steps: int = 0
    total_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_cost_usd: float | None = None
    error: str | None = None
    exception_type: str | None = None
    output: Any = None
    started_at: datetime | None = None
    last_event_at: datetime | None = None
    duration_seconds: float | None = None
    """The run's own measure of its wall time, from `agent_end`."""
    event_count: int = 0
    _calls: dict[tuple[str, str | None], ToolCall] = field(default_factory=dict[tuple[str, "str | None"], ToolCall])

    @property
    def finished(self) -> bool:
        return self.phase in ("succeeded", "failed", "cancelled")

    def elapsed(self, now: datetime | None = None) -> float:
        """Seconds since the run started: its reported duration once finished, else up to `now` (or the last event)."""
        if self.duration_seconds is not None:
            return self.duration_seconds
        if self.started_at is None:
            return 0.0
        end = now if now is not None and not self.finished else self.last_event_at
        return max(0.0, ((end or self.started_at) - self.started_at).total_seconds())

    def running_calls(self) -> list[ToolCall]:
        """Every call still running, sub-agents' included."""
        return [call for call in self._calls.values() if call.ended_at is None]

    def apply(self, event: StreamEvent) -> None:
        """Fold one event into the state."""
        self.event_count += 1
        self.last_event_at = event.timestamp
        if self.started_at is None:
            self.started_at = event.timestamp
        data = event.data
        top = event.depth == 0
        match event.event_type:
            case StreamEventType.AGENT_START:
                if top:
                    self.agent_name = data.get("agent_name") or event.agent_name
                    self.model = data.get("model")
                    self.prompt = data.get("prompt")
                    self.run_id = event.run_id
                    self.phase = "running"
                    self.started_at = event.timestamp
            case StreamEventType.LLM_CHUNK:
                if top:
                    self.text += data["text"]
                else:
                    activity = self._subagent_of(event)
                    if activity is not None:
                        activity.text += data["text"]
            case StreamEventType.THINKING_CHUNK:
                if top:
                    self.thinking += data["text"]
            case StreamEventType.TOOL_ARGS_DELTA:
                pass  # the complete arguments arrive with `tool_start`
            case StreamEventType.TOOL_START:
                self._start_call(event)
            case StreamEventType.TOOL_PROGRESS:
                call = self._calls.get((event.run_id, data.get("tool_call_id")))
                if call is not None:
                    call.progress = data.get("message")
                    call.fraction = data.get("fraction")
            case StreamEventType.TOOL_END:
                self._end_call(event)
            case StreamEventType.PROGRESS:
                if top:
                    self.steps = data["iteration"]
                    self.total_tokens = data.get("total_tokens")
                    self.input_tokens = data.get("input_tokens")
                    self.output_tokens = data.get("output_tokens")
                    self.total_cost_usd = data.get("total_cost_usd")
            case StreamEventType.PLAN_UPDATE:
                plan = self.plan if top else self._sub_plan(event)
                if plan is not None:
                    _update_plan(plan, data)
            case StreamEventType.FILE_CHANGE:
                self.files[data["path"]] = data["operation"]
            case StreamEventType.SUBAGENT_START:
                call = self._calls.get((event.run_id, data.get("tool_call_id")))
                if call is not None:
                    call.subagent = SubagentActivity(name=data["subagent_name"], task=data.get("task") or "")
            case StreamEventType.SUBAGENT_END:
                call = self._calls.get((event.run_id, data.get("tool_call_id")))
                if call is not None:
                    activity = call.subagent or SubagentActivity(name=data["subagent_name"])
                    activity.status = "succeeded" if data.get("success") else "failed"
                    activity.output = data.get("output")
                    activity.duration_seconds = data.get("duration_seconds")
                    call.subagent = activity
            case StreamEventType.ERROR:
                if top:
                    self.error = data["error"]
                    self.exception_type = data.get("exception_type")
            case StreamEventType.AGENT_END:
                if top:
                    self.phase = data["status"]
                    self.duration_seconds = data.get("duration_seconds")
                    self.output = data.get("output")
                    self.steps = max(self.steps, data.get("total_iterations") or 0)
                    if data.get("total_tokens") is not None:
                        self.total_tokens = data["total_tokens"]
                    if data.get("total_cost_usd") is not None:
                        self.total_cost_usd = data["total_cost_usd"]
            case _:  # pragma: no cover - pyright proves every type is handled above
                _newer_event_type(event.event_type)

    def _parent_call(self, event: StreamEvent) -> ToolCall | None:
        if event.parent_run_id is None:
            return None
        return self._calls.get((event.parent_run_id, event.parent_tool_call_id))

    def _subagent_of(self, event: StreamEvent) -> SubagentActivity | None:
        parent = self._parent_call(event)
        if parent is None:
            return None
        if parent.subagent is None:  # a delegation that announced no `subagent_start`
            parent.subagent = SubagentActivity(name=event.agent_name or "sub-agent")
        return parent.subagent

    def _sub_plan(self, event: StreamEvent) -> dict[str, PlanStep] | None:
        activity = self._subagent_of(event)
        return activity.plan if activity is not None else None

    def _start_call(self, event: StreamEvent) -> None:
        data = event.data
        call = ToolCall(
            tool_name=data["tool_name"],
            tool_call_id=data.get("tool_call_id"),
            args=data.get("args") or {},
            run_id=event.run_id,
            depth=event.depth,
            started_at=event.timestamp,
        )
        self._calls[(event.run_id, call.tool_call_id)] = call
        parent = self._parent_call(event) if event.depth > 0 else None
        if parent is not None:
            parent.children.append(call)
        else:
            self.tools.append(call)

    def _end_call(self, event: StreamEvent) -> None:
        data = event.data
        call = self._calls.get((event.run_id, data.get("tool_call_id")))
        if call is None:  # a log that starts mid-run: show the call as it ended
            self._start_call(
                StreamEvent(
                    event_type=StreamEventType.TOOL_START,
                    data={"tool_name": data["tool_name"], "args": {}, "tool_call_id": data.get("tool_call_id")},
                    timestamp=event.timestamp,
                    run_id=event.run_id,
                    parent_run_id=event.parent_run_id,
                    parent_tool_call_id=event.parent_tool_call_id,
                    depth=event.depth,
                )
            )
            call = self._calls[(event.run_id, data.get("tool_call_id"))]
        call.ended_at = event.timestamp
        call.duration_seconds = data.get("duration_seconds")
        call.result = data.get("result")
        call.error = data.get("error")


def _newer_event_type(event_type: Never) -> None:
    """Pyright's exhaustiveness check; at run time an event type this version does not know is ignored."""


def _update_plan(plan: dict[str, PlanStep], data: dict[str, Any]) -> None:
    item_id = str(data["item_id"])
    if data.get("action") == "deleted":
        plan.pop(item_id, None)
        return
    plan[item_id] = PlanStep(
        item_id=item_id,
        content=data.get("content") or "",
        status=data.get("status") or "pending",
        active_form=data.get("active_form"),
    )
