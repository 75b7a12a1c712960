"""Tracing through the public API: span trees, concurrency, cancellation, exporters, the guide's example, the docs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import textwrap
from collections.abc import AsyncIterator
from contextlib import aclosing
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from dirty_equals import IsFloat, IsStr
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic_ai import Agent, CancellationToken
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings

from _tracing_helpers import (
    DELEGATING_TREE,
    NAP,
    Call,
    by_name,
    delegating_agent,
    duration,
    fetch,
    request_of,
    researcher,
    run_of,
    scripted,
    tool_of,
)
from pydantic_deep import DeepAgentDeps, create_deep_agent, demo_model
from pydantic_deep.server import create_app
from pydantic_deep.streaming import StreamEventType, run_stream
from pydantic_deep.tracing import (
    AgentRunData,
    ConsoleExporter,
    InMemoryExporter,
    JSONLExporter,
    ModelRequestData,
    OpenTelemetryExporter,
    Span,
    SpanExporter,
    ToolCallData,
    TraceContext,
    Tracing,
    current_span,
)

ROOT = Path(__file__).parent.parent
Mode = Literal["run", "run_stream"]


async def run_with(agent: Agent[DeepAgentDeps, str], prompt: str, deps: DeepAgentDeps, mode: Mode) -> str:
    """Run `agent` either plainly or through the streaming core; tracing must not care which."""
    if mode == "run":
        return (await agent.run(prompt, deps=deps)).output
    async for event in run_stream(agent, prompt, deps):
        if event.event_type is StreamEventType.AGENT_END:
            return event.data["output"]
    raise AssertionError("the stream ended without agent_end")


# --- the span tree of one run ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["run", "run_stream"])
async def test_span_tree_of_a_run_with_two_tool_calls_and_a_sub_agent(mode: Mode) -> None:
    memory = InMemoryExporter()
    trace = TraceContext(exporters=[memory])

    output = await run_with(delegating_agent(), "Research the moon", DeepAgentDeps(trace_context=trace), mode)

    assert output == "All done."
    assert memory.tree() == DELEGATING_TREE
    assert memory.open_spans == []
    [root] = memory.traces()
    spans = root.walk()
    # Parent links, by name: the sub-agent's run hangs under the delegating tool call, its steps under it.
    names = {span.span_id: span.name for span in spans}
    assert [(span.depth, span.kind, span.name, names.get(span.parent_id or "")) for span in spans] == [
        (0, "agent_run", "assistant", None),
        (1, "model_request", "parent-model", "assistant"),
        (1, "tool_call", "fetch", "assistant"),
        (1, "model_request", "parent-model", "assistant"),
        (1, "tool_call", "compute", "assistant"),
        (1, "model_request", "parent-model", "assistant"),
        (1, "tool_call", "delegate_task", "assistant"),
        (2, "agent_run", "researcher", "delegate_task"),
        (3, "model_request", "child-model", "researcher"),
        (3, "tool_call", "lookup", "researcher"),
        (3, "model_request", "child-model", "researcher"),
        (1, "model_request", "parent-model", "assistant"),
    ]
    assert {span.trace_id for span in spans} == {root.span.trace_id}
    assert re.fullmatch(r"[0-9a-f]{32}", root.span.trace_id)
    assert len({span.span_id for span in spans}) == len(spans)

    named = by_name(spans)
    # Durations are at least what the tools slept, and every parent encloses its children in time.
    for tool in ("fetch", "compute", "lookup"):
        assert duration(named[tool]) >= NAP
    assert duration(named["delegate_task"]) >= duration(named["researcher"]) >= NAP
    assert duration(named["assistant"]) >= 3 * NAP
    spans_by_id = {span.span_id: span for span in spans}
    for span in spans[1:]:
        parent = spans_by_id[span.parent_id or ""]
        assert span.end_time is not None and parent.end_time is not None
        assert parent.start_time <= span.start_time and span.end_time <= parent.end_time

    # What each kind of span records.
    assert named["fetch"].data == ToolCallData(
        tool_name="fetch",
        tool_call_id="fetch-0",
        args={"url": "https://example.com"},
        result="page at https://example.com",
    )
    assert named["compute"].data == ToolCallData(
        tool_name="compute", tool_call_id="compute-1", args={"x": 21}, result="42"
    )
    assert named["delegate_task"].data == ToolCallData(
        tool_name="delegate_task",
        tool_call_id="delegate_task-2",
        args={"agent_name": "researcher", "task": "the moon"},
        result=IsStr(regex=r".*found the moon.*"),
    )
    parent_requests = [s for s in spans if s.kind == "model_request" and s.depth == 1]
    child_requests = [s for s in spans if s.kind == "model_request" and s.depth == 3]
    for request in parent_requests + child_requests:
        data = request.data
        assert isinstance(data, ModelRequestData)
        assert data.provider == "function" and data.model == request.name
        assert data.input_tokens is not None and data.input_tokens > 0
        assert data.output_tokens is not None and data.output_tokens > 0
    assert named["assistant"].data == AgentRunData(
        agent_name="assistant",
        run_id=IsStr(),
        model="function:parent-model",
        prompt="Research the moon",
        output="All done.",
        requests=4,
        tool_calls=3,
        input_tokens=sum(request_of(r).input_tokens or 0 for r in parent_requests),
        output_tokens=sum(request_of(r).output_tokens or 0 for r in parent_requests),
        cost_usd=None,  # FunctionModel has no price
    )
    assert named["researcher"].data == AgentRunData(
        agent_name="researcher",
        run_id=IsStr(),
        model="function:child-model",
        prompt="the moon",
        output="found the moon",
        requests=2,
        tool_calls=1,
        input_tokens=sum(request_of(r).input_tokens or 0 for r in child_requests),
        output_tokens=sum(request_of(r).output_tokens or 0 for r in child_requests),
        cost_usd=None,
    )

    summary = trace.summary()
    assert (summary.runs, summary.model_requests, summary.tool_calls, summary.errors, summary.cancelled) == (
        2,
        6,
        4,
        0,
        0,
    )
    assert summary.input_tokens == sum(request_of(r).input_tokens or 0 for r in parent_requests + child_requests)
    assert summary.total_tokens == summary.input_tokens + summary.output_tokens
    assert summary.wall_time_seconds >= duration(named["assistant"])


async def test_a_run_without_a_trace_context_records_nothing_and_runs_the_same() -> None:
    memory = InMemoryExporter()
    TraceContext(exporters=[memory])  # exists, but not in these deps
    result = await delegating_agent().run("Research the moon", deps=DeepAgentDeps())
    assert result.output == "All done."
    assert memory.spans == []
    assert current_span() is None


async def test_the_capability_traces_any_agent_with_an_explicit_trace_context() -> None:
    memory = InMemoryExporter()
    trace = TraceContext(exporters=[memory])
    agent = Agent(scripted("m", [Call("fetch", {"url": "u"}), "ok"]), tools=[fetch], capabilities=[Tracing(trace)])

    assert (await agent.run("go")).output == "ok"  # no deps at all

    assert (
        memory.tree() == "agent_run agent [ok]\n  model_request m [ok]\n  tool_call fetch [ok]\n  model_request m [ok]"
    )


async def test_costs_and_totals_add_up_in_spans_runs_and_the_summary() -> None:
    memory = InMemoryExporter()
    trace = TraceContext(exporters=[memory])
    agent = create_deep_agent(
        scripted("priced", [Call("fetch", {"url": "u"}), "ok"], cost=Decimal("0.0015")),
        tools=[fetch],
        file_tools=False,
        planning=False,
    )
    for _ in range(2):
        await agent.run("go", deps=DeepAgentDeps(trace_context=trace))

    run = memory.find(kind="agent_run")[0].data
    assert isinstance(run, AgentRunData)
    assert (run.requests, run.tool_calls, run.input_tokens, run.output_tokens) == (2, 1, 20, 10)
    assert run.cost_usd == pytest.approx(0.003)
    assert [request_of(s).cost_usd for s in memory.find(kind="model_request")] == [pytest.approx(0.0015)] * 4
    summary = trace.summary()
    assert (summary.runs, summary.model_requests, summary.tool_calls) == (2, 4, 2)
    assert (summary.input_tokens, summary.output_tokens, summary.total_tokens) == (40, 20, 60)
    assert summary.cost_usd == pytest.approx(0.006)


async def test_content_can_be_left_out_and_long_content_is_cut() -> None:
    memory = InMemoryExporter()
    agent = create_deep_agent(
        scripted("m", [Call("fetch", {"url": "x" * 50}), "y" * 50]), tools=[fetch], file_tools=False, planning=False
    )

    await agent.run("secret", deps=DeepAgentDeps(trace_context=TraceContext([memory], include_content=False)))
    spans = by_name(memory.spans)
    assert spans["fetch"].data == ToolCallData(tool_name="fetch", tool_call_id="fetch-0", args=None, result=None)
    assert (run_of(spans["assistant"]).prompt, run_of(spans["assistant"]).output) == (None, None)

    memory.clear()
    await agent.run("p" * 50, deps=DeepAgentDeps(trace_context=TraceContext([memory], max_content_chars=10)))
    spans = by_name(memory.spans)
    assert tool_of(spans["fetch"]) == ToolCallData(
        tool_name="fetch", tool_call_id="fetch-0", args={"url": "x" * 9 + "…"}, result="page at x…"
    )
    assert (run_of(spans["assistant"]).prompt, run_of(spans["assistant"]).output) == ("p" * 9 + "…", "y" * 9 + "…")


async def test_code_inside_a_tool_sees_its_span_and_can_annotate_it(tmp_path: Path) -> None:
    seen: list[Span | None] = []

    async def count_rows(table: str) -> int:
        span = current_span()
        seen.append(span)
        assert span is not None
        span.attributes["rows"] = 3
        return 3

    path = tmp_path / "trace.jsonl"
    agent = create_deep_agent(
        scripted("m", [Call("count_rows", {"table": "t"}), "3"]), tools=[count_rows], file_tools=False, planning=False
    )
    await agent.run("go", deps=DeepAgentDeps(trace_context=TraceContext([JSONLExporter(path)])))

    assert seen[0] is not None and seen[0].name == "count_rows" and seen[0].status == "ok"
    [tool_line] = [json.loads(line) for line in path.read_text().splitlines() if '"tool_call"' in line]
    assert tool_line["attributes"] == {"rows": 3}


async def test_a_tool_call_with_invalid_arguments_is_a_failed_span() -> None:
    memory = InMemoryExporter()

    async def double(x: int) -> int:
        return 2 * x

    agent = create_deep_agent(
        scripted("m", [Call("double", {"x": "not a number"}), "gave up"]),
        tools=[double],
        file_tools=False,
        planning=False,
    )
    assert (await agent.run("go", deps=DeepAgentDeps(trace_context=TraceContext([memory])))).output == "gave up"
    assert memory.tree() == (
        "agent_run assistant [ok]\n  model_request m [ok]\n  tool_call double [error]\n  model_request m [ok]"
    )
    [failed] = memory.find(kind="tool_call")
    assert failed.error_type == "ValidationError" and tool_of(failed).args == {"x": "not a number"}
    assert run_of(memory.find(kind="agent_run")[0]).tool_calls == 1


# --- concurrency ------------------------------------------------------------------------------------------------


async def test_twenty_concurrent_runs_on_one_trace_context_build_twenty_separate_trees() -> None:
    runs = 20
    everyone_inside = asyncio.Barrier(runs)

    async def rendezvous(tag: str) -> str:
        # A handshake, not a sleep: no run leaves this tool until all twenty are inside a tool at once.
        async with asyncio.timeout(10):
            await everyone_inside.wait()
        return tag

    parent = create_deep_agent(
        scripted(
            "parent-model",
            [
                lambda tag: Call("rendezvous", {"tag": tag}),
                lambda tag: Call("delegate_task", {"agent_name": "researcher", "task": tag}),
                lambda tag: f"done {tag}",
            ],
        ),
        tools=[rendezvous],
        subagents=[researcher()],
        file_tools=False,
        planning=False,
    )
    memory = InMemoryExporter()
    trace = TraceContext(exporters=[memory])
    tags = [f"job-{i:02d}" for i in range(runs)]

    outputs = await asyncio.gather(
        *(
            run_with(parent, tag, DeepAgentDeps(trace_context=trace), "run" if i % 2 else "run_stream")
            for i, tag in enumerate(tags)
        )
    )

    assert outputs == [f"done {tag}" for tag in tags]
    roots = memory.traces()
    assert len(roots) == runs
    assert len({root.span.trace_id for root in roots}) == runs
    assert sorted(run_of(root.span).prompt or "" for root in roots) == tags
    for root in roots:
        tag = run_of(root.span).prompt
        spans = root.walk()
        assert "\n".join(f"{'  ' * s.depth}{s.kind} {s.name} [{s.status}]" for s in spans) == (
            "agent_run assistant [ok]\n"
            "  model_request parent-model [ok]\n"
            "  tool_call rendezvous [ok]\n"
            "  model_request parent-model [ok]\n"
            "  tool_call delegate_task [ok]\n"
            "    agent_run researcher [ok]\n"
            "      model_request child-model [ok]\n"
            "      tool_call lookup [ok]\n"
            "      model_request child-model [ok]\n"
            "  model_request parent-model [ok]"
        )
        named = by_name(spans)
        # Every span of this tree belongs to this run: the tag flows through all of them.
        assert {s.trace_id for s in spans} == {root.span.trace_id}
        assert tool_of(named["rendezvous"]).args == {"tag": tag}
        assert run_of(named["researcher"]).prompt == tag
        assert tool_of(named["lookup"]).args == {"q": tag}
        assert named["researcher"].parent_id == named["delegate_task"].span_id
    summary = trace.summary()
    assert (summary.runs, summary.tool_calls, summary.errors) == (2 * runs, 3 * runs, 0)
    assert memory.open_spans == []


@pytest.mark.parametrize("mode", ["run", "run_stream"])
async def test_parallel_delegations_in_one_response_nest_under_their_own_calls(mode: Mode) -> None:
    parent = create_deep_agent(
        scripted(
            "parent-model",
            [
                [
                    Call("delegate_task", {"agent_name": "researcher", "task": "the sun"}),
                    Call("delegate_task", {"agent_name": "researcher", "task": "the moon"}),
                ],
                "Both done.",
            ],
        ),
        subagents=[researcher()],
        file_tools=False,
        planning=False,
    )
    memory = InMemoryExporter()

    await run_with(parent, "go", DeepAgentDeps(trace_context=TraceContext([memory])), mode)

    [root] = memory.traces()
    delegations = [node for node in root.children if node.span.kind == "tool_call"]
    assert [
        (tool_of(d.span).args, [(run_of(c.span).prompt, [s.name for s in c.walk()[1:]]) for c in d.children])
        for d in delegations
    ] == [
        ({"agent_name": "researcher", "task": "the sun"}, [("the sun", ["child-model", "lookup", "child-model"])]),
        ({"agent_name": "researcher", "task": "the moon"}, [("the moon", ["child-model", "lookup", "child-model"])]),
    ]
    # Each sub-agent's tool call belongs to its own task, though both ran at once.
    for delegation in delegations:
        [child] = delegation.children
        lookup_span = next(s for s in child.walk() if s.name == "lookup")
        assert tool_of(lookup_span).args == {"q": run_of(child.span).prompt}


async def test_runs_started_through_the_server_are_traced_under_their_run_ids() -> None:
    memory = InMemoryExporter()
    trace = TraceContext(exporters=[memory])
    app = create_app(create_deep_agent(demo_model(delay=0)), deps=lambda: DeepAgentDeps(trace_context=trace))
    run_ids: list[str] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            for prompt in ("Plan a picnic", "Plan a party"):
                run_id = (await client.post("/runs", json={"prompt": prompt})).json()["run_id"]
                stream = await client.get(f"/runs/{run_id}/events")
                assert "event: agent_end" in stream.text
                run_ids.append(run_id)

    roots = memory.traces()
    assert [(run_of(root.span).run_id, run_of(root.span).prompt) for root in roots] == [
        (run_ids[0], "Plan a picnic"),
        (run_ids[1], "Plan a party"),
    ]
    for root in roots:
        assert [(s.kind, s.name, s.status) for s in root.walk()] == [
            ("agent_run", "assistant", "ok"),
            ("model_request", "pydantic-deep-demo", "ok"),
            ("tool_call", "write_plan", "ok"),
            ("model_request", "pydantic-deep-demo", "ok"),
            ("tool_call", "write_file", "ok"),
            ("model_request", "pydantic-deep-demo", "ok"),
            ("tool_call", "update_task_statuses", "ok"),
            ("model_request", "pydantic-deep-demo", "ok"),
            ("tool_call", "read_file", "ok"),
            ("model_request", "pydantic-deep-demo", "ok"),
            ("tool_call", "update_task_statuses", "ok"),
            ("model_request", "pydantic-deep-demo", "ok"),
        ]


# --- failure and cancellation ---------------------------------------------------------------------------------


async def test_jsonl_lines_parse_and_survive_a_run_that_raises(tmp_path: Path) -> None:
    path = tmp_path / "traces" / "run.jsonl"
    lines_seen_by_tool: list[int] = []

    async def explode() -> str:
        # Spans already ended are on disk while the run is still going.
        lines_seen_by_tool.append(len(path.read_text().splitlines()))
        raise ValueError("disk on fire")

    agent = create_deep_agent(
        scripted("m", [Call("fetch", {"url": "u"}), Call("explode"), "unreachable"]),
        tools=[fetch, explode],
        file_tools=False,
        planning=False,
    )
    trace = TraceContext(exporters=[JSONLExporter(path)])
    with pytest.raises(ValueError, match="disk on fire"):
        await agent.run("go", deps=DeepAgentDeps(trace_context=trace))

    assert lines_seen_by_tool == [3]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["kind"], r["name"], r["status"], r["error"]) for r in records] == [
        ("model_request", "m", "ok", None),
        ("tool_call", "fetch", "ok", None),
        ("model_request", "m", "ok", None),
        ("tool_call", "explode", "error", "ValueError: disk on fire"),
        ("agent_run", "assistant", "error", "ValueError: disk on fire"),
    ]
    run = records[-1]
    assert run == {
        "trace_id": IsStr(regex=r"[0-9a-f]{32}"),
        "span_id": IsStr(regex=r"[0-9a-f]{16}"),
        "parent_id": None,
        "kind": "agent_run",
        "name": "assistant",
        "depth": 0,
        "status": "error",
        "start_time": IsStr(regex=r"\d{4}-\d\d-\d\dT.*\+00:00"),
        "end_time": IsStr(regex=r"\d{4}-\d\d-\d\dT.*\+00:00"),
        "duration_seconds": IsFloat(ge=NAP),
        "error": "ValueError: disk on fire",
        "error_type": "ValueError",
        "data": {
            "agent_name": "assistant",
            "run_id": IsStr(),
            "model": "function:m",
            "prompt": "go",
            "output": None,
            "requests": 2,
            "tool_calls": 2,
            "input_tokens": 20,
            "output_tokens": 10,
            "cost_usd": None,
        },
        "attributes": {},
        "events": [],
    }
    assert {r["trace_id"] for r in records} == {run["trace_id"]}
    assert {r["parent_id"] for r in records[:-1]} == {run["span_id"]}
    summary = trace.summary()
    assert (summary.runs, summary.tool_calls, summary.errors) == (1, 2, 2)

    # A second run appends to the same file.
    await create_deep_agent(scripted("m", ["fine"]), file_tools=False, planning=False).run(
        "again", deps=DeepAgentDeps(trace_context=trace)
    )
    assert [json.loads(line)["status"] for line in path.read_text().splitlines()][-2:] == ["ok", "ok"]


class Waiting:
    """A streamed answer that sends one chunk, then waits forever; `closed` once the run stops it."""

    def __init__(self) -> None:
        self.closed = False

    def agent(self) -> Agent[DeepAgentDeps, str]:
        async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
            try:
                yield "first "
                await asyncio.Event().wait()
                yield "never"
            finally:
                self.closed = True

        return create_deep_agent(
            FunctionModel(stream_function=model, model_name="waiting"), file_tools=False, planning=False
        )


async def test_abandoning_a_stream_ends_the_run_span_cancelled() -> None:
    waiting = Waiting()
    memory = InMemoryExporter()
    trace = TraceContext(exporters=[memory])
    chunks: list[str] = []

    async with aclosing(run_stream(waiting.agent(), "go", DeepAgentDeps(trace_context=trace))) as events:
        async for event in events:
            if event.event_type is StreamEventType.LLM_CHUNK:
                chunks.append(event.data["text"])
                break

    assert chunks == ["first "] and waiting.closed
    assert memory.tree() == "agent_run assistant [cancelled]\n  model_request waiting [cancelled]"
    assert memory.open_spans == []
    assert [(s.error, s.duration_seconds is not None) for s in memory.spans] == [(None, True), (None, True)]
    summary = trace.summary()
    assert (summary.runs, summary.cancelled, summary.errors) == (1, 2, 0)


async def test_a_cancellation_token_ends_the_run_span_cancelled() -> None:
    token = CancellationToken()
    started = asyncio.Event()

    async def block() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    agent = create_deep_agent(scripted("m", [Call("block"), "never"]), tools=[block], file_tools=False, planning=False)
    memory = InMemoryExporter()
    statuses: list[str] = []
    async for event in run_stream(
        agent, "go", DeepAgentDeps(trace_context=TraceContext([memory])), cancellation_token=token
    ):
        if event.event_type is StreamEventType.TOOL_START:
            await started.wait()
            token.cancel()
        if event.event_type is StreamEventType.AGENT_END:
            statuses.append(event.data["status"])

    assert statuses == ["cancelled"]
    assert memory.tree() == ("agent_run assistant [cancelled]\n  model_request m [ok]\n  tool_call block [cancelled]")
    assert memory.open_spans == []


# --- exporters --------------------------------------------------------------------------------------------------


class Broken(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def on_span_start(self, span: Span) -> None:
        self.calls += 1
        raise RuntimeError("exporter down")

    def on_span_end(self, span: Span) -> None:
        self.calls += 1
        raise RuntimeError("exporter down")


async def test_an_exporter_that_raises_is_logged_once_and_never_breaks_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, memory = Broken(), InMemoryExporter()
    trace = TraceContext(exporters=[broken, memory])

    with caplog.at_level(logging.ERROR, logger="pydantic_deep.tracing"):
        outputs = [
            await run_with(delegating_agent(), "go", DeepAgentDeps(trace_context=trace), mode)
            for mode in ("run", "run_stream")
        ]

    assert outputs == ["All done.", "All done."]
    assert memory.tree() == DELEGATING_TREE + "\n" + DELEGATING_TREE
    assert broken.calls == 2 * 2 * 12  # every start and end of both runs' 12 spans was still offered to it
    records = [r for r in caplog.records if r.name == "pydantic_deep.tracing"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        (
            "ERROR",
            f"trace exporter {broken!r} failed; the run goes on and further errors from it are not logged",
        )
    ]
    assert records[0].exc_info is not None and str(records[0].exc_info[1]) == "exporter down"


DURATION = re.compile(r"\d+\.\d+(ms|s)")


async def test_console_exporter_prints_an_indented_tree_as_plain_text() -> None:
    out = io.StringIO()
    trace = TraceContext(exporters=[ConsoleExporter(file=out)])
    agent = create_deep_agent(
        scripted("m", [Call("fetch", {"url": "u"}), Call("boom"), "ok"], cost=Decimal("0.001")),
        tools=[fetch, boom],
        file_tools=False,
        planning=False,
    )
    await agent.run("go", deps=DeepAgentDeps(trace_context=trace))

    assert DURATION.sub("<t>", out.getvalue()) == (
        "  ✓ model m  <t> · 10 in / 5 out tokens · $0.0010\n"
        "  ✓ tool fetch  <t>\n"
        "  ✓ model m  <t> · 10 in / 5 out tokens · $0.0010\n"
        "  ✗ tool boom  <t>  ToolRetryError: try again\n"
        "  ✓ model m  <t> · 10 in / 5 out tokens · $0.0010\n"
        "✓ run assistant  <t> · 30 in / 15 out tokens · 3 requests, 2 tool calls · $0.0030\n"
    )


async def boom() -> str:
    from pydantic_ai import ModelRetry

    raise ModelRetry("try again")


async def test_console_exporter_verbose_prints_starts_too_and_nests_sub_agents() -> None:
    out = io.StringIO()
    trace = TraceContext(exporters=[ConsoleExporter(verbose=True, file=out)])
    await delegating_agent().run("Research the moon", deps=DeepAgentDeps(trace_context=trace))

    lines = DURATION.sub("<t>", out.getvalue()).splitlines()
    assert lines[:4] == [
        "▶ run assistant  function:parent-model · 'Research the moon'",
        "  ▶ model parent-model  function",
        "  ✓ model parent-model  <t> · 10 in / 5 out tokens",
        '  ▶ tool fetch  {"url": "https://example.com"}',
    ]
    assert "  ✓ tool fetch  <t> · → page at https://example.com" in lines
    assert "    ▶ run researcher  function:child-model · 'the moon'" in lines
    assert "      ✓ tool lookup  <t> · → fact about the moon" in lines
    assert lines[-1] == "✓ run assistant  <t> · 40 in / 20 out tokens · 4 requests, 3 tool calls"
    assert "\x1b[" not in out.getvalue()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_console_exporter_styles_its_output_on_a_terminal_only() -> None:
    terminal, plain = Terminal(), io.StringIO()
    trace = TraceContext(exporters=[ConsoleExporter(file=terminal), ConsoleExporter(file=plain)])
    await create_deep_agent(scripted("m", ["hi"]), file_tools=False, planning=False).run(
        "go", deps=DeepAgentDeps(trace_context=trace)
    )
    assert "\x1b[" in terminal.getvalue() and "\x1b[" not in plain.getvalue()
    assert re.sub(r"\x1b\[[0-9;]*m", "", terminal.getvalue()) == plain.getvalue()


async def test_console_exporter_writes_to_standard_error_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    trace = TraceContext(exporters=[ConsoleExporter()])
    await create_deep_agent(scripted("m", ["hi"]), file_tools=False, planning=False).run(
        "go", deps=DeepAgentDeps(trace_context=trace)
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    assert DURATION.sub("<t>", captured.err).splitlines() == [
        "  ✓ model m  <t> · 10 in / 5 out tokens",
        "✓ run assistant  <t> · 10 in / 5 out tokens · 1 requests, 0 tool calls",
    ]


def otel_setup() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def otel_tree(spans: tuple[ReadableSpan, ...]) -> list[tuple[str, str | None]]:
    """(name, parent name) of each finished span, in start order."""
    names = {span.context.span_id: span.name for span in spans if span.context is not None}
    ordered = sorted(spans, key=lambda span: span.start_time or 0)
    return [(span.name, names.get(span.parent.span_id) if span.parent is not None else None) for span in ordered]


@pytest.mark.parametrize("mode", ["run", "run_stream"])
async def test_opentelemetry_exporter_emits_linked_spans_with_genai_attributes(mode: Mode) -> None:
    provider, exporter = otel_setup()
    memory = InMemoryExporter()
    trace = TraceContext(exporters=[OpenTelemetryExporter(tracer_provider=provider), memory])

    await run_with(delegating_agent(), "Research the moon", DeepAgentDeps(trace_context=trace), mode)

    spans = exporter.get_finished_spans()
    assert otel_tree(spans) == [
        ("invoke_agent assistant", None),
        ("chat parent-model", "invoke_agent assistant"),
        ("execute_tool fetch", "invoke_agent assistant"),
        ("chat parent-model", "invoke_agent assistant"),
        ("execute_tool compute", "invoke_agent assistant"),
        ("chat parent-model", "invoke_agent assistant"),
        ("execute_tool delegate_task", "invoke_agent assistant"),
        ("invoke_agent researcher", "execute_tool delegate_task"),
        ("chat child-model", "invoke_agent researcher"),
        ("execute_tool lookup", "invoke_agent researcher"),
        ("chat child-model", "invoke_agent researcher"),
        ("chat parent-model", "invoke_agent assistant"),
    ]
    assert len({span.context.trace_id for span in spans if span.context is not None}) == 1
    assert {span.status.status_code for span in spans} == {StatusCode.OK}
    ours = by_name(memory.spans)
    otel = {span.name: span for span in spans}
    for name, span in otel.items():
        assert dict(span.attributes or {})["pydantic_deep.span_id"] == ours[name.split(" ", 1)[1]].span_id
    fetch_span = otel["execute_tool fetch"]
    assert fetch_span.start_time is not None and fetch_span.end_time is not None
    assert fetch_span.end_time - fetch_span.start_time >= NAP * 1e9
    assert {k: v for k, v in (fetch_span.attributes or {}).items() if not k.startswith("pydantic_deep.")} == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "fetch",
        "gen_ai.tool.call.id": "fetch-0",
        "gen_ai.tool.call.arguments": '{"url": "https://example.com"}',
        "gen_ai.tool.call.result": "page at https://example.com",
    }
    chat = next(s for s in spans if s.name == "chat child-model")
    child_request = next(s for s in memory.spans if s.name == "child-model").data
    assert isinstance(child_request, ModelRequestData)
    assert {k: v for k, v in (chat.attributes or {}).items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "child-model",
        "gen_ai.provider.name": "function",
        "gen_ai.response.model": "child-model",
        "gen_ai.usage.input_tokens": child_request.input_tokens,
        "gen_ai.usage.output_tokens": child_request.output_tokens,
    }
    run = otel["invoke_agent assistant"]
    run_data = ours["assistant"].data
    assert isinstance(run_data, AgentRunData)
    assert dict(run.attributes or {}) | {"pydantic_deep.run_id": "<id>"} == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "assistant",
        "gen_ai.usage.input_tokens": run_data.input_tokens,
        "gen_ai.usage.output_tokens": run_data.output_tokens,
        "pydantic_deep.run_id": "<id>",
        "pydantic_deep.model": "function:parent-model",
        "pydantic_deep.prompt": "Research the moon",
        "pydantic_deep.output": "All done.",
        "pydantic_deep.requests": 4,
        "pydantic_deep.tool_calls": 3,
        "pydantic_deep.trace_id": ours["assistant"].trace_id,
        "pydantic_deep.span_id": ours["assistant"].span_id,
        "pydantic_deep.kind": "agent_run",
        "pydantic_deep.status": "ok",
    }


async def test_opentelemetry_exporter_marks_failures_and_nests_under_the_current_span() -> None:
    provider, exporter = otel_setup()

    async def explode() -> str:
        raise ValueError("disk on fire")

    agent = create_deep_agent(scripted("m", [Call("explode"), "x"]), tools=[explode], file_tools=False, planning=False)
    trace = TraceContext(exporters=[OpenTelemetryExporter(provider)])
    with provider.get_tracer("app").start_as_current_span("http request"), pytest.raises(ValueError):
        await agent.run("go", deps=DeepAgentDeps(trace_context=trace))

    spans = exporter.get_finished_spans()
    assert otel_tree(spans) == [
        ("http request", None),
        ("invoke_agent assistant", "http request"),
        ("chat m", "invoke_agent assistant"),
        ("execute_tool explode", "invoke_agent assistant"),
    ]
    for name in ("invoke_agent assistant", "execute_tool explode"):
        [span] = [s for s in spans if s.name == name]
        assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, "ValueError: disk on fire")
        assert dict(span.attributes or {})["error.type"] == "ValueError"
        assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
            ("exception", {"exception.type": "ValueError", "exception.message": "ValueError: disk on fire"})
        ]


async def test_opentelemetry_exporter_annotates_pydantic_ai_instrumentation_instead_of_duplicating_it() -> None:
    async def traced_run(*, with_exporter: bool) -> tuple[ReadableSpan, ...]:
        provider, exporter = otel_setup()
        child = researcher()
        parent = delegating_agent(child)
        for agent in (parent, child):
            agent.instrument = InstrumentationSettings(tracer_provider=provider)
        exporters: list[SpanExporter] = [OpenTelemetryExporter(provider)] if with_exporter else []
        await parent.run("Research the moon", deps=DeepAgentDeps(trace_context=TraceContext(exporters)))
        return exporter.get_finished_spans()

    alone = await traced_run(with_exporter=False)
    combined = await traced_run(with_exporter=True)

    # Exactly the spans Pydantic AI makes on its own, each annotated with the deep-agent span it stands for.
    assert otel_tree(combined) == otel_tree(alone)
    ordered = sorted(combined, key=lambda span: span.start_time or 0)
    assert [(span.name, dict(span.attributes or {}).get("pydantic_deep.kind")) for span in ordered] == [
        ("invoke_agent assistant", "agent_run"),
        ("chat parent-model", "model_request"),
        ("execute_tool fetch", "tool_call"),
        ("chat parent-model", "model_request"),
        ("execute_tool compute", "tool_call"),
        ("chat parent-model", "model_request"),
        ("execute_tool delegate_task", "tool_call"),
        ("invoke_agent researcher", "agent_run"),
        ("chat child-model", "model_request"),
        ("execute_tool lookup", "tool_call"),
        ("chat child-model", "model_request"),
        ("chat parent-model", "model_request"),
    ]
    assert {dict(span.attributes or {}).get("pydantic_deep.status") for span in combined} == {"ok"}


# --- the streaming guide and our docs ---------------------------------------------------------------------------

GUIDE_EXAMPLE = """\
from pydantic_deep import create_deep_agent, DeepAgentDeps, StateBackend
from pydantic_deep.streaming import run_stream, StreamEventType
from pydantic_deep.tracing import TraceContext, ConsoleExporter

# Create trace context
trace_context = TraceContext(exporters=[ConsoleExporter(verbose=True)])

# Add to deps
deps = DeepAgentDeps(
    backend=StateBackend(),
    trace_context=trace_context,
)

# Both streaming AND tracing will be active
async for event in run_stream(agent, "Task", deps):
    # Handle streaming events
    if event.event_type == StreamEventType.LLM_CHUNK:
        print(event.data["text"], end="", flush=True)

# Trace events are also being exported to console
"""
"""The streaming guide's "Integration with Tracing" example, verbatim; `agent` comes from its Quick Start."""

GUIDE = Path("/work/shared/streaming-guide.md")


def test_the_embedded_guide_example_is_the_guide_s_own() -> None:
    if not GUIDE.exists():
        pytest.skip(f"the streaming guide is not at {GUIDE}")
    text = GUIDE.read_text()
    section = text[text.index("## Integration with Tracing") :]
    start = section.index("```python\n") + len("```python\n")
    block = section[start : section.index("```\n", start)]
    assert block == GUIDE_EXAMPLE


async def test_the_guide_tracing_example_runs_unchanged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PYDANTIC_DEEP_DEMO_DELAY", "0")
    monkeypatch.delenv("PYDANTIC_DEEP_MODEL", raising=False)
    namespace: dict[str, Any] = {"agent": create_deep_agent()}  # the guide's Quick Start agent, on the demo model
    code = compile(GUIDE_EXAMPLE, "streaming-guide.md", "exec", flags=__import__("ast").PyCF_ALLOW_TOP_LEVEL_AWAIT)
    await eval(code, namespace)

    captured = capsys.readouterr()
    assert "demo model" in captured.out  # the streamed answer
    trace_lines = DURATION.sub("<t>", captured.err).splitlines()
    assert trace_lines[0] == "▶ run assistant  function:pydantic-deep-demo · 'Task'"
    assert trace_lines[-1].startswith("✓ run assistant  <t> · ") and "6 requests, 5 tool calls" in trace_lines[-1]
    assert [line.strip().split("  ")[0] for line in trace_lines if " tool " in line.strip().split("  ")[0]] == [
        "▶ tool write_plan",
        IsStr(regex=r"[✓✗] tool write_plan"),
        "▶ tool write_file",
        IsStr(regex=r"[✓✗] tool write_file"),
        "▶ tool update_task_statuses",
        IsStr(regex=r"[✓✗] tool update_task_statuses"),
        "▶ tool read_file",
        IsStr(regex=r"[✓✗] tool read_file"),
        "▶ tool update_task_statuses",
        IsStr(regex=r"[✓✗] tool update_task_statuses"),
    ]
    summary = namespace["trace_context"].summary()
    assert (summary.runs, summary.model_requests, summary.tool_calls) == (1, 6, 5)


DOCSTRING_FENCE = re.compile(r"^ *```python\n(.*?)^ *```", re.DOTALL | re.MULTILINE)


def docstring_examples() -> list[tuple[str, str]]:
    """The examples in the tracing package's docstrings (docs/tracing.md's blocks run in test_docs.py)."""
    found: list[tuple[str, str]] = []
    for path in sorted((ROOT / "src" / "pydantic_deep" / "tracing").glob("*.py")):
        for match in DOCSTRING_FENCE.finditer(path.read_text()):
            found.append((f"{path.name}:{path.read_text().count(chr(10), 0, match.start()) + 1}", match.group(1)))
    return found


@pytest.mark.parametrize(("where", "source"), docstring_examples(), ids=[w for w, _ in docstring_examples()])
def test_docstring_examples_run(
    where: str, source: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PYDANTIC_DEEP_DEMO_DELAY", "0")
    monkeypatch.delenv("PYDANTIC_DEEP_MODEL", raising=False)
    exec(compile(textwrap.dedent(source), where, "exec"), {"__name__": "docstring_example"})


def test_the_package_docstrings_have_examples() -> None:
    assert len(docstring_examples()) >= 5
