"""The AG-UI and Vercel AI views of a run's log.

A protocol endpoint starts its run like `POST /runs` does and then, like every other view, reads the
run's log on the bus. The log's events are turned back into Pydantic AI's own stream events
(`LogReplay`) and encoded by the protocols' event streams from Pydantic AI (`AGUIEventStream`,
`VercelAIEventStream`, used as standalone encoders), so the frames are the ones those adapters send.

What the protocols have no event for travels where each has room for it: usage, cost and the run's end
as Vercel AI message metadata (`metadata.pydantic_deep`) or AG-UI `CUSTOM` events named `progress` and
`agent_end`; plan, file, sub-agent, tool-progress, approval and guardrail events as Vercel AI
`data-<event_type>` parts or AG-UI `CUSTOM` events named after the event type.

The translation depends on the log alone: message ids are made from the run id, so every reader, on any
process, at any time, gets the same frames. Each frame's SSE `id` is its position in that sequence, which
is how a client resumes (`Last-Event-ID`) without receiving a frame twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic_ai import AgentRunResult, AgentRunResultEvent, CustomEvent, DeferredToolRequests
from pydantic_ai.exceptions import RunCancelled
from pydantic_ai.messages import (
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponsePart,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
    ToolReturnPart,
)
from pydantic_ai.ui import NativeEvent, UIEventStream
from pydantic_ai.ui.vercel_ai import VercelAIEventStream
from pydantic_ai.ui.vercel_ai.response_types import (
    BaseChunk,
    DataChunk,
    MessageMetadataChunk,
    ToolApprovalRequestChunk,
)

from ..bus import EventBatch
from ..streaming import DEFERRED_CALL_ERROR, AnyStreamEvent, StreamEventType

__all__ = (
    "KEEP_ALIVE_CHUNK",
    "KEEP_ALIVE_FRAME",
    "KEEP_ALIVE_NAME",
    "LogEvent",
    "LogReplay",
    "RunFailed",
    "VercelAILogStream",
    "agui_log_stream",
    "native_events",
    "protocol_frames",
)

KEEP_ALIVE_FRAME = b": keep-alive\n\n"

_PartKind = Literal["text", "thinking", "tool-call"]
_CARRIED = frozenset(
    {
        StreamEventType.PROGRESS,
        StreamEventType.PLAN_UPDATE,
        StreamEventType.FILE_CHANGE,
        StreamEventType.SUBAGENT_START,
        StreamEventType.SUBAGENT_END,
        StreamEventType.TOOL_PROGRESS,
        StreamEventType.APPROVAL_REQUIRED,
        StreamEventType.APPROVAL_RESOLVED,
        StreamEventType.GUARDRAIL,
        StreamEventType.AGENT_END,
    }
)
"""Top-level events with no counterpart among Pydantic AI's stream events: carried as `LogEvent`s."""
_DECIDED = frozenset({StreamEventType.APPROVAL_REQUIRED, StreamEventType.APPROVAL_RESOLVED})
"""A sub-agent's events that are carried too: its calls that wait are decided over `/runs/{run_id}/approvals`."""
_MESSAGE_EVENTS = frozenset(
    {
        StreamEventType.LLM_CHUNK,
        StreamEventType.THINKING_CHUNK,
        StreamEventType.TOOL_START,
        StreamEventType.TOOL_END,
        StreamEventType.PROGRESS,
    }
)


@dataclass(kw_only=True, repr=False)
class LogEvent(CustomEvent, name="pydantic_deep_log_event"):
    """One of our events the protocols have no event for, on its way to the protocol's own encoding.

    `event` is `None` for a keep-alive: the log was idle a while, and the response sends an SSE comment.
    """

    event: Any = None


class RunFailed(Exception):
    """The run's log ended with `error` and a failed `agent_end`: the protocol's error frame says so."""

    def __init__(self, message: str, exception_type: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type


@dataclass
class LogReplay:
    """Turns a run's log back into Pydantic AI's stream events, one log event at a time.

    Text, thinking and each tool call's argument fragments become parts (started, filled and ended as a
    model streams them); `tool_start`/`tool_end` become the tool call and result events. A part ends
    when the next part starts or the model's step ends (`progress`). Only the top-level run's events
    take part: a sub-agent's inner events stay on `/runs`, its delegation shows as its tool call, and
    only its calls that wait for approval are carried.
    """

    index: int = -1
    part: TextPart | ThinkingPart | ToolCallPart | None = None
    kind: _PartKind | None = None
    """The kind of the part last started in this model step (for `previous_part_kind`)."""
    streamed: set[str] = field(default_factory=set[str])
    error: tuple[str, str] | None = None
    ending: Literal["failed", "cancelled"] | None = None
    timestamp: datetime | None = None
    """The timestamp of the log event being turned into frames."""
    waiting: dict[str, tuple[ToolCallPart, str | None]] = field(
        default_factory=dict[str, tuple[ToolCallPart, str | None]]
    )
    """Calls asking for approval and not answered yet, with the reason: a run that ends with some ended
    the Pydantic AI way, its output the `DeferredToolRequests` the protocols turn into approval requests."""
    denied: set[str] = field(default_factory=set[str])
    asked: dict[str, int] = field(default_factory=dict[str, int])
    """The `seq` of each call's `approval_required`."""
    history: list[AnyStreamEvent] = field(default_factory=list["AnyStreamEvent"])
    """The top-level events that make the run's messages (text, calls, results, steps), void ones dropped."""

    def feed(self, event: AnyStreamEvent) -> list[NativeEvent]:
        out: list[NativeEvent] = []
        if event.depth != 0:
            if event.event_type in _DECIDED:  # a sub-agent's call waits in the stream: the client is told
                self.timestamp = event.timestamp
                out.append(LogEvent(event=event))
            return out
        self.timestamp = event.timestamp
        event_type = event.event_type
        data: Any = event.data
        if event_type in _MESSAGE_EVENTS:
            self.history.append(event)
        if event_type is StreamEventType.RUN_RESUMED:
            # The run went on in another process: what the log told after `void_after_seq` is redone. The
            # part it was streaming ends here; the encodings say so (AG-UI: a snapshot of the messages).
            self._close(out, None)
            self.kind = None
            after = data["void_after_seq"]
            self.history = [e for e in self.history if e.seq <= after]
            self.waiting = {k: v for k, v in self.waiting.items() if self.asked.get(k, -1) <= after}
            out.append(LogEvent(event=event))
            return out
        if event_type is StreamEventType.LLM_CHUNK:
            self._fill(out, "text", data["text"])
        elif event_type is StreamEventType.THINKING_CHUNK:
            self._fill(out, "thinking", data["text"])
        elif event_type is StreamEventType.TOOL_ARGS_DELTA:
            self._arguments(
                out, data["tool_call_id"] or f"call-{event.seq}", data["tool_name"] or "", data["args_delta"]
            )
        elif event_type is StreamEventType.TOOL_START:
            self._call(out, data["tool_call_id"] or "", data["tool_name"], data["args"])
        elif event_type is StreamEventType.TOOL_END and data["error"] == DEFERRED_CALL_ERROR:
            pass  # a call the run ended without: the protocols ask for its approval or result instead
        elif event_type is StreamEventType.TOOL_END:
            failed = data["error"] is not None
            denied = data["tool_call_id"] in self.denied
            result = ToolReturnPart(
                tool_name=data["tool_name"],
                content=data["error"] if failed else data["result"],
                tool_call_id=data["tool_call_id"] or "",
                outcome="denied" if denied else "failed" if failed else "success",
            )
            out.append(FunctionToolResultEvent(result))
        elif event_type is StreamEventType.ERROR:
            self.error = (data["error"], data["exception_type"])
        elif event_type is StreamEventType.APPROVAL_REQUIRED:
            call = ToolCallPart(tool_name=data["tool_name"], args=data["args"], tool_call_id=data["tool_call_id"])
            self.waiting[call.tool_call_id] = (call, data["reason"])
            self.asked[call.tool_call_id] = event.seq
        elif event_type is StreamEventType.APPROVAL_RESOLVED:
            self.waiting.pop(data["tool_call_id"], None)
            if not data["approved"]:
                self.denied.add(data["tool_call_id"])
        if event_type in _CARRIED:
            if event_type in (StreamEventType.PROGRESS, StreamEventType.AGENT_END):
                self._close(out, None)
                self.kind = None
            out.append(LogEvent(event=event))
        if event_type is StreamEventType.AGENT_END:
            if data["status"] != "succeeded":
                self.ending = data["status"]
            elif self.waiting:
                out.append(AgentRunResultEvent(AgentRunResult(self._deferred())))
        return out

    def settled_messages(self) -> list[ModelMessage]:
        """The run's messages as its log tells them so far (without void events), as Pydantic AI's."""
        messages: list[ModelMessage] = []
        parts: list[ModelResponsePart] = []
        returns: list[ToolReturnPart] = []
        for event in self.history:
            data: Any = event.data
            kind = event.event_type
            if kind in (StreamEventType.LLM_CHUNK, StreamEventType.THINKING_CHUNK):
                if returns:
                    messages.append(ModelRequest(parts=returns))
                    returns = []
                last = parts[-1] if parts else None
                if kind is StreamEventType.LLM_CHUNK:
                    if isinstance(last, TextPart):
                        parts[-1] = TextPart(content=last.content + data["text"])
                    else:
                        parts.append(TextPart(content=data["text"]))
                elif isinstance(last, ThinkingPart):
                    parts[-1] = ThinkingPart(content=last.content + data["text"])
                else:
                    parts.append(ThinkingPart(content=data["text"]))
            elif kind is StreamEventType.PROGRESS and parts:
                messages.append(ModelResponse(parts=parts))
                parts = []
            elif kind is StreamEventType.TOOL_START:
                call = ToolCallPart(tool_name=data["tool_name"], args=data["args"], tool_call_id=data["tool_call_id"])
                if messages and isinstance(messages[-1], ModelResponse) and not parts:
                    messages[-1] = ModelResponse(parts=[*messages[-1].parts, call])
                else:
                    parts.append(call)
            elif kind is StreamEventType.TOOL_END and data["error"] != DEFERRED_CALL_ERROR:
                failed = data["error"] is not None
                content = data["error"] if failed else data["result"]
                returns.append(
                    ToolReturnPart(
                        tool_name=data["tool_name"], content=content, tool_call_id=data["tool_call_id"] or ""
                    )
                )
        if parts:
            messages.append(ModelResponse(parts=parts))
        if returns:
            messages.append(ModelRequest(parts=returns))
        return messages

    def _deferred(self) -> DeferredToolRequests:
        calls = [call for call, _ in self.waiting.values()]
        reasons = {call_id: {"reason": reason} for call_id, (_, reason) in self.waiting.items() if reason is not None}
        return DeferredToolRequests(approvals=calls, metadata=reasons)

    def end(self) -> None:
        """Raise what ended the run, as the protocols' error handling expects it (nothing for a success)."""
        if self.ending == "cancelled":
            raise RunCancelled("The run was cancelled.")
        if self.ending == "failed":
            message, exception_type = self.error or ("the run failed", "Exception")
            raise RunFailed(message, exception_type)

    def _fill(self, out: list[NativeEvent], kind: Literal["text", "thinking"], text: str) -> None:
        part = self.part
        if kind == "text" and isinstance(part, TextPart):
            self.part = TextPart(content=part.content + text)
            out.append(PartDeltaEvent(index=self.index, delta=TextPartDelta(content_delta=text)))
        elif kind == "thinking" and isinstance(part, ThinkingPart):
            self.part = ThinkingPart(content=part.content + text)
            out.append(PartDeltaEvent(index=self.index, delta=ThinkingPartDelta(content_delta=text)))
        else:
            # A thinking part starts empty: the protocols mint its message id as it starts, the text follows.
            self._start(out, kind, TextPart(content=text) if kind == "text" else ThinkingPart(content=""))
            if kind == "thinking":
                self._fill(out, kind, text)

    def _arguments(self, out: list[NativeEvent], call_id: str, name: str, fragment: str) -> None:
        part = self.part
        if isinstance(part, ToolCallPart) and part.tool_call_id == call_id:
            self.part = ToolCallPart(
                tool_name=part.tool_name, args=f"{part.args or ''}{fragment}", tool_call_id=call_id
            )
            delta = ToolCallPartDelta(args_delta=fragment, tool_call_id=call_id)
            out.append(PartDeltaEvent(index=self.index, delta=delta))
        else:
            self.streamed.add(call_id)
            self._start(out, "tool-call", ToolCallPart(tool_name=name, args=fragment, tool_call_id=call_id))

    def _call(self, out: list[NativeEvent], call_id: str, name: str, args: dict[str, Any]) -> None:
        self._close(out, None)
        # A call this run's model did not make (its arguments were never streamed) is one from the history
        # that an answer lets run now: the client has its part already. A denied one does not run at all.
        if call_id not in self.denied:
            call = ToolCallPart(tool_name=name, args=args, tool_call_id=call_id)
            out.append(FunctionToolCallEvent(call, args_valid=True))

    def _start(self, out: list[NativeEvent], kind: _PartKind, part: TextPart | ThinkingPart | ToolCallPart) -> None:
        self._close(out, kind)
        self.index += 1
        out.append(PartStartEvent(index=self.index, part=part, previous_part_kind=self.kind))
        self.part, self.kind = part, kind

    def _close(self, out: list[NativeEvent], next_kind: _PartKind | None) -> None:
        if self.part is not None:
            out.append(PartEndEvent(index=self.index, part=self.part, next_part_kind=next_kind))
            self.part = None


async def native_events(batches: AsyncIterator[EventBatch], replay: LogReplay) -> AsyncIterator[NativeEvent]:
    """The log's batches as Pydantic AI stream events; a `LogEvent` without an event for each idle spell."""
    async for batch in batches:
        if not batch.events:
            yield LogEvent()
            continue
        for event in batch.events:
            for native in replay.feed(event):
                yield native
    replay.end()


@dataclass
class VercelAILogStream(VercelAIEventStream[Any, Any]):
    """Pydantic AI's Vercel AI encoding of a run's log, with message ids made from the run id."""

    run_key: str = field(default="", kw_only=True)
    _minted: int = field(default=0, kw_only=True)

    def new_message_id(self) -> str:
        self._minted += 1
        self.message_id = f"{self.run_key}-{self._minted}"
        return self.message_id

    async def handle_custom_event(self, event: CustomEvent) -> AsyncIterator[BaseChunk]:
        if not isinstance(event, LogEvent):
            async for chunk in super().handle_custom_event(event):
                yield chunk
            return
        logged: AnyStreamEvent | None = event.event
        if logged is None:
            yield KEEP_ALIVE_CHUNK
            return
        yield _vercel_chunk(logged, self.run_key)

    async def handle_run_result(self, event: AgentRunResultEvent[Any]) -> AsyncIterator[BaseChunk]:
        # Only a run that ended with calls waiting for approval has a result event here (see `LogReplay`);
        # its usage and end went as message metadata already.
        output = event.result.output
        if self.sdk_version >= 6 and isinstance(output, DeferredToolRequests):
            for call in output.approvals:
                yield ToolApprovalRequestChunk(approval_id=call.tool_call_id, tool_call_id=call.tool_call_id)


KEEP_ALIVE_CHUNK = DataChunk(type="data-keep-alive", data=None, transient=True)
"""Stands for an idle spell: `protocol_frames` writes an SSE comment for it (it never reaches a client)."""


def _vercel_chunk(event: AnyStreamEvent, run_id: str) -> BaseChunk:
    data: Any = event.data
    match event.event_type:
        case StreamEventType.PROGRESS:
            return MessageMetadataChunk(message_metadata={"pydantic_deep": {"run_id": run_id, "usage": dict(data)}})
        case StreamEventType.AGENT_END:
            end = {key: data[key] for key in ("status", "total_tokens", "total_cost_usd", "duration_seconds")}
            return MessageMetadataChunk(message_metadata={"pydantic_deep": {"run_id": run_id, **end}})
        case StreamEventType.PLAN_UPDATE:
            return DataChunk(type="data-plan_update", id=data["item_id"], data=dict(data))
        case StreamEventType.FILE_CHANGE:
            return DataChunk(type="data-file_change", id=data["path"], data=dict(data))
        case StreamEventType.TOOL_PROGRESS:
            return DataChunk(type="data-tool_progress", id=data["tool_call_id"], data=dict(data), transient=True)
        case StreamEventType.GUARDRAIL | StreamEventType.RUN_RESUMED:
            return DataChunk(type=f"data-{event.event_type.value}", id=f"{run_id}-{event.seq}", data=dict(data))
        case _:  # sub-agents and approvals: one part per delegation or call (a sub-agent's call ids are its own)
            part_id = data["tool_call_id"] if event.depth == 0 else f"{event.run_id}/{data['tool_call_id']}"
            return DataChunk(type=f"data-{event.event_type.value}", id=part_id, data=dict(data))


def agui_log_stream(**kwargs: Any) -> UIEventStream[Any, Any, Any, Any]:
    """Pydantic AI's AG-UI encoding of a run's log (see `_agui` for why it is imported late)."""
    from ._agui import AGUILogStream

    return AGUILogStream(**kwargs)


async def protocol_frames(
    stream: UIEventStream[Any, Any, Any, Any], native: AsyncIterator[NativeEvent], after: int
) -> AsyncIterator[bytes]:
    """The protocol's SSE frames, each with `id: <its position>`; those up to `after` are left out.

    The first frame (AG-UI `RUN_STARTED`, Vercel AI `start`) is always sent: a client's protocol state
    begins with it, so a resumed stream is one the client accepts as it is.
    """
    position = -1
    async for frame in stream.transform_stream(native):
        if frame is KEEP_ALIVE_CHUNK or getattr(frame, "name", None) == KEEP_ALIVE_NAME:
            yield KEEP_ALIVE_FRAME
            continue
        position += 1
        if position > after or position == 0:
            yield f"id: {position}\n{stream.encode_event(frame)}".encode()


KEEP_ALIVE_NAME = "pydantic_deep.keep_alive"
"""The AG-UI stand-in for an idle spell (a `CUSTOM` event by this name is never sent)."""
