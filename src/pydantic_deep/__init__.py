"""pydantic-deep: a deep-agent harness on Pydantic AI that streams everything an agent does, live.

Every name here is imported on first use, so `import pydantic_deep` (and so every subpackage, the
command line's `--help` and `replay` among them) does not pay for importing Pydantic AI up front.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes

if TYPE_CHECKING:
    from .agent import create_deep_agent
    from .backends import FilesystemBackend, StateBackend
    from .budget import Budget
    from .deps import DeepAgentDeps
    from .models import demo_model, resolve_model

_LAZY = {
    "Budget": ".budget",
    "DeepAgentDeps": ".deps",
    "FilesystemBackend": ".backends",
    "StateBackend": ".backends",
    "create_deep_agent": ".agent",
    "demo_model": ".models",
    "resolve_model": ".models",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = (
    "Budget",
    "DeepAgentDeps",
    "FilesystemBackend",
    "StateBackend",
    "create_deep_agent",
    "demo_model",
    "resolve_model",
)
