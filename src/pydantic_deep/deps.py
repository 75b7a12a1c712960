"""The dependencies every deep-agent run carries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, cast

from pydantic_ai.workspaces import WorkspaceBackend
from typing_extensions import TypeVar

from .backends import StateBackend

if TYPE_CHECKING:
    from .tracing import TraceContext

__all__ = ("DeepAgentDeps",)

BackendT = TypeVar("BackendT", bound=WorkspaceBackend, default=WorkspaceBackend, covariant=True)
"""The deps' backend type: `DeepAgentDeps(backend=StateBackend())` is a `DeepAgentDeps[StateBackend]`."""


@dataclass(kw_only=True)
class DeepAgentDeps(Generic[BackendT]):
    """What a deep-agent run works with: where its files live and where its traces go.

    ```python
    from pydantic_deep import DeepAgentDeps, StateBackend

    deps = DeepAgentDeps(backend=StateBackend())
    assert deps.trace_context is None
    ```

    One `DeepAgentDeps` per run (or per conversation) is the rule: the backend holds that run's files,
    and nothing else in it is shared between runs. It is generic in its backend, so
    `DeepAgentDeps(backend=StateBackend()).backend.files` type-checks; a plain `DeepAgentDeps`
    annotation accepts deps with any backend.
    """

    backend: BackendT = field(default_factory=cast(Callable[[], Any], StateBackend))
    """The run's workspace: the file tools read and write here. In memory by default."""

    trace_context: TraceContext | None = None
    """When set, every run with these deps records spans into it (see `pydantic_deep.tracing`)."""
