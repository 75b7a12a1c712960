"""Translating the engine's events into `StreamEvent`s: Pydantic AI's part and tool events, the harness's
capability events, and the events `StreamTap` relays from tools and sub-agents.

A `Translator` belongs to one stream. It stamps `seq` in the order it is asked, keeps which tool calls
are open in each run of the stream (the top-level run and every delegated one), and closes the ones
left open when a sub-agent or the run ends early, so every `tool_start` gets its `tool_end`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from pydantic_ai import DeferredToolResults, ToolApproved, ToolDenied
from pydantic_ai.exceptions import UsageLimitExceeded
from pydantic_ai.messages import (
    AgentStreamEvent,
    DeferredToolRequestsEvent,
    DeferredToolResultsEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)
from pydantic_ai_harness.filesystem import DirectoryCreatedEvent, FileEditedEvent, FileWrittenEvent
from pydantic_ai_harness.guardrails import GuardrailError
from pydantic_ai_harness.planning import (
    PlanCompletedEvent,
    PlanCreatedEvent,
    PlanDeletedEvent,
    PlanItem,
    PlanStatusChangedEvent,
    PlanUpdatedEvent,
)
from pydantic_ai_harness.spend import SpendRecordedEvent
from pydantic_ai_harness.subagents import DelegationEndEvent, DelegationStartEvent

from .._engine import blocking_guardrail, jsonable, tool_args
from .._guardrails import GuardrailNotice
from ..budget import BUDGET_NAME, BudgetExceeded, BudgetWarning
from .capability import StreamState, SubagentStreamEvent, SubRun, ToolProgressEvent
from .types import (
    AnyStreamEvent,
    ApprovalRequiredData,
    ApprovalRequiredStreamEvent,
    ApprovalResolvedData,
    FileChangeData,
    GuardrailData,
    GuardrailKind,
    PlanUpdateData,
    StreamEvent,
    StreamEventType,
    SubagentEndData,
    SubagentStartData,
    TextData,
    ToolArgsDeltaData,
    ToolEndData,
    ToolProgressData,
    ToolStartData,
)

__all__ = ("RunView", "Translator")

_PLAN_ACTIONS: dict[type[Any], str] = {
    PlanCreatedEvent: "created",
    PlanUpdatedEvent: "updated",
    PlanStatusChangedEvent: "status_changed",
    PlanCompletedEvent: "completed",
    PlanDeletedEvent: "deleted",
}

LLM_CHUNK = StreamEventType.LLM_CHUNK
THINKING_CHUNK = StreamEventType.THINKING_CHUNK


@dataclass
class RunView:
    """Where one run (the top-level one or a delegated one) sits, and its calls still open."""

    run_id: str
    agent_name: str | None
    depth: int = 0
    parent_run_id: str | None = None
    parent_tool_call_id: str | None = None
    tool_parts: dict[int, tuple[str | None, str | None]] = field(
        default_factory=dict[int, tuple[str | None, str | None]]
    )
    open_calls: dict[str, str] = field(default_factory=dict[str, str])
    spend: dict[str, tuple[float, float]] = field(default_factory=dict[str, tuple[float, float]])
    """The run's budget readings by metric: (limit, used), from the spend events."""
    warned: set[str] = field(default_factory=set[str])


_UNITS = {"tokens": "tokens", "cost_usd": "USD", "steps": "model requests", "seconds": "seconds"}


class Translator:
    """Turns Pydantic AI and harness events into `StreamEvent`s, stamping `seq` in stream order."""

    def __init__(self, root: RunView, state: StreamState, *, tool_args_deltas: bool) -> None:
        self.root = root
        self.state = state
        self.tool_args_deltas = tool_args_deltas
        self.subs: dict[str, RunView] = {}
        self.seq = 0
        self.backlog: list[AnyStreamEvent] = []
        """Events to hand over before the one `translate` returns (calls a sub-agent left open)."""

    def make(self, view: RunView, event_type: StreamEventType, data: Any) -> AnyStreamEvent:
        """The next event of the stream; `data` is built with the event type's payload `TypedDict`."""
        seq = self.seq
        self.seq = seq + 1
        event = StreamEvent(
            event_type=event_type,
            data=data,
            timestamp=datetime.now(UTC),
            seq=seq,
            run_id=view.run_id,
            agent_name=view.agent_name,
            parent_run_id=view.parent_run_id,
            parent_tool_call_id=view.parent_tool_call_id,
            depth=view.depth,
        )
        return cast(AnyStreamEvent, event)

    def _sub_view(self, sub: SubRun) -> RunView:
        view = self.subs.get(sub.run_id)
        if view is None:
            view = self.subs[sub.run_id] = RunView(
                run_id=sub.run_id,
                agent_name=sub.agent_name,
                depth=sub.depth,
                parent_run_id=sub.parent_run_id,
                parent_tool_call_id=sub.parent_tool_call_id,
            )
        return view

    def translate(self, event: AgentStreamEvent, view: RunView) -> AnyStreamEvent | None:
        if isinstance(event, PartDeltaEvent):
            delta = event.delta
            if isinstance(delta, TextPartDelta):
                text = delta.content_delta
                return self.make(view, LLM_CHUNK, TextData(text=text)) if text else None
            if isinstance(delta, ThinkingPartDelta):
                text = delta.content_delta
                return self.make(view, THINKING_CHUNK, TextData(text=text)) if text else None
            if isinstance(delta, ToolCallPartDelta) and self.tool_args_deltas:
                fragment = delta.args_delta
                if isinstance(fragment, str) and fragment:
                    name, call_id = view.tool_parts.get(event.index, (delta.tool_name_delta, delta.tool_call_id))
                    data = ToolArgsDeltaData(tool_name=name, tool_call_id=call_id, args_delta=fragment)
                    return self.make(view, StreamEventType.TOOL_ARGS_DELTA, data)
            return None
        if isinstance(event, PartStartEvent):
            part = event.part
            if isinstance(part, TextPart):
                return self.make(view, LLM_CHUNK, TextData(text=part.content)) if part.content else None
            if isinstance(part, ThinkingPart):
                return self.make(view, THINKING_CHUNK, TextData(text=part.content)) if part.content else None
            if isinstance(part, ToolCallPart):
                view.tool_parts[event.index] = (part.tool_name, part.tool_call_id)
                if self.tool_args_deltas and part.args:
                    # Arguments that arrive whole (a dict) are one fragment: their JSON.
                    fragment = part.args if isinstance(part.args, str) else part.args_as_json_str()
                    data = ToolArgsDeltaData(
                        tool_name=part.tool_name, tool_call_id=part.tool_call_id, args_delta=fragment
                    )
                    return self.make(view, StreamEventType.TOOL_ARGS_DELTA, data)
            return None
        if isinstance(event, FunctionToolCallEvent):
            part = event.part
            view.open_calls[part.tool_call_id] = part.tool_name
            data = ToolStartData(tool_name=part.tool_name, args=tool_args(part), tool_call_id=part.tool_call_id)
            return self.make(view, StreamEventType.TOOL_START, data)
        if isinstance(event, FunctionToolResultEvent):
            part = event.part
            view.open_calls.pop(part.tool_call_id, None)
            if self.subs:
                self._close_delegated(part.tool_call_id)
            failed = part.outcome != "success"
            data = ToolEndData(
                tool_name=part.tool_name,
                tool_call_id=part.tool_call_id,
                result=None if failed else jsonable(part.content),
                duration_seconds=self.state.duration(view.run_id, part.tool_call_id),
                error=_text(part.content) if failed else None,
            )
            return self.make(view, StreamEventType.TOOL_END, data)
        if isinstance(event, DeferredToolRequestsEvent):
            return self._approvals_required(event, view)
        if isinstance(event, DeferredToolResultsEvent):
            return self._approvals_resolved(event, view)
        if isinstance(event, SubagentStreamEvent):
            if event.sub is None:
                return None
            translated = self.translate(event.event, self._sub_view(event.sub))
            if translated is None and event.delivered is not None and not event.delivered.done():
                event.delivered.set_result(None)
            return translated
        if isinstance(event, ToolProgressEvent):
            data = ToolProgressData(
                tool_name=view.open_calls.get(event.tool_call_id or ""),
                tool_call_id=event.tool_call_id,
                message=event.message,
                fraction=event.fraction,
            )
            return self.make(view, StreamEventType.TOOL_PROGRESS, data)
        return self._translate_capability(event, view)

    def _translate_capability(self, event: AgentStreamEvent, view: RunView) -> AnyStreamEvent | None:
        if isinstance(event, BudgetWarning | SpendRecordedEvent):
            return self._budget_warning(event, view)
        if isinstance(event, GuardrailNotice):
            notice = GuardrailData(
                kind=event.guardrail, action=event.action, metric=None, limit=None, used=None, message=event.message
            )
            return self.make(view, StreamEventType.GUARDRAIL, notice)
        if isinstance(event, DelegationStartEvent):
            data = SubagentStartData(subagent_name=event.agent_name, task=event.task, tool_call_id=event.tool_call_id)
            return self.make(view, StreamEventType.SUBAGENT_START, data)
        if isinstance(event, DelegationEndEvent):
            if event.tool_call_id is not None:
                self._close_delegated(event.tool_call_id)
            end = SubagentEndData(
                subagent_name=event.agent_name,
                tool_call_id=event.tool_call_id,
                success=event.outcome == "ok",
                output=event.output,
                duration_seconds=event.duration_seconds,
            )
            return self.make(view, StreamEventType.SUBAGENT_END, end)
        action = _PLAN_ACTIONS.get(type(event))
        if action is not None:
            item = cast(PlanItem, getattr(event, "item"))  # noqa: B009 - every planning event has one
            plan = PlanUpdateData(
                action=action,
                item_id=item.id,
                content=item.content,
                status=item.status.value,
                active_form=item.active_form or None,
            )
            return self.make(view, StreamEventType.PLAN_UPDATE, plan)
        if isinstance(event, FileWrittenEvent | DirectoryCreatedEvent):
            if isinstance(event, DirectoryCreatedEvent):
                operation = "create_directory"
            else:
                operation = "edit" if isinstance(event, FileEditedEvent) else "write"
            change = FileChangeData(
                path=event.path,
                operation=operation,
                content_hash=getattr(event, "content_hash", None),
                diff=event.diff if isinstance(event, FileEditedEvent) else None,
            )
            return self.make(view, StreamEventType.FILE_CHANGE, change)
        return None

    def _approvals_required(self, event: DeferredToolRequestsEvent, view: RunView) -> AnyStreamEvent | None:
        """One `approval_required` per call that waits (the last returned, the others in the backlog)."""
        made: list[AnyStreamEvent] = []
        for call in event.requests.approvals:
            reason = event.requests.metadata.get(call.tool_call_id, {}).get("reason")
            data = ApprovalRequiredData(
                tool_call_id=call.tool_call_id,
                tool_name=call.tool_name,
                args=tool_args(call),
                reason=reason if isinstance(reason, str) else None,
            )
            required = cast(ApprovalRequiredStreamEvent, self.make(view, StreamEventType.APPROVAL_REQUIRED, data))
            if self.state.approvals is not None and not (self.state.defer_approvals and view is self.root):
                self.state.approvals.expect(required)
            made.append(required)
        if not made:
            return None
        self.backlog.extend(made[:-1])
        return made[-1]

    def _approvals_resolved(self, event: DeferredToolResultsEvent, view: RunView) -> AnyStreamEvent | None:
        made = self.resolved(event.results, view)
        if not made:
            return None
        self.backlog.extend(made[:-1])
        return made[-1]

    def resolved(self, results: DeferredToolResults, view: RunView) -> list[AnyStreamEvent]:
        """One `approval_resolved` per decided call of `results` (in the stream, or brought by the request)."""
        made: list[AnyStreamEvent] = []
        for tool_call_id, result in results.approvals.items():
            decision = self.state.approvals.resolved(tool_call_id) if self.state.approvals is not None else None
            approved = result is True or isinstance(result, ToolApproved)
            reason = result.message if isinstance(result, ToolDenied) else None
            args = result.override_args if isinstance(result, ToolApproved) else None
            data = ApprovalResolvedData(
                tool_call_id=tool_call_id,
                approved=approved,
                decided_by=decision.decided_by if decision is not None else None,
                reason=reason if reason is not None else (decision.reason if decision is not None else None),
                args=dict(args) if args is not None else None,
            )
            made.append(self.make(view, StreamEventType.APPROVAL_RESOLVED, data))
        return made

    def _budget_warning(self, event: BudgetWarning | SpendRecordedEvent, view: RunView) -> AnyStreamEvent | None:
        """A `guardrail` warn event the first time a run passes `warn_at` of a limit."""
        if isinstance(event, BudgetWarning):
            return self._guardrail_once(view, event.metric, event.limit, event.used)
        for status in event.budgets:
            if status.name != BUDGET_NAME:
                continue
            if status.usd_limit is not None:
                view.spend["cost_usd"] = (float(status.usd_limit), float(status.spent_usd))
            if status.token_limit is not None:
                view.spend["tokens"] = (float(status.token_limit), float(status.spent_tokens))
            if status.warning and view.spend:  # past `warn_at`: of the limit nearest to being spent
                metric, (limit, used) = max(view.spend.items(), key=lambda item: item[1][1] / item[1][0])
                return self._guardrail_once(view, metric, limit, used)
        return None

    def _guardrail_once(self, view: RunView, metric: str, limit: float, used: float) -> AnyStreamEvent | None:
        if metric in view.warned:
            return None
        view.warned.add(metric)
        data = GuardrailData(
            kind="budget",
            action="warn",
            metric=metric,
            limit=limit,
            used=used,
            message=f"{used:g} of the budget's {limit:g} {_UNITS.get(metric, metric)} used",
        )
        return self.make(view, StreamEventType.GUARDRAIL, data)

    def budget_block(self, exc: UsageLimitExceeded) -> AnyStreamEvent:
        """The `guardrail` block event of a run a budget or usage limit stopped (before its `error`)."""
        metric: str | None = None
        limit = used = None
        if isinstance(exc, BudgetExceeded):
            metric, limit, used = exc.metric, exc.limit, exc.used
        else:
            for name, (spent_limit, spent) in self.root.spend.items():
                if spent >= spent_limit:
                    metric, limit, used = name, spent_limit, spent
        data = GuardrailData(kind="budget", action="block", metric=metric, limit=limit, used=used, message=str(exc))
        return self.make(self.root, StreamEventType.GUARDRAIL, data)

    def guardrail_block(self, exc: GuardrailError) -> AnyStreamEvent:
        """The `guardrail` block event of a run a harness guardrail failed (before its `error`)."""
        kind = cast(GuardrailKind, blocking_guardrail(exc))
        data = GuardrailData(kind=kind, action="block", metric=None, limit=None, used=None, message=str(exc))
        return self.make(self.root, StreamEventType.GUARDRAIL, data)

    def _close_delegated(self, tool_call_id: str) -> None:
        """A delegation settled: calls its sub-agent (and theirs) never finished end here, before it does."""
        parents = {tool_call_id}
        for view in self.subs.values():  # insertion order: a sub-agent is always seen before its own sub-agents
            if view.parent_tool_call_id in parents:
                parents.update(view.open_calls)
                self.backlog.extend(self._close_view(view, "the sub-agent stopped before this call finished"))

    def _close_view(self, view: RunView, error: str) -> list[AnyStreamEvent]:
        closing = [
            self.make(
                view,
                StreamEventType.TOOL_END,
                ToolEndData(
                    tool_name=name,
                    tool_call_id=call_id,
                    result=None,
                    duration_seconds=self.state.duration(view.run_id, call_id),
                    error=error,
                ),
            )
            for call_id, name in view.open_calls.items()
        ]
        view.open_calls.clear()
        return closing

    def close_open_calls(self, error: str) -> list[AnyStreamEvent]:
        """`tool_end` with `error` for every call that started and never ended (a failed or cancelled run)."""
        closing: list[AnyStreamEvent] = []
        for view in [*reversed(self.subs.values()), self.root]:  # innermost first, as they unwound
            closing.extend(self._close_view(view, error))
        return closing


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(jsonable(value))
