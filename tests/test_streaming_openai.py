"""The stream over a real provider class: Pydantic AI's OpenAI models against our local OpenAI server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic_ai import models
from pydantic_ai.exceptions import ModelHTTPError

from pydantic_deep import DeepAgentDeps, create_deep_agent
from pydantic_deep.streaming import StreamEvent, StreamEventType, collect_stream_result, run_stream
from pydantic_deep.testing import (
    FakeOpenAIServer,
    ScriptError,
    ScriptReply,
    ScriptRequest,
    ScriptResult,
    ScriptToolCall,
)


def script(request: ScriptRequest) -> ScriptResult:
    if not request.tool_results:
        return ScriptReply(
            tool_calls=[ScriptToolCall("write_file", {"path": "a.txt", "content": "alpha"})],
            input_tokens=1000,
            output_tokens=20,
        )
    return ScriptReply(text=["Saved ", "a.txt", "."], input_tokens=1100, output_tokens=3)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(script) as server, models.override_allow_model_requests(True):
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
        yield server


@pytest.mark.parametrize("model", ["openai:gpt-4o", "openai-chat:gpt-4o"])
async def test_progress_and_agent_end_carry_real_tokens_and_cost(server: FakeOpenAIServer, model: str) -> None:
    deps = DeepAgentDeps()
    result, events = await collect_stream_result(create_deep_agent(model), "Save a file", deps)
    assert result is not None
    assert [e.event_type.value for e in events] == [
        "agent_start",
        "progress",
        "tool_start",
        "file_change",
        "tool_end",
        "llm_chunk",
        "llm_chunk",
        "llm_chunk",
        "progress",
        "agent_end",
    ]
    progress = [e.data for e in events if e.event_type is StreamEventType.PROGRESS]
    # gpt-4o: $2.50 per million input tokens, $10 per million output tokens (genai-prices).
    assert progress[0] | {"total_cost_usd": round(progress[0]["total_cost_usd"], 8)} == {
        "iteration": 1,
        "total_tokens": 1020,
        "input_tokens": 1000,
        "output_tokens": 20,
        "total_cost_usd": 0.0027,
        "requests": 1,
        "tool_calls": 0,
    }
    assert progress[1]["total_tokens"] == 2123
    assert round(progress[1]["total_cost_usd"], 8) == 0.00548
    assert events[-1].data["total_cost_usd"] == progress[1]["total_cost_usd"] == float(result.usage.cost or 0)
    assert events[0].data["model"] == "openai:gpt-4o"
    assert deps.backend.files == {"/workspace/a.txt": "alpha"}  # type: ignore[attr-defined]


async def test_a_provider_error_becomes_error_then_agent_end(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer([ScriptError(status=500)]) as server, models.override_allow_model_requests(True):
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
        events: list[StreamEvent] = []
        with pytest.raises(ModelHTTPError):
            async for event in run_stream(create_deep_agent("openai:gpt-4o"), "hi", DeepAgentDeps()):
                events.append(event)
    assert [e.event_type.value for e in events] == ["agent_start", "error", "agent_end"]
    assert events[1].data["exception_type"] == "ModelServerError"
    assert events[1].data["error"].startswith("status_code: 500, model_name: gpt-4o")
    assert events[2].data["status"] == "failed"
