"""Small facts about the engine's objects that streaming and tracing both need, written once.

Private to `pydantic_deep`: its subpackages import it, nothing outside does. It imports no part of
Pydantic AI at run time, so importing it costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

if TYPE_CHECKING:
    from pydantic_ai.messages import ToolCallPart
    from pydantic_ai.models import AbstractModel

__all__ = ("blocking_guardrail", "jsonable", "model_label", "tool_args")


def jsonable(value: object) -> Any:
    """`value` as JSON-compatible data; what cannot be converted becomes its `repr`, never an error."""
    try:
        return to_jsonable_python(value, fallback=repr)
    except Exception:  # a value whose own serializer fails
        return repr(value)


def tool_args(call: ToolCallPart) -> dict[str, Any]:
    """A call's arguments as the model sent them; arguments that are not a JSON object come as `{"_raw": ...}`."""
    try:
        return call.args_as_dict()
    except Exception:
        return {"_raw": call.args}


def model_label(model: AbstractModel | str | None) -> str | None:
    """`provider:model` (or the bare name when the provider is unknown), as events and spans show a model."""
    if model is None or isinstance(model, str):
        return model
    return f"{model.system}:{model.model_name}" if model.system else model.model_name


def blocking_guardrail(exc: BaseException) -> str | None:
    """The `guardrail` kind (`budget`, `input`, `output`, `tool`) of an exception that stopped a run, if any."""
    from pydantic_ai.exceptions import UsageLimitExceeded
    from pydantic_ai_harness.guardrails import GuardrailError, InputBlocked, OutputBlocked

    if isinstance(exc, UsageLimitExceeded):
        return "budget"
    if isinstance(exc, InputBlocked):
        return "input"
    if isinstance(exc, OutputBlocked):
        return "output"
    if isinstance(exc, GuardrailError):
        return "tool"
    return None
