"""`RunState`: everything known about one run, folded from its `StreamEvent`s.

The one fold of the stream: the terminal's live view and plain printer, replay, the server's run
status and the tests all read the same facts from it. It is a plain dataclass with one method that
matters, `apply(event)`; it keeps only the events since the run's last settled point (to drop them
when a `run_resumed` says they are void) and knows nothing about how it is shown. Times come from the
events' own timestamps, never from the clock, so a replayed log gives the same state as the run that wrote it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Never

from .types import AnyStreamEvent, GuardrailData, PlanUpdateData, StreamEvent, StreamEventType, ToolStartData

__all__ = (
    "ApprovalState",
    "CallStatus",
    "PlanStep",
    "RunPhase",
    "RunState",
    "SubagentActivity",
    "ToolCall",
    "settles",
)

_SETTLING = frozenset({StreamEventType.AGENT_START, StreamEventType.PROGRESS, StreamEventType.TOOL_END})


def settles(event: AnyStreamEvent) -> bool:
    """Whether the run's work up to `event` is settled: its start, a finished model request (`progress`) or a
    finished tool call of the top-level run. A durable run taken over goes on from its last settled point:
    a `run_resumed` voids only what came after one."""
    return event.depth == 0 and event.event_type in _SETTLING


CallStatus = Literal["running", "done", "failed"]
ApprovalState = Literal["waiting", "approved", "denied"]
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
    approval: ApprovalState | None = None
    """`waiting` while the call waits for a decision, then `approved` or `denied`; `None` if never asked."""
    approval_reason: str | None = None
    decided_by: str | None = None

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
    """One run as its events tell it, built by `apply`-ing them in order.

    ```python
    from pydantic_deep.streaming import RunState, agent_start_event, llm_chunk_event

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
    requests: int | None = None
    tool_calls: int | None = None
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
    last_seq: int | None = None
    guardrails: list[GuardrailData] = field(default_factory=list[GuardrailData])
    """Every `guardrail` event of the run, in order (budget warnings, blocks, redactions)."""
    resumed: int = 0
    """How many times the run was taken over by another process (`run_resumed` events)."""
    _calls: dict[tuple[str, str | None], ToolCall] = field(default_factory=dict[tuple[str, "str | None"], ToolCall])
    _settled: RunState | None = field(default=None, repr=False)
    """The state as of the last settled point (see `settles`), and the events applied since."""
    _since: list[AnyStreamEvent] = field(default_factory=list["AnyStreamEvent"], repr=False)

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

    def find_call(self, tool_call_id: str) -> ToolCall | None:
        """The call with this id, a sub-agent's included; where runs repeat an id (a sub-agent's model may
        number its calls as the parent's does), the one that asked for approval, if one did."""
        found: ToolCall | None = None
        for (_, call_id), call in self._calls.items():
            if call_id == tool_call_id:
                if call.approval is not None:
                    return call
                found = found or call
        return found

    def waiting_for_approval(self) -> list[ToolCall]:
        """The calls, sub-agents' included, that wait for a decision now."""
        return [call for call in self._calls.values() if call.approval == "waiting"]

    def running_calls(self) -> list[ToolCall]:
        """Every call still running, sub-agents' included."""
        return [call for call in self._calls.values() if call.ended_at is None]

    def apply(self, event: AnyStreamEvent) -> None:
        """Fold one event into the state."""
        if event.event_type is StreamEventType.RUN_RESUMED:
            self._resume(event.data["void_after_seq"])
        self._fold(event)
        if settles(event):
            self._settle()
        elif event.event_type is not StreamEventType.RUN_RESUMED:
            self._since.append(event)

    def _settle(self) -> None:
        self._settled, self._since = None, []
        snapshot = copy.deepcopy(self)
        self._settled = snapshot

    def _resume(self, void_after_seq: int) -> None:
        """Forget what the events after `void_after_seq` did (they are void), keeping the counts of events seen."""
        settled = self._settled
        if settled is None or settled.last_seq is None or settled.last_seq > void_after_seq:
            return
        kept = [event for event in self._since if event.seq <= void_after_seq]
        count, last_seq, last_at = self.event_count, self.last_seq, self.last_event_at
        restored = copy.deepcopy(settled)
        self.__dict__.update(restored.__dict__)
        self._settled, self._since = settled, []
        for event in kept:
            self.apply(event)
        self.event_count, self.last_seq, self.last_event_at = count, last_seq, last_at

    def _fold(self, event: AnyStreamEvent) -> None:
        self.event_count += 1
        self.last_seq = event.seq
        self.last_event_at = event.timestamp
        if self.started_at is None:
            self.started_at = event.timestamp
        top = event.depth == 0
        match event.event_type:
            case StreamEventType.AGENT_START:
                if top:
                    self.agent_name = event.data["agent_name"] or event.agent_name
                    self.model = event.data["model"]
                    self.prompt = event.data["prompt"]
                    self.run_id = event.run_id
                    self.phase = "running"
                    self.started_at = event.timestamp
            case StreamEventType.LLM_CHUNK:
                if top:
                    self.text += event.data["text"]
                else:
                    activity = self._subagent_of(event)
                    if activity is not None:
                        activity.text += event.data["text"]
            case StreamEventType.THINKING_CHUNK:
                if top:
                    self.thinking += event.data["text"]
            case StreamEventType.TOOL_ARGS_DELTA:
                pass  # the complete arguments arrive with `tool_start`
            case StreamEventType.TOOL_START:
                self._start_call(event, event.data)
            case StreamEventType.TOOL_PROGRESS:
                call = self._calls.get((event.run_id, event.data["tool_call_id"]))
                if call is not None:
                    call.progress = event.data["message"]
                    call.fraction = event.data["fraction"]
            case StreamEventType.TOOL_END:
                end = event.data
                call = self._calls.get((event.run_id, end["tool_call_id"]))
                if call is None:  # a log that starts mid-run: show the call as it ended
                    start = ToolStartData(tool_name=end["tool_name"], args={}, tool_call_id=end["tool_call_id"])
                    call = self._start_call(event, start)
                call.ended_at = event.timestamp
                call.duration_seconds = end["duration_seconds"]
                call.result = end["result"]
                call.error = end["error"]
            case StreamEventType.PROGRESS:
                if top:
                    progress = event.data
                    self.steps = progress["iteration"]
                    self.requests = progress["requests"]
                    self.tool_calls = progress["tool_calls"]
                    self.total_tokens = progress["total_tokens"]
                    self.input_tokens = progress["input_tokens"]
                    self.output_tokens = progress["output_tokens"]
                    self.total_cost_usd = progress["total_cost_usd"]
            case StreamEventType.PLAN_UPDATE:
                plan = self.plan if top else self._sub_plan(event)
                if plan is not None:
                    _update_plan(plan, event.data)
            case StreamEventType.FILE_CHANGE:
                self.files[event.data["path"]] = event.data["operation"]
            case StreamEventType.SUBAGENT_START:
                call = self._calls.get((event.run_id, event.data["tool_call_id"]))
                if call is not None:
                    call.subagent = SubagentActivity(name=event.data["subagent_name"], task=event.data["task"] or "")
            case StreamEventType.SUBAGENT_END:
                ended = event.data
                call = self._calls.get((event.run_id, ended["tool_call_id"]))
                if call is not None:
                    activity = call.subagent or SubagentActivity(name=ended["subagent_name"])
                    activity.status = "succeeded" if ended["success"] else "failed"
                    activity.output = ended["output"]
                    activity.duration_seconds = ended["duration_seconds"]
                    call.subagent = activity
            case StreamEventType.APPROVAL_REQUIRED:
                required = event.data
                call = self._calls.get((event.run_id, required["tool_call_id"]))
                if call is None:  # a log that starts mid-run
                    start = ToolStartData(
                        tool_name=required["tool_name"], args=required["args"], tool_call_id=required["tool_call_id"]
                    )
                    call = self._start_call(event, start)
                call.approval, call.approval_reason = "waiting", required["reason"]
            case StreamEventType.APPROVAL_RESOLVED:
                resolved = event.data
                call = self._calls.get((event.run_id, resolved["tool_call_id"]))
                if call is not None:
                    call.approval = "approved" if resolved["approved"] else "denied"
                    call.approval_reason = resolved["reason"] or call.approval_reason
                    call.decided_by = resolved["decided_by"]
                    if resolved["args"] is not None:
                        call.args = resolved["args"]
            case StreamEventType.GUARDRAIL:
                self.guardrails.append(event.data)
            case StreamEventType.RUN_RESUMED:
                self.resumed += 1
            case StreamEventType.ERROR:
                if top:
                    self.error = event.data["error"]
                    self.exception_type = event.data["exception_type"]
            case StreamEventType.AGENT_END:
                if top:
                    final = event.data
                    self.phase = final["status"]
                    self.duration_seconds = final["duration_seconds"]
                    self.output = final["output"]
                    self.steps = max(self.steps, final["total_iterations"] or 0)
                    if final["total_tokens"] is not None:
                        self.total_tokens = final["total_tokens"]
                    if final["total_cost_usd"] is not None:
                        self.total_cost_usd = final["total_cost_usd"]
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

    def _start_call(self, event: StreamEvent, start: ToolStartData) -> ToolCall:
        call = ToolCall(
            tool_name=start["tool_name"],
            tool_call_id=start["tool_call_id"],
            args=start["args"] or {},
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
        return call


def _newer_event_type(event_type: Never) -> None:
    """Pyright's exhaustiveness check; at run time an event type this version does not know is ignored."""


def _update_plan(plan: dict[str, PlanStep], data: PlanUpdateData) -> None:
    item_id = str(data["item_id"])
    if data["action"] == "deleted":
        plan.pop(item_id, None)
        return
    plan[item_id] = PlanStep(
        item_id=item_id,
        content=data["content"] or "",
        status=data["status"] or "pending",
        active_form=data["active_form"],
    )
