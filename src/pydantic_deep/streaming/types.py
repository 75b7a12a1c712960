"""The event model: `StreamEventType`, `StreamEvent`, typed payloads and the factories.

Event type names and payload keys are permanent API: new ones may be added, none renamed. Every payload
key of a type is always present (`None` where unknown), so consumers can index without `.get`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, get_args

from typing_extensions import TypedDict, TypeVar

if TYPE_CHECKING:  # the JSON machinery (and Pydantic) is imported on the first encode or decode
    from . import _json

__all__ = (
    "DEFERRED_CALL_ERROR",
    "AgentEndData",
    "AgentEndStreamEvent",
    "AgentStartData",
    "AgentStartStreamEvent",
    "AnyStreamEvent",
    "ApprovalRequiredData",
    "ApprovalRequiredStreamEvent",
    "ApprovalResolvedData",
    "ApprovalResolvedStreamEvent",
    "ErrorData",
    "ErrorStreamEvent",
    "FileChangeData",
    "FileChangeStreamEvent",
    "GuardrailData",
    "GuardrailStreamEvent",
    "LlmChunkStreamEvent",
    "PlanUpdateData",
    "PlanUpdateStreamEvent",
    "ProgressData",
    "ProgressStreamEvent",
    "RunResumedData",
    "RunResumedStreamEvent",
    "RunStatus",
    "StreamEvent",
    "StreamEventType",
    "SubagentEndData",
    "SubagentEndStreamEvent",
    "SubagentStartData",
    "SubagentStartStreamEvent",
    "TextData",
    "ThinkingChunkStreamEvent",
    "ToolArgsDeltaData",
    "ToolArgsDeltaStreamEvent",
    "ToolEndData",
    "ToolEndStreamEvent",
    "ToolProgressData",
    "ToolProgressStreamEvent",
    "ToolStartData",
    "ToolStartStreamEvent",
    "agent_end_event",
    "agent_start_event",
    "error_event",
    "llm_chunk_event",
    "payload_types",
    "progress_event",
    "stream_event_json_schema",
    "thinking_chunk_event",
    "tool_end_event",
    "tool_start_event",
)


class StreamEventType(StrEnum):
    """What happened. A `str` enum, so `event.event_type == "llm_chunk"` and `json.dumps` just work."""

    AGENT_START = "agent_start"
    LLM_CHUNK = "llm_chunk"
    THINKING_CHUNK = "thinking_chunk"
    TOOL_ARGS_DELTA = "tool_args_delta"
    TOOL_START = "tool_start"
    TOOL_PROGRESS = "tool_progress"
    TOOL_END = "tool_end"
    PROGRESS = "progress"
    PLAN_UPDATE = "plan_update"
    FILE_CHANGE = "file_change"
    SUBAGENT_START = "subagent_start"
    SUBAGENT_END = "subagent_end"
    APPROVAL_REQUIRED = "approval_required"
    APPROVAL_RESOLVED = "approval_resolved"
    GUARDRAIL = "guardrail"
    RUN_RESUMED = "run_resumed"
    ERROR = "error"
    AGENT_END = "agent_end"


RunStatus = Literal["succeeded", "failed", "cancelled"]


class AgentStartData(TypedDict):
    """`agent_start`: the first event of every run."""

    agent_name: str | None
    prompt: str | None
    model: str | None


class TextData(TypedDict):
    """`llm_chunk` and `thinking_chunk`: one delta of text as the model sent it."""

    text: str


class ToolArgsDeltaData(TypedDict):
    """`tool_args_delta` (only from `run_stream_with_tools`): a fragment of a tool call's JSON arguments."""

    tool_name: str | None
    tool_call_id: str | None
    args_delta: str


class ToolStartData(TypedDict):
    """`tool_start`: a tool call's arguments are complete and the tool is about to run."""

    tool_name: str
    args: dict[str, Any]
    tool_call_id: str | None


class ToolProgressData(TypedDict):
    """`tool_progress`: what a running tool reported with `report_progress`."""

    tool_name: str | None
    tool_call_id: str | None
    message: str | None
    fraction: float | None


DEFERRED_CALL_ERROR = "deferred: the run ended waiting for this call's approval or result, which the next run brings"
"""The `error` of the `tool_end` of a call a run ended without running (it ended with `DeferredToolRequests`)."""


class ToolEndData(TypedDict):
    """`tool_end`: the tool returned (`result`) or failed (`error`; `DEFERRED_CALL_ERROR` for a deferred call)."""

    tool_name: str
    tool_call_id: str | None
    result: Any
    duration_seconds: float | None
    error: str | None


class ProgressData(TypedDict):
    """`progress`: one model response finished; every number is cumulative for the run."""

    iteration: int
    total_tokens: int | None
    input_tokens: int | None
    output_tokens: int | None
    total_cost_usd: float | None
    requests: int | None
    tool_calls: int | None


class PlanUpdateData(TypedDict):
    """`plan_update`: a plan step was created, updated, completed or deleted through the planning tools."""

    action: str
    item_id: str
    content: str
    status: str
    active_form: str | None


class FileChangeData(TypedDict):
    """`file_change`: the file tools wrote, edited or created something in the workspace."""

    path: str
    operation: str
    content_hash: str | None
    diff: str | None


class SubagentStartData(TypedDict):
    """`subagent_start`: a delegated run is starting; its events follow with `depth` one higher."""

    subagent_name: str
    task: str
    tool_call_id: str | None


class SubagentEndData(TypedDict):
    """`subagent_end`: a delegated run settled; `output` is what the delegating agent receives."""

    subagent_name: str
    tool_call_id: str | None
    success: bool
    output: str | None
    duration_seconds: float | None


class ApprovalRequiredData(TypedDict):
    """`approval_required`: a tool call waits for a person's decision (it started: `tool_start` came first)."""

    tool_call_id: str
    tool_name: str
    args: dict[str, Any]
    reason: str | None


class ApprovalResolvedData(TypedDict):
    """`approval_resolved`: the decision on a call that waited; a denied call then ends with `tool_end`."""

    tool_call_id: str
    approved: bool
    decided_by: str | None
    """Who decided: the principal over HTTP, `stream` (in the loop), `callback`, `timeout`."""
    reason: str | None
    args: dict[str, Any] | None
    """The arguments the call runs with when the decision edited them, else `None`."""


GuardrailKind = Literal["budget", "input", "output", "tool"]
GuardrailAction = Literal["warn", "block", "redact"]


class GuardrailData(TypedDict):
    """`guardrail`: a budget or guardrail acted. `block` ends the run (then `error` and `agent_end`),
    except a tool guardrail's, which refuses that call only."""

    kind: GuardrailKind
    action: GuardrailAction
    metric: str | None
    """What a budget counts: `tokens`, `cost_usd`, `steps` or `seconds` (`None` for guardrails)."""
    limit: float | None
    used: float | None
    message: str


class RunResumedData(TypedDict):
    """`run_resumed`: a durable run goes on in another process after the one running it was lost.

    The events with `seq` after `void_after_seq` and before this one belong to work that was cut off
    (`void_events` of them: text, tool calls, sub-agent events of the interrupted step): they never
    completed, and the run produces that work again after this event. A consumer drops what they added.
    """

    from_step: int
    """How many model requests had settled: the run goes on from the next one (their results are not redone)."""
    void_after_seq: int
    void_events: int
    owner: str
    """The process that took the run over."""
    attempt: int
    """Which attempt at the run this is (2 after the first takeover)."""


class ErrorData(TypedDict):
    """`error`: an exception ended the run; `agent_end` with `success=False` follows."""

    error: str
    exception_type: str


class AgentEndData(TypedDict):
    """`agent_end`: the last event of every run its consumer did not abandon."""

    agent_name: str | None
    success: bool
    status: RunStatus
    total_iterations: int
    total_tokens: int | None
    total_cost_usd: float | None
    duration_seconds: float | None
    output: Any


_E = TypeVar("_E", bound=StreamEventType, default=StreamEventType, covariant=True)
_D = TypeVar("_D", bound=Mapping[str, Any], default=Mapping[str, Any], covariant=True)


@dataclass(slots=True, kw_only=True)
class StreamEvent(Generic[_E, _D]):
    """One thing an agent run did, as it happened.

    ```python
    from pydantic_deep.streaming import StreamEvent, StreamEventType, llm_chunk_event

    event = llm_chunk_event(text="Hello")
    assert event.event_type == "llm_chunk" and event.data == {"text": "Hello"}
    assert StreamEvent.from_json(event.to_json()) == event
    ```

    The streaming functions yield `AnyStreamEvent`, a union of one `StreamEvent` per event type, so a
    type checker narrows `data` when you test `event_type`: after `if event.event_type ==
    StreamEventType.TOOL_END:`, `event.data` is a `ToolEndData`.

    `seq` counts the events of one stream from 0 without gaps, sub-agent events included; `run_id`
    names the run that produced the event (a sub-agent's own run for its events), and `depth` is 0 for
    the top-level run, 1 for its sub-agents, and so on.
    """

    event_type: _E
    data: _D
    """The payload: the keys of the `TypedDict` named after the event type (e.g. `ToolEndData`)."""
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    seq: int = 0
    run_id: str = ""
    agent_name: str | None = None
    parent_run_id: str | None = None
    parent_tool_call_id: str | None = None
    depth: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-compatible values (timestamp in ISO 8601 with its UTC offset)."""
        return json.loads(self.to_json())

    def to_json(self) -> str:
        """One line of JSON; `StreamEvent.from_json` gives the same event back."""
        return _wire().encode(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> AnyStreamEvent:
        """Rebuild an event from `to_dict()` output; raises `ValueError` naming the field that is wrong."""
        return _wire().decode_python(value)

    @classmethod
    def from_json(cls, text: str | bytes) -> AnyStreamEvent:
        """Parse one line written by `to_json`; raises `ValueError` naming the field that is wrong."""
        return _wire().decode_json(text)


AgentStartStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.AGENT_START], AgentStartData]
LlmChunkStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.LLM_CHUNK], TextData]
ThinkingChunkStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.THINKING_CHUNK], TextData]
ToolArgsDeltaStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.TOOL_ARGS_DELTA], ToolArgsDeltaData]
ToolStartStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.TOOL_START], ToolStartData]
ToolProgressStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.TOOL_PROGRESS], ToolProgressData]
ToolEndStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.TOOL_END], ToolEndData]
ProgressStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.PROGRESS], ProgressData]
PlanUpdateStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.PLAN_UPDATE], PlanUpdateData]
FileChangeStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.FILE_CHANGE], FileChangeData]
SubagentStartStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.SUBAGENT_START], SubagentStartData]
SubagentEndStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.SUBAGENT_END], SubagentEndData]
ApprovalRequiredStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.APPROVAL_REQUIRED], ApprovalRequiredData]
ApprovalResolvedStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.APPROVAL_RESOLVED], ApprovalResolvedData]
GuardrailStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.GUARDRAIL], GuardrailData]
RunResumedStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.RUN_RESUMED], RunResumedData]
ErrorStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.ERROR], ErrorData]
AgentEndStreamEvent: TypeAlias = StreamEvent[Literal[StreamEventType.AGENT_END], AgentEndData]

AnyStreamEvent: TypeAlias = (
    AgentStartStreamEvent
    | LlmChunkStreamEvent
    | ThinkingChunkStreamEvent
    | ToolArgsDeltaStreamEvent
    | ToolStartStreamEvent
    | ToolProgressStreamEvent
    | ToolEndStreamEvent
    | ProgressStreamEvent
    | PlanUpdateStreamEvent
    | FileChangeStreamEvent
    | SubagentStartStreamEvent
    | SubagentEndStreamEvent
    | ApprovalRequiredStreamEvent
    | ApprovalResolvedStreamEvent
    | GuardrailStreamEvent
    | RunResumedStreamEvent
    | ErrorStreamEvent
    | AgentEndStreamEvent
)
"""Every event a stream can carry: narrowing on `event_type` gives the payload type of `data`.

This union is the one definition of which payload goes with which event type: the JSON encoding and
decoding and the published JSON Schema are all derived from it.
"""


def payload_types() -> dict[StreamEventType, type[Mapping[str, Any]]]:
    """Each event type's payload `TypedDict`, read off `AnyStreamEvent`."""
    pairs: dict[StreamEventType, type[Mapping[str, Any]]] = {}
    for alias in get_args(AnyStreamEvent):
        literal, payload = get_args(alias)
        (event_type,) = get_args(literal)
        pairs[event_type] = payload
    return pairs


def stream_event_json_schema() -> dict[str, Any]:
    """The JSON Schema of one serialised `StreamEvent` (a `oneOf` keyed by `event_type`)."""
    return _wire().json_schema()


_WIRE: list[_json.Wire] = []


def _wire() -> _json.Wire:
    if not _WIRE:
        from . import _json

        _WIRE.append(_json.wire())
    return _WIRE[0]


def llm_chunk_event(*, text: str) -> LlmChunkStreamEvent:
    """A text delta from the model."""
    return StreamEvent(event_type=StreamEventType.LLM_CHUNK, data=TextData(text=text))


def thinking_chunk_event(*, text: str) -> ThinkingChunkStreamEvent:
    """A reasoning delta from the model."""
    return StreamEvent(event_type=StreamEventType.THINKING_CHUNK, data=TextData(text=text))


def tool_start_event(
    *, tool_name: str, args: dict[str, Any] | None = None, tool_call_id: str | None = None
) -> ToolStartStreamEvent:
    """A tool is about to run with these arguments."""
    data: ToolStartData = {"tool_name": tool_name, "args": args or {}, "tool_call_id": tool_call_id}
    return StreamEvent(event_type=StreamEventType.TOOL_START, data=data)


def tool_end_event(
    *,
    tool_name: str,
    result: Any = None,
    duration_seconds: float | None = None,
    tool_call_id: str | None = None,
    error: str | None = None,
) -> ToolEndStreamEvent:
    """A tool returned `result`, or failed with `error`."""
    data: ToolEndData = {
        "tool_name": tool_name,
        "tool_call_id": tool_call_id,
        "result": result,
        "duration_seconds": duration_seconds,
        "error": error,
    }
    return StreamEvent(event_type=StreamEventType.TOOL_END, data=data)


def progress_event(
    *,
    iteration: int,
    total_tokens: int | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    total_cost_usd: float | None = None,
    requests: int | None = None,
    tool_calls: int | None = None,
) -> ProgressStreamEvent:
    """A step finished; the numbers are cumulative for the run."""
    data: ProgressData = {
        "iteration": iteration,
        "total_tokens": total_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_cost_usd": total_cost_usd,
        "requests": requests,
        "tool_calls": tool_calls,
    }
    return StreamEvent(event_type=StreamEventType.PROGRESS, data=data)


def error_event(*, error: str, exception_type: str) -> ErrorStreamEvent:
    """An exception ended the run."""
    data: ErrorData = {"error": error, "exception_type": exception_type}
    return StreamEvent(event_type=StreamEventType.ERROR, data=data)


def agent_start_event(
    *, agent_name: str | None = None, prompt: str | None = None, model: str | None = None
) -> AgentStartStreamEvent:
    """A run started."""
    data: AgentStartData = {"agent_name": agent_name, "prompt": prompt, "model": model}
    return StreamEvent(event_type=StreamEventType.AGENT_START, data=data, agent_name=agent_name)


def agent_end_event(
    *,
    agent_name: str | None = None,
    success: bool = True,
    status: RunStatus | None = None,
    total_iterations: int = 0,
    total_tokens: int | None = None,
    total_cost_usd: float | None = None,
    duration_seconds: float | None = None,
    output: Any = None,
) -> AgentEndStreamEvent:
    """A run ended; `status` defaults to `succeeded` or `failed` from `success`."""
    data: AgentEndData = {
        "agent_name": agent_name,
        "success": success,
        "status": status or ("succeeded" if success else "failed"),
        "total_iterations": total_iterations,
        "total_tokens": total_tokens,
        "total_cost_usd": total_cost_usd,
        "duration_seconds": duration_seconds,
        "output": output,
    }
    return StreamEvent(event_type=StreamEventType.AGENT_END, data=data, agent_name=agent_name)
