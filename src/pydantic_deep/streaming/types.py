"""The event model: `StreamEventType`, `StreamEvent`, typed payloads and the factories.

Event type names and payload keys are permanent API: new ones may be added, none renamed. Every payload
key of a type is always present (`None` where unknown), so consumers can index without `.get`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, cast

from pydantic import TypeAdapter
from typing_extensions import TypedDict

__all__ = (
    "AgentEndData",
    "AgentStartData",
    "ErrorData",
    "FileChangeData",
    "PlanUpdateData",
    "ProgressData",
    "RunStatus",
    "StreamEvent",
    "StreamEventType",
    "SubagentEndData",
    "SubagentStartData",
    "TextData",
    "ToolArgsDeltaData",
    "ToolEndData",
    "ToolProgressData",
    "ToolStartData",
    "agent_end_event",
    "agent_start_event",
    "error_event",
    "llm_chunk_event",
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


class ToolEndData(TypedDict):
    """`tool_end`: the tool returned (`result`) or failed (`error`)."""

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


_PAYLOADS: dict[StreamEventType, type[Any]] = {
    StreamEventType.AGENT_START: AgentStartData,
    StreamEventType.LLM_CHUNK: TextData,
    StreamEventType.THINKING_CHUNK: TextData,
    StreamEventType.TOOL_ARGS_DELTA: ToolArgsDeltaData,
    StreamEventType.TOOL_START: ToolStartData,
    StreamEventType.TOOL_PROGRESS: ToolProgressData,
    StreamEventType.TOOL_END: ToolEndData,
    StreamEventType.PROGRESS: ProgressData,
    StreamEventType.PLAN_UPDATE: PlanUpdateData,
    StreamEventType.FILE_CHANGE: FileChangeData,
    StreamEventType.SUBAGENT_START: SubagentStartData,
    StreamEventType.SUBAGENT_END: SubagentEndData,
    StreamEventType.ERROR: ErrorData,
    StreamEventType.AGENT_END: AgentEndData,
}


@dataclass(slots=True, kw_only=True)
class StreamEvent:
    """One thing an agent run did, as it happened.

    ```python
    from pydantic_deep.streaming import StreamEvent, StreamEventType, llm_chunk_event

    event = llm_chunk_event(text="Hello")
    assert event.event_type == "llm_chunk" and event.data == {"text": "Hello"}
    assert StreamEvent.from_json(event.to_json()) == event
    ```

    `seq` counts the events of one stream from 0 without gaps, sub-agent events included; `run_id`
    names the run that produced the event (a sub-agent's own run for its events), and `depth` is 0 for
    the top-level run, 1 for its sub-agents, and so on.
    """

    event_type: StreamEventType
    data: dict[str, Any]
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
        return {
            "event_type": self.event_type.value,
            "data": self.data,
            "timestamp": self.timestamp.isoformat(),
            "seq": self.seq,
            "run_id": self.run_id,
            "agent_name": self.agent_name,
            "parent_run_id": self.parent_run_id,
            "parent_tool_call_id": self.parent_tool_call_id,
            "depth": self.depth,
        }

    def to_json(self) -> str:
        """One line of JSON; `StreamEvent.from_json` gives the same event back."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), default=_json_default)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> StreamEvent:
        """Rebuild an event from `to_dict()` output; raises `ValueError` for anything else."""
        try:
            event_type = StreamEventType(value["event_type"])
            data = value["data"]
            timestamp = datetime.fromisoformat(value["timestamp"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a StreamEvent: missing or bad field {exc}") from None
        if not isinstance(data, dict) or timestamp.tzinfo is None:
            raise ValueError("not a StreamEvent: `data` must be an object and `timestamp` timezone-aware")
        return cls(
            event_type=event_type,
            data=cast(dict[str, Any], data),
            timestamp=timestamp,
            seq=int(value.get("seq", 0)),
            run_id=str(value.get("run_id", "")),
            agent_name=value.get("agent_name"),
            parent_run_id=value.get("parent_run_id"),
            parent_tool_call_id=value.get("parent_tool_call_id"),
            depth=int(value.get("depth", 0)),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> StreamEvent:
        """Parse one line written by `to_json`; raises `ValueError` for anything else."""
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("not a StreamEvent: expected a JSON object")
        return cls.from_dict(cast(dict[str, Any], value))


def _json_default(value: object) -> object:
    """Make tool results and payload values JSON-safe without failing the stream."""
    from pydantic_core import to_jsonable_python

    try:
        return to_jsonable_python(value)
    except Exception:
        return repr(value)


def stream_event_json_schema() -> dict[str, Any]:
    """The JSON Schema of one serialised `StreamEvent` (a `oneOf` keyed by `event_type`)."""
    variants: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    for event_type, payload in _PAYLOADS.items():
        schema = TypeAdapter(payload).json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[payload.__name__] = schema
        variants.append(
            {
                "type": "object",
                "properties": {
                    "event_type": {"const": event_type.value},
                    "data": {"$ref": f"#/$defs/{payload.__name__}"},
                },
                "required": ["event_type", "data"],
            }
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "StreamEvent",
        "description": "One event of a pydantic-deep stream, as `StreamEvent.to_json()` writes it.",
        "type": "object",
        "properties": {
            "event_type": {"enum": [t.value for t in StreamEventType]},
            "data": {"type": "object"},
            "timestamp": {"type": "string", "format": "date-time"},
            "seq": {"type": "integer", "minimum": 0},
            "run_id": {"type": "string"},
            "agent_name": {"type": ["string", "null"]},
            "parent_run_id": {"type": ["string", "null"]},
            "parent_tool_call_id": {"type": ["string", "null"]},
            "depth": {"type": "integer", "minimum": 0},
        },
        "required": [
            "event_type",
            "data",
            "timestamp",
            "seq",
            "run_id",
            "agent_name",
            "parent_run_id",
            "parent_tool_call_id",
            "depth",
        ],
        "oneOf": variants,
        "$defs": defs,
    }


def llm_chunk_event(*, text: str) -> StreamEvent:
    """A text delta from the model."""
    return StreamEvent(event_type=StreamEventType.LLM_CHUNK, data={"text": text})


def thinking_chunk_event(*, text: str) -> StreamEvent:
    """A reasoning delta from the model."""
    return StreamEvent(event_type=StreamEventType.THINKING_CHUNK, data={"text": text})


def tool_start_event(
    *, tool_name: str, args: dict[str, Any] | None = None, tool_call_id: str | None = None
) -> StreamEvent:
    """A tool is about to run with these arguments."""
    data: ToolStartData = {"tool_name": tool_name, "args": args or {}, "tool_call_id": tool_call_id}
    return StreamEvent(event_type=StreamEventType.TOOL_START, data=dict(data))


def tool_end_event(
    *,
    tool_name: str,
    result: Any = None,
    duration_seconds: float | None = None,
    tool_call_id: str | None = None,
    error: str | None = None,
) -> StreamEvent:
    """A tool returned `result`, or failed with `error`."""
    data: ToolEndData = {
        "tool_name": tool_name,
        "tool_call_id": tool_call_id,
        "result": result,
        "duration_seconds": duration_seconds,
        "error": error,
    }
    return StreamEvent(event_type=StreamEventType.TOOL_END, data=dict(data))


def progress_event(
    *,
    iteration: int,
    total_tokens: int | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    total_cost_usd: float | None = None,
    requests: int | None = None,
    tool_calls: int | None = None,
) -> StreamEvent:
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
    return StreamEvent(event_type=StreamEventType.PROGRESS, data=dict(data))


def error_event(*, error: str, exception_type: str) -> StreamEvent:
    """An exception ended the run."""
    data: ErrorData = {"error": error, "exception_type": exception_type}
    return StreamEvent(event_type=StreamEventType.ERROR, data=dict(data))


def agent_start_event(
    *, agent_name: str | None = None, prompt: str | None = None, model: str | None = None
) -> StreamEvent:
    """A run started."""
    data: AgentStartData = {"agent_name": agent_name, "prompt": prompt, "model": model}
    return StreamEvent(event_type=StreamEventType.AGENT_START, data=dict(data), agent_name=agent_name)


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
) -> StreamEvent:
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
    return StreamEvent(event_type=StreamEventType.AGENT_END, data=dict(data), agent_name=agent_name)
