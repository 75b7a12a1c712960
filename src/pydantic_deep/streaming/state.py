"""`RunState`: everything known about one run, folded from its `StreamEvent`s.

The one fold of the stream: the terminal's live view and plain printer, replay, the server's run
status and the tests all read the same facts from it. It is a plain dataclass with one method that
matters, `apply(event)`; it keeps only the events since the run's last settled point (to drop them
when a `run_resumed` says they are void) and knows nothing about how it is shown. Times come from the
events' own timestamps, never from the clock, so a replayed log gives the same state as the run that wrote it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
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
    _open: dict[tuple[str, str | None], ToolCall] = field(default_factory=dict[tuple[str, "str | None"], ToolCall])
    _settled: _Snapshot | None = field(default=None, repr=False)
    """What a `run_resumed` needs to go back to the last settled point (see `settles`), with the `_journal`
    of the dict entries changed since (the dict, the key, the value before)."""
    _journal: list[tuple[dict[Any, Any], Any, Any]] = field(default_factory=list[tuple[dict[Any, Any], Any, Any]])

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
        return list(self._open.values())

    def apply(self, event: AnyStreamEvent) -> None:
        """Fold one event into the state."""
        if event.event_type is StreamEventType.RUN_RESUMED:
            self._resume(event.data["void_after_seq"])
        self._fold(event)
        if settles(event):
            self._settled = _Snapshot.of(self)
            self._journal.clear()

    def _set(self, entries: dict[Any, Any], key: Any, value: Any) -> None:
        """`entries[key] = value` (`_DELETED`: removed), journaled while a settled point may be gone back to."""
        if self._settled is not None:
            self._journal.append((entries, key, entries.get(key, _DELETED)))
        if value is _DELETED:
            entries.pop(key, None)
        else:
            entries[key] = value

    def _resume(self, void_after_seq: int) -> None:
        """Forget what the events after `void_after_seq` did (they are void), keeping the counts of events seen."""
        settled = self._settled
        if settled is None or settled.seq != void_after_seq:
            return  # no snapshot of that point (the state began after it): nothing known to take back
        settled.restore(self)

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
                self._set(self._open, (event.run_id, end["tool_call_id"]), _DELETED)
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
                if top:
                    item_id = str(event.data["item_id"])
                    self._set(
                        self.plan, item_id, _plan_step(event.data) if event.data["action"] != "deleted" else _DELETED
                    )
                elif (plan := self._sub_plan(event)) is not None:
                    _update_plan(plan, event.data)
            case StreamEventType.FILE_CHANGE:
                self._set(self.files, event.data["path"], event.data["operation"])
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
        self._set(self._calls, (event.run_id, call.tool_call_id), call)
        self._set(self._open, (event.run_id, call.tool_call_id), call)
        parent = self._parent_call(event) if event.depth > 0 else None
        if parent is not None:
            parent.children.append(call)
        else:
            self.tools.append(call)
        return call


_SCALARS = (
    "agent_name", "model", "prompt", "run_id", "phase", "text", "thinking", "steps", "requests", "tool_calls",
    "total_tokens", "input_tokens", "output_tokens", "total_cost_usd", "error", "exception_type", "output",
    "duration_seconds",
)  # fmt: skip


_scalars = attrgetter(*_SCALARS)
_DELETED: Any = object()


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """A `RunState` at a settled point, in what events after it can change: its values, how long its lists
    were, and whole copies of the calls running then (the only objects from before it that later events
    change); the dict entries changed after it are in the state's journal. Taking one costs as many calls
    as are running, not the size of the run."""

    seq: int | None
    values: tuple[Any, ...]
    tools: int
    guardrails: int
    running: list[tuple[ToolCall, dict[str, Any], list[ToolCall], SubagentActivity | None]]

    @classmethod
    def of(cls, state: RunState) -> _Snapshot:
        return cls(
            seq=state.last_seq,
            values=_scalars(state),
            tools=len(state.tools),
            guardrails=len(state.guardrails),
            running=[
                (call, dict(call.__dict__), list(call.children), _copy_activity(call.subagent))
                for call in state.running_calls()
            ],
        )

    def restore(self, state: RunState) -> None:
        journal = state._journal  # pyright: ignore[reportPrivateUsage]
        for entries, key, before in reversed(journal):
            if before is _DELETED:
                entries.pop(key, None)
            else:
                entries[key] = before
        journal.clear()
        for name, value in zip(_SCALARS, self.values, strict=True):
            setattr(state, name, value)
        del state.tools[self.tools :], state.guardrails[self.guardrails :]
        for call, values, children, activity in self.running:
            call.__dict__.update(values)
            call.children = list(children)
            call.subagent = _copy_activity(activity)


def _copy_activity(activity: SubagentActivity | None) -> SubagentActivity | None:
    return None if activity is None else dataclasses.replace(activity, plan=dict(activity.plan))


def _newer_event_type(event_type: Never) -> None:
    """Pyright's exhaustiveness check; at run time an event type this version does not know is ignored."""


def _update_plan(plan: dict[str, PlanStep], data: PlanUpdateData) -> None:
    item_id = str(data["item_id"])
    if data["action"] == "deleted":
        plan.pop(item_id, None)
        return
    plan[item_id] = _plan_step(data)


def _plan_step(data: PlanUpdateData) -> PlanStep:
    return PlanStep(
        item_id=str(data["item_id"]),
        content=data["content"] or "",
        status=data["status"] or "pending",
        active_form=data["active_form"],
    )
