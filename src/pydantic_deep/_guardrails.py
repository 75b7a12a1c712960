"""The harness's guardrails, made to tell the stream what they decide.

A harness guardrail that redacts (its guard returns `GuardrailResult.replace`) or refuses a tool call
only records a trace span; one that fails the run raises (the stream shows that already). `recorded`
wraps the guards of an `InputGuardrail`, `OutputGuardrail` or `ToolGuardrail` so that each redaction
and each refused tool call is also emitted as a `GuardrailNotice`, which the stream turns into a
`guardrail` event. The guards run unchanged: the wrapper calls them as the harness would and hands
their verdict back.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar, cast

from pydantic_ai import RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import CapabilityEvent
from pydantic_ai_harness.guardrails import (
    GuardrailResult,
    InputGuardrail,
    OutputGuardrail,
    ToolCallInfo,
    ToolGuardrail,
    ToolResultInfo,
)

__all__ = ("GuardrailNotice", "recorded")

_Cap = TypeVar("_Cap", bound=AbstractCapability[Any])
_Kind = Literal["input", "output", "tool"]


@dataclass(kw_only=True)
class GuardrailNotice(CapabilityEvent, namespace="pydantic_deep", name="guardrail_notice"):
    """A guardrail redacted something (`action="redact"`) or refused a tool call (`action="block"`)."""

    guardrail: _Kind = "tool"
    """Which guardrail decided (the `kind` of the `guardrail` event: `kind` is taken by the event itself)."""
    action: Literal["redact", "block"] = "redact"
    message: str = ""


def recorded(capability: _Cap) -> _Cap:
    """`capability` with its guards wrapped to emit a `GuardrailNotice` for what they decide (others as given)."""
    if isinstance(capability, InputGuardrail):
        return cast(_Cap, replace(capability, guard=_each(capability.guard, "input")))
    if isinstance(capability, OutputGuardrail):
        return cast(_Cap, replace(capability, guard=_each(capability.guard, "output")))
    if isinstance(capability, ToolGuardrail):
        guard, result_guard = capability.guard, capability.result_guard
        return cast(
            _Cap,
            replace(
                capability,
                guard=_wrap(guard, "tool") if guard is not None else None,
                result_guard=_wrap(result_guard, "tool") if result_guard is not None else None,
            ),
        )
    return capability


def _each(guard: Any, kind: _Kind) -> Any:
    """A guard or a chain of them (a sequence), each wrapped; anything else is left for the harness to refuse."""
    if callable(guard):
        return _wrap(cast(Callable[..., Any], guard), kind)
    if isinstance(guard, Sequence) and not isinstance(guard, str | bytes):
        return [_wrap(one, kind) if callable(one) else one for one in cast(Sequence[Any], guard)]
    return guard


def _wrap(guard: Callable[..., Any], kind: _Kind) -> Callable[[RunContext[Any], Any], Awaitable[GuardrailResult]]:
    wants_ctx = _takes_ctx(guard)
    qualname = getattr(guard, "__qualname__", None) or type(guard).__name__
    name = getattr(guard, "__name__", None) or type(guard).__name__

    async def recording(ctx: RunContext[Any], value: Any) -> GuardrailResult:
        outcome = guard(ctx, value) if wants_ctx else guard(value)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        verdict = outcome if isinstance(outcome, GuardrailResult) else _verdict(outcome)
        subject = kind
        if isinstance(value, ToolResultInfo):
            subject = f"the result of {value.name}"
        elif isinstance(value, ToolCallInfo):
            subject = f"the arguments of {value.name}"
        if verdict.action == "replace":
            await ctx.emit(GuardrailNotice(guardrail=kind, action="redact", message=f"{subject} redacted by {name}"))
        elif verdict.action == "block" and kind == "tool":  # a refused call: the run goes on
            tool = value.name if isinstance(value, ToolCallInfo | ToolResultInfo) else "a tool"
            message = verdict.message or f"the call to {tool} was refused by {name}"
            await ctx.emit(GuardrailNotice(guardrail=kind, action="block", message=message))
        return verdict

    recording.__qualname__ = qualname  # errors the harness raises about a guard name the user's
    return recording


def _verdict(outcome: object) -> GuardrailResult:
    return GuardrailResult.allow() if outcome else GuardrailResult.block()


def _takes_ctx(guard: Callable[..., Any]) -> bool:
    """Whether the harness passes `guard` the run context: a second positional parameter without a default,
    or a first annotated `RunContext`."""
    try:
        parameters = list(inspect.signature(guard).parameters.values())
    except ValueError:
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [parameter for parameter in parameters if parameter.kind in kinds]
    if len(positional) < 2:
        return False
    if positional[1].default is inspect.Parameter.empty:
        return True
    return "RunContext" in str(positional[0].annotation)
