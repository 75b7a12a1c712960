"""The public streaming functions: thin views over the one core in `_core`."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any, Literal, TypedDict, Unpack

from pydantic_ai import AgentRunResult, CancellationToken, DeferredToolResults
from pydantic_ai.agent import AbstractAgent, EventStreamHandler
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model
from pydantic_ai.output import OutputSpec
from pydantic_ai.toolsets import AbstractToolset
from pydantic_ai.usage import UsageLimits
from pydantic_ai.workspaces import WorkspaceBackend

from ..budget import Budget
from ._core import RunOutcome, StreamOptions, stream_run
from .approvals import ApprovalCallback, ApprovalPolicy
from .types import AnyStreamEvent, StreamEventType

__all__ = (
    "EventCallback",
    "RunOptions",
    "ToolCallUpdate",
    "collect_stream_result",
    "merge_streams",
    "run_stream",
    "run_stream_with_tools",
    "stream_text",
    "stream_tool_calls",
)

EventCallback = Callable[[AnyStreamEvent], Awaitable[None] | None]
"""`on_event` of `collect_stream_result`: a plain function or a coroutine function."""


class RunOptions(TypedDict, total=False):
    """The keyword options every streaming function takes, all optional."""

    message_history: Sequence[ModelMessage] | None
    """Earlier messages to continue from, e.g. `result.all_messages()` of a previous run."""
    model: Model | str | None
    """Run on this model instead of the agent's own."""
    usage_limits: UsageLimits | None
    """Pydantic AI's limits on requests, tokens and tool calls for this run."""
    cancellation_token: CancellationToken | None
    """Cancel it to end the run with `agent_end` status `cancelled`, keeping the usage so far."""
    run_id: str | None
    """The top-level run's id (a new UUID when not given)."""
    emit_progress: bool
    """Whether `progress` events are sent (default `True`)."""
    run_timeout: float | None
    """Seconds the whole run may take; past it the run ends `failed` with a `RunTimeoutError`."""
    idle_timeout: float | None
    """Seconds the model and tools may go without an event; past it the run ends `failed` with an `IdleTimeoutError`."""
    on_messages: Callable[[list[ModelMessage]], Any] | None
    """Called (sync or async) once as the run ends, whatever its status, with the conversation so far
    (`all_messages()`, to pass as `message_history` next time), before `agent_end` is sent."""
    workspace: WorkspaceBackend | Literal["new"] | None
    """The run's workspace, as Pydantic AI's `workspace=`: e.g. the deps' `backend`, to continue a
    `message_history` made in another workspace (a deep agent refuses to redirect a run to it)."""
    toolsets: Sequence[AbstractToolset[Any]]
    """More tools for this run only, as Pydantic AI's `toolsets=` (a UI's own tools, say)."""
    capabilities: Sequence[AbstractCapability[Any]]
    """More capabilities for this run only, as Pydantic AI's `capabilities=`."""
    output_type: OutputSpec[Any] | None
    """This run's output type instead of the agent's, as Pydantic AI's `output_type=`. One that lists
    `DeferredToolRequests` ends the run with the calls that need approval instead of waiting for them."""
    deferred_tool_results: DeferredToolResults | None
    """Answers to the deferred tool calls (approvals, external results) the history ends with."""
    on_approval: ApprovalCallback | None
    """Decides each call that waits for approval (sync or async; gets the `approval_required` event,
    returns `True`, `False` or an `ApprovalDecision`); without it, answer with `approve`/`deny`."""
    approval_timeout: float | None
    """Seconds a call may wait for a decision before it is denied (default: no limit)."""
    budget: Budget | None
    """Limits for this run (tokens, dollars, steps, seconds), on top of any the agent has."""
    require_approval: ApprovalPolicy | None
    """Calls that wait for approval in this run, on top of the agent's: tool names, or a function of a
    call's name and arguments returning true (or a reason). A deep agent's sub-agents follow it too."""
    durability: Callable[[EventStreamHandler[Any]], AbstractCapability[Any]] | None
    """Makes the run durable: called with the stream's handler of live model events, it returns the
    durable-execution capability for this run, e.g. `lambda live: PGTaskDurability(event_stream_handler=live)`.
    Text and thinking still stream live from inside each durable model request (not after it settles)."""


def _options(options: RunOptions, *, tool_args_deltas: bool = False) -> StreamOptions:
    return StreamOptions(tool_args_deltas=tool_args_deltas, **options)


def run_stream(
    agent: AbstractAgent[Any, Any], prompt: str | None, deps: Any = None, **options: Unpack[RunOptions]
) -> AsyncGenerator[AnyStreamEvent]:
    """Run `agent` and yield every `StreamEvent` as it happens: text, tools, progress, errors, sub-agents.

    `deps` are the run's dependencies (a `DeepAgentDeps` for a deep agent); the keyword options are
    those of `RunOptions` (`message_history` continues a conversation). The first event is
    `agent_start` and the last `agent_end`; when the run fails, `error` and `agent_end` come first and
    then the exception is raised. Breaking out of the loop or cancelling the consumer stops the run at
    once. A `cancellation_token` cancelled by the caller ends the stream with `agent_end` whose status
    is `cancelled`, carrying the usage so far.
    """
    return stream_run(agent, prompt, deps, _options(options))


def run_stream_with_tools(
    agent: AbstractAgent[Any, Any], prompt: str | None, deps: Any = None, **options: Unpack[RunOptions]
) -> AsyncGenerator[AnyStreamEvent]:
    """Like `run_stream`, plus `tool_args_delta` events with each argument fragment as the model streams it."""
    return stream_run(agent, prompt, deps, _options(options, tool_args_deltas=True))


async def stream_text(
    agent: AbstractAgent[Any, Any],
    prompt: str | None,
    deps: Any = None,
    *,
    include_subagents: bool = False,
    **options: Unpack[RunOptions],
) -> AsyncGenerator[str]:
    """Yield only the answer's text, chunk by chunk; sub-agents' text too with `include_subagents=True`."""
    async with aclosing(stream_run(agent, prompt, deps, _options(options))) as events:
        async for event in events:
            if event.event_type is StreamEventType.LLM_CHUNK and (include_subagents or event.depth == 0):
                yield event.data["text"]


class ToolCallUpdate(tuple[str, dict[str, Any], Any]):
    """`(tool_name, args, result)` from `stream_tool_calls`, with `tool_call_id`, `finished` and `error`.

    It unpacks as a 3-tuple; `result` is `None` while the call runs. A failed call ends with
    `finished=True`, `result=None` and the message in `error`.
    """

    tool_call_id: str | None
    finished: bool
    error: str | None

    def __new__(
        cls,
        tool_name: str,
        args: dict[str, Any],
        result: Any,
        *,
        tool_call_id: str | None = None,
        finished: bool = False,
        error: str | None = None,
    ) -> ToolCallUpdate:
        update = super().__new__(cls, (tool_name, args, result))
        update.tool_call_id = tool_call_id
        update.finished = finished
        update.error = error
        return update


async def stream_tool_calls(
    agent: AbstractAgent[Any, Any], prompt: str | None, deps: Any = None, **options: Unpack[RunOptions]
) -> AsyncGenerator[ToolCallUpdate]:
    """Yield `(tool_name, args, result)` for each tool call: once as it starts (`result` is `None`), once as it ends."""
    args_by_call: dict[str | None, dict[str, Any]] = {}
    async with aclosing(stream_run(agent, prompt, deps, _options(options))) as events:
        async for event in events:
            if event.event_type is StreamEventType.TOOL_START:
                start = event.data
                args_by_call[start["tool_call_id"]] = start["args"]
                yield ToolCallUpdate(start["tool_name"], start["args"], None, tool_call_id=start["tool_call_id"])
            elif event.event_type is StreamEventType.TOOL_END:
                end = event.data
                yield ToolCallUpdate(
                    end["tool_name"],
                    args_by_call.pop(end["tool_call_id"], {}),
                    end["result"],
                    tool_call_id=end["tool_call_id"],
                    finished=True,
                    error=end["error"],
                )


async def collect_stream_result(
    agent: AbstractAgent[Any, Any],
    prompt: str | None,
    deps: Any = None,
    *,
    on_event: EventCallback | None = None,
    **options: Unpack[RunOptions],
) -> tuple[AgentRunResult[Any] | None, list[AnyStreamEvent]]:
    """Run to the end and return `(result, events)`, calling `on_event` (sync or async) for each event live.

    `result` is Pydantic AI's `AgentRunResult` (`.output`, `.all_messages()`, `.usage`), or `None` when a
    `cancellation_token` cancelled the run. A failing run raises after `on_event` has seen its
    `error` and `agent_end` events. The only streaming function that keeps events in memory.
    """
    outcome = RunOutcome()
    events: list[AnyStreamEvent] = []
    async with aclosing(stream_run(agent, prompt, deps, _options(options), outcome)) as stream:
        async for event in stream:
            events.append(event)
            if on_event is not None:
                returned = on_event(event)
                if inspect.isawaitable(returned):
                    await returned
    return outcome.result, events


async def merge_streams(
    *streams: AsyncIterator[AnyStreamEvent], raise_errors: bool = True
) -> AsyncGenerator[AnyStreamEvent]:
    """Interleave several streams' events in the order they arrive, each stream's own order kept.

    Each stream is pulled by its own task into a one-slot queue, so a fast run waits for the reader
    instead of piling up events. Leaving the loop closes every stream. A stream that raises ends the
    merge with that exception (after the others are closed) unless `raise_errors=False`, in which case
    its `error` and `agent_end` events are all you see of it.
    """
    queue: asyncio.Queue[tuple[int, AnyStreamEvent | BaseException | None]] = asyncio.Queue(maxsize=1)

    async def pump(index: int, stream: AsyncIterator[AnyStreamEvent]) -> None:
        try:
            async for event in stream:
                await queue.put((index, event))
        except Exception as exc:
            await queue.put((index, exc))
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
        await queue.put((index, None))

    tasks = [asyncio.create_task(pump(index, stream)) for index, stream in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            _, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                if raise_errors:
                    raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
