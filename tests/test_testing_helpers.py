"""`pydantic_deep.testing`: the scripted model, stream assertions, golden files, cassettes and the pytest plugin."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI
from pydantic_ai import Agent, models
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.models.openai import OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import RequestUsage

from _server_helpers import client, events_of, parse_sse
from pydantic_deep import DeepAgentDeps, create_deep_agent
from pydantic_deep.cli import PlainPrinter
from pydantic_deep.server import create_app
from pydantic_deep.streaming import (
    AnyStreamEvent,
    StreamEventType,
    collect_stream_result,
    merge_streams,
    run_stream,
    run_stream_with_tools,
    stream_text,
    stream_tool_calls,
)
from pydantic_deep.testing import (
    ANY,
    CassetteMismatch,
    Chunk,
    Fail,
    FakeOpenAIServer,
    RecordingModel,
    ReplayModel,
    ScriptedModel,
    ScriptedModelError,
    ScriptReply,
    ScriptRequest,
    ScriptResult,
    ScriptToolCall,
    Step,
    Text,
    Thinking,
    ToolCall,
    assert_events,
    assert_golden,
    normalize_events,
)


async def lookup(key: str) -> str:
    """Look a key up (async: parallel calls run on the event loop and end in the order they started)."""
    return key.upper()


def lookup_agent(model: ScriptedModel) -> Agent[DeepAgentDeps, str]:
    return create_deep_agent(model, tools=[lookup], planning=False, file_tools=False, subagents=())


def two_lookups() -> ScriptedModel:
    """Thinking, two parallel calls, then the answer in three chunks."""
    return ScriptedModel(
        [
            Step(
                Thinking("Two ", "keys."),
                ToolCall("lookup", {"key": "a"}, fragments=3),
                ToolCall("lookup", {"key": "b"}),
            ),
            Step(Text("Found ", "A and ", "B."), expect_tool_results=["lookup", "lookup"]),
        ]
    )


TWO_LOOKUPS = [
    "agent_start",
    ("thinking_chunk", {"text": "Two keys."}),
    ("progress", {"iteration": 1, "tool_calls": 0}),
    ("tool_start", {"tool_name": "lookup", "args": {"key": "a"}, "tool_call_id": "call-1"}),
    ("tool_start", {"tool_name": "lookup", "args": {"key": "b"}, "tool_call_id": "call-2"}),
    # Parallel calls end in the order they finish, which the engine does not fix: any order passes.
    ("tool_end", {"tool_name": "lookup", "error": None}),
    ("tool_end", {"tool_name": "lookup", "error": None}),
    ("llm_chunk", {"text": "Found A and B."}),
    ("progress", {"iteration": 2}),
    ("agent_end", {"status": "succeeded", "output": "Found A and B."}),
]


# ---- the scripted model through every view ---------------------------------------------------------------


async def test_scripted_model_drives_run_stream_with_thinking_and_parallel_calls() -> None:
    events = [e async for e in run_stream(lookup_agent(two_lookups()), "Look up a and b", DeepAgentDeps())]
    assert_events(events, TWO_LOOKUPS)
    assert [e.data["text"] for e in events if e.event_type == StreamEventType.LLM_CHUNK] == ["Found ", "A and ", "B."]
    ends = {e.data["tool_call_id"]: e.data["result"] for e in events if e.event_type == StreamEventType.TOOL_END}
    assert ends == {"call-1-1": "A", "call-1-2": "B"}


async def test_scripted_model_drives_the_other_views() -> None:
    deps = DeepAgentDeps
    with_args = [e async for e in run_stream_with_tools(lookup_agent(two_lookups()), "Look up", deps())]
    fragments = [e.data["args_delta"] for e in with_args if e.event_type == StreamEventType.TOOL_ARGS_DELTA]
    assert fragments == ['{"ke', 'y": ', '"a"}', '{"key": "b"}']  # the first call's arguments in three pieces
    text = [chunk async for chunk in stream_text(lookup_agent(two_lookups()), "Look up", deps())]
    assert text == ["Found ", "A and ", "B."]
    calls = [tuple(update) async for update in stream_tool_calls(lookup_agent(two_lookups()), "Look up", deps())]
    assert calls[:2] == [("lookup", {"key": "a"}, None), ("lookup", {"key": "b"}, None)]
    assert sorted(calls[2:], key=lambda call: str(call[2])) == [
        ("lookup", {"key": "a"}, "A"),
        ("lookup", {"key": "b"}, "B"),
    ]
    result, events = await collect_stream_result(lookup_agent(two_lookups()), "Look up", deps())
    assert result is not None and result.output == "Found A and B."
    assert_events(events, TWO_LOOKUPS)
    non_streamed = await lookup_agent(two_lookups()).run("Look up", deps=deps())
    assert non_streamed.output == "Found A and B."
    one, other = (run_stream(lookup_agent(two_lookups()), "Look up", deps()) for _ in range(2))
    merged = [e async for e in merge_streams(one, other)]
    assert len({e.run_id for e in merged}) == 2 and len(merged) == 2 * (
        len(TWO_LOOKUPS) + 3
    )  # 2 + 3 chunks joined into 2
    for run_id in {e.run_id for e in merged}:
        assert_events([e for e in merged if e.run_id == run_id], TWO_LOOKUPS)


async def test_usage_per_step_gives_real_prices() -> None:
    model = ScriptedModel(
        [Step(Text("Hi."), usage=RequestUsage(input_tokens=1_000_000, output_tokens=100_000))],
        model_name="gpt-4o",
        provider_name="openai",
    )
    _, events = await collect_stream_result(Agent(model), "Hello")
    end = events[-1]
    assert end.event_type == StreamEventType.AGENT_END
    # gpt-4o on genai-prices: $2.50 per million input tokens and $10 per million output tokens.
    assert (end.data["total_tokens"], end.data["total_cost_usd"]) == (1_100_000, pytest.approx(3.5))


async def test_an_error_mid_stream_and_a_provider_error() -> None:
    broken = ScriptedModel([Step(Text("Start"), Fail(ConnectionError("provider went away")))])
    seen: list[AnyStreamEvent] = []
    with pytest.raises(ConnectionError, match="provider went away"):
        async for event in run_stream(Agent(broken), "Hi"):
            seen.append(event)
    assert_events(
        seen,
        [
            "agent_start",
            ("llm_chunk", {"text": "Start"}),
            ("error", {"exception_type": "ConnectionError"}),
            ("agent_end", {"status": "failed"}),
        ],
    )
    limited = ScriptedModel([Step(Fail(status=429, body={"error": "slow down"}))], model_name="gpt-4o")
    with pytest.raises(ModelHTTPError) as raised:
        await Agent(limited).run("Hi")
    assert (raised.value.status_code, raised.value.model_name, raised.value.body) == (
        429,
        "gpt-4o",
        {"error": "slow down"},
    )


async def test_a_handshake_proves_each_chunk_is_delivered_before_the_next_is_sent() -> None:
    gates = [asyncio.Event() for _ in range(3)]
    model = ScriptedModel([Step(Text(*(Chunk(f"c{i} ", gate=gate) for i, gate in enumerate(gates))))])
    received: list[str] = []
    gates[0].set()
    async for event in run_stream(Agent(model), "Go"):
        if event.event_type == StreamEventType.LLM_CHUNK:
            received.append(event.data["text"])
            # The model is waiting on the next gate: it cannot have sent the next chunk yet.
            assert not any(gate.is_set() for gate in gates[len(received) :])
            if len(received) < len(gates):
                gates[len(received)].set()
    assert received == ["c0 ", "c1 ", "c2 "]


async def test_the_script_says_which_step_went_wrong() -> None:
    short = ScriptedModel([Step(ToolCall("lookup", {"key": "a"}))])
    with pytest.raises(
        ScriptedModelError, match=r"^ScriptedModel: request 2 asked for step 2, but the script has 1 step\(s\)"
    ):
        await lookup_agent(short).run("Look up", deps=DeepAgentDeps())
    picky = ScriptedModel([Step(Text("ok"), expect_prompt="weather")])
    with pytest.raises(ScriptedModelError) as raised:
        await Agent(picky).run("What time is it?")
    assert str(raised.value) == "ScriptedModel step 1: expected the prompt to contain 'weather', got 'What time is it?'"
    wrong_tool = ScriptedModel(
        [Step(ToolCall("lookup", {"key": "a"})), Step(Text("x"), expect_tool_results=["search"])]
    )
    with pytest.raises(ScriptedModelError) as raised:
        await lookup_agent(wrong_tool).run("Look up", deps=DeepAgentDeps())
    assert (
        str(raised.value)
        == "ScriptedModel step 2: expected the request to carry the results of ['search'], got ['lookup']"
    )


def test_the_scripted_model_drives_the_terminal_printer() -> None:
    out = io.StringIO()
    printer = PlainPrinter(out)

    async def main() -> None:
        async for event in run_stream(lookup_agent(two_lookups()), "Look up a and b", DeepAgentDeps()):
            printer.handle(event)

    asyncio.run(main())
    printer.close()
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["❯ Look up a and b", "  assistant · scripted:scripted", "  thinking: Two keys."]
    assert [line.split(" · ")[0] for line in lines[3:7]] == [
        "▸ lookup(key='a')",
        "▸ lookup(key='b')",
        "✔ lookup",
        "✔ lookup",
    ]
    assert lines[7:9] == ["", "Found A and B."]
    assert lines[-1].startswith("✔ succeeded · 2 steps")


async def test_the_scripted_model_drives_the_server() -> None:
    async with client(create_app(lookup_agent(two_lookups()))) as http:
        run_id = (await http.post("/runs", json={"prompt": "Look up a and b"})).json()["run_id"]
        events = events_of(parse_sse((await http.get(f"/runs/{run_id}/events")).text))
    assert [e["event_type"] for e in events][-3:] == ["llm_chunk", "progress", "agent_end"]
    assert events[-1]["data"]["output"] == "Found A and B."


# ---- assertions and golden files --------------------------------------------------------------------------


async def test_assert_events_shows_a_readable_diff() -> None:
    _, events = await collect_stream_result(lookup_agent(two_lookups()), "Look up", DeepAgentDeps())
    wrong = [*TWO_LOOKUPS[:7], ("llm_chunk", {"text": "Found A and C."}), *TWO_LOOKUPS[8:]]
    with pytest.raises(AssertionError) as raised:
        assert_events(events, wrong)
    assert str(raised.value) == textwrap.dedent(
        """\
        the stream differs from the expected events (10 vs 10):
        --- expected
        +++ actual
        @@ -6,5 +6,5 @@
         {"data": {"error": null, "tool_name": "lookup"}, "event_type": "tool_end"}
         {"data": {"error": null, "tool_name": "lookup"}, "event_type": "tool_end"}
        -{"data": {"text": "Found A and C."}, "event_type": "llm_chunk"}
        +{"data": {"text": "Found A and B."}, "event_type": "llm_chunk"}
         {"data": {"iteration": 2}, "event_type": "progress"}
         {"data": {"output": "Found A and B.", "status": "succeeded"}, "event_type": "agent_end"}"""
    )
    with pytest.raises(AssertionError, match=r"\(10 vs 1\)"):
        assert_events(events, [("agent_start", {"prompt": ANY})])


async def test_golden_files_pin_a_normalised_stream(tmp_path: Path) -> None:
    golden = tmp_path / "lookups.jsonl"
    _, first = await collect_stream_result(lookup_agent(two_lookups()), "Look up", DeepAgentDeps())
    with pytest.raises(AssertionError, match=r"no golden file at .*PYDANTIC_DEEP_UPDATE_GOLDEN=1"):
        assert_golden(first, golden)
    assert_golden(first, golden, update=True)
    _, second = await collect_stream_result(lookup_agent(two_lookups()), "Look up", DeepAgentDeps())
    assert_golden(second, golden)  # other run ids, timestamps and durations: the same golden stream
    rows = [json.loads(line) for line in golden.read_text().splitlines()]
    assert rows == normalize_events(second)
    assert {row["run"] for row in rows} == {"run-1"} and rows[3]["data"]["tool_call_id"] == "call-1"
    changed = ScriptedModel([two_lookups().steps[0], Step(Text("Found nothing."))])
    _, third = await collect_stream_result(lookup_agent(changed), "Look up", DeepAgentDeps())
    with pytest.raises(AssertionError) as raised:
        assert_golden(third, golden)
    assert "update it with PYDANTIC_DEEP_UPDATE_GOLDEN=1" in str(raised.value)
    assert '+{"agent_name": "assistant", "data": {"text": "Found nothing."}' in str(raised.value)


# ---- cassettes of a real provider --------------------------------------------------------------------------

SECRET = "sk-test-cassette-secret-123456"


def provider_script(request: ScriptRequest) -> ScriptResult:
    if not request.tool_results:
        return ScriptReply(tool_calls=[ScriptToolCall("lookup", {"key": "a"})], input_tokens=1000, output_tokens=20)
    return ScriptReply(text=["Found ", "A", "."], input_tokens=1100, output_tokens=3)


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(provider_script) as server, models.override_allow_model_requests(True):
        yield server


def openai_model(server: FakeOpenAIServer) -> OpenAIResponsesModel:
    return OpenAIResponsesModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key=SECRET))


async def test_a_recorded_provider_replays_offline_with_the_same_stream_usage_and_cost(tmp_path: Path) -> None:
    path = tmp_path / "lookup.jsonl"
    with FakeOpenAIServer(provider_script) as server, models.override_allow_model_requests(True):
        base_url = server.base_url
        recording = RecordingModel(openai_model(server), path)
        live, live_events = await collect_stream_result(lookup_agent_of(recording), "Look up a", DeepAgentDeps())
    # The server is gone: the replay needs nothing but the file.
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(base_url + "/models", timeout=2)
    replayed, replay_events = await collect_stream_result(
        lookup_agent_of(ReplayModel(path)), "Look up a", DeepAgentDeps()
    )
    assert live is not None and replayed is not None
    assert normalize_events(replay_events) == normalize_events(live_events)
    assert replayed.usage == live.usage and replayed.usage.requests == 2
    cost = [e.data["total_cost_usd"] for e in replay_events if e.event_type == StreamEventType.AGENT_END]
    assert cost == [e.data["total_cost_usd"] for e in live_events if e.event_type == StreamEventType.AGENT_END]
    assert cost[0] == pytest.approx((2100 * 2.5 + 23 * 10) / 1_000_000)  # gpt-4o prices, from genai-prices
    text = path.read_text()
    assert SECRET not in text and "sk-" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0] == {"cassette": 1, "model_name": "gpt-4o", "system": "openai"}
    assert [d["content"] for d in lines[2]["deltas"]] == ["Found ", "A", "."]
    # Recorded timing plays back too.
    _, timed = await collect_stream_result(
        lookup_agent_of(ReplayModel(path, timing="recorded")), "Look up a", DeepAgentDeps()
    )
    assert normalize_events(timed) == normalize_events(live_events)


def lookup_agent_of(model: RecordingModel | ReplayModel) -> Agent[DeepAgentDeps, str]:
    return create_deep_agent(model, tools=[lookup], planning=False, file_tools=False, subagents=())


async def test_a_changed_request_is_a_cassette_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "lookup.jsonl"
    with FakeOpenAIServer(provider_script) as server, models.override_allow_model_requests(True):
        await lookup_agent_of(RecordingModel(openai_model(server), path)).run("Look up a", deps=DeepAgentDeps())
    with pytest.raises(CassetteMismatch) as raised:
        await lookup_agent_of(ReplayModel(path)).run("Look up b", deps=DeepAgentDeps())
    assert str(raised.value) == (
        "request 1 differs from the recording: messages[0].parts[0].content: recorded 'Look up a', got 'Look up b'"
    )
    replay = ReplayModel(path)
    await lookup_agent_of(replay).run("Look up a", deps=DeepAgentDeps())
    with pytest.raises(CassetteMismatch, match=r"^request 3: the cassette .* recorded only 2 request\(s\)$"):
        await lookup_agent_of(replay).run("Look up a", deps=DeepAgentDeps())


async def test_a_provider_error_is_recorded_and_replayed(tmp_path: Path) -> None:
    path = tmp_path / "error.jsonl"

    def failing(request: ScriptRequest) -> ScriptResult:
        from pydantic_deep.testing import ScriptError

        return ScriptError(status=429)

    with FakeOpenAIServer(failing) as server, models.override_allow_model_requests(True):
        no_retries = AsyncOpenAI(base_url=server.base_url, api_key=SECRET, max_retries=0)
        model = OpenAIResponsesModel("gpt-4o", provider=OpenAIProvider(openai_client=no_retries))
        with pytest.raises(ModelHTTPError) as live:
            await Agent(RecordingModel(model, path)).run("Hi")
    with pytest.raises(ModelHTTPError) as replayed:
        await Agent(ReplayModel(path)).run("Hi")
    assert (replayed.value.status_code, replayed.value.body) == (live.value.status_code, live.value.body) == (429, ANY)
    assert SECRET not in path.read_text()


# ---- the pytest plugin ---------------------------------------------------------------------------------------

PLUGIN_TEST = '''
from pydantic_deep import DeepAgentDeps, create_deep_agent


async def lookup(key: str) -> str:
    """Look a key up."""
    return key.upper()


async def test_lookup(cassette):
    agent = create_deep_agent(cassette("openai:gpt-4o"), tools=[lookup], planning=False, file_tools=False)
    result = await agent.run("Look up a", deps=DeepAgentDeps())
    assert result.output == "Found A."
'''


def run_pytest(directory: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYDANTIC_DEEP_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=300,
    )


@pytest.mark.timeout(600)  # four pytest processes, each importing Pydantic AI
def test_the_cassette_fixture_fails_records_then_replays(tmp_path: Path) -> None:
    (tmp_path / "test_agent.py").write_text("import pytest\npytestmark = pytest.mark.anyio\n" + PLUGIN_TEST)
    (tmp_path / "conftest.py").write_text(
        "import pytest\n\n\n@pytest.fixture\ndef anyio_backend():\n    return 'asyncio'\n"
    )
    missing = run_pytest(tmp_path)
    assert missing.returncode == 1
    expected = (
        "no cassette at '{}' and no API key to record one: set OPENAI_API_KEY and run pytest with --record-cassettes"
    )
    assert expected.format(tmp_path / "cassettes" / "test_agent" / "test_lookup.jsonl") in missing.stdout
    with FakeOpenAIServer(provider_script) as server:
        recorded = run_pytest(tmp_path, OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)
    assert recorded.returncode == 0, recorded.stdout
    cassette = tmp_path / "cassettes" / "test_agent" / "test_lookup.jsonl"
    assert len(cassette.read_text().splitlines()) == 3 and SECRET not in cassette.read_text()
    replayed = run_pytest(tmp_path)  # no key, no server
    assert replayed.returncode == 0, replayed.stdout
    forced = run_pytest(tmp_path, "--record-cassettes")  # recording needs the provider: it fails without a key
    assert forced.returncode == 1
