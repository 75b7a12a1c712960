"""What reaches a stream from inside a run: tool timing, tool progress and sub-agent events.

A `StreamTap` capability (added to every streamed run, and shared with delegated runs) times each tool
call and remembers which call is running, so a sub-agent started inside it can relay its events to the
delegating run's stream. Everything travels through Pydantic AI's own event stream (as capability and custom events),
so order is the engine's order and nothing leaves the run's task tree.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Generator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from pydantic_ai import CapabilityEvent, CustomEvent, RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.capabilities.abstract import WrapModelRequestHandler, WrapToolExecuteHandler
from pydantic_ai.messages import (
    AgentStreamEvent,
    ModelMessage,
    ModelResponse,
    ModelResponseStreamEvent,
    ToolCallPart,
)
from pydantic_ai.models import (
    CompletedStreamedResponse,
    Model,
    ModelRequestContext,
    ModelRequestParameters,
    StreamedResponse,
)
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolDefinition

if TYPE_CHECKING:
    from .approvals import ApprovalBroker

__all__ = (
    "ModelEvents",
    "ModelEventsAborted",
    "StreamTap",
    "SubRun",
    "ToolProgressEvent",
    "relay_subagent_events",
    "report_progress",
)


@dataclass(kw_only=True)
class ToolProgressEvent(CustomEvent, name="pydantic_deep.tool_progress"):
    """Progress a running tool reported; becomes a `tool_progress` stream event."""

    message: str | None = None
    fraction: float | None = None


@dataclass(frozen=True, slots=True)
class SubRun:
    """Where a delegated run sits in the tree of the stream it is relayed into."""

    run_id: str
    agent_name: str | None
    depth: int
    parent_run_id: str
    parent_tool_call_id: str | None


@dataclass(kw_only=True)
class SubagentStreamEvent(CapabilityEvent, namespace="pydantic_deep", name="subagent_event"):
    """A delegated run's event, carried through the delegating run's event stream by `StreamTap`."""

    event: Any = None
    """The sub-agent's own `AgentStreamEvent`."""
    sub: SubRun | None = None
    delivered: asyncio.Future[None] | None = field(default=None, repr=False, compare=False)
    """Resolved once the consumer has the event, so a sub-agent never runs ahead of its reader."""


@dataclass(slots=True)
class StreamState:
    """Per-stream facts shared with the code running inside the run (tools, sub-agents)."""

    root_run_id: str | None = None
    tool_times: dict[tuple[str | None, str], tuple[float, float | None]] = field(
        default_factory=dict[tuple[str | None, str], tuple[float, float | None]]
    )
    depths: dict[str, int] = field(default_factory=dict[str, int])
    approvals: ApprovalBroker | None = None
    """Where the stream's calls that wait for approval are decided (see `approvals`)."""
    policy: Callable[[str, Mapping[str, Any]], bool | str | None] | None = None
    """The run's own `require_approval`, which its sub-agents' calls follow too."""
    defer_approvals: bool = False
    """The top-level run ends with its calls that need approval (its output type takes `DeferredToolRequests`);
    a sub-agent's, which no later run could answer, still wait in the stream."""

    def duration(self, run_id: str | None, tool_call_id: str | None) -> float | None:
        if tool_call_id is None:
            return None
        times = self.tool_times.pop((run_id, tool_call_id), None)
        if times is None:
            return None
        start, end = times
        return (end if end is not None else time.perf_counter()) - start


CURRENT_STREAM: ContextVar[StreamState | None] = ContextVar("pydantic_deep_stream", default=None)
_RUNNING_TOOL: ContextVar[tuple[RunContext[Any], str | None] | None] = ContextVar(
    "pydantic_deep_running_tool", default=None
)


@dataclass
class StreamTap(AbstractCapability[Any]):
    """Times tool calls, marks the running call for sub-agent relaying, and has the calls that wait for
    approval decided in the stream; a no-op outside a stream.

    With `hand_over`, it also hands the model responses of the run `run_id` to the stream's consumer as
    `ModelEvents`, which the consumer pulls itself. The run's own event stream then gets the finished
    response only (Pydantic AI's `CompletedStreamedResponse`), so each delta skips the engine's per-event
    plumbing and the switch between the run's task and the consumer's. A delegated run's model is not
    tapped: its events travel the usual way (see `relay_subagent_events`). One capability does both
    jobs because each capability a run has costs every hook of the run a layer.
    """

    id: str | None = "pydantic_deep_stream_tap"
    run_id: str | None = None
    hand_over: Callable[[ModelEvents], Awaitable[None]] | None = field(default=None, repr=False, compare=False)

    async def wrap_model_request(
        self, ctx: RunContext[Any], *, request_context: ModelRequestContext, handler: WrapModelRequestHandler
    ) -> ModelResponse:
        if self.hand_over is not None and ctx.run_id == self.run_id:
            request_context.model = _TappedModel(request_context.model, self.hand_over)
        return await handler(request_context)

    async def handle_deferred_tool_calls(
        self, ctx: RunContext[Any], *, requests: DeferredToolRequests
    ) -> DeferredToolResults | None:
        """Calls that wait for approval are decided in the stream (see `approvals`); others are left alone."""
        from .approvals import decide_in_stream

        state = CURRENT_STREAM.get()
        if state is not None and state.defer_approvals and ctx.run_id == state.root_run_id:
            return None  # the run ends with them, as Pydantic AI's runs do
        return await decide_in_stream(requests)

    async def wrap_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: Any,
        handler: WrapToolExecuteHandler,
    ) -> Any:
        state = CURRENT_STREAM.get()
        if state is None:
            return await handler(args)
        key = (ctx.run_id, call.tool_call_id)
        start = time.perf_counter()
        state.tool_times[key] = (start, None)
        token = _RUNNING_TOOL.set((ctx, call.tool_call_id))
        try:
            return await handler(args)
        finally:
            _RUNNING_TOOL.reset(token)
            if key in state.tool_times:
                state.tool_times[key] = (start, time.perf_counter())


class ModelEvents:
    """A model response's event stream, handed from the run to the stream's consumer, who pulls it itself.

    The run opens the model's stream and waits (`finished`) while the consumer pulls each event in its own
    task (`await events`): no task switch per event, and the model is never ahead of the consumer. Each
    pull runs in the run's context (a copy taken when the stream opened), as the model's code would in the
    run's task.
    When the run is cancelled mid-response (a timeout, a cancellation token, the consumer leaving), `abort`
    ends a pull in flight the way cancelling a task does, without cancelling the consumer, and the run
    closes the stream only once no pull is left in it.
    """

    __slots__ = ("_context", "_done", "_iterator", "_released", "_waiting_on", "aborted", "pulling")

    def __init__(self, response: AsyncIterable[ModelResponseStreamEvent]) -> None:
        self._iterator = aiter(response)
        self._context = contextvars.copy_context()
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting_on: Any = None
        self._released: asyncio.Future[None] | None = None
        self.aborted = False
        self.pulling = False

    def __await__(self) -> Generator[Any, Any, ModelResponseStreamEvent]:
        """`await events` pulls the next event: `StopAsyncIteration` at the end, `ModelEventsAborted` after `abort`."""
        # Drives the pull's coroutine the way a task does (send, or throw what woke it), in the run's context.
        if self.aborted:
            raise ModelEventsAborted
        coroutine: Generator[Any, Any, ModelResponseStreamEvent] = self._iterator.__anext__().__await__()
        run = self._context.run
        value: Any = None
        error: BaseException | None = None
        self.pulling = True
        try:
            while True:
                if self.aborted and error is None:
                    error = asyncio.CancelledError()
                try:
                    waiting_on = run(coroutine.send, value) if error is None else run(coroutine.throw, error)
                except StopIteration as stop:
                    return cast(ModelResponseStreamEvent, stop.value)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self.aborted and (task is None or not task.cancelling()):
                        raise ModelEventsAborted from None
                    raise
                value, error = None, None
                self._waiting_on = waiting_on
                try:
                    value = yield waiting_on
                except BaseException as exc:  # what woke the task: thrown into the pull, as a task would
                    error = exc
                finally:
                    self._waiting_on = None
        finally:
            self.pulling = False
            released = self._released
            if released is not None and not released.done():
                released.set_result(None)

    def finish(self, error: BaseException | None = None) -> None:
        """The consumer reached the end of the response (or `error` ended it): the run goes on."""
        if not self._done.done():
            if error is None:
                self._done.set_result(None)
            else:
                self._done.set_exception(error)

    async def finished(self) -> None:
        """Wait for the consumer to pull the whole response; raises what ended it early."""
        await self._done

    async def abort(self) -> None:
        """The run stops: end a pull in flight and wait until it has left the stream; no pull starts after."""
        self.aborted = True
        if not self.pulling:
            return
        released = self._released = asyncio.get_running_loop().create_future()
        waiting_on = self._waiting_on
        if isinstance(waiting_on, asyncio.Future) and not waiting_on.done():
            waiting_on.cancel()  # what `Task.cancel` does to the future a task waits on
        cancelled = False
        while not released.done():  # the stream must not be closed under a pull still in it
            try:
                await asyncio.shield(released)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError


class ModelEventsAborted(Exception):
    """The run stopped while the consumer was pulling its model's events: the consumer stops pulling them."""


class _TappedModel(WrapperModel):
    def __init__(self, wrapped: Model, hand_over: Callable[[ModelEvents], Awaitable[None]]) -> None:
        super().__init__(wrapped)
        self._hand_over = hand_over

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        error: Exception | None = None
        async with self.wrapped.request_stream(
            messages, model_settings, model_request_parameters, run_context
        ) as streamed:
            events = ModelEvents(streamed)
            try:
                await self._hand_over(events)
                await events.finished()
            except asyncio.CancelledError:
                await events.abort()
                raise
            except Exception as exc:  # the stream failed part way: what arrived is kept (below)
                error = exc
        # Read after the stream closed, for what closing it filled in (usage, the finish reason). A stream
        # that failed part way fails the run's own stream the same way, after what arrived, which the run
        # keeps (its partial response and usage) as it would have.
        response = streamed.get()
        if error is None:
            yield CompletedStreamedResponse(response, model_request_parameters=model_request_parameters)
        else:
            yield _FailedStreamedResponse(response, model_request_parameters=model_request_parameters, error=error)


class _FailedStreamedResponse(CompletedStreamedResponse):
    """What arrived of a response whose stream failed: iterating it raises that failure."""

    def __init__(
        self, response: ModelResponse, *, model_request_parameters: ModelRequestParameters, error: Exception
    ) -> None:
        super().__init__(response, model_request_parameters=model_request_parameters)
        self._error = error

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        raise self._error
        yield  # pragma: no cover - makes this an async generator


async def report_progress(ctx: RunContext[Any], *, message: str | None = None, fraction: float | None = None) -> None:
    """Report progress from inside an async tool; it streams live as a `tool_progress` event.

    ```python
    from pydantic_ai import RunContext
    from pydantic_deep.streaming import report_progress


    async def fetch_pages(ctx: RunContext[object], urls: list[str]) -> int:
        for done, _url in enumerate(urls, start=1):
            await report_progress(ctx, message=f"fetched {done}/{len(urls)}", fraction=done / len(urls))
        return len(urls)
    ```

    `fraction` is between 0 and 1 when given. The report goes to the event stream only, never into
    the model's context. Outside a run's tool call it raises Pydantic AI's `UserError`.
    """
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction!r}")
    await ctx.emit(ToolProgressEvent(message=message, fraction=fraction))


async def relay_subagent_events(ctx: RunContext[Any], events: AsyncIterable[AgentStreamEvent]) -> None:
    """Relay a delegated run's events into the stream of the run that delegated it.

    `create_deep_agent` passes this as the harness `SubAgents(event_stream_handler=...)`; pass it yourself
    (with `shared_capabilities=[StreamTap()]`) when you build `SubAgents` by hand. Outside a
    `pydantic_deep.streaming` run it just drains the events.
    """
    state = CURRENT_STREAM.get()
    running = _RUNNING_TOOL.get()
    if state is None or running is None:
        async for _ in events:
            pass
        return
    parent_ctx, tool_call_id = running
    parent_run_id = parent_ctx.run_id or ""
    depth = state.depths.get(parent_run_id, 0) + 1
    run_id = ctx.run_id or ""
    state.depths[run_id] = depth
    sub = SubRun(
        run_id=run_id,
        agent_name=ctx.agent.name if ctx.agent is not None else None,
        depth=depth,
        parent_run_id=parent_run_id,
        parent_tool_call_id=tool_call_id,
    )
    loop = asyncio.get_running_loop()
    async for event in events:
        if isinstance(event, SubagentStreamEvent):
            # A grandchild's event, already placed in the tree: pass it up unchanged.
            await parent_ctx.emit(event)
            continue
        if isinstance(event, ToolProgressEvent):
            wrapped = SubagentStreamEvent(
                event=event, sub=sub, delivered=loop.create_future(), tool_call_id=event.tool_call_id
            )
        else:
            wrapped = SubagentStreamEvent(
                event=event, sub=sub, delivered=loop.create_future(), tool_call_id=tool_call_id
            )
        await parent_ctx.emit(wrapped)
        assert wrapped.delivered is not None
        await wrapped.delivered
