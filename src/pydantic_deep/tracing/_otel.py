"""`OpenTelemetryExporter`: spans as real OpenTelemetry spans, named and attributed per the GenAI conventions."""

from __future__ import annotations

import json
import threading
from typing import Any

from opentelemetry import trace as otel
from opentelemetry.trace import Span as OtelSpan
from opentelemetry.trace import SpanKind as OtelSpanKind
from opentelemetry.trace import Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from ._exporter import SpanExporter
from ._span import AgentRunData, ModelRequestData, Span

__all__ = ("OpenTelemetryExporter",)

_SCOPE = "pydantic-deep"


class OpenTelemetryExporter(SpanExporter):
    """Turns each span into an OpenTelemetry span, with parent links and GenAI semantic-convention attributes.

    Spans go to `tracer_provider`, or the global one (`opentelemetry.trace.set_tracer_provider`,
    `logfire.configure()`) when it is `None`. A top-level run's span is a child of whatever
    OpenTelemetry span is current when the run starts (a web request's, say).

    Runs that Pydantic AI instruments itself (`Agent(instrument=...)`, `Agent.instrument_all()`,
    Logfire) already get `invoke_agent`, `chat` and `execute_tool` spans. For those runs this exporter
    emits no second copy: it adds `pydantic_deep.*` attributes (span ids, status, cost, errors) to
    Pydantic AI's spans instead. The OpenTelemetry SDK comes with the `otel` extra.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        provider = tracer_provider if tracer_provider is not None else otel.get_tracer_provider()
        self.tracer = provider.get_tracer(_SCOPE)
        self._spans: dict[str, tuple[OtelSpan, bool]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenTelemetryExporter(tracer={self.tracer!r})"

    def on_span_start(self, span: Span) -> None:
        if span.instrumented:
            # Pydantic AI's own span for this very operation is current here (its capability wraps ours).
            current = otel.get_current_span()
            with self._lock:
                # Guard against annotating a span that already stands for another one of ours.
                if current.is_recording() and all(current is not mapped for mapped, _ in self._spans.values()):
                    self._spans[span.span_id] = (current, False)
                    return
        with self._lock:
            parent = self._spans.get(span.parent_id) if span.parent_id is not None else None
        context = otel.set_span_in_context(parent[0]) if parent is not None else None
        kind, operation = _OPERATIONS[span.kind]
        otel_span = self.tracer.start_span(
            f"{operation} {span.name}",
            context=context,
            kind=kind,
            attributes=_start_attributes(span, operation),
            start_time=int(span.start_time.timestamp() * 1e9),
        )
        with self._lock:
            self._spans[span.span_id] = (otel_span, True)

    def on_span_end(self, span: Span) -> None:
        with self._lock:
            entry = self._spans.pop(span.span_id, None)
        if entry is None:
            return
        otel_span, owned = entry
        otel_span.set_attributes(_deep_attributes(span))
        for event in span.events:
            attributes: dict[str, AttributeValue] = {}
            for key, value in event.attributes.items():
                if value is not None:
                    attributes[f"pydantic_deep.{key}"] = (
                        value if isinstance(value, str | bool | int | float) else json.dumps(value, default=repr)
                    )
            otel_span.add_event(event.name, attributes, timestamp=int(event.time.timestamp() * 1e9))
        if not owned:
            return
        otel_span.set_attributes(_end_attributes(span))
        if span.status == "error":
            otel_span.set_attribute("error.type", span.error_type or "error")
            otel_span.add_event(
                "exception", {"exception.type": span.error_type or "", "exception.message": span.error or ""}
            )
            otel_span.set_status(Status(StatusCode.ERROR, span.error))
        elif span.status == "ok":
            otel_span.set_status(Status(StatusCode.OK))
        end = span.end_time
        otel_span.end(end_time=int(end.timestamp() * 1e9) if end is not None else None)


_OPERATIONS: dict[str, tuple[OtelSpanKind, str]] = {
    "agent_run": (OtelSpanKind.INTERNAL, "invoke_agent"),
    "model_request": (OtelSpanKind.CLIENT, "chat"),
    "tool_call": (OtelSpanKind.INTERNAL, "execute_tool"),
}


def _start_attributes(span: Span, operation: str) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {"gen_ai.operation.name": operation}
    data = span.data
    if isinstance(data, AgentRunData):
        _put(attributes, "gen_ai.agent.name", data.agent_name)
        _put(attributes, "pydantic_deep.run_id", data.run_id)
        _put(attributes, "pydantic_deep.model", data.model)
        _put(attributes, "pydantic_deep.prompt", data.prompt)
    elif isinstance(data, ModelRequestData):
        _put(attributes, "gen_ai.request.model", data.model)
        _put(attributes, "gen_ai.provider.name", data.provider)
    else:
        attributes["gen_ai.tool.name"] = data.tool_name
        _put(attributes, "gen_ai.tool.call.id", data.tool_call_id)
        if data.args is not None:
            attributes["gen_ai.tool.call.arguments"] = json.dumps(data.args, ensure_ascii=False, default=repr)
    return attributes


def _end_attributes(span: Span) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {}
    data = span.data
    if isinstance(data, AgentRunData):
        attributes["gen_ai.usage.input_tokens"] = data.input_tokens
        attributes["gen_ai.usage.output_tokens"] = data.output_tokens
        attributes["pydantic_deep.requests"] = data.requests
        attributes["pydantic_deep.tool_calls"] = data.tool_calls
        _put(attributes, "pydantic_deep.output", data.output)
    elif isinstance(data, ModelRequestData):
        _put(attributes, "gen_ai.response.model", data.response_model)
        _put(attributes, "gen_ai.usage.input_tokens", data.input_tokens)
        _put(attributes, "gen_ai.usage.output_tokens", data.output_tokens)
        if data.finish_reason is not None:
            attributes["gen_ai.response.finish_reasons"] = (data.finish_reason,)
    else:
        _put(attributes, "gen_ai.tool.call.result", data.result)
    return attributes


def _deep_attributes(span: Span) -> dict[str, AttributeValue]:
    """What every exported span carries, including Pydantic AI's spans this exporter only annotates."""
    attributes: dict[str, AttributeValue] = {
        "pydantic_deep.trace_id": span.trace_id,
        "pydantic_deep.span_id": span.span_id,
        "pydantic_deep.kind": span.kind,
        "pydantic_deep.status": span.status,
    }
    _put(attributes, "pydantic_deep.parent_id", span.parent_id)
    _put(attributes, "pydantic_deep.error", span.error)
    cost = getattr(span.data, "cost_usd", None)
    if isinstance(cost, float):
        attributes["pydantic_deep.cost_usd"] = cost
    for key, value in span.attributes.items():
        attributes[key] = value if isinstance(value, str | bool | int | float) else json.dumps(value, default=repr)
    return attributes


def _put(attributes: dict[str, AttributeValue], key: str, value: Any) -> None:
    if value is not None:
        attributes[key] = value
