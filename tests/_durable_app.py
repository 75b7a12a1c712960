"""The agent the durable tests serve (`pydantic-deep serve --agent _durable_app:make_agent`).

A deep agent on a scripted model, the same in every process of a fleet. Each run writes its prompt to
`notes.md`, calls `record` (a side effect: a line in `effects.log`), reads `notes.md` back and answers in
chunks quoting it. Where the prompt asks, the run stops at a gate: in `record` (`mid-tool`) or halfway
through its answer (`mid-answer`). A gate is a handshake through files in `DURABLE_TEST_DIR`: the process
writes `<gate>.reached`, then waits until the test creates `<gate>.open` (or kills the process).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

from pydantic_deep import DeepAgentDeps, create_deep_agent


def _dir() -> Path:
    return Path(os.environ["DURABLE_TEST_DIR"])


async def gate(name: str) -> None:
    (_dir() / f"{name}.reached").write_text(str(os.getpid()))
    while not (_dir() / f"{name}.open").exists():  # noqa: ASYNC110 - the other side is another process
        await asyncio.sleep(0.02)


def _turn(messages: list[ModelMessage]) -> tuple[str, int]:
    """The last user prompt, and how many model responses came after it (this turn's step)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    return part.content, sum(isinstance(m, ModelResponse) for m in messages[index:])
    return "", 0


def _last_result(messages: list[ModelMessage]) -> str:
    for part in messages[-1].parts if isinstance(messages[-1], ModelRequest) else ():
        if isinstance(part, ToolReturnPart):
            return part.model_response_str()
    return ""


def _read_notes() -> DeltaToolCall:
    return DeltaToolCall(name="read_file", json_args='{"path": "notes.md"}', tool_call_id="call-read")


async def script(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | dict[int, DeltaToolCall]]:
    prompt, step = _turn(messages)
    if prompt.startswith("again"):  # a later turn: what did the last one leave in the workspace?
        if step == 0:
            yield {0: _read_notes()}
        else:
            yield f"The notes say: {_last_result(messages)}"
        return
    if step == 0:
        args = f'{{"path": "notes.md", "content": "{prompt}"}}'
        yield {0: DeltaToolCall(name="write_file", json_args=args, tool_call_id="call-write")}
    elif step == 1:
        yield {0: DeltaToolCall(name="record", json_args=f'{{"label": "{prompt}"}}', tool_call_id="call-record")}
    elif step == 2:
        yield {0: _read_notes()}
    else:
        notes = _last_result(messages)
        yield "Part one, "
        yield "still part one. "
        if "mid-answer" in prompt:
            await gate(f"{prompt}-answer")
        yield "Part two: "
        yield "the notes say " + ("yes" if prompt in notes else f"something else ({notes!r})") + "."


async def record(ctx: RunContext[DeepAgentDeps], label: str) -> str:
    """A side effect the tests count: one line per call, with the call's id (its idempotency key)."""
    with (_dir() / "effects.log").open("a") as effects:
        effects.write(f"{label}|{ctx.tool_call_id}|{os.getpid()}\n")
    if "mid-tool" in label:
        await gate(f"{label}-tool")
    return f"recorded {label}"


def make_agent() -> Agent[DeepAgentDeps, str]:
    return create_deep_agent(FunctionModel(stream_function=script), tools=[record], name="durable-test")
