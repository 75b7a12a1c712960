"""The one core every streaming view is built on: drive a run, translate its events, hand them over live.

The run executes in a task of its own (so a `CancellationToken`, which cancels the task driving the run,
never lands in the consumer's code) and hands each translated event to the consumer through a
`Handoff`: it waits until the event is taken before it goes on. Leaving the iterator early cancels that
task and waits for it, so no model request, tool or task outlives the stream.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from pydantic_ai import Agent, AgentRunResult, CancellationToken
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.exceptions import RunCancelled
from pydantic_ai.messages import (
    AgentStreamEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)
from pydantic_ai.models import Model
from pydantic_ai.usage import RunUsage, UsageLimits
from pydantic_ai_harness.filesystem import DirectoryCreatedEvent, FileEditedEvent, FileWrittenEvent
from pydantic_ai_harness.planning import (
    PlanCompletedEvent,
    PlanCreatedEvent,
    PlanDeletedEvent,
    PlanItem,
    PlanStatusChangedEvent,
    PlanUpdatedEvent,
)
from pydantic_ai_harness.subagents import DelegationEndEvent, DelegationStartEvent
from pydantic_core import to_jsonable_python

from ._handoff import Handoff
from ._relay import CURRENT_STREAM, StreamState, StreamTap, SubagentStreamEvent, SubRun, ToolProgressEvent
from .types import RunStatus, StreamEvent, StreamEventType

__all__ = ("RunOutcome", "StreamOptions", "stream_run")

_PLAN_ACTIONS: dict[type[Any], str] = {
    PlanCreatedEvent: "created",
    PlanUpdatedEvent: "updated",
    PlanStatusChangedEvent: "status_changed",
    PlanCompletedEvent: "completed",
    PlanDeletedEvent: "deleted",
}

LLM_CHUNK = StreamEventType.LLM_CHUNK
THINKING_CHUNK = StreamEventType.THINKING_CHUNK


@dataclass(kw_only=True)
class StreamOptions:
    """How one run is streamed; the public views fill it in."""

    message_history: Sequence[ModelMessage] | None = None
    emit_progress: bool = True
    tool_args_deltas: bool = False
    cancellation_token: CancellationToken | None = None
    usage_limits: UsageLimits | None = None
    model: Model | str | None = None
    run_id: str | None = None


@dataclass(kw_only=True)
class RunOutcome:
    """Filled in as the run ends: the result when it succeeded, the status either way."""

    status: RunStatus | None = None
    result: AgentRunResult[Any] | None = None
    error: BaseException | None = None


@dataclass
class _RunView:
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


class _Translator:
    """Turns Pydantic AI and harness events into `StreamEvent`s, stamping `seq` in stream order."""

    def __init__(self, root: _RunView, state: StreamState, *, tool_args_deltas: bool) -> None:
        self.root = root
        self.state = state
        self.tool_args_deltas = tool_args_deltas
        self.subs: dict[str, _RunView] = {}
        self.seq = 0
        self.backlog: list[StreamEvent] = []
        """Events to hand over before the one `translate` returns (calls a sub-agent left open)."""

    def make(self, view: _RunView, event_type: StreamEventType, data: dict[str, Any]) -> StreamEvent:
        seq = self.seq
        self.seq = seq + 1
        return StreamEvent(
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

    def _sub_view(self, sub: SubRun) -> _RunView:
        view = self.subs.get(sub.run_id)
        if view is None:
            view = self.subs[sub.run_id] = _RunView(
                run_id=sub.run_id,
                agent_name=sub.agent_name,
                depth=sub.depth,
                parent_run_id=sub.parent_run_id,
                parent_tool_call_id=sub.parent_tool_call_id,
            )
        return view

    def translate(self, event: AgentStreamEvent, view: _RunView) -> StreamEvent | None:
        if isinstance(event, PartDeltaEvent):
            delta = event.delta
            if isinstance(delta, TextPartDelta):
                return self.make(view, LLM_CHUNK, {"text": delta.content_delta}) if delta.content_delta else None
            if isinstance(delta, ThinkingPartDelta):
                text = delta.content_delta
                return self.make(view, THINKING_CHUNK, {"text": text}) if text else None
            if isinstance(delta, ToolCallPartDelta) and self.tool_args_deltas:
                fragment = delta.args_delta
                if isinstance(fragment, str) and fragment:
                    name, call_id = view.tool_parts.get(event.index, (delta.tool_name_delta, delta.tool_call_id))
                    return self.make(
                        view,
                        StreamEventType.TOOL_ARGS_DELTA,
                        {"tool_name": name, "tool_call_id": call_id, "args_delta": fragment},
                    )
            return None
        if isinstance(event, PartStartEvent):
            part = event.part
            if isinstance(part, TextPart):
                return self.make(view, LLM_CHUNK, {"text": part.content}) if part.content else None
            if isinstance(part, ThinkingPart):
                return self.make(view, THINKING_CHUNK, {"text": part.content}) if part.content else None
            if isinstance(part, ToolCallPart):
                view.tool_parts[event.index] = (part.tool_name, part.tool_call_id)
                if self.tool_args_deltas and isinstance(part.args, str) and part.args:
                    return self.make(
                        view,
                        StreamEventType.TOOL_ARGS_DELTA,
                        {"tool_name": part.tool_name, "tool_call_id": part.tool_call_id, "args_delta": part.args},
                    )
            return None
        if isinstance(event, FunctionToolCallEvent):
            part = event.part
            view.open_calls[part.tool_call_id] = part.tool_name
            return self.make(
                view,
                StreamEventType.TOOL_START,
                {"tool_name": part.tool_name, "args": _args_dict(part), "tool_call_id": part.tool_call_id},
            )
        if isinstance(event, FunctionToolResultEvent):
            part = event.part
            view.open_calls.pop(part.tool_call_id, None)
            if self.subs:
                self._close_delegated(part.tool_call_id)
            failed = part.outcome != "success"
            return self.make(
                view,
                StreamEventType.TOOL_END,
                {
                    "tool_name": part.tool_name,
                    "tool_call_id": part.tool_call_id,
                    "result": None if failed else _jsonable(part.content),
                    "duration_seconds": self.state.duration(view.run_id, part.tool_call_id),
                    "error": _text(part.content) if failed else None,
                },
            )
        if isinstance(event, SubagentStreamEvent):
            if event.sub is None:
                return None
            translated = self.translate(event.event, self._sub_view(event.sub))
            if translated is None and event.delivered is not None and not event.delivered.done():
                event.delivered.set_result(None)
            return translated
        if isinstance(event, ToolProgressEvent):
            return self.make(
                view,
                StreamEventType.TOOL_PROGRESS,
                {
                    "tool_name": view.open_calls.get(event.tool_call_id or ""),
                    "tool_call_id": event.tool_call_id,
                    "message": event.message,
                    "fraction": event.fraction,
                },
            )
        return self._translate_capability(event, view)

    def _translate_capability(self, event: AgentStreamEvent, view: _RunView) -> StreamEvent | None:
        if isinstance(event, DelegationStartEvent):
            return self.make(
                view,
                StreamEventType.SUBAGENT_START,
                {"subagent_name": event.agent_name, "task": event.task, "tool_call_id": event.tool_call_id},
            )
        if isinstance(event, DelegationEndEvent):
            if event.tool_call_id is not None:
                self._close_delegated(event.tool_call_id)
            return self.make(
                view,
                StreamEventType.SUBAGENT_END,
                {
                    "subagent_name": event.agent_name,
                    "tool_call_id": event.tool_call_id,
                    "success": event.outcome == "ok",
                    "output": event.output,
                    "duration_seconds": event.duration_seconds,
                },
            )
        action = _PLAN_ACTIONS.get(type(event))
        if action is not None:
            item = cast(PlanItem, getattr(event, "item"))  # noqa: B009 - every planning event has one
            return self.make(
                view,
                StreamEventType.PLAN_UPDATE,
                {
                    "action": action,
                    "item_id": item.id,
                    "content": item.content,
                    "status": item.status.value,
                    "active_form": item.active_form or None,
                },
            )
        if isinstance(event, FileWrittenEvent | DirectoryCreatedEvent):
            edited = isinstance(event, FileEditedEvent)
            return self.make(
                view,
                StreamEventType.FILE_CHANGE,
                {
                    "path": event.path,
                    "operation": "create_directory"
                    if isinstance(event, DirectoryCreatedEvent)
                    else ("edit" if edited else "write"),
                    "content_hash": getattr(event, "content_hash", None),
                    "diff": event.diff if isinstance(event, FileEditedEvent) else None,
                },
            )
        return None

    def _close_delegated(self, tool_call_id: str) -> None:
        """A delegation settled: calls its sub-agent (and theirs) never finished end here, before it does."""
        parents = {tool_call_id}
        for view in self.subs.values():  # insertion order: a sub-agent is always seen before its own sub-agents
            if view.parent_tool_call_id in parents:
                parents.update(view.open_calls)
                self.backlog.extend(self._close_view(view, "the sub-agent stopped before this call finished"))

    def _close_view(self, view: _RunView, error: str) -> list[StreamEvent]:
        closing = [
            self.make(
                view,
                StreamEventType.TOOL_END,
                {
                    "tool_name": name,
                    "tool_call_id": call_id,
                    "result": None,
                    "duration_seconds": self.state.duration(view.run_id, call_id),
                    "error": error,
                },
            )
            for call_id, name in view.open_calls.items()
        ]
        view.open_calls.clear()
        return closing

    def close_open_calls(self, error: str) -> list[StreamEvent]:
        """`tool_end` with `error` for every call that started and never ended (a failed or cancelled run)."""
        closing: list[StreamEvent] = []
        for view in [*reversed(self.subs.values()), self.root]:  # innermost first, as they unwound
            closing.extend(self._close_view(view, error))
        return closing


def _args_dict(part: ToolCallPart) -> dict[str, Any]:
    try:
        return part.args_as_dict()
    except Exception:  # the model sent arguments that are not a JSON object; show them as they came
        return {"_raw": part.args}


def _jsonable(value: object) -> Any:
    try:
        return to_jsonable_python(value)
    except Exception:
        return repr(value)


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(_jsonable(value))


def model_label(agent: AbstractAgent[Any, Any], override: Model | str | None) -> str | None:
    model = override if override is not None else getattr(agent, "model", None)
    if model is None:
        return None
    if isinstance(model, str):
        return model
    return f"{model.system}:{model.model_name}" if model.system else model.model_name


def _usage_numbers(usage: RunUsage) -> dict[str, Any]:
    return {
        "total_tokens": usage.total_tokens,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_cost_usd": float(usage.cost) if usage.cost is not None else None,
        "requests": usage.requests,
        "tool_calls": usage.tool_calls,
    }


_END: Any = object()


def _check_arguments(agent: object, prompt: object) -> None:
    """Fail at the call, with the offending value, rather than deep inside the run."""
    if not isinstance(agent, AbstractAgent):
        raise TypeError(f"expected a pydantic_ai Agent, got {agent!r}")
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")


async def stream_run(
    agent: AbstractAgent[Any, Any],
    prompt: str | None,
    deps: Any,
    options: StreamOptions,
    outcome: RunOutcome | None = None,
) -> AsyncGenerator[StreamEvent]:
    """Run `agent` on `prompt` and yield its events live; the public views wrap this."""
    _check_arguments(agent, prompt)
    outcome = outcome if outcome is not None else RunOutcome()
    handoff: Handoff[Any] = Handoff()
    task = asyncio.create_task(_drive(agent, prompt, deps, options, handoff, outcome))
    try:
        while True:
            item = await handoff.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not task.done():
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise


async def _drive(
    agent: AbstractAgent[Any, Any],
    prompt: str | None,
    deps: Any,
    options: StreamOptions,
    handoff: Handoff[Any],
    outcome: RunOutcome,
) -> None:
    run_id = options.run_id or str(uuid.uuid4())
    state = StreamState(root_run_id=run_id)
    state.depths[run_id] = 0
    CURRENT_STREAM.set(state)
    agent_name = agent.name
    root = _RunView(run_id=run_id, agent_name=agent_name)
    tr = _Translator(root, state, tool_args_deltas=options.tool_args_deltas)
    put = handoff.put
    started = time.perf_counter()
    iterations = 0
    usage = RunUsage()
    current: Any = None
    await put(
        tr.make(
            root,
            StreamEventType.AGENT_START,
            {"agent_name": agent_name, "prompt": prompt, "model": model_label(agent, options.model)},
        )
    )
    try:
        async with agent.iter(
            prompt,
            deps=deps,
            message_history=options.message_history,
            model=options.model,
            usage_limits=options.usage_limits,
            cancellation_token=options.cancellation_token,
            run_id=run_id,
            capabilities=[StreamTap()],
        ) as run:
            current = run
            async for node in run:
                if Agent.is_model_request_node(node) or Agent.is_call_tools_node(node):
                    async with node.stream(run.ctx) as events:
                        async for event in events:
                            translated = tr.translate(event, root)
                            if tr.backlog:
                                for early in tr.backlog:
                                    await put(early)
                                tr.backlog.clear()
                            if translated is not None:
                                await put(translated)
                                delivered = event.delivered if isinstance(event, SubagentStreamEvent) else None
                                if delivered is not None and not delivered.done():
                                    delivered.set_result(None)
                    if Agent.is_model_request_node(node):
                        iterations += 1
                        usage = run.usage
                        if options.emit_progress:
                            await put(
                                tr.make(
                                    root, StreamEventType.PROGRESS, {"iteration": iterations, **_usage_numbers(usage)}
                                )
                            )
            result = run.result
            usage = run.usage
        assert result is not None
        outcome.status, outcome.result = "succeeded", result
        end = {"success": True, "status": "succeeded", "output": _jsonable(result.output)}
    except RunCancelled as exc:
        outcome.status, outcome.error = "cancelled", exc
        usage = current.usage if current is not None else usage
        for closing in tr.close_open_calls("cancelled"):
            await put(closing)
        end = {"success": False, "status": "cancelled", "output": None}
    except asyncio.CancelledError:
        outcome.status = "cancelled"
        raise
    except Exception as exc:
        outcome.status, outcome.error = "failed", exc
        usage = current.usage if current is not None else usage
        for closing in tr.close_open_calls(f"{type(exc).__name__}: {exc}"):
            await put(closing)
        await put(
            tr.make(root, StreamEventType.ERROR, {"error": str(exc) or repr(exc), "exception_type": type(exc).__name__})
        )
        end = {"success": False, "status": "failed", "output": None}
    numbers = _usage_numbers(usage)
    await put(
        tr.make(
            root,
            StreamEventType.AGENT_END,
            {
                "agent_name": agent_name,
                "success": end["success"],
                "status": end["status"],
                "total_iterations": iterations,
                "total_tokens": numbers["total_tokens"],
                "total_cost_usd": numbers["total_cost_usd"],
                "duration_seconds": time.perf_counter() - started,
                "output": end["output"],
            },
        )
    )
    await put(outcome.error if outcome.status == "failed" and outcome.error is not None else _END)
