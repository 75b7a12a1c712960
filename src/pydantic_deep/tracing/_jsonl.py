"""`JSONLExporter`: one JSON object per ended span, appended to a file."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from ._exporter import SpanExporter
from ._span import Span

__all__ = ("JSONLExporter",)


class JSONLExporter(SpanExporter):
    """Appends each span to `path` as one line of JSON (`Span.to_dict()`) the moment it ends.

    ```python
    import asyncio
    import json
    import tempfile
    from pathlib import Path

    from pydantic_deep import DeepAgentDeps, create_deep_agent
    from pydantic_deep.tracing import JSONLExporter, TraceContext

    path = Path(tempfile.mkdtemp()) / "trace.jsonl"
    trace = TraceContext(exporters=[JSONLExporter(path)])
    asyncio.run(create_deep_agent().run("Plan a picnic", deps=DeepAgentDeps(trace_context=trace)))
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    assert spans[-1]["kind"] == "agent_run" and spans[-1]["status"] == "ok"
    ```

    The file is opened, written and closed for every span, so each line is on disk as soon as its span
    ends and a crash loses at most the spans still open. Lines are appended: several runs (and several
    processes) can share one file. Missing parent directories are created.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._dir_ready = False

    def __repr__(self) -> str:
        return f"JSONLExporter({str(self.path)!r})"

    def on_span_end(self, span: Span) -> None:
        line = json.dumps(span.to_dict(), ensure_ascii=False, default=repr) + "\n"
        with self._lock:
            if not self._dir_ready:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._dir_ready = True
            with self.path.open("a", encoding="utf-8") as file:
                file.write(line)
