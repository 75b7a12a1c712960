"""`create_deep_agent`, `DeepAgentDeps`, model resolution and the offline demo model, through the public API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic_ai import Agent, RunContext, Tool
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.models.test import TestModel

from pydantic_deep import DeepAgentDeps, FilesystemBackend, StateBackend, create_deep_agent, demo_model, resolve_model
from pydantic_deep.models import DEMO_MODEL_NAME, ModelConfigError, RequireCompleteAnswers
from pydantic_deep.streaming import StreamEventType, collect_stream_result

FILE_TOOLS = {
    "read_file",
    "write_file",
    "edit_file",
    "list_directory",
    "search_files",
    "find_files",
    "create_directory",
    "file_info",
}
PLAN_TOOLS = {"write_plan", "read_plan", "add_task", "update_task_status", "update_task_statuses", "remove_task"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYDANTIC_DEEP_DEMO_DELAY", "0")
    monkeypatch.delenv("PYDANTIC_DEEP_MODEL", raising=False)


async def tool_names(agent: Agent[DeepAgentDeps, str]) -> set[str]:
    """The tools the model is offered on a run, as it sees them."""
    seen: set[str] = set()

    def capture(messages: list[ModelMessage], info: AgentInfo):  # type: ignore[no-untyped-def]
        from pydantic_ai.messages import ModelResponse, TextPart

        seen.update(tool.name for tool in info.function_tools)
        return ModelResponse(parts=[TextPart("ok")])

    await agent.run("list tools", deps=DeepAgentDeps(), model=FunctionModel(capture))
    return seen


async def test_default_agent_has_file_tools_and_planning_on_a_plain_pydantic_ai_agent() -> None:
    agent = create_deep_agent()
    assert type(agent) is Agent
    assert agent.name == "assistant"
    assert agent.deps_type is DeepAgentDeps
    assert await tool_names(agent) == FILE_TOOLS | PLAN_TOOLS


async def test_each_capability_switches_off() -> None:
    assert await tool_names(create_deep_agent(file_tools=False)) == PLAN_TOOLS
    assert await tool_names(create_deep_agent(planning=False)) == FILE_TOOLS
    assert await tool_names(create_deep_agent(file_tools=False, planning=False)) == set()


async def test_subagents_add_delegation_unless_switched_off() -> None:
    helper = create_deep_agent(name="helper", description="Helps")
    assert "delegate_task" in await tool_names(create_deep_agent(subagents=[helper]))
    assert "delegate_task" not in await tool_names(create_deep_agent(subagents=[helper], delegation=False))


async def test_tools_accept_plain_functions_with_or_without_context_and_tool_objects() -> None:
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    async def where(ctx: RunContext[DeepAgentDeps]) -> str:
        """Say which backend the run uses."""
        return type(ctx.deps.backend).__name__

    def add(a: int, b: int) -> int:
        return a + b

    agent = create_deep_agent(
        TestModel(call_tools=["shout", "where", "plus"]),
        tools=[shout, where, Tool(add, name="plus")],
        file_tools=False,
        planning=False,
    )
    assert await tool_names(agent) == {"shout", "where", "plus"}
    result = await agent.run("go", deps=DeepAgentDeps())
    assert result.output == '{"shout":"A","where":"StateBackend","plus":0}'


async def test_instructions_describe_the_tools_and_can_be_replaced() -> None:
    captured: list[str | None] = []

    def capture(messages: list[ModelMessage], info: AgentInfo):  # type: ignore[no-untyped-def]
        from pydantic_ai.messages import ModelResponse, TextPart

        captured.append(info.instructions)
        return ModelResponse(parts=[TextPart("ok")])

    await create_deep_agent(FunctionModel(capture)).run("hi", deps=DeepAgentDeps())
    await create_deep_agent(FunctionModel(capture), instructions="Be brief.").run("hi", deps=DeepAgentDeps())
    assert captured[0] is not None
    for tool in ("write_plan", "write_file", "edit_file", "read_file"):
        assert tool in captured[0]
    assert captured[1] is not None and captured[1].startswith("Be brief.")


def test_blank_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="name must be a non-empty string, got ' '"):
        create_deep_agent(name=" ")


def test_deps_default_to_a_fresh_state_backend_each() -> None:
    first, second = DeepAgentDeps(), DeepAgentDeps()
    assert isinstance(first.backend, StateBackend) and first.backend is not second.backend
    assert first.trace_context is None


async def test_demo_run_plans_writes_and_reads_a_file_in_the_runs_backend() -> None:
    deps = DeepAgentDeps(backend=StateBackend())
    result = await create_deep_agent().run("Plan a picnic", deps=deps)
    assert deps.backend.files == {
        "/workspace/notes-plan-a-picnic.md": (
            "# Notes\n\nRequest: Plan a picnic\n\n- Break the work into steps.\n- Keep the user informed.\n"
        )
    }
    assert "demo model" in result.output and "--model openai:gpt-4o" in result.output
    assert "PYDANTIC_DEEP_MODEL" in result.output and "Ollama" in result.output
    assert result.output.count("demo model") == 1


async def test_demo_run_streams_its_tool_use_and_answer_token_by_token(tmp_path: Path) -> None:
    deps = DeepAgentDeps(backend=FilesystemBackend(tmp_path))
    _, events = await collect_stream_result(create_deep_agent(), "Write a haiku", deps)
    tools = [e.data["tool_name"] for e in events if e.event_type is StreamEventType.TOOL_START]
    assert tools == ["write_plan", "write_file", "update_task_statuses", "read_file", "update_task_statuses"]
    read = next(e for e in events if e.event_type is StreamEventType.TOOL_END and e.data["tool_name"] == "read_file")
    assert "Request: Write a haiku" in read.data["result"]
    assert (tmp_path / "notes-write-a-haiku.md").read_text().startswith("# Notes")
    chunks = [e.data["text"] for e in events if e.event_type is StreamEventType.LLM_CHUNK]
    assert len(chunks) > 20
    assert "".join(chunks) == events[-1].data["output"]
    plan = {e.data["content"]: e.data["status"] for e in events if e.event_type is StreamEventType.PLAN_UPDATE}
    # The plan advances as the demo works, and ends complete.
    assert plan == {
        "Write notes about the request": "completed",
        "Read the notes back": "completed",
        "Answer": "completed",
    }
    changes = [(e.data["operation"], e.data["path"]) for e in events if e.event_type is StreamEventType.FILE_CHANGE]
    assert changes == [("write", "notes-write-a-haiku.md")]


def test_demo_model_delay_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYDANTIC_DEEP_DEMO_DELAY", "soon")
    with pytest.raises(ModelConfigError, match="PYDANTIC_DEEP_DEMO_DELAY='soon' is not a number of seconds"):
        demo_model()
    assert demo_model(delay=0).model_name == DEMO_MODEL_NAME


def test_model_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = TestModel()
    assert resolve_model(explicit) is explicit
    assert resolve_model(None).model_name == DEMO_MODEL_NAME
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("PYDANTIC_DEEP_MODEL", "openai-chat:gpt-4o")
    # OpenAI models come wrapped, so an answer cut off before the API's completion marker fails the run.
    from_env = resolve_model(None)
    assert isinstance(from_env, RequireCompleteAnswers) and isinstance(from_env.wrapped, OpenAIChatModel)
    explicit_name = resolve_model("openai:gpt-4o")  # explicit beats the environment
    assert isinstance(explicit_name, RequireCompleteAnswers) and isinstance(explicit_name.wrapped, OpenAIResponsesModel)
    default = create_deep_agent().model
    assert isinstance(default, RequireCompleteAnswers) and isinstance(default.wrapped, OpenAIChatModel)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gpt-4o", "unknown model 'gpt-4o': use 'provider:name'"),
        ("nope:thing", "cannot use model 'nope:thing': Unknown model: nope:thing"),
        ("openai:gpt-4o", "cannot use model 'openai:gpt-4o': Set the `OPENAI_API_KEY` environment variable"),
    ],
)
def test_unusable_models_fail_with_one_line(monkeypatch: pytest.MonkeyPatch, name: str, message: str) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelConfigError) as info:
        resolve_model(name)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


async def test_files_written_in_one_run_are_there_for_the_next_with_the_same_deps() -> None:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if len(messages) == 1:
            yield {0: DeltaToolCall(name="read_file", json_args='{"path": "notes-plan-a-picnic.md"}')}
        else:
            yield "read it"

    deps = DeepAgentDeps()
    await create_deep_agent().run("Plan a picnic", deps=deps)
    result, events = await collect_stream_result(create_deep_agent(FunctionModel(stream_function=model)), "again", deps)
    read = next(e for e in events if e.event_type is StreamEventType.TOOL_END)
    assert "Request: Plan a picnic" in read.data["result"]
    assert result is not None and result.output == "read it"
