"""`ScriptedModel`: a Pydantic AI model that answers each request with the next step of a script.

```python
import asyncio

from pydantic_ai import Agent

from pydantic_deep.testing import ScriptedModel, Step, Text, ToolCall


def lookup(key: str) -> str:
    return key.upper()


model = ScriptedModel([Step(ToolCall("lookup", {"key": "a"})), Step(Text("Found ", "A."))])
agent = Agent(model, tools=[lookup])
assert asyncio.run(agent.run("Look up a")).output == "Found A."
```
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import (
    FinishReason,
    ModelMessage,
    ModelRequest,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.usage import RequestUsage

from ._playback import Delta, PlaybackModel, PlaybackResponse

__all__ = ("Chunk", "Fail", "ScriptedModel", "ScriptedModelError", "Step", "Text", "Thinking", "ToolCall")


class ScriptedModelError(AssertionError):
    """The run asked the script for something it does not have, or sent a request the step did not expect."""


@dataclass(frozen=True)
class Chunk:
    """One streamed piece of text with a pause (`delay` seconds) or a handshake (`gate`) before it."""

    text: str
    delay: float | None = None
    gate: asyncio.Event | None = field(default=None, compare=False)
    """The model waits until the test sets this event before it sends the chunk."""


class Text:
    """Answer text, streamed in the chunks given: `Text("Hel", "lo")` sends two deltas."""

    def __init__(self, *chunks: str | Chunk) -> None:
        if not chunks:
            raise ValueError("Text needs at least one chunk")
        self.chunks = tuple(c if isinstance(c, Chunk) else Chunk(c) for c in chunks)

    def __repr__(self) -> str:
        return f"Text({', '.join(repr(c.text) for c in self.chunks)})"


class Thinking(Text):
    """Reasoning text, streamed in the chunks given."""

    def __repr__(self) -> str:
        return f"Thinking({', '.join(repr(c.text) for c in self.chunks)})"


@dataclass(frozen=True)
class ToolCall:
    """A call of tool `name` with `args`; its JSON arguments stream in `fragments` pieces."""

    name: str
    args: dict[str, Any] | str = field(default_factory=dict[str, Any])
    id: str | None = None
    """The call's id (`call-<step>-<n>` when not given)."""
    fragments: int = 1


@dataclass(frozen=True)
class Fail:
    """The provider fails at this point of the response: raises `error`, or an HTTP error with `status`.

    `Fail(status=429)` raises Pydantic AI's `ModelHTTPError` as a provider would; `Fail(error=exc)` raises
    `exc` itself. Parts before it in the step have streamed already.
    """

    error: BaseException | None = None
    status: int | None = None
    body: Any = None

    def exception(self, model_name: str) -> BaseException:
        if self.error is not None:
            return self.error
        return ModelHTTPError(self.status or 500, model_name, self.body)


Part = Text | ToolCall | Fail


@dataclass(frozen=True, init=False)
class Step:
    """One model response: its parts in order, its usage, and what the request for it must carry.

    `expect_prompt` is text the request's latest user prompt must contain; `expect_tool_results`
    names the tools whose results (or retry prompts) the request must carry.
    """

    parts: tuple[Part, ...]
    usage: RequestUsage | None
    finish_reason: FinishReason | None
    expect_prompt: str | None
    expect_tool_results: tuple[str, ...] | None

    def __init__(
        self,
        *parts: Part,
        usage: RequestUsage | None = None,
        finish_reason: FinishReason | None = None,
        expect_prompt: str | None = None,
        expect_tool_results: Sequence[str] | None = None,
    ) -> None:
        if not parts:
            raise ValueError("a Step needs at least one part: Text, Thinking, ToolCall or Fail")
        object.__setattr__(self, "parts", parts)
        object.__setattr__(self, "usage", usage)
        object.__setattr__(self, "finish_reason", finish_reason)
        object.__setattr__(self, "expect_prompt", expect_prompt)
        object.__setattr__(self, "expect_tool_results", tuple(expect_tool_results) if expect_tool_results else None)


class ScriptedModel(PlaybackModel):
    """A model that answers request N with step N of `steps`, streamed or not.

    A step lists parts (`Text`, `Thinking`, `ToolCall`, `Fail`); several `ToolCall`s in one step are
    parallel calls. `usage` sets the step's token counts, and `model_name` with `provider_name` pick the
    prices genai-prices applies, so cost and budgets can be tested (`ScriptedModel(...,
    model_name="gpt-4o", provider_name="openai")`). A request past the last step, or one that does not
    carry what its step expects, raises `ScriptedModelError` saying which step and why. `requests` records the
    messages of every request.
    """

    def __init__(
        self,
        steps: Sequence[Step],
        *,
        model_name: str = "scripted",
        provider_name: str | None = None,
    ) -> None:
        super().__init__()
        for index, step in enumerate(steps):
            if not isinstance(step, Step):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise TypeError(f"step {index + 1} must be a Step, got {step!r}")
        self.steps = list(steps)
        self._model_name = model_name
        self._provider_name = provider_name
        self.requests: list[list[ModelMessage]] = []

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def system(self) -> str:
        return self._provider_name or "scripted"

    def _play(self, messages: list[ModelMessage], parameters: ModelRequestParameters) -> PlaybackResponse:
        number = len(self.requests) + 1
        self.requests.append(list(messages))
        if number > len(self.steps):
            raise ScriptedModelError(
                f"ScriptedModel: request {number} asked for step {number}, but the script has "
                f"{len(self.steps)} step(s); the request's last message was {_last_message(messages)}"
            )
        step = self.steps[number - 1]
        _check_expectations(number, step, messages)
        deltas, error = _deltas(number, step, self._model_name)
        return PlaybackResponse(
            model_request_parameters=parameters,
            deltas=deltas,
            name=self._model_name,
            provider=self._provider_name,
            final_usage=step.usage if step.usage is not None else _estimate(step),
            final_finish_reason=step.finish_reason or ("tool_call" if _has_calls(step) else "stop"),
            error=error,
        )


def _deltas(number: int, step: Step, model_name: str) -> tuple[list[Delta], BaseException | None]:
    deltas: list[Delta] = []
    calls = 0
    for index, part in enumerate(step.parts):
        if isinstance(part, Fail):
            return deltas, part.exception(model_name)
        if isinstance(part, Text):
            kind = "thinking" if isinstance(part, Thinking) else "text"
            deltas.extend(
                Delta(kind=kind, index=index, content=c.text, delay=c.delay, gate=c.gate) for c in part.chunks
            )
            continue
        calls += 1
        args = part.args if isinstance(part.args, str) else json.dumps(part.args)
        size = max(1, -(-len(args) // max(1, part.fragments)))
        pieces = [args[i : i + size] for i in range(0, len(args), size)] or [""]
        call_id = part.id or f"call-{number}-{calls}"
        for n, piece in enumerate(pieces):
            first = n == 0
            deltas.append(
                Delta(
                    kind="tool_call",
                    index=index,
                    content=piece,
                    tool_name=part.name if first else None,
                    tool_call_id=call_id if first else None,
                )
            )
    return deltas, None


def _has_calls(step: Step) -> bool:
    return any(isinstance(part, ToolCall) for part in step.parts)


def _estimate(step: Step) -> RequestUsage:
    """Usage when the step sets none: 50 input tokens, and one output token per 4 characters sent."""
    sent = 0
    for part in step.parts:
        if isinstance(part, Text):
            sent += sum(len(c.text) for c in part.chunks)
        elif isinstance(part, ToolCall):
            sent += len(part.name) + len(json.dumps(part.args) if not isinstance(part.args, str) else part.args)
    return RequestUsage(input_tokens=50, output_tokens=max(1, sent // 4))


def _check_expectations(number: int, step: Step, messages: list[ModelMessage]) -> None:
    where = f"ScriptedModel step {number}"
    request = next((m for m in reversed(messages) if isinstance(m, ModelRequest)), None)
    if step.expect_prompt is not None:
        prompts = [
            p.content
            for m in messages
            if isinstance(m, ModelRequest)
            for p in m.parts
            if isinstance(p, UserPromptPart) and isinstance(p.content, str)
        ]
        latest = prompts[-1] if prompts else None
        if latest is None or step.expect_prompt not in latest:
            raise ScriptedModelError(f"{where}: expected the prompt to contain {step.expect_prompt!r}, got {latest!r}")
    if step.expect_tool_results is not None:
        got = [p.tool_name for p in (request.parts if request else ()) if isinstance(p, ToolReturnPart)]
        if sorted(got) != sorted(step.expect_tool_results):
            raise ScriptedModelError(
                f"{where}: expected the request to carry the results of {list(step.expect_tool_results)}, got {got}"
            )


def _last_message(messages: list[ModelMessage]) -> str:
    if not messages:
        return "(none)"
    text = repr(messages[-1])
    return text if len(text) <= 200 else text[:199] + "…"
