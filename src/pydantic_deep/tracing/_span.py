"""What a span is: one timed piece of an agent run, with the data its kind records.

A span is an agent run, a model request or a tool call (`AgentRunData`, `ModelRequestData`,
`ToolCallData`). Spans of one top-level run share a `trace_id` and link to their parent by
`parent_id`; a sub-agent's run is a child of the tool call that started it.
"""

from __future__ import annotations

import random
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, assert_never

from .._engine import jsonable

if TYPE_CHECKING:
    from ._context import TraceContext

__all__ = (
    "AgentRunData",
    "ModelRequestData",
    "Span",
    "SpanData",
    "SpanEvent",
    "SpanKind",
    "SpanStatus",
    "ToolCallData",
    "current_span",
)

SpanKind = Literal["agent_run", "model_request", "tool_call"]
SpanStatus = Literal["running", "ok", "error", "cancelled"]
"""`running` until the span ends; then `ok`, `error` (an exception ended it) or `cancelled`."""


@dataclass(kw_only=True)
class AgentRunData:
    """What an agent-run span records. Token, cost and count totals are this run's own, not its sub-agents'."""

    agent_name: str | None
    run_id: str | None
    model: str | None
    """The run's model as `provider:name` when known."""
    prompt: str | None = None
    output: str | None = None
    """A summary of the output (truncated), set when the run succeeds."""
    requests: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    """`None` while no model request of this run had a known price."""


@dataclass(kw_only=True)
class ModelRequestData:
    """What a model-request span records."""

    model: str | None
    """The requested model's name, e.g. `gpt-4o`."""
    provider: str | None
    """The provider (Pydantic AI's model `system`), e.g. `openai`."""
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    finish_reason: str | None = None


@dataclass(kw_only=True)
class ToolCallData:
    """What a tool-call span records."""

    tool_name: str
    tool_call_id: str | None
    args: dict[str, Any] | None = None
    """The arguments as JSON-able values, long strings truncated; `None` when content is not recorded."""
    result: str | None = None
    """A summary of what the tool returned (truncated); `None` when it failed or content is not recorded."""


SpanData = AgentRunData | ModelRequestData | ToolCallData


@dataclass(frozen=True, kw_only=True)
class SpanEvent:
    """Something that happened at one moment of a span: a decision (`approval_required`,
    `approval_resolved`) or a `guardrail`, named and with the data of the stream event of that name."""

    name: str
    time: datetime
    attributes: dict[str, Any]


# Random, not secret: ids only have to be unique, and `getrandbits` is several times cheaper than `os.urandom`
# (OpenTelemetry's SDK makes its ids the same way).
def new_trace_id() -> str:
    return f"{random.getrandbits(128):032x}"


def new_span_id() -> str:
    return f"{random.getrandbits(64):016x}"


@dataclass(kw_only=True, eq=False)
class Span:
    """One timed piece of a run. Exporters get it when it starts and again, filled in, when it ends."""

    name: str
    """The agent's name, the model's name or the tool's name."""
    data: SpanData
    trace_id: str
    """32 hex digits, shared by every span of one top-level run (OpenTelemetry's format)."""
    span_id: str
    """16 hex digits."""
    parent_id: str | None
    depth: int
    """0 for a top-level run, +1 for each level below it."""
    start_time: datetime
    perf_start: float = field(default=0.0, repr=False)
    """`time.perf_counter()` at the start, for a duration that clock changes cannot skew."""
    end_time: datetime | None = None
    duration_seconds: float | None = None
    status: SpanStatus = "running"
    error: str | None = None
    """`"ExceptionType: message"` when the span ended with an error."""
    error_type: str | None = None
    instrumented: bool = False
    """True when Pydantic AI's own OpenTelemetry instrumentation (`instrument=`, Logfire) also records this run."""
    attributes: dict[str, Any] = field(default_factory=dict[str, Any])
    """Extra key/values your own code adds, e.g. from a tool: `current_span().attributes["rows"] = 10`."""
    events: list[SpanEvent] = field(default_factory=list[SpanEvent])
    """Decisions made during the span, in order (see `TraceContext.add_event`)."""

    @property
    def kind(self) -> SpanKind:
        match self.data:
            case AgentRunData():
                return "agent_run"
            case ModelRequestData():
                return "model_request"
            case ToolCallData():
                return "tool_call"
            case _:
                assert_never(self.data)

    def to_dict(self) -> dict[str, Any]:
        """The span as JSON-able values (timestamps as ISO 8601 strings); what `JSONLExporter` writes."""
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "kind": self.kind,
            "name": self.name,
            "depth": self.depth,
            "status": self.status,
            "start_time": self.start_time.isoformat(),
            "end_time": self.end_time.isoformat() if self.end_time is not None else None,
            "duration_seconds": self.duration_seconds,
            "error": self.error,
            "error_type": self.error_type,
            "data": jsonable(asdict(self.data)),
            "attributes": jsonable(self.attributes),
            "events": [
                {"name": event.name, "time": event.time.isoformat(), "attributes": jsonable(event.attributes)}
                for event in self.events
            ],
        }


CURRENT_SPAN: ContextVar[tuple[TraceContext, Span] | None] = ContextVar("pydantic_deep_current_span", default=None)


def current_span() -> Span | None:
    """The span the calling code runs in (inside a tool: that tool call's span), or `None` outside a traced run.

    ```python
    from pydantic_deep.tracing import current_span

    assert current_span() is None  # not inside a traced run
    ```
    """
    current = CURRENT_SPAN.get()
    return current[1] if current is not None else None
