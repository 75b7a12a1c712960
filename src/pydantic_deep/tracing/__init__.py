"""Tracing for deep-agent runs: spans for every run, model request and tool call, sent to exporters.

Put a `TraceContext` in the run's deps (`DeepAgentDeps(trace_context=...)`) and every run of an agent
built by `create_deep_agent` records spans into it, streamed or not; sub-agent runs nest under the
tool call that started them. Add the `Tracing` capability to trace any other Pydantic AI agent.
"""

from ._capability import Tracing
from ._console import ConsoleExporter
from ._context import TraceContext, TraceSummary
from ._exporter import SpanExporter
from ._jsonl import JSONLExporter
from ._memory import InMemoryExporter, SpanNode
from ._otel import OpenTelemetryExporter
from ._span import (
    AgentRunData,
    ModelRequestData,
    Span,
    SpanData,
    SpanEvent,
    SpanKind,
    SpanStatus,
    ToolCallData,
    current_span,
)

__all__ = (
    "AgentRunData",
    "ConsoleExporter",
    "InMemoryExporter",
    "JSONLExporter",
    "ModelRequestData",
    "OpenTelemetryExporter",
    "Span",
    "SpanData",
    "SpanEvent",
    "SpanExporter",
    "SpanKind",
    "SpanNode",
    "SpanStatus",
    "ToolCallData",
    "TraceContext",
    "TraceSummary",
    "Tracing",
    "current_span",
)
