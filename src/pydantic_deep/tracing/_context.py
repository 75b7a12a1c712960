"""`TraceContext`: where a run's spans go, and the running totals over them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ._exporter import SpanExporter
from ._span import AgentRunData, ModelRequestData, Span, SpanData, SpanEvent, new_span_id, new_trace_id

__all__ = ("TraceContext", "TraceSummary")

logger = logging.getLogger("pydantic_deep.tracing")

EndStatus = Literal["ok", "error", "cancelled"]


@dataclass(frozen=True, kw_only=True)
class TraceSummary:
    """Counts and totals over every span that has ended in a `TraceContext`."""

    runs: int
    """Agent runs, sub-agent runs included."""
    model_requests: int
    tool_calls: int
    errors: int
    """Spans that ended with an exception (a failed tool call that the model then retried counts too)."""
    cancelled: int
    """Spans that ended cancelled."""
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float | None
    """Sum of the model requests' known costs; `None` when no request had a known price."""
    wall_time_seconds: float
    """Time during which at least one top-level run was open: concurrent runs are not counted twice."""


class TraceContext:
    """Collects the spans of every run whose deps carry it, and sends them to its exporters.

    ```python
    import asyncio

    from pydantic_deep import DeepAgentDeps, create_deep_agent
    from pydantic_deep.tracing import InMemoryExporter, TraceContext

    memory = InMemoryExporter()
    trace = TraceContext(exporters=[memory])
    asyncio.run(create_deep_agent().run("Plan a picnic", deps=DeepAgentDeps(trace_context=trace)))
    assert trace.summary().runs == 1
    assert memory.tree().splitlines()[0] == "agent_run assistant [ok]"
    ```

    One `TraceContext` can serve many runs at once: each top-level run gets its own trace (its own
    `trace_id`), with sub-agent runs nested under the tool call that started them.
    `include_content=False` leaves prompts, outputs, tool arguments and results out of the spans;
    otherwise long strings are cut to `max_content_chars`.
    """

    def __init__(
        self,
        exporters: Sequence[SpanExporter] = (),
        *,
        include_content: bool = True,
        max_content_chars: int = 1000,
    ) -> None:
        if max_content_chars < 1:
            raise ValueError(f"max_content_chars must be at least 1, got {max_content_chars!r}")
        self.exporters: list[SpanExporter] = list(exporters)
        self.include_content = include_content
        self.max_content_chars = max_content_chars
        self._lock = threading.Lock()
        self._failed_exporters: set[int] = set()
        self._runs = self._model_requests = self._tool_calls = self._errors = self._cancelled = 0
        self._input_tokens = self._output_tokens = 0
        self._cost: float | None = None
        self._open_roots = 0
        self._busy_since = 0.0
        self._wall_time = 0.0
        self._open_runs: dict[str, Span] = {}

    def __repr__(self) -> str:
        return f"TraceContext(exporters={self.exporters!r})"

    def start_span(self, name: str, data: SpanData, *, parent: Span | None = None, instrumented: bool = False) -> Span:
        """Open a span (a child of `parent`, or the root of a new trace) and tell the exporters.

        The `Tracing` capability calls this; call it yourself only to record spans of your own,
        and always pair it with `end_span`.
        """
        now = time.perf_counter()
        span = Span(
            name=name,
            data=data,
            trace_id=parent.trace_id if parent is not None else new_trace_id(),
            span_id=new_span_id(),
            parent_id=parent.span_id if parent is not None else None,
            depth=parent.depth + 1 if parent is not None else 0,
            start_time=datetime.now(UTC),
            perf_start=now,
            instrumented=instrumented,
        )
        if isinstance(data, AgentRunData):
            with self._lock:
                if data.run_id is not None:
                    self._open_runs[data.run_id] = span
                if parent is None:
                    if self._open_roots == 0:
                        self._busy_since = now
                    self._open_roots += 1
        self._export(span, started=True)
        return span

    def add_event(self, run_id: str | None, name: str, attributes: Mapping[str, Any]) -> bool:
        """Record `name` (with `attributes`) now on the open span of the run `run_id`; `False` when there is none.

        `run_stream` records each `approval_required`, `approval_resolved` and `guardrail` event of a traced
        run this way, with the event's data as the attributes (tool arguments only with `include_content`).
        """
        with self._lock:
            span = self._open_runs.get(run_id) if run_id is not None else None
            if span is None or span.status != "running":
                return False
            span.events.append(SpanEvent(name=name, time=datetime.now(UTC), attributes=dict(attributes)))
            return True

    def end_span(self, span: Span, *, status: EndStatus = "ok", error: BaseException | None = None) -> None:
        """Close `span` with `status` (and the exception that ended it, if any), count it, and tell the exporters."""
        if span.status != "running":
            return
        now = time.perf_counter()
        span.end_time = datetime.now(UTC)
        span.duration_seconds = now - span.perf_start
        span.status = status
        if error is not None:
            span.error_type = type(error).__name__
            message = str(error)
            span.error = f"{span.error_type}: {message}" if message else span.error_type
        data = span.data
        with self._lock:
            if status == "error":
                self._errors += 1
            elif status == "cancelled":
                self._cancelled += 1
            if isinstance(data, AgentRunData):
                self._runs += 1
                if data.run_id is not None and self._open_runs.get(data.run_id) is span:
                    del self._open_runs[data.run_id]
                if span.parent_id is None:
                    self._open_roots -= 1
                    if self._open_roots == 0:
                        self._wall_time += now - self._busy_since
            elif isinstance(data, ModelRequestData):
                self._model_requests += 1
                self._input_tokens += data.input_tokens or 0
                self._output_tokens += data.output_tokens or 0
                if data.cost_usd is not None:
                    self._cost = (self._cost or 0.0) + data.cost_usd
            else:
                self._tool_calls += 1
        self._export(span, started=False)

    def summary(self) -> TraceSummary:
        """Counts and totals so far: runs, model requests, tool calls, errors, tokens, cost and wall time."""
        with self._lock:
            wall = self._wall_time + (time.perf_counter() - self._busy_since if self._open_roots else 0.0)
            return TraceSummary(
                runs=self._runs,
                model_requests=self._model_requests,
                tool_calls=self._tool_calls,
                errors=self._errors,
                cancelled=self._cancelled,
                input_tokens=self._input_tokens,
                output_tokens=self._output_tokens,
                total_tokens=self._input_tokens + self._output_tokens,
                cost_usd=self._cost,
                wall_time_seconds=wall,
            )

    def _export(self, span: Span, *, started: bool) -> None:
        for exporter in self.exporters:
            try:
                if started:
                    exporter.on_span_start(span)
                else:
                    exporter.on_span_end(span)
            except Exception:
                # Tracing must never break the run it watches: log the first failure of each exporter, then
                # keep going quietly (it may recover, e.g. a full disk).
                key = id(exporter)
                if key not in self._failed_exporters:
                    self._failed_exporters.add(key)
                    logger.exception(
                        "trace exporter %r failed; the run goes on and further errors from it are not logged", exporter
                    )
