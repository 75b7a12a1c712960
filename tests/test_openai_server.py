"""The fake OpenAI server driven by Pydantic AI's real OpenAI model classes over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Literal

import httpx
import pytest
from dirty_equals import IsStr
from openai import OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from pydantic_ai import Agent, models
from pydantic_ai.exceptions import ModelAPIError, ModelConnectionError, ModelHTTPError
from pydantic_ai.messages import (
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)
from pydantic_ai.models import Model
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.run import AgentRunResultEvent

from pydantic_deep.testing import (
    DEFAULT_TEXT_CHUNKS,
    FakeOpenAIServer,
    ScriptError,
    ScriptMessage,
    ScriptMessageToolCall,
    ScriptReply,
    ScriptRequest,
    ScriptResult,
    ScriptToolCall,
)

API = ["chat", "responses"]


@pytest.fixture(autouse=True)
def allow_model_requests() -> Iterator[None]:
    # conftest forbids model requests; these tests only ever reach the fake server on 127.0.0.1.
    with models.override_allow_model_requests(True):
        yield


def make_model(api: str, server: FakeOpenAIServer) -> Model:
    provider = OpenAIProvider(base_url=server.base_url, api_key="test")
    if api == "chat":
        return OpenAIChatModel("gpt-4o", provider=provider)
    return OpenAIResponsesModel("gpt-4o", provider=provider)


async def stream_run(model: Model, prompt: str, *, into: list[Any] | None = None, **kwargs: Any) -> list[Any]:
    """Every event of `agent.run_stream_events`, appended to `into` as they arrive."""
    events = [] if into is None else into
    async with Agent(model, **kwargs) as agent, agent.run_stream_events(prompt) as stream:
        async for event in stream:
            events.append(event)
    return events


async def run(model: Model, prompt: str) -> str:
    async with Agent(model) as agent:
        return (await agent.run(prompt)).output


def text_deltas(events: list[Any]) -> list[str]:
    """Text as it streamed: the first chunk starts the part, later ones are deltas."""
    out: list[str] = []
    for event in events:
        if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
            out.append(event.part.content)
        elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
            out.append(event.delta.content_delta)
    return out


def tool_call_fragments(events: list[Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for event in events:
        if isinstance(event, PartStartEvent) and isinstance(event.part, ToolCallPart):
            out.append(("start", event.part.tool_name))
        elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, ToolCallPartDelta):
            assert isinstance(event.delta.args_delta, str)
            out.append(("args", event.delta.args_delta))
    return out


def message(
    role: Literal["system", "user", "assistant", "tool"],
    content: str,
    *,
    tool_calls: list[ScriptMessageToolCall] | None = None,
    tool_call_id: str | None = None,
) -> ScriptMessage:
    return {"role": role, "content": content, "tool_calls": tool_calls or [], "tool_call_id": tool_call_id}


# ---------------------------------------------------------------------------------------------
# Through Pydantic AI


@pytest.mark.parametrize("api", API)
async def test_streamed_text_arrives_in_scripted_chunks_with_usage_and_cost(api: str) -> None:
    script = [ScriptReply(text=DEFAULT_TEXT_CHUNKS, input_tokens=1200, output_tokens=34)]
    with FakeOpenAIServer(script) as server:
        events = await stream_run(make_model(api, server), "Say hello", instructions="Be brief.")

    assert text_deltas(events) == list(DEFAULT_TEXT_CHUNKS)
    final = events[-1]
    assert isinstance(final, AgentRunResultEvent)
    assert final.result.output == "Hello from the fake OpenAI server."
    usage = final.result.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (1, 1200, 34)
    # gpt-4o: $2.50 per million input tokens, $10 per million output tokens.
    assert usage.cost == Decimal("0.00334")

    [body] = server.requests
    assert body["model"] == "gpt-4o"
    assert body["stream"] is True
    if api == "chat":
        assert body["stream_options"] == {"include_usage": True}
        assert body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ]
    else:
        assert body["instructions"] == "Be brief."
        assert body["input"] == [{"role": "user", "content": "Say hello"}]


@pytest.mark.parametrize("api", API)
async def test_scripted_tool_call_reaches_the_tool_then_the_final_text_streams(api: str) -> None:
    seen: list[ScriptRequest] = []

    def script(request: ScriptRequest) -> ScriptResult:
        seen.append(request)
        if not request.tool_results:
            return ScriptReply(tool_calls=[ScriptToolCall("add", {"a": 2, "b": 40}, id="call_add", fragments=4)])
        return ["The sum", " is ", request.tool_results[0]["content"], "."]

    calls: list[tuple[int, int]] = []
    with FakeOpenAIServer(script) as server:
        agent = Agent(make_model(api, server))

        @agent.tool_plain
        def add(a: int, b: int) -> int:
            """Add two numbers."""
            calls.append((a, b))
            return a + b

        events: list[Any] = []
        async with agent, agent.iter("What is 2 + 40?") as run:
            async for node in run:
                if Agent.is_model_request_node(node) or Agent.is_call_tools_node(node):
                    async with node.stream(run.ctx) as stream:
                        events.extend([event async for event in stream])
        assert run.result is not None

    assert calls == [(2, 40)]
    assert tool_call_fragments(events) == [
        ("start", "add"),
        ("args", '{"a'),
        ("args", '":2,'),
        ("args", '"b"'),
        ("args", ":40}"),
    ]
    assert text_deltas(events) == ["The sum", " is ", "42", "."]
    assert run.result.output == "The sum is 42."
    assert run.result.usage.requests == 2
    assert run.result.usage.tool_calls == 1
    assert run.result.usage.cost is not None
    assert run.result.usage.cost > 0

    # The second request carries the whole conversation, in the same normalised shape for both APIs.
    assert [r.index for r in seen] == [0, 1]
    assert seen[0].tools == [
        {
            "name": "add",
            "description": "Add two numbers.",
            "parameters": {
                "additionalProperties": False,
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
                "type": "object",
            },
        }
    ]
    assert seen[1].messages == [
        message("user", "What is 2 + 40?"),
        message("assistant", "", tool_calls=[{"id": "call_add", "name": "add", "arguments": '{"a":2,"b":40}'}]),
        message("tool", "42", tool_call_id="call_add"),
    ]


@pytest.mark.parametrize("api", API)
async def test_non_streamed_requests_get_one_json_body(api: str) -> None:
    script = [
        ScriptReply(tool_calls=[ScriptToolCall("shout", {"text": "hi"})]),
        ScriptReply(text=["HI", "!"], input_tokens=10, output_tokens=2),
    ]
    with FakeOpenAIServer(script) as server:
        agent = Agent(make_model(api, server))

        @agent.tool_plain
        def shout(text: str) -> str:
            return text.upper()

        async with agent:
            result = await agent.run("Shout hi")

    assert result.output == "HI!"
    assert [body.get("stream", False) for body in server.requests] == [False, False]
    assert result.usage.input_tokens > 10
    assert result.usage.cost is not None
    assert result.usage.cost > 0


def test_sync_clients_and_the_default_script() -> None:
    with FakeOpenAIServer() as server, OpenAI(base_url=server.base_url, api_key="test") as client:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        chunks = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
    assert chunks == ["", *DEFAULT_TEXT_CHUNKS, None]
    assert "".join(DEFAULT_TEXT_CHUNKS) == "Hello from the fake OpenAI server."


async def test_env_vars_and_the_openai_model_string_use_the_responses_api(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer(api_key="sk-fake-123") as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        assert server.env == {
            "OPENAI_BASE_URL": IsStr(regex=r"http://127\.0\.0\.1:\d+/v1"),
            "OPENAI_API_KEY": "sk-fake-123",
        }
        async with Agent("openai:gpt-4o") as agent:
            result = await agent.run("Hi")

    assert result.output == "Hello from the fake OpenAI server."
    [body] = server.requests
    assert body["input"] == [{"role": "user", "content": "Hi"}]  # the Responses API, not Chat Completions


def test_a_subprocess_reaches_the_server_through_env_vars() -> None:
    # The OpenAI SDK reads OPENAI_BASE_URL and OPENAI_API_KEY itself, as a CLI's model client does.
    code = (
        "import openai; messages = [{'role': 'user', 'content': 'Hi'}]; "
        "print(openai.OpenAI().chat.completions.create(model='gpt-4o', messages=messages).choices[0].message.content)"
    )
    with FakeOpenAIServer(["From the subprocess."]) as server:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **server.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    assert done.stdout == "From the subprocess.\n"
    assert server.requests[0]["messages"] == [{"role": "user", "content": "Hi"}]


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("api", API)
async def test_http_500_surfaces_as_model_http_error_without_retries(api: str) -> None:
    with FakeOpenAIServer([ScriptError(status=500)]) as server, pytest.raises(ModelHTTPError) as raised:
        await stream_run(make_model(api, server), "Hi")

    assert raised.value.status_code == 500
    assert raised.value.body == {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert len(server.requests) == 1  # `x-should-retry: false` stops the SDK's retries


async def test_http_401_from_the_script() -> None:
    with FakeOpenAIServer([ScriptError(status=401)]) as server, pytest.raises(ModelHTTPError) as raised:
        await run(make_model("chat", server), "Hi")
    assert raised.value.status_code == 401
    assert raised.value.body == {
        "message": IsStr(regex="Incorrect API key provided.*"),
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_requests_without_a_bearer_token_or_with_the_wrong_key_get_401() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    with FakeOpenAIServer(api_key="sk-right-key") as server, httpx.Client(base_url=server.base_url) as client:
        missing = client.post("/chat/completions", json=body)
        wrong = client.post("/chat/completions", json=body, headers={"Authorization": "Bearer sk-wrong-key"})
        right = client.post("/chat/completions", json=body, headers={"Authorization": "Bearer sk-right-key"})
        unknown = client.post("/embeddings", json=body, headers={"Authorization": "Bearer sk-right-key"})

    assert (missing.status_code, wrong.status_code, right.status_code, unknown.status_code) == (401, 401, 200, 404)
    assert missing.json() == {
        "error": {
            "message": "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    assert wrong.json()["error"] == {
        "message": "Incorrect API key provided: sk-...-key.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    assert unknown.json()["error"]["message"] == "Invalid URL (POST /v1/embeddings)"
    assert len(server.requests) == 3  # every body received on the two endpoints, rejected ones included


@pytest.mark.parametrize("api", API)
async def test_mid_stream_disconnect_surfaces_as_a_connection_error(api: str) -> None:
    with FakeOpenAIServer([ScriptReply(text=["one", " two", " three"], disconnect_after=2)]) as server:
        events: list[Any] = []
        with pytest.raises(ModelConnectionError):
            await stream_run(make_model(api, server), "Hi", into=events)

    assert text_deltas(events) == ["one", " two"]
    assert len(server.requests) == 1


async def test_a_failing_script_answers_500_and_raises_when_the_server_stops() -> None:
    def script(request: ScriptRequest) -> ScriptResult:
        raise KeyError("no answer for this")

    server = FakeOpenAIServer(script).start()
    try:
        with pytest.raises(ModelAPIError) as raised:
            await run(make_model("chat", server), "Hi")
    finally:
        with pytest.raises(KeyError, match="no answer for this"):
            server.__exit__(None, None, None)

    assert isinstance(raised.value, ModelHTTPError)
    assert raised.value.status_code == 500
    assert raised.value.body == {
        "message": "FakeOpenAIServer script raised KeyError: 'no answer for this'",
        "type": "server_error",
        "param": None,
        "code": None,
    }


async def test_a_script_list_that_runs_out_is_an_error() -> None:
    server = FakeOpenAIServer(["only one"]).start()
    try:
        assert await run(make_model("chat", server), "Hi") == "only one"
        with pytest.raises(ModelHTTPError) as raised:
            await run(make_model("chat", server), "Again")
    finally:
        with pytest.raises(LookupError, match="no reply left for request #1"):
            server.__exit__(None, None, None)
    assert raised.value.status_code == 500


@pytest.mark.parametrize("api", API)
async def test_a_stream_the_client_abandons_stops_on_the_server(api: str) -> None:
    with FakeOpenAIServer([ScriptReply(text=["tick "] * 200)], chunk_delay=0.01) as server:
        async with Agent(make_model(api, server)) as agent, agent.run_stream_events("Count") as stream:
            async for event in stream:
                if text_deltas([event]):
                    break
    assert server.cancelled_streams == 1
    assert len(server.requests) == 1


# ---------------------------------------------------------------------------------------------
# The wire, checked against the OpenAI SDK's own types


response_events: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


def sse_blocks(text: str) -> list[list[str]]:
    return [block.split("\n") for block in text.split("\n\n") if block]


def test_chat_completions_wire_format() -> None:
    reply = ScriptReply(text=["Hi", " there"], tool_calls=[ScriptToolCall("look", {"q": "x"}, id="call_1")])
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    headers = {"Authorization": "Bearer test"}
    with FakeOpenAIServer(lambda request: reply) as server, httpx.Client(base_url=server.base_url) as client:
        plain = client.post("/chat/completions", json=body, headers=headers)
        with_usage = client.post(
            "/chat/completions", json={**body, "stream_options": {"include_usage": True}}, headers=headers
        )
        complete = client.post("/chat/completions", json={**body, "stream": False}, headers=headers)

    assert plain.headers["content-type"] == "text/event-stream; charset=utf-8"
    for response in (plain, with_usage):
        blocks = sse_blocks(response.text)
        assert blocks[-1] == ["data: [DONE]"]
        chunks = [ChatCompletionChunk.model_validate_json(block[0].removeprefix("data: ")) for block in blocks[:-1]]
        deltas = [c.choices[0].delta.model_dump(exclude_none=True) for c in chunks if c.choices]
        assert deltas == [
            {"role": "assistant", "content": ""},
            {"content": "Hi"},
            {"content": " there"},
            {
                "tool_calls": [
                    {"index": 0, "id": "call_1", "type": "function", "function": {"name": "look", "arguments": ""}}
                ]
            },
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"q'}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '":"'}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": 'x"}'}}]},
            {},
        ]
        assert [c.choices[0].finish_reason for c in chunks if c.choices] == [None] * 7 + ["tool_calls"]
    assert "usage" not in json.loads(sse_blocks(plain.text)[0][0].removeprefix("data: "))
    last = ChatCompletionChunk.model_validate_json(sse_blocks(with_usage.text)[-2][0].removeprefix("data: "))
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens > 0

    completion = ChatCompletion.model_validate(complete.json())
    assert completion.choices[0].message.content == "Hi there"
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls is not None
    assert completion.choices[0].message.tool_calls[0].id == "call_1"


def test_responses_wire_format_and_previous_response_id() -> None:
    seen: list[ScriptRequest] = []

    async def script(request: ScriptRequest) -> ScriptResult:  # scripts may be sync or async
        seen.append(request)
        if request.index == 0:
            return ScriptReply(text=["Let me look."], tool_calls=[ScriptToolCall("look", {"q": "x"}, id="call_1")])
        return ["Found it."]

    headers = {"Authorization": "Bearer test"}
    with FakeOpenAIServer(script) as server, httpx.Client(base_url=server.base_url, headers=headers) as client:
        first = client.post(
            "/responses", json={"model": "gpt-4o", "instructions": "Be brief.", "input": "Find x", "stream": True}
        )
        events = [response_events.validate_json(block[1].removeprefix("data: ")) for block in sse_blocks(first.text)]
        assert events[0].type == "response.created"
        response_id = events[0].response.id
        follow_up = {
            "model": "gpt-4o",
            "previous_response_id": response_id,
            "input": [{"type": "function_call_output", "call_id": "call_1", "output": "x is here"}],
        }
        second = client.post("/responses", json=follow_up)
        unknown = client.post("/responses", json={**follow_up, "previous_response_id": "resp_nope"})

    assert [block[0] for block in sse_blocks(first.text)] == [f"event: {event.type}" for event in events]
    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None
    assert completed.response.usage.input_tokens > 0
    assert completed.response.output_text == "Let me look."

    result = Response.model_validate(second.json())
    assert result.status == "completed"
    assert result.output_text == "Found it."
    assert seen[0].messages == [message("system", "Be brief."), message("user", "Find x")]
    # Like the real API, the stored conversation goes on without the first request's instructions.
    assert seen[1].messages == [
        message("user", "Find x"),
        message("assistant", "Let me look.", tool_calls=[{"id": "call_1", "name": "look", "arguments": '{"q":"x"}'}]),
        message("tool", "x is here", tool_call_id="call_1"),
    ]
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "previous_response_not_found"
