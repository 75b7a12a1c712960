"""The dependencies every deep-agent run carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic_ai.workspaces import WorkspaceBackend

from .backends import StateBackend

if TYPE_CHECKING:
    from .tracing import TraceContext

__all__ = ("DeepAgentDeps",)


@dataclass(kw_only=True)
class DeepAgentDeps:
    """What a deep-agent run works with: where its files live and where its traces go.

    ```python
    from pydantic_deep import DeepAgentDeps, StateBackend

    deps = DeepAgentDeps(backend=StateBackend())
    assert deps.trace_context is None
    ```

    One `DeepAgentDeps` per run (or per conversation) is the rule: the backend holds that run's files,
    and nothing else in it is shared between runs.
    """

    backend: WorkspaceBackend = field(default_factory=StateBackend)
    """The run's workspace: the file tools read and write here. In memory by default."""

    trace_context: TraceContext | None = None
    """When set, every run with these deps records spans into it (see `pydantic_deep.tracing`)."""
