"""`InMemoryExporter`: keeps spans in a list, with a tree view, for tests and dashboards."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ._exporter import SpanExporter
from ._span import Span, SpanKind

__all__ = ("InMemoryExporter", "SpanNode")


@dataclass
class SpanNode:
    """A span with its children, in the order they started."""

    span: Span
    children: list[SpanNode] = field(default_factory=list["SpanNode"])

    def walk(self) -> list[Span]:
        """This span and every span below it, depth first, in start order."""
        spans = [self.span]
        for child in self.children:
            spans.extend(child.walk())
        return spans


class InMemoryExporter(SpanExporter):
    """Keeps every span it is given: `spans` (ended, in end order), `open_spans`, `traces()` and `tree()`.

    ```python
    import asyncio

    from pydantic_deep import DeepAgentDeps, create_deep_agent
    from pydantic_deep.tracing import InMemoryExporter, TraceContext

    memory = InMemoryExporter()
    deps = DeepAgentDeps(trace_context=TraceContext(exporters=[memory]))
    asyncio.run(create_deep_agent().run("Plan a picnic", deps=deps))
    print(memory.tree())
    ```

    It keeps spans until `clear()`; for long-lived processes prefer `JSONLExporter` or OpenTelemetry.
    """

    def __init__(self) -> None:
        self.spans: list[Span] = []
        """Ended spans, in the order they ended."""
        self._open: dict[str, Span] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InMemoryExporter(<{len(self.spans)} spans>)"

    def on_span_start(self, span: Span) -> None:
        with self._lock:
            self._open[span.span_id] = span

    def on_span_end(self, span: Span) -> None:
        with self._lock:
            self._open.pop(span.span_id, None)
            self.spans.append(span)

    @property
    def open_spans(self) -> list[Span]:
        """Spans that have started and not ended, in start order."""
        with self._lock:
            return list(self._open.values())

    def clear(self) -> None:
        with self._lock:
            self.spans.clear()
            self._open.clear()

    def find(self, *, kind: SpanKind | None = None, name: str | None = None) -> list[Span]:
        """Ended spans of `kind` and/or `name`, in start order."""
        return [
            span
            for span in self._all()
            if span.status != "running" and (kind is None or span.kind == kind) and (name is None or span.name == name)
        ]

    def traces(self) -> list[SpanNode]:
        """One tree per trace (per top-level run), open spans included, ordered by start time."""
        nodes = {span.span_id: SpanNode(span) for span in self._all()}
        roots: list[SpanNode] = []
        for node in nodes.values():
            parent = nodes.get(node.span.parent_id) if node.span.parent_id is not None else None
            (parent.children if parent is not None else roots).append(node)
        return roots

    def tree(self) -> str:
        """The traces as indented text, one `kind name [status]` line per span, with no timings to compare."""
        lines: list[str] = []
        for root in self.traces():
            for span in root.walk():
                lines.append(f"{'  ' * span.depth}{span.kind} {span.name} [{span.status}]")
        return "\n".join(lines)

    def _all(self) -> list[Span]:
        with self._lock:
            spans = [*self.spans, *self._open.values()]
        return sorted(spans, key=lambda span: span.perf_start)
