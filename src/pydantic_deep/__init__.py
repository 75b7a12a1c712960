"""pydantic-deep: a deep-agent harness on Pydantic AI that streams everything an agent does, live."""

from .agent import create_deep_agent
from .backends import FilesystemBackend, StateBackend
from .deps import DeepAgentDeps
from .models import demo_model, resolve_model

__all__ = (
    "DeepAgentDeps",
    "FilesystemBackend",
    "StateBackend",
    "create_deep_agent",
    "demo_model",
    "resolve_model",
)
