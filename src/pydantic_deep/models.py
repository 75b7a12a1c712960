"""Model resolution and the offline demo model.

A deep agent's model comes from, in order: the `model` argument (a Pydantic AI `Model` or a
`"provider:name"` string), the `PYDANTIC_DEEP_MODEL` environment variable, then the built-in offline
demo model, which needs no network and no key.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.exceptions import ModelAPIError, UserError
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse, infer_model
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

__all__ = (
    "DEMO_DELAY_ENV_VAR",
    "DEMO_MODEL_NAME",
    "MODEL_ENV_VAR",
    "IncompleteAnswerError",
    "ModelConfigError",
    "RequireCompleteAnswers",
    "demo_model",
    "resolve_model",
)

MODEL_ENV_VAR = "PYDANTIC_DEEP_MODEL"
DEMO_DELAY_ENV_VAR = "PYDANTIC_DEEP_DEMO_DELAY"
DEMO_MODEL_NAME = "pydantic-deep-demo"

DEMO_NOTICE = (
    "(This is pydantic-deep's offline demo model: it follows a script and calls no provider. "
    "Pick a real model with `--model openai:gpt-4o`, the PYDANTIC_DEEP_MODEL environment variable, "
    "or a local OpenAI-compatible server such as Ollama via OPENAI_BASE_URL.)"
)


class ModelConfigError(ValueError):
    """A model was asked for that cannot be used: an unknown name, or a provider without credentials."""


class IncompleteAnswerError(ModelAPIError):
    """The provider's stream ended before its completion marker: the answer was cut off (a dropped
    connection, a proxy that gave up). Raised instead of taking the partial answer as the whole one."""


class RequireCompleteAnswers(WrapperModel):
    """Wraps an OpenAI model (Chat Completions or Responses) so a streamed answer that ends without the
    API's completion marker (`finish_reason`; `response.completed`) fails the run with
    `IncompleteAnswerError` instead of succeeding with the cut-off text.

    `resolve_model` wraps every OpenAI model it makes. Pydantic AI takes a missing `finish_reason` as
    `stop` because some OpenAI-compatible servers never send one; the text that arrived stays in the
    run's events either way.
    """

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        async with self.wrapped.request_stream(
            messages, model_settings, model_request_parameters, run_context
        ) as response:
            yield response
        # Both OpenAI APIs record the provider's own finish reason as it arrives, and only then.
        if "finish_reason" not in (response.provider_details or {}) and not response.cancelled:
            received = sum(len(getattr(part, "content", "") or "") for part in response.get().parts)
            raise IncompleteAnswerError(
                model_name=response.model_name,
                message=(
                    "the model's answer was cut off: its stream ended before the provider's completion marker "
                    f"({received} characters had arrived)"
                ),
            )


def resolve_model(model: Model | str | None = None) -> Model:
    """Turn the user's choice into a Pydantic AI model: explicit, then `PYDANTIC_DEEP_MODEL`, then the demo.

    Raises `ModelConfigError` with a one-line reason for an unknown model string or a provider whose
    credentials are missing, so a CLI can print it instead of a traceback.
    """
    if isinstance(model, Model):
        return model
    name = model if model is not None else os.environ.get(MODEL_ENV_VAR) or None
    if name is None or name.strip() in ("demo", DEMO_MODEL_NAME):
        return demo_model()
    name = name.strip()
    if ":" not in name:
        raise ModelConfigError(
            f"unknown model {name!r}: use 'provider:name', e.g. 'openai:gpt-4o' or 'anthropic:claude-sonnet-4-5'"
        )
    try:
        model = infer_model(name)
    except UserError as exc:
        raise ModelConfigError(f"cannot use model {name!r}: {_first_line(exc)}") from exc
    except ImportError as exc:
        raise ModelConfigError(
            f"cannot use model {name!r}: its client is not installed ({_first_line(exc)}); "
            "install this project's matching extra, e.g. uv sync --extra anthropic"
        ) from exc
    except Exception as exc:  # provider constructors raise their SDK's own errors, e.g. a missing API key
        raise ModelConfigError(f"cannot use model {name!r}: {_first_line(exc)}") from exc
    return _require_complete(model)


def _require_complete(model: Model) -> Model:
    try:
        from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    except ImportError:  # pragma: no cover - the openai extra is not installed
        return model
    return RequireCompleteAnswers(model) if isinstance(model, OpenAIChatModel | OpenAIResponsesModel) else model


def _first_line(exc: BaseException) -> str:
    """The first sentence of an error, so a CLI can show it on one line."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[0]
    return line.split(". ", 1)[0].rstrip(".")


def demo_model(*, delay: float | None = None) -> FunctionModel:
    """The offline demo model: plans, writes and reads a file through the tools, then streams an answer.

    It marks its plan's steps done as it goes (`update_task_statuses`), so the plan ends complete.

    `delay` is the pause between streamed tokens in seconds; by default it is read from
    `PYDANTIC_DEEP_DEMO_DELAY` (0.02 when unset). Tests use 0.
    """
    if delay is None:
        raw = os.environ.get(DEMO_DELAY_ENV_VAR, "0.02")
        try:
            delay = max(0.0, float(raw))
        except ValueError:
            raise ModelConfigError(f"{DEMO_DELAY_ENV_VAR}={raw!r} is not a number of seconds") from None
    script = _DemoScript(delay)
    return FunctionModel(script.respond, stream_function=script.stream, model_name=DEMO_MODEL_NAME)


class _DemoScript:
    """The demo's four steps, chosen from what the conversation already holds, so any prompt works."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def _plan(self, messages: list[ModelMessage], info: AgentInfo) -> list[ToolCallPart] | str:
        prompt = _last_prompt(messages)
        done = _tools_done_since_prompt(messages)
        tools = {tool.name for tool in info.function_tools}
        path = f"notes-{_slug(prompt)}.md"
        planned = "write_plan" in tools
        if planned and "write_plan" not in done:
            items = [
                {"id": "notes", "content": "Write notes about the request", "active_form": "Writing notes"},
                {"id": "read", "content": "Read the notes back", "active_form": "Reading the notes"},
                {"id": "answer", "content": "Answer", "active_form": "Answering"},
            ]
            items[0]["status"] = "in_progress"
            return [ToolCallPart("write_plan", {"items": items}, tool_call_id="demo-plan")]
        if "write_file" in tools and "write_file" not in done:
            content = f"# Notes\n\nRequest: {prompt}\n\n- Break the work into steps.\n- Keep the user informed.\n"
            return [ToolCallPart("write_file", {"path": path, "content": content}, tool_call_id="demo-write")]
        # One call per step, so the events come in the same order every time.
        if planned and "write_file" in done and "update_task_statuses" not in done:
            progress = _statuses(notes="completed", read="in_progress")
            return [ToolCallPart("update_task_statuses", progress, tool_call_id="demo-progress")]
        if "read_file" in tools and "read_file" not in done:
            return [ToolCallPart("read_file", {"path": path}, tool_call_id="demo-read")]
        if planned and done.count("update_task_statuses") < 2:
            finished = _statuses(read="completed", answer="completed")
            return [ToolCallPart("update_task_statuses", finished, tool_call_id="demo-done")]
        return _answer(prompt, wrote_file="write_file" in done)

    async def respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        plan = self._plan(messages, info)
        if isinstance(plan, str):
            return ModelResponse(parts=[TextPart(plan)])
        return ModelResponse(parts=list(plan))

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        plan = self._plan(messages, info)
        if isinstance(plan, str):
            for token in re.findall(r"\S+\s*|\s+", plan):
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield token
            return
        for index, call in enumerate(plan):
            yield {
                index: DeltaToolCall(
                    name=call.tool_name, json_args=json.dumps(call.args), tool_call_id=call.tool_call_id
                )
            }


def _is_user_turn(message: ModelMessage) -> bool:
    """A request that starts a user turn: a prompt and no tool results (capabilities such as `Planning`
    append reminder prompts to tool-result requests, which are not the user speaking)."""
    return (
        isinstance(message, ModelRequest)
        and any(isinstance(part, UserPromptPart) for part in message.parts)
        and not any(isinstance(part, ToolReturnPart) for part in message.parts)
    )


def _last_prompt(messages: list[ModelMessage]) -> str:
    for message in reversed(messages):
        if _is_user_turn(message):
            for part in message.parts:
                if isinstance(part, UserPromptPart):
                    return part.content if isinstance(part.content, str) else "your request"
    return "your request"


def _tools_done_since_prompt(messages: list[ModelMessage]) -> list[str]:
    """The tools that returned since the user's last prompt, once per call."""
    done: list[str] = []
    for message in reversed(messages):
        if _is_user_turn(message):
            break
        if isinstance(message, ModelRequest):
            done += [part.tool_name for part in message.parts if isinstance(part, ToolReturnPart)]
    return done


def _statuses(**statuses: str) -> dict[str, list[dict[str, str]]]:
    return {"updates": [{"task_id": task_id, "status": status} for task_id, status in statuses.items()]}


def _slug(prompt: str) -> str:
    words = re.findall(r"[a-z0-9]+", prompt.lower())[:5]
    return "-".join(words) or "request"


def _answer(prompt: str, *, wrote_file: bool) -> str:
    steps = "I planned the work, wrote my notes to a file and read them back. " if wrote_file else ""
    return (
        f"{DEMO_NOTICE}\n\n"
        f"You asked: {prompt.strip()}\n\n"
        f"{steps}A real model would answer here, token by token, exactly as this text arrives: "
        "each piece is an event you can render in a terminal, send over SSE or log to a file."
    )
