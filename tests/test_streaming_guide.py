"""The user-facing streaming guide (../shared/streaming-guide.md) runs unchanged against this package.

Its Python blocks run in order, in one namespace, with top-level `await` allowed, as a reader would
paste them into `python -m asyncio`. `openai:gpt-4o` reaches Pydantic AI's real OpenAI client, pointed
by `OPENAI_BASE_URL` at our own fake OpenAI server on 127.0.0.1. Nothing of the guide is copied here.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import models

from pydantic_deep.testing import FakeOpenAIServer, ScriptReply, ScriptRequest, ScriptResult, ScriptToolCall

GUIDE = Path(__file__).resolve().parents[2] / "shared" / "streaming-guide.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)

pytestmark = pytest.mark.skipif(
    not GUIDE.exists(), reason=f"the streaming guide is not beside the repository ({GUIDE})"
)


def script(request: ScriptRequest) -> ScriptResult:
    """A small real agent: write a file when file tools are offered, then answer in a few chunks."""
    offered = {tool["name"] for tool in request.tools}
    if "write_file" in offered and not request.tool_results:
        return ScriptReply(
            tool_calls=[ScriptToolCall("write_file", {"path": "story.md", "content": "Once upon a time"})]
        )
    return ["Once ", "upon ", "a ", "time", "."]


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(script) as server, models.override_allow_model_requests(True):
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test")
        monkeypatch.chdir(tmp_path)  # the guide's logging example writes events.jsonl
        yield server


def guide_blocks() -> list[tuple[int, str]]:
    text = GUIDE.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


async def run_block(source: str, line: int, namespace: dict[str, Any]) -> None:
    code = compile(
        "\n" * (line - 1) + source, str(GUIDE), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    result = eval(code, namespace)  # the guide's own code, run as a reader would
    if inspect.iscoroutine(result):
        await result


async def test_the_streaming_guide_runs_unchanged(
    openai_server: FakeOpenAIServer, capfd: pytest.CaptureFixture[str]
) -> None:
    # What a reader has in scope before pasting: a prompt of their own and somewhere to send events.
    async def process_event(event: object) -> None:
        await asyncio.sleep(0)

    namespace: dict[str, Any] = {"__name__": "guide", "prompt": "Tell me a story", "process_event": process_event}
    ran = 0
    for line, source in guide_blocks():
        if "# Wrong" in source:
            # The guide's "wrong" example iterates an async stream with a plain `for`: it must fail loudly.
            with pytest.raises(TypeError, match="async_generator"):
                await run_block(source, line, namespace)
        else:
            await run_block(source, line, namespace)
        ran += 1
    captured = capfd.readouterr()
    printed, traced = captured.out, captured.err
    assert ran == len(guide_blocks()) >= 20
    # The quick start streamed real text and tool calls from the OpenAI Responses API through our stream.
    assert "Once upon a time." in printed
    assert "[Calling write_file]" in printed
    assert "Iteration: 1" in printed
    # The dashboard example collected the real result and typed events.
    assert namespace["result"].output == "Once upon a time."
    assert namespace["events"][0].event_type == "agent_start"
    # The tracing example's ConsoleExporter printed the traced run's span tree (to stderr), tool call included.
    assert "run assistant" in traced and "tool write_file" in traced
    # `openai:gpt-4o` means the Responses API in Pydantic AI 2.x: every request went there, streamed.
    assert openai_server.requests
    assert all("input" in body and body.get("stream") is True for body in openai_server.requests)
