"""The streaming core through its public functions: order, liveness, pairing, failure and cancellation."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from dirty_equals import IsFloat, IsInt, IsStr
from pydantic_ai import Agent, CancellationToken, ModelRetry, RunContext
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, DeltaToolCall, DeltaToolCalls, FunctionModel

from pydantic_deep.streaming import (
    StreamEvent,
    StreamEventType,
    collect_stream_result,
    merge_streams,
    report_progress,
    run_stream,
    run_stream_with_tools,
    stream_text,
    stream_tool_calls,
)

StreamItem = str | DeltaToolCalls | dict[int, DeltaThinkingPart]


def tool_results(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]


def last_prompt(messages: list[ModelMessage]) -> str:
    parts = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, UserPromptPart)]
    content = parts[-1].content
    assert isinstance(content, str)
    return content


def summary(events: list[StreamEvent]) -> list[tuple[str, Any]]:
    """Event types with the payload keys that identify them, for comparing whole sequences."""
    out: list[tuple[str, Any]] = []
    for e in events:
        match e.event_type:
            case StreamEventType.LLM_CHUNK | StreamEventType.THINKING_CHUNK:
                out.append((e.event_type.value, e.data["text"]))
            case StreamEventType.TOOL_START:
                out.append(("tool_start", (e.data["tool_name"], e.data["args"])))
            case StreamEventType.TOOL_END:
                out.append(("tool_end", (e.data["tool_name"], e.data["result"], e.data["error"])))
            case StreamEventType.PROGRESS:
                out.append(("progress", e.data["iteration"]))
            case StreamEventType.AGENT_END:
                out.append(("agent_end", e.data["status"]))
            case _:
                out.append((e.event_type.value, None))
    return out


def weather_agent() -> Agent[None, str]:
    """One tool call, then a streamed answer that quotes the tool's result."""

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[StreamItem]:
        results = tool_results(messages)
        if not results:
            yield {0: DeltaToolCall(name="get_weather", json_args='{"city": "Paris"}', tool_call_id="call-1")}
            return
        yield "It is "
        yield str(results[0].content)
        yield "."

    agent = Agent(FunctionModel(stream_function=model), name="weather")

    @agent.tool_plain
    async def get_weather(city: str) -> str:
        return f"sunny in {city}"

    return agent


async def test_run_stream_yields_the_whole_run_in_order() -> None:
    events = [e async for e in run_stream(weather_agent(), "Weather?")]
    assert summary(events) == [
        ("agent_start", None),
        ("progress", 1),
        ("tool_start", ("get_weather", {"city": "Paris"})),
        ("tool_end", ("get_weather", "sunny in Paris", None)),
        ("llm_chunk", "It is "),
        ("llm_chunk", "sunny in Paris"),
        ("llm_chunk", "."),
        ("progress", 2),
        ("agent_end", "succeeded"),
    ]
    assert [e.seq for e in events] == list(range(len(events)))
    assert len({e.run_id for e in events}) == 1 and events[0].run_id == IsStr(min_length=8)
    assert all(e.agent_name == "weather" and e.depth == 0 and e.parent_run_id is None for e in events)
    assert all(e.timestamp.tzinfo is not None for e in events)
    assert events[0].data == {"agent_name": "weather", "prompt": "Weather?", "model": "function:function::model"}
    assert events[3].data == {
        "tool_name": "get_weather",
        "tool_call_id": "call-1",
        "result": "sunny in Paris",
        "duration_seconds": IsFloat(ge=0),
        "error": None,
    }
    assert events[-2].data == {
        "iteration": 2,
        "total_tokens": IsInt(gt=0),
        "input_tokens": IsInt(gt=0),
        "output_tokens": IsInt(gt=0),
        "total_cost_usd": None,  # FunctionModel has no price
        "requests": 2,
        "tool_calls": 1,
    }
    assert events[-1].data == {
        "agent_name": "weather",
        "success": True,
        "status": "succeeded",
        "total_iterations": 2,
        "total_tokens": events[-2].data["total_tokens"],
        "total_cost_usd": None,
        "duration_seconds": IsFloat(ge=0),
        "output": "It is sunny in Paris.",
    }


async def test_text_is_yielded_before_the_model_sends_the_next_delta() -> None:
    seen: list[str] = []
    consumer_saw = asyncio.Event()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        for word in ["one ", "two ", "three"]:
            consumer_saw.clear()
            yield word
            # Handshake: a stream that buffered this delta would never let the consumer see it.
            await asyncio.wait_for(consumer_saw.wait(), timeout=5)

    agent = Agent(FunctionModel(stream_function=model))
    async for text in stream_text(agent, "count"):
        seen.append(text)
        consumer_saw.set()
    assert seen == ["one ", "two ", "three"]


async def test_tool_start_arrives_before_the_tool_returns_and_progress_before_the_next_request() -> None:
    saw_tool_start = asyncio.Event()
    saw_progress_1 = asyncio.Event()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[StreamItem]:
        if not tool_results(messages):
            yield {0: DeltaToolCall(name="wait_for_reader", json_args="{}", tool_call_id="c")}
            return
        await asyncio.wait_for(saw_progress_1.wait(), timeout=5)
        yield "done"

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    async def wait_for_reader() -> str:
        await asyncio.wait_for(saw_tool_start.wait(), timeout=5)
        return "ok"

    types: list[str] = []
    async for event in run_stream(agent, "go"):
        types.append(event.event_type.value)
        if event.event_type is StreamEventType.TOOL_START:
            saw_tool_start.set()
        if event.event_type is StreamEventType.PROGRESS and event.data["iteration"] == 1:
            saw_progress_1.set()
    assert types == [
        "agent_start",
        "progress",
        "tool_start",
        "tool_end",
        "llm_chunk",
        "progress",
        "agent_end",
    ]


async def test_tool_progress_streams_live_between_start_and_end() -> None:
    saw = asyncio.Event()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[StreamItem]:
        if not tool_results(messages):
            yield {0: DeltaToolCall(name="fetch", json_args='{"n": 2}', tool_call_id="f")}
            return
        yield "fetched"

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool
    async def fetch(ctx: RunContext[None], n: int) -> int:
        for done in range(1, n + 1):
            saw.clear()
            await report_progress(ctx, message=f"fetched {done}/{n}", fraction=done / n)
            await asyncio.wait_for(saw.wait(), timeout=5)
        return n

    progress: list[dict[str, Any]] = []
    kinds: list[str] = []
    async for event in run_stream(agent, "go"):
        kinds.append(event.event_type.value)
        if event.event_type is StreamEventType.TOOL_PROGRESS:
            progress.append(event.data)
            saw.set()
    assert kinds[2:6] == ["tool_start", "tool_progress", "tool_progress", "tool_end"]
    assert progress == [
        {"tool_name": "fetch", "tool_call_id": "f", "message": "fetched 1/2", "fraction": 0.5},
        {"tool_name": "fetch", "tool_call_id": "f", "message": "fetched 2/2", "fraction": 1.0},
    ]


async def test_report_progress_rejects_a_fraction_out_of_range() -> None:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[StreamItem]:
        if not tool_results(messages):
            yield {0: DeltaToolCall(name="bad", json_args="{}", tool_call_id="b")}
            return
        yield "x"

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool
    async def bad(ctx: RunContext[None]) -> None:
        await report_progress(ctx, fraction=1.5)

    with pytest.raises(ValueError, match=r"fraction must be between 0 and 1, got 1\.5"):
        async for _ in run_stream(agent, "go"):
            pass


async def test_parallel_tool_calls_pair_by_call_id_even_when_they_finish_out_of_order() -> None:
    release_a = asyncio.Event()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[StreamItem]:
        if not tool_results(messages):
            yield {
                0: DeltaToolCall(name="slow", json_args='{"label": "a"}', tool_call_id="a"),
                1: DeltaToolCall(name="fast", json_args='{"label": "b"}', tool_call_id="b"),
            }
            return
        yield "both done"

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    async def slow(label: str) -> str:
        await asyncio.wait_for(release_a.wait(), timeout=5)
        return f"slow {label}"

    @agent.tool_plain
    async def fast(label: str) -> str:
        release_a.set()  # `slow` can only finish after `fast` ran
        return f"fast {label}"

    events = [e async for e in run_stream(agent, "go")]
    starts = {e.data["tool_call_id"]: e for e in events if e.event_type is StreamEventType.TOOL_START}
    ends = {e.data["tool_call_id"]: e for e in events if e.event_type is StreamEventType.TOOL_END}
    assert set(starts) == set(ends) == {"a", "b"}
    assert {k: (v.data["tool_name"], v.data["result"]) for k, v in ends.items()} == {
        "a": ("slow", "slow a"),
        "b": ("fast", "fast b"),
    }
    assert all(starts[k].seq < ends[k].seq for k in starts)


async def test_a_tool_asking_for_a_retry_ends_with_an_error_and_the_run_goes_on() -> None:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[StreamItem]:
        results = tool_results(messages)
        if len(results) < 2:
            yield {0: DeltaToolCall(name="flaky", json_args="{}", tool_call_id=f"c{len(results)}")}
            return
        yield "recovered"

    agent = Agent(FunctionModel(stream_function=model))
    calls = 0

    @agent.tool_plain
    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ModelRetry("try again")
        return "fine"

    events = [e async for e in run_stream(agent, "go")]
    ends = [e.data for e in events if e.event_type is StreamEventType.TOOL_END]
    assert ends == [
        {
            "tool_name": "flaky",
            "tool_call_id": "c0",
            "result": None,
            "duration_seconds": IsFloat(),
            "error": IsStr(regex=".*try again.*"),
        },
        {"tool_name": "flaky", "tool_call_id": "c1", "result": "fine", "duration_seconds": IsFloat(), "error": None},
    ]
    assert events[-1].data["status"] == "succeeded"


async def test_a_tool_that_raises_ends_its_call_then_error_then_agent_end_then_the_exception() -> None:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[StreamItem]:
        yield {0: DeltaToolCall(name="explode", json_args="{}", tool_call_id="x")}

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    async def explode() -> str:
        raise RuntimeError("disk on fire")

    events: list[StreamEvent] = []
    with pytest.raises(RuntimeError, match="disk on fire"):
        async for event in run_stream(agent, "go"):
            events.append(event)
    assert summary(events)[-4:] == [
        ("tool_start", ("explode", {})),
        ("tool_end", ("explode", None, "RuntimeError: disk on fire")),
        ("error", None),
        ("agent_end", "failed"),
    ]
    assert events[-2].data == {"error": "disk on fire", "exception_type": "RuntimeError"}
    assert events[-1].data["success"] is False


async def test_an_error_mid_stream_keeps_the_text_already_sent() -> None:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "partial "
        yield "answer"
        raise ConnectionResetError("provider hung up")

    events: list[StreamEvent] = []
    with pytest.raises(ConnectionResetError):
        async for event in run_stream(Agent(FunctionModel(stream_function=model)), "go"):
            events.append(event)
    assert summary(events) == [
        ("agent_start", None),
        ("llm_chunk", "partial "),
        ("llm_chunk", "answer"),
        ("error", None),
        ("agent_end", "failed"),
    ]


class Gate:
    """A tool that blocks until cancelled, recording whether it finished or was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False
        self.finished = False

    def agent(self) -> Agent[None, str]:
        async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[StreamItem]:
            yield {0: DeltaToolCall(name="block", json_args="{}", tool_call_id="blk")}

        agent = Agent(FunctionModel(stream_function=model))

        @agent.tool_plain
        async def block() -> str:
            self.started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
            self.finished = True
            return "never"

        return agent


def other_tasks() -> set[asyncio.Task[Any]]:
    """Tasks besides this test's own and the test runner's: what a run could have left behind."""
    return {
        task
        for task in asyncio.all_tasks()
        if task is not asyncio.current_task() and "_call_in_runner_task" not in repr(task.get_coro())
    }


async def test_breaking_out_stops_the_run_and_leaves_no_task() -> None:
    gate = Gate()
    async with aclosing(run_stream(gate.agent(), "go")) as events:
        async for event in events:
            if event.event_type is StreamEventType.TOOL_START:
                await gate.started.wait()
                break
    assert gate.cancelled and not gate.finished
    assert other_tasks() == set()


async def test_a_bare_break_stops_the_run_once_the_generator_is_collected() -> None:
    gate = Gate()
    async for event in run_stream(gate.agent(), "go"):
        if event.event_type is StreamEventType.TOOL_START:
            await gate.started.wait()
            break
    gc.collect()
    for _ in range(20):  # the event loop closes an abandoned async generator on its next turns
        if not other_tasks():
            break
        await asyncio.sleep(0)
    assert gate.cancelled and not gate.finished
    assert other_tasks() == set()


async def test_cancelling_the_consumer_task_cancels_the_run() -> None:
    gate = Gate()

    async def consume() -> None:
        async for _ in run_stream(gate.agent(), "go"):
            pass

    task = asyncio.create_task(consume())
    await gate.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.cancelled and not gate.finished
    assert other_tasks() == set()


async def test_a_timeout_around_the_loop_cancels_the_run() -> None:
    gate = Gate()
    seen: list[str] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            async for event in run_stream(gate.agent(), "go"):
                seen.append(event.event_type.value)
    assert seen == ["agent_start", "progress", "tool_start"]
    assert gate.cancelled and not gate.finished
    assert other_tasks() == set()


async def test_a_cancellation_token_ends_the_stream_with_a_cancelled_agent_end() -> None:
    gate = Gate()
    token = CancellationToken()
    events: list[StreamEvent] = []
    async for event in run_stream(gate.agent(), "go", cancellation_token=token):
        events.append(event)
        if event.event_type is StreamEventType.TOOL_START:
            await gate.started.wait()
            token.cancel()
    assert summary(events) == [
        ("agent_start", None),
        ("progress", 1),
        ("tool_start", ("block", {})),
        ("tool_end", ("block", None, "cancelled")),
        ("agent_end", "cancelled"),
    ]
    assert events[-1].data["total_tokens"] == events[1].data["total_tokens"] > 0
    assert gate.cancelled
    assert other_tasks() == set()


async def test_a_hundred_concurrent_runs_do_not_cross_talk() -> None:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[StreamItem]:
        prompt = last_prompt(messages)
        if not tool_results(messages):
            yield {0: DeltaToolCall(name="echo", json_args=f'{{"word": "{prompt}"}}', tool_call_id=prompt)}
            return
        for char in prompt:
            await asyncio.sleep(0)
            yield char

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    async def echo(word: str) -> str:
        await asyncio.sleep(0)
        return word.upper()

    async def one(i: int) -> tuple[str, list[StreamEvent]]:
        prompt = f"run{i:03d}"
        return prompt, [e async for e in run_stream(agent, prompt)]

    results = await asyncio.gather(*(one(i) for i in range(100)))
    for prompt, events in results:
        text = "".join(e.data["text"] for e in events if e.event_type is StreamEventType.LLM_CHUNK)
        assert text == prompt
        tool_end = next(e for e in events if e.event_type is StreamEventType.TOOL_END)
        assert tool_end.data["result"] == prompt.upper() and tool_end.data["tool_call_id"] == prompt
        assert [e.seq for e in events] == list(range(len(events)))
        assert len({e.run_id for e in events}) == 1
        assert events[-1].data["output"] == prompt
    assert len({events[0].run_id for _, events in results}) == 100


async def test_stream_tool_calls_yields_each_call_starting_then_finished() -> None:
    updates = [u async for u in stream_tool_calls(weather_agent(), "Weather?")]
    assert [tuple(u) for u in updates] == [
        ("get_weather", {"city": "Paris"}, None),
        ("get_weather", {"city": "Paris"}, "sunny in Paris"),
    ]
    assert [(u.finished, u.tool_call_id, u.error) for u in updates] == [(False, "call-1", None), (True, "call-1", None)]


async def test_run_stream_with_tools_streams_argument_fragments_and_can_drop_progress() -> None:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[StreamItem]:
        if not tool_results(messages):
            yield {0: DeltaToolCall(name="get_weather", json_args='{"city": ', tool_call_id="w")}
            yield {0: DeltaToolCall(json_args='"Oslo"}')}
            return
        yield "cold"

    agent = Agent(FunctionModel(stream_function=model))

    @agent.tool_plain
    async def get_weather(city: str) -> str:
        return "cold"

    events = [e async for e in run_stream_with_tools(agent, "go", emit_progress=False)]
    assert [e.event_type.value for e in events] == [
        "agent_start",
        "tool_args_delta",
        "tool_args_delta",
        "tool_start",
        "tool_end",
        "llm_chunk",
        "agent_end",
    ]
    assert [e.data for e in events[1:3]] == [
        {"tool_name": "get_weather", "tool_call_id": "w", "args_delta": '{"city": '},
        {"tool_name": "get_weather", "tool_call_id": "w", "args_delta": '"Oslo"}'},
    ]


async def test_thinking_deltas_become_thinking_chunks() -> None:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[StreamItem]:
        yield {0: DeltaThinkingPart(content="hmm ")}
        yield {0: DeltaThinkingPart(content="ok")}
        yield "answer"

    events = [e async for e in run_stream(Agent(FunctionModel(stream_function=model)), "go")]
    assert summary(events)[1:4] == [("thinking_chunk", "hmm "), ("thinking_chunk", "ok"), ("llm_chunk", "answer")]


@pytest.mark.parametrize("callback_kind", ["sync", "async"])
async def test_collect_stream_result_returns_the_real_result_and_calls_back_live(callback_kind: str) -> None:
    seen: list[str] = []
    if callback_kind == "sync":

        def on_event(event: StreamEvent) -> None:
            seen.append(event.event_type.value)

    else:

        async def on_event(event: StreamEvent) -> None:  # type: ignore[misc]
            await asyncio.sleep(0)
            seen.append(event.event_type.value)

    result, events = await collect_stream_result(weather_agent(), "Weather?", on_event=on_event)
    assert result is not None
    assert result.output == "It is sunny in Paris."
    assert result.usage.requests == 2
    assert len(result.all_messages()) == 4
    assert seen == [e.event_type.value for e in events]
    assert seen[0] == "agent_start" and seen[-1] == "agent_end"


async def test_message_history_continues_a_conversation() -> None:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        prompts = [
            p.content for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, UserPromptPart)
        ]
        yield " | ".join(str(p) for p in prompts)

    agent = Agent(FunctionModel(stream_function=model))
    first, _ = await collect_stream_result(agent, "hello")
    assert first is not None
    text = "".join([t async for t in stream_text(agent, "again", None, message_history=first.all_messages())])
    assert text == "hello | again"


async def test_merge_streams_interleaves_runs_as_they_arrive() -> None:
    turn = {"a": asyncio.Event(), "b": asyncio.Event()}

    def agent_for(name: str, other: str) -> Agent[None, str]:
        async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
            for i in range(3):
                await asyncio.wait_for(turn[name].wait(), timeout=5)
                turn[name].clear()
                yield f"{name}{i} "
                turn[other].set()

        return Agent(FunctionModel(stream_function=model), name=name)

    turn["a"].set()
    merged = merge_streams(run_stream(agent_for("a", "b"), "x"), run_stream(agent_for("b", "a"), "y"))
    texts = [e.data["text"] async for e in merged if e.event_type is StreamEventType.LLM_CHUNK]
    assert texts == ["a0 ", "b0 ", "a1 ", "b1 ", "a2 ", "b2 "]
    assert other_tasks() == set()


async def test_merge_streams_raises_a_failed_runs_exception_after_closing_the_others() -> None:
    gate = Gate()

    async def failing(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        await gate.started.wait()
        yield "x"
        raise ValueError("boom")

    merged = merge_streams(
        run_stream(gate.agent(), "a"), run_stream(Agent(FunctionModel(stream_function=failing)), "b")
    )
    with pytest.raises(ValueError, match="boom"):
        async for _ in merged:
            pass
    assert gate.cancelled
    assert other_tasks() == set()


async def test_bad_arguments_fail_fast_with_a_clear_message() -> None:
    with pytest.raises(TypeError, match="expected a pydantic_ai Agent, got 'not an agent'"):
        async for _ in run_stream("not an agent", "hi"):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="prompt must be a string, got int"):
        async for _ in run_stream(weather_agent(), 42):  # type: ignore[arg-type]
            pass


async def test_run_timeout_ends_the_run_failed_while_it_streams_and_bad_limits_are_refused() -> None:
    from pydantic_deep import DeepAgentDeps, create_deep_agent
    from pydantic_deep.streaming import RunTimeoutError
    from pydantic_deep.testing import Chunk, ScriptedModel, Step, Text

    never = asyncio.Event()
    steady = [Chunk(f"{n} ", delay=0.01) for n in range(1000)]  # always talking, never finishing in time
    agent = create_deep_agent(ScriptedModel([Step(Text("counting: ", *steady, Chunk("done", gate=never)))]))
    events: list[Any] = []
    with pytest.raises(RunTimeoutError, match=r"longer than its run timeout of 0\.3 s"):
        async for event in run_stream(agent, "count", DeepAgentDeps(), run_timeout=0.3, idle_timeout=5):
            events.append(event)
    assert [e.event_type.value for e in events[-2:]] == ["error", "agent_end"]
    assert events[-2].data["exception_type"] == "RunTimeoutError" and events[-1].data["status"] == "failed"
    assert sum(e.event_type == StreamEventType.LLM_CHUNK for e in events) > 1  # it was cut mid-answer
    for bad in ({"run_timeout": 0}, {"idle_timeout": -1.0}):
        with pytest.raises(ValueError, match="must be a positive number of seconds"):
            await anext(run_stream(agent, "count", DeepAgentDeps(), **bad))  # pyright: ignore[reportArgumentType]


# ---- the model's events, pulled by the consumer -----------------------------------------------------------


class MidAnswer:
    """A model that says "a", "b", then stops mid-answer until `resume` is set; says how its stream ended."""

    def __init__(self) -> None:
        self.stalled = asyncio.Event()
        self.resume = asyncio.Event()
        self.closed: str | None = None
        self.stream_state: Any = "unread"

    def agent(self) -> Agent[None, str]:
        from pydantic_deep.streaming.capability import CURRENT_STREAM

        async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
            try:
                yield "a"
                self.stream_state = CURRENT_STREAM.get()  # the run's context, though the consumer pulls
                yield "b"
                self.stalled.set()
                await self.resume.wait()
                yield "c"
                self.closed = "finished"
            except asyncio.CancelledError:
                self.closed = "cancelled"
                raise
            except GeneratorExit:
                self.closed = "closed"
                raise

        return Agent(FunctionModel(stream_function=model))


async def test_a_cancellation_token_mid_answer_ends_the_run_cancelled_and_leaves_the_consumer_alone() -> None:
    model = MidAnswer()
    token = CancellationToken()
    events: list[StreamEvent] = []
    async for event in run_stream(model.agent(), "go", cancellation_token=token):
        events.append(event)
        if event.event_type is StreamEventType.LLM_CHUNK and event.data["text"] == "b":
            token.cancel()  # the run's task is cancelled while this consumer is about to pull the next event
    assert [(e.event_type.value, e.data.get("text") or e.data.get("status")) for e in events] == [
        ("agent_start", None),
        ("llm_chunk", "a"),
        ("llm_chunk", "b"),
        ("agent_end", "cancelled"),
    ]
    assert model.closed in ("cancelled", "closed") and model.stream_state is not None
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert other_tasks() == set()


async def test_a_cancellation_token_while_the_consumer_waits_inside_the_model_stream() -> None:
    model = MidAnswer()
    token = CancellationToken()
    events: list[StreamEvent] = []

    async def cancel_once_stalled() -> None:
        await model.stalled.wait()  # the consumer is inside the model's stream, waiting for "c"
        token.cancel()

    canceller = asyncio.create_task(cancel_once_stalled())
    async for event in run_stream(model.agent(), "go", cancellation_token=token):
        events.append(event)
    await canceller
    assert [e.event_type.value for e in events] == ["agent_start", "llm_chunk", "llm_chunk", "agent_end"]
    assert events[-1].data["status"] == "cancelled" and model.closed == "cancelled"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert other_tasks() == set()


async def test_the_idle_timeout_ends_a_model_that_stops_mid_answer() -> None:
    from pydantic_deep.streaming import IdleTimeoutError

    model = MidAnswer()
    events: list[StreamEvent] = []
    with pytest.raises(IdleTimeoutError):
        async for event in run_stream(model.agent(), "go", idle_timeout=0.2):
            events.append(event)
    assert [e.event_type.value for e in events] == ["agent_start", "llm_chunk", "llm_chunk", "error", "agent_end"]
    assert events[-2].data["exception_type"] == "IdleTimeoutError" and events[-1].data["status"] == "failed"
    assert model.closed == "cancelled"
    assert other_tasks() == set()


async def test_cancelling_the_consumer_inside_the_model_stream_cancels_the_run() -> None:
    model = MidAnswer()
    chunks: list[str] = []

    async def consume() -> None:
        async for event in run_stream(model.agent(), "go"):
            if event.event_type is StreamEventType.LLM_CHUNK:
                chunks.append(event.data["text"])

    consumer = asyncio.create_task(consume())
    await model.stalled.wait()  # the consumer waits inside the model's stream
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert chunks == ["a", "b"] and model.closed == "cancelled"
    assert other_tasks() == set()


async def test_leaving_mid_answer_closes_the_model_stream() -> None:
    model = MidAnswer()
    async with aclosing(run_stream(model.agent(), "go")) as events:
        async for event in events:
            if event.event_type is StreamEventType.LLM_CHUNK and event.data["text"] == "b":
                break
    assert model.closed in ("cancelled", "closed")
    assert other_tasks() == set()


async def test_the_run_timeout_alone_ends_a_model_that_stops_mid_answer() -> None:
    from pydantic_deep.streaming import RunTimeoutError

    model = MidAnswer()
    events: list[StreamEvent] = []
    async with asyncio.timeout(30):  # the limit used to be read as a delay from the loop's clock (hours)
        with pytest.raises(RunTimeoutError, match=r"run timeout of 0\.2 s"):
            async for event in run_stream(model.agent(), "go", run_timeout=0.2):
                events.append(event)
    assert [e.event_type.value for e in events] == ["agent_start", "llm_chunk", "llm_chunk", "error", "agent_end"]
    assert model.closed == "cancelled"
    assert other_tasks() == set()


async def test_the_idle_timeout_ends_a_model_that_never_starts_answering() -> None:
    from pydantic_deep.streaming import IdleTimeoutError

    async def silent(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        await asyncio.Event().wait()
        yield "never"

    events: list[StreamEvent] = []
    async with asyncio.timeout(30):
        with pytest.raises(IdleTimeoutError):
            async for event in run_stream(Agent(FunctionModel(stream_function=silent)), "go", idle_timeout=0.2):
                events.append(event)
    assert [e.event_type.value for e in events] == ["agent_start", "error", "agent_end"]
    assert other_tasks() == set()


async def test_a_limit_that_fires_while_the_model_streams_without_pause_ends_the_run_cleanly() -> None:
    from pydantic_deep.streaming import RunTimeoutError

    async def endless(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        while True:
            yield "x"
            await asyncio.sleep(0)  # the consumer takes the next event before the run hears its limit fired

    agent = Agent(FunctionModel(stream_function=endless))
    for attempt in range(12):  # limits a little apart: the limit fires at each point of the consumer's pull
        events: list[StreamEvent] = []
        with pytest.raises(RunTimeoutError):
            async for event in run_stream(agent, "go", run_timeout=0.05 + attempt * 0.0013, idle_timeout=5):
                events.append(event)
        assert [e.event_type.value for e in events[-2:]] == ["error", "agent_end"]
        assert events[-1].data["status"] == "failed"
    assert other_tasks() == set()
