"""The one core every streaming view is built on: drive a run and hand its events over live.

The run executes in a task of its own (so a `CancellationToken`, which cancels the task driving the run,
never lands in the consumer's code) and hands each translated event to the consumer through a
`Handoff`: it waits until the event is taken before it goes on. A model response's own events are not
handed over one by one: the consumer pulls them from the model's stream itself (see `ModelEvents`).
Leaving the iterator early cancels that task and waits for it, so no model request, tool or task
outlives the stream. What each engine event becomes is `_translate`'s business.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic_ai import Agent, AgentRunResult, CancellationToken, DeferredToolRequests, DeferredToolResults
from pydantic_ai.agent import AbstractAgent, EventStreamHandler
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import RunCancelled, UsageLimitExceeded
from pydantic_ai.messages import (
    AgentStreamEvent,
    FinalResultEvent,
    ModelMessage,
    ModelResponseStreamEvent,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
)
from pydantic_ai.models import Model
from pydantic_ai.output import OutputSpec
from pydantic_ai.toolsets import AbstractToolset
from pydantic_ai.usage import RunUsage, UsageLimits
from pydantic_ai.workspaces import WorkspaceBackend
from pydantic_ai_harness.guardrails import GuardrailError

from .._engine import jsonable, model_label
from ..budget import Budget
from ..tracing import TraceContext
from ._handoff import Handoff
from ._translate import RunView, Translator
from .approvals import ApprovalBroker, ApprovalCallback, ApprovalPolicy, policy_picker, require_approval
from .capability import (
    CURRENT_STREAM,
    ModelEvents,
    ModelEventsAborted,
    StreamState,
    StreamTap,
    SubagentStreamEvent,
)
from .types import (
    DEFERRED_CALL_ERROR,
    AgentEndData,
    AgentStartData,
    AnyStreamEvent,
    ErrorData,
    ProgressData,
    RunStatus,
    StreamEventType,
)

__all__ = ("IdleTimeoutError", "RunOutcome", "RunTimeoutError", "StreamOptions", "stream_run")

logger = logging.getLogger("pydantic_deep.streaming")


class RunTimeoutError(TimeoutError):
    """The run went on longer than its `run_timeout`: it ends `failed` with this as its `error` event."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the run took longer than its run timeout of {seconds:g} s and was stopped")
        self.seconds = seconds


class IdleTimeoutError(TimeoutError):
    """Neither the model nor a tool produced an event for `idle_timeout` seconds: the run ends `failed`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no event from the model or a tool for {seconds:g} s (the idle timeout); the run was stopped")
        self.seconds = seconds


class _Deadlines:
    """One `asyncio.timeout` for both limits, moved on by every event; says which limit fired."""

    def __init__(self, run_timeout: float | None, idle_timeout: float | None) -> None:
        self.run_timeout, self.idle_timeout = run_timeout, idle_timeout
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._run_deadline = None if run_timeout is None else loop.time() + run_timeout
        self._timeout = asyncio.timeout_at(self._next())  # `_next` is a loop time, not a delay

    def _next(self) -> float | None:
        idle = None if self.idle_timeout is None else self._loop.time() + self.idle_timeout
        if idle is None or self._run_deadline is None:
            return idle if self._run_deadline is None else self._run_deadline
        return min(idle, self._run_deadline)

    def touch(self) -> None:
        # Also called from the consumer's task (the model's events): a limit that has fired stays fired.
        if self.idle_timeout is not None and not self._held and not self._timeout.expired():
            self._timeout.reschedule(self._next())

    _held = False

    def hold(self, waiting: bool) -> None:
        """While a call waits for a person's decision the run is not idle: only the run's own limit counts."""
        self._held = waiting
        if self.idle_timeout is not None and not self._timeout.expired():
            self._timeout.reschedule(self._run_deadline if waiting else self._next())

    async def __aenter__(self) -> _Deadlines:
        await self._timeout.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        try:
            return await self._timeout.__aexit__(*exc_info)
        except TimeoutError:
            if self._run_deadline is not None and self._loop.time() >= self._run_deadline:
                raise RunTimeoutError(self.run_timeout or 0) from None
            raise IdleTimeoutError(self.idle_timeout or 0) from None


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
    run_timeout: float | None = None
    idle_timeout: float | None = None
    on_messages: Callable[[list[ModelMessage]], Any] | None = None
    workspace: WorkspaceBackend | Literal["new"] | None = None
    toolsets: Sequence[AbstractToolset[Any]] = ()
    capabilities: Sequence[AbstractCapability[Any]] = ()
    output_type: OutputSpec[Any] | None = None
    deferred_tool_results: DeferredToolResults | None = None
    on_approval: ApprovalCallback | None = None
    approval_timeout: float | None = None
    budget: Budget | None = None
    require_approval: ApprovalPolicy | None = None
    durability: Callable[[EventStreamHandler[Any]], AbstractCapability[Any]] | None = None


_MODEL_EVENTS = (PartStartEvent, PartDeltaEvent, PartEndEvent, FinalResultEvent)
"""What a model response streams; a durable model request hands them to the stream from inside its step."""


@dataclass(kw_only=True)
class RunOutcome:
    """Filled in as the run ends: the result when it succeeded, the status either way."""

    status: RunStatus | None = None
    result: AgentRunResult[Any] | None = None
    error: BaseException | None = None


def _progress(iteration: int, usage: RunUsage) -> ProgressData:
    return ProgressData(
        iteration=iteration,
        total_tokens=usage.total_tokens,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_cost_usd=_cost(usage),
        requests=usage.requests,
        tool_calls=usage.tool_calls,
    )


def _cost(usage: RunUsage) -> float | None:
    return float(usage.cost) if usage.cost is not None else None


_END: Any = object()


@dataclass(slots=True)
class _ModelResponse:
    """A model response the consumer pulls itself (see `ModelEvents`), with the run's translation."""

    events: ModelEvents
    translate: Callable[[AgentStreamEvent], AnyStreamEvent | None]


_DECISIONS = frozenset(
    {StreamEventType.APPROVAL_REQUIRED, StreamEventType.APPROVAL_RESOLVED, StreamEventType.GUARDRAIL}
)


def _recording(put: Callable[[Any], Awaitable[None]], trace: TraceContext) -> Callable[[Any], Awaitable[None]]:
    """`put`, recording each decision the stream tells of as an event on its run's span in `trace`."""

    async def put_and_record(item: Any) -> None:
        event_type: StreamEventType | None = getattr(item, "event_type", None)
        if event_type is not None and event_type in _DECISIONS:
            attributes = dict(item.data)
            if not trace.include_content:
                attributes.pop("args", None)
            trace.add_event(item.run_id, event_type.value, attributes)
        await put(item)

    return put_and_record


def _accepts_deferred(output_type: object) -> bool:
    """Whether an output spec lists `DeferredToolRequests` (at any depth of nested lists)."""
    if output_type is DeferredToolRequests:
        return True
    if isinstance(output_type, Sequence) and not isinstance(output_type, str):
        return any(_accepts_deferred(item) for item in cast(Sequence[object], output_type))
    return False


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
) -> AsyncGenerator[AnyStreamEvent]:
    """Run `agent` on `prompt` and yield its events live; the public views wrap this."""
    _check_arguments(agent, prompt)
    for name in ("run_timeout", "idle_timeout", "approval_timeout"):
        value = getattr(options, name)
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    outcome = outcome if outcome is not None else RunOutcome()
    handoff: Handoff[Any] = Handoff()
    approvals = ApprovalBroker(callback=options.on_approval, timeout=options.approval_timeout)
    task = asyncio.create_task(_drive(agent, prompt, deps, options, handoff, outcome, approvals))
    try:
        while True:
            item = await handoff.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _ModelResponse):
                # A model response's events: pulled here, in the consumer's task, one per event asked for.
                events, translate = item.events, item.translate
                while True:
                    try:
                        translated = translate(await events)
                    except (StopAsyncIteration, ModelEventsAborted):
                        events.finish()
                        break
                    except Exception as exc:  # the model's stream failed: the run fails with it, in order
                        events.finish(exc)
                        break
                    if translated is not None:
                        yield translated
                continue
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
        finally:
            approvals.close()


async def _drive(
    agent: AbstractAgent[Any, Any],
    prompt: str | None,
    deps: Any,
    options: StreamOptions,
    handoff: Handoff[Any],
    outcome: RunOutcome,
    approvals: ApprovalBroker,
) -> None:
    run_id = options.run_id or str(uuid.uuid4())
    output_type = options.output_type if options.output_type is not None else getattr(agent, "output_type", None)
    # A run whose output type takes `DeferredToolRequests` ends with the calls that wait, as Pydantic AI's
    # runs do (the protocols' clients answer them in their next request); any other waits in the stream.
    in_stream = not _accepts_deferred(output_type)
    policy = policy_picker(options.require_approval) if options.require_approval is not None else None
    state = StreamState(root_run_id=run_id, approvals=approvals, policy=policy, defer_approvals=not in_stream)
    state.depths[run_id] = 0
    CURRENT_STREAM.set(state)
    agent_name = agent.name
    root = RunView(run_id=run_id, agent_name=agent_name)
    tr = Translator(root, state, tool_args_deltas=options.tool_args_deltas)
    trace = getattr(deps, "trace_context", None)
    put = _recording(handoff.put, trace) if isinstance(trace, TraceContext) else handoff.put
    started = time.perf_counter()
    iterations = 0
    usage = RunUsage()
    current: Any = None
    model = options.model if options.model is not None else getattr(agent, "model", None)
    start = AgentStartData(agent_name=agent_name, prompt=prompt, model=model_label(model))
    await put(tr.make(root, StreamEventType.AGENT_START, start))
    deadlines: _Deadlines | None = None
    live = False
    """Whether the model request in progress streamed from inside its durable step (see `durability`)."""

    def translate_model_event(event: AgentStreamEvent) -> AnyStreamEvent | None:
        nonlocal live
        live = True
        if deadlines is not None:
            deadlines.touch()
        return tr.translate(event, root)

    def translate_live(event: AgentStreamEvent) -> AnyStreamEvent | None:
        # The rest (tool calls and results the durable engine hands its handler too) comes through the
        # node streams below.
        return translate_model_event(event) if isinstance(event, _MODEL_EVENTS) else None

    async def hand_over(events: ModelEvents) -> None:
        await handoff.put(_ModelResponse(events, translate_model_event))

    async def stream_live(_: Any, events: AsyncIterable[AgentStreamEvent]) -> None:
        """The durable step's handler: the consumer pulls the model's events, as from a plain run's model."""
        pulled = ModelEvents(cast(AsyncIterable[ModelResponseStreamEvent], events))
        try:
            await handoff.put(_ModelResponse(pulled, translate_live))
            await pulled.finished()
        except asyncio.CancelledError:
            await pulled.abort()
            raise

    # The model's events go to the stream straight from the model's own stream (inside the durable step
    # when the run is durable): the engine's event plumbing then carries only the finished response.
    if options.durability is None:
        stream_tap, durable = StreamTap(run_id=run_id, hand_over=hand_over), ()
    else:
        stream_tap, durable = StreamTap(), (options.durability(stream_live),)
    if options.deferred_tool_results is not None:  # decisions the caller brings (a protocol client's answers)
        for decided in tr.resolved(options.deferred_tool_results, root):
            await put(decided)
    try:
        async with (
            _Deadlines(options.run_timeout, options.idle_timeout) as deadlines,
            agent.iter(
                prompt,
                deps=deps,
                message_history=options.message_history,
                model=options.model,
                usage_limits=options.usage_limits,
                cancellation_token=options.cancellation_token,
                run_id=run_id,
                capabilities=[
                    stream_tap,
                    *([require_approval(policy)] if policy is not None else ()),
                    *(options.budget.capabilities() if options.budget is not None else ()),
                    *options.capabilities,
                    *durable,
                ],
                toolsets=options.toolsets or None,
                # `None` is the agent's own output type (iter's default), which its overloads spell apart.
                output_type=cast("OutputSpec[Any]", options.output_type),
                deferred_tool_results=options.deferred_tool_results,
                workspace=options.workspace,
            ) as run,
        ):
            current = run
            approvals.on_wait = deadlines.hold
            async for node in run:
                if Agent.is_model_request_node(node) or Agent.is_call_tools_node(node):
                    live = False
                    async with node.stream(run.ctx) as events:
                        async for event in events:
                            if live and isinstance(event, _MODEL_EVENTS):
                                continue  # streamed from its durable step already: this is the step's replay
                            deadlines.touch()
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
                    deadlines.touch()
                    if Agent.is_model_request_node(node):
                        iterations += 1
                        usage = run.usage
                        if options.emit_progress:
                            await put(tr.make(root, StreamEventType.PROGRESS, _progress(iterations, usage)))
            result = run.result
            usage = run.usage
        assert result is not None
        if isinstance(result.output, DeferredToolRequests):  # the calls it ended without end here
            for closing in tr.close_open_calls(DEFERRED_CALL_ERROR):
                await put(closing)
        outcome.status, outcome.result = "succeeded", result
        status: RunStatus = "succeeded"
        output = jsonable(result.output)
    except RunCancelled as exc:
        outcome.status, outcome.error = "cancelled", exc
        usage = current.usage if current is not None else usage
        for closing in tr.close_open_calls("cancelled"):
            await put(closing)
        status, output = "cancelled", None
    except asyncio.CancelledError:
        outcome.status = "cancelled"
        raise
    except Exception as exc:
        outcome.status, outcome.error = "failed", exc
        usage = current.usage if current is not None else usage
        for closing in tr.close_open_calls(f"{type(exc).__name__}: {exc}"):
            await put(closing)
        if isinstance(exc, UsageLimitExceeded):  # a budget or usage limit stopped it
            await put(tr.budget_block(exc))
        elif isinstance(exc, GuardrailError):  # a harness guardrail failed the run
            await put(tr.guardrail_block(exc))
        error = ErrorData(error=str(exc) or repr(exc), exception_type=type(exc).__name__)
        await put(tr.make(root, StreamEventType.ERROR, error))
        status, output = "failed", None
    end = AgentEndData(
        agent_name=agent_name,
        success=status == "succeeded",
        status=status,
        total_iterations=iterations,
        total_tokens=usage.total_tokens,
        total_cost_usd=_cost(usage),
        duration_seconds=time.perf_counter() - started,
        output=output,
    )
    if options.on_messages is not None:
        messages = outcome.result.all_messages() if outcome.result is not None else None
        if messages is None and current is not None:
            messages = current.all_messages()
        try:
            result = options.on_messages(list(messages or []))
            if inspect.isawaitable(result):
                await result
        except Exception:  # the caller's bug: it must not cost the stream its end
            logger.exception("on_messages failed; the run's end is sent all the same")
    await put(tr.make(root, StreamEventType.AGENT_END, end))
    await put(outcome.error if outcome.status == "failed" and outcome.error is not None else _END)
