"""The dashboard page in a real browser: the system Chromium, driven by Playwright, against a real uvicorn.

Each test serves `create_app(...)` on a free port of 127.0.0.1 from a background thread, opens `GET /`,
and works the page the way a person would. Screenshots land in `tests/artifacts/` (git-ignored).
Playwright never downloads a browser here: it drives `/usr/bin/chromium`, which `make services`
installs; without it these tests skip and say so.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, Request, expect
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from _browser_helpers import ARTIFACTS, BROWSER_MARKS, WAIT_MS, open_page, serve
from _browser_helpers import browser as browser  # the fixture
from pydantic_deep import create_deep_agent
from pydantic_deep.bus import InMemoryEventBus
from pydantic_deep.models import demo_model
from pydantic_deep.server import create_app
from pydantic_deep.streaming import (
    StreamEvent,
    StreamEventType,
    agent_end_event,
    agent_start_event,
    llm_chunk_event,
    progress_event,
)

# Long enough per token that a reconnect lands mid-answer; the test waits on page state, never on time.
DEMO_DELAY = 0.05

pytestmark = BROWSER_MARKS

DEMO_TOOLS = ["write_plan", "write_file", "update_task_statuses", "read_file", "update_task_statuses"]


def read_run_events(base: str, run_id: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every event of a finished run, as the SSE endpoint replays it to a client that starts from scratch."""
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{base}/runs/{run_id}/events", headers=headers, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line.removeprefix("data:").strip()))
    return events


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


def submit(page: Page, prompt: str) -> None:
    page.get_by_test_id("prompt-input").fill(prompt)
    page.get_by_test_id("run-button").click()


def test_dashboard_streams_a_demo_run_and_resumes_after_a_dropped_connection(browser: Browser) -> None:
    app = create_app(create_deep_agent(demo_model(delay=DEMO_DELAY)))
    with serve(app) as base, open_page(browser, f"{base}/") as (page, problems):
        event_requests: list[str] = []
        page.on("request", lambda request: event_requests.append(request.url) if "/events" in request.url else None)

        submit(page, "Explain why streaming matters for agent UIs")
        # The first chunk of the answer is on screen: the run is mid-answer. Cut the connection now.
        # (A locator assertion, not wait_for_function: the page's Content-Security-Policy forbids eval.)
        expect(page.get_by_test_id("answer")).to_have_text(re.compile(r"\S"), timeout=WAIT_MS)
        dropped = page.evaluate("window.__dashboard.dropConnection()")
        screenshot(page, "dashboard-streaming.png")
        expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=WAIT_MS)

        run_id = page.get_by_test_id("run-id").text_content()
        assert run_id
        status = httpx.get(f"{base}/runs/{run_id}", timeout=10).json()
        assert status["status"] == "succeeded"
        output = status["output"]
        assert isinstance(output, str)
        assert output.startswith("(This is pydantic-deep's offline demo model")

        # Nothing lost, nothing repeated: the page shows exactly the run's output, and it really did
        # reconnect mid-answer, from the last event it had.
        assert page.get_by_test_id("answer").text_content() == output
        assert 0 < dropped["textLength"] < len(output)
        events_path = f"{base}/runs/{run_id}/events"
        assert event_requests == [events_path, f"{events_path}?last_event_id={dropped['lastSeq']}"]
        events = read_run_events(base, run_id)
        state = page.evaluate("window.__dashboard.state")
        assert state["lastSeq"] == events[-1]["seq"] == len(events) - 1
        assert (state["eventCount"], state["gaps"], state["duplicatesSkipped"], state["connections"]) == (
            len(events),
            0,
            0,
            2,
        )

        # The tool timeline: every call in order, each with its measured duration.
        tool_ends = [event["data"] for event in events if event["event_type"] == "tool_end"]
        calls = page.get_by_test_id("tool-call")
        expect(calls).to_have_count(5)
        assert calls.get_by_test_id("tool-name").all_text_contents() == DEMO_TOOLS
        assert [end["tool_name"] for end in tool_ends] == DEMO_TOOLS
        for index, end in enumerate(tool_ends):
            call = calls.nth(index)
            assert call.get_attribute("data-status") == "ok"
            duration = call.get_by_test_id("tool-duration")
            assert float(duration.get_attribute("data-seconds") or "nan") == end["duration_seconds"]
            assert re.fullmatch(r"\d+(\.\d)? ms|\d+\.\d\d s", duration.text_content() or "")
        changes = [event["data"] for event in events if event["event_type"] == "file_change"]
        assert len(changes) == 1
        expect(page.get_by_test_id("timeline-note")).to_have_text([f"write {changes[0]['path']}"])

        # The plan as the last plan_update of each item left it.
        plan: dict[str, tuple[str, str]] = {}
        for event in events:
            if event["event_type"] == "plan_update":
                plan[event["data"]["item_id"]] = (event["data"]["content"], event["data"]["status"])
        items = page.get_by_test_id("plan-item")
        assert items.get_by_test_id("plan-item-content").all_text_contents() == [
            "Write notes about the request",
            "Read the notes back",
            "Answer",
        ]
        shown = [(item.get_attribute("data-item-id"), item.get_attribute("data-status")) for item in items.all()]
        assert shown == [(item_id, item_status) for item_id, (_, item_status) in plan.items()]

        # The counters end where the run ended.
        end = events[-1]["data"]
        assert events[-1]["event_type"] == "agent_end"
        assert page.get_by_test_id("stat-steps").get_attribute("data-value") == str(end["total_iterations"])
        assert page.get_by_test_id("stat-tokens").get_attribute("data-value") == str(end["total_tokens"])
        assert page.get_by_test_id("stat-tools").text_content() == "5"
        expect(page.get_by_test_id("error")).to_have_count(0)

        # The recent-runs list knows the run.
        page.get_by_test_id("runs-refresh").click()
        expect(page.locator(f'[data-testid=run-item][data-run-id="{run_id}"]')).to_have_count(1)

        screenshot(page, "dashboard.png")
        page.emulate_media(color_scheme="dark")
        screenshot(page, "dashboard-dark.png")
        assert problems == []


def test_dashboard_sends_the_token_it_is_given(browser: Browser) -> None:
    app = create_app(create_deep_agent(demo_model(delay=0)), token="s3cret-token")
    with serve(app) as base, open_page(browser, f"{base}/") as (page, problems):
        authorizations: list[str | None] = []

        def on_request(request: Request) -> None:
            if "/runs" in request.url:
                authorizations.append(request.headers.get("authorization"))

        # The page learns from `GET /runs` that a token is needed, and says so before anyone runs anything.
        expect(page.get_by_test_id("token-details")).to_have_attribute("data-needed", "true")
        submit(page, "Hello")
        # Without the token the server refuses the run; the page says so in red and opens the token box.
        error = page.get_by_test_id("error")
        expect(error).to_have_count(1)
        expect(error).to_contain_text("401")
        expect(page.get_by_test_id("token-input")).to_be_visible()
        assert error.evaluate("node => getComputedStyle(node).color") == "rgb(185, 28, 28)"

        page.on("request", on_request)
        page.get_by_test_id("token-input").fill("s3cret-token")
        page.get_by_test_id("run-button").click()
        expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=WAIT_MS)
        expect(page.get_by_test_id("error")).to_have_count(0)
        assert authorizations
        assert set(authorizations) == {"Bearer s3cret-token"}

        run_id = page.get_by_test_id("run-id").text_content()
        headers = {"Authorization": "Bearer s3cret-token"}
        output = httpx.get(f"{base}/runs/{run_id}", headers=headers, timeout=10).json()["output"]
        assert page.get_by_test_id("answer").text_content() == output
        assert page.evaluate("sessionStorage.getItem('pydantic-deep.token')") == "s3cret-token"
        expect(page.locator(f'[data-testid=run-item][data-run-id="{run_id}"]')).to_have_count(1)
        # The only complaints are Chromium's own notes about the two refused requests (GET and POST /runs).
        assert len(problems) == 2
        assert all(re.fullmatch(r"console: Failed to load resource: .*\b401\b.*", problem) for problem in problems)


def test_dashboard_shows_event_text_as_text_never_as_markup(browser: Browser) -> None:
    app = create_app(create_deep_agent(demo_model(delay=0)))
    with serve(app) as base, open_page(browser, f"{base}/") as (page, problems):
        prompt = 'Say <img src="x" onerror="window.__pwned = 1"> and <b>bold</b>'
        submit(page, prompt)
        expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=WAIT_MS)
        answer = page.get_by_test_id("answer")
        expect(answer).to_contain_text(f"You asked: {prompt}")
        assert answer.evaluate("node => node.children.length") == 0
        assert page.evaluate("window.__pwned") is None
        assert problems == []


def test_dashboard_cancels_a_run(browser: Browser) -> None:
    app = create_app(create_deep_agent(demo_model(delay=DEMO_DELAY)))
    with serve(app) as base, open_page(browser, f"{base}/") as (page, problems):
        cancel = page.get_by_test_id("cancel-button")
        expect(cancel).to_be_disabled()
        submit(page, "Take your time")
        answer = page.get_by_test_id("answer")
        expect(answer).to_have_text(re.compile(r"\S"), timeout=WAIT_MS)
        cancel.click()
        expect(page.get_by_test_id("run-status")).to_have_text("cancelled", timeout=WAIT_MS)
        expect(cancel).to_be_disabled()
        run_id = page.get_by_test_id("run-id").text_content()
        status = httpx.get(f"{base}/runs/{run_id}", timeout=10).json()
        assert status["status"] == "cancelled"
        # What streamed before the cancel stays on screen, and it is all the run produced.
        text = "".join(
            event["data"]["text"] for event in read_run_events(base, run_id) if event["event_type"] == "llm_chunk"
        )
        assert answer.text_content() == text
        assert text
        expect(page.get_by_test_id("error")).to_have_count(0)
        assert problems == []


async def _broken_stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    yield "Starting, then "
    raise RuntimeError("the model fell over")


def test_dashboard_shows_a_failed_run_in_red(browser: Browser) -> None:
    agent = create_deep_agent(FunctionModel(stream_function=_broken_stream, model_name="broken"))
    with serve(create_app(agent)) as base, open_page(browser, f"{base}/") as (page, problems):
        submit(page, "Fail, please")
        expect(page.get_by_test_id("run-status")).to_have_text("failed", timeout=WAIT_MS)
        error = page.get_by_test_id("error")
        expect(error).to_have_count(1)
        expect(error).to_have_text("RuntimeError: the model fell over")
        assert error.evaluate("node => getComputedStyle(node).color") == "rgb(185, 28, 28)"
        assert page.get_by_test_id("answer").text_content() == "Starting, then "
        screenshot(page, "dashboard-failed.png")
        assert problems == []


def test_dashboard_continues_a_conversation(browser: Browser) -> None:
    app = create_app(create_deep_agent(demo_model(delay=0)))
    with serve(app) as base, open_page(browser, f"{base}/") as (page, problems):
        bodies: list[dict[str, Any]] = []

        def on_request(request: Request) -> None:
            if request.method == "POST" and request.url.endswith("/runs"):
                bodies.append(json.loads(request.post_data or "{}"))

        page.on("request", on_request)
        expect(page.get_by_test_id("continue-input")).to_be_disabled()  # nothing to continue yet
        submit(page, "Plan a picnic")
        expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=WAIT_MS)
        first = page.get_by_test_id("run-id").text_content()
        page.get_by_test_id("continue-input").check()
        submit(page, "Make it a barbecue")
        expect(page.get_by_test_id("run-id")).not_to_have_text(first or "", timeout=WAIT_MS)
        expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=WAIT_MS)
        second = page.get_by_test_id("run-id").text_content()
        # The chat goes on: the box stays checked for the next turn.
        expect(page.get_by_test_id("continue-input")).to_be_checked()
        assert problems == []
        messages = httpx.get(f"{base}/runs/{second}/messages", timeout=30).json()
    prompts = [p["content"] for m in messages for p in m["parts"] if p["part_kind"] == "user-prompt"]
    assert prompts == ["Plan a picnic", "Make it a barbecue"]
    assert bodies == [{"prompt": "Plan a picnic"}, {"prompt": "Make it a barbecue", "continue_from": first}]
    assert second and second != first


def test_dashboard_approves_and_denies_calls_that_wait(browser: Browser) -> None:
    def launch(target: str) -> str:
        """Launch something."""
        return f"launched {target}"

    async def two_launches(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if len(messages) == 1:
            yield {
                0: DeltaToolCall(name="launch", json_args='{"target": "kite"}', tool_call_id="call-1"),
                1: DeltaToolCall(name="launch", json_args='{"target": "moon"}', tool_call_id="call-2"),
            }
            return
        yield "done"

    model = FunctionModel(stream_function=two_launches, model_name="launcher")
    agent = create_deep_agent(model, tools=[launch], planning=False, file_tools=False)
    with serve(create_app(agent, require_approval=["launch"])) as base, open_page(browser, base) as (page, problems):
        submit(page, "launch both")
        waiting = page.get_by_test_id("approval")
        expect(waiting).to_have_count(2, timeout=WAIT_MS)
        expect(page.get_by_test_id("approval-reason").first).to_have_text("launch needs approval")
        calls = page.get_by_test_id("tool-call")
        calls.nth(0).get_by_test_id("approve-button").click()
        calls.nth(1).get_by_test_id("deny-button").click()
        expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=WAIT_MS)
        expect(page.get_by_test_id("approval-decision")).to_have_text(["approved by admin", "denied by admin"])
        expect(calls.nth(0).get_by_test_id("tool-result")).to_have_text("launched kite")
        expect(calls.nth(1).get_by_test_id("tool-error")).to_have_text("The user denied this tool call.")
        expect(page.get_by_test_id("approval")).to_have_count(0)
        assert problems == []


def test_dashboard_shows_the_budget_of_a_run_filling_up(browser: Browser) -> None:
    def pause() -> str:
        """Wait a moment."""
        return "paused"

    async def looping(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        yield {0: DeltaToolCall(name="pause", json_args="{}", tool_call_id=f"call-{len(messages)}")}

    model = FunctionModel(stream_function=looping, model_name="looping")
    agent = create_deep_agent(model, tools=[pause], planning=False, file_tools=False)
    with serve(create_app(agent)) as base:
        body = {"prompt": "loop", "budget": {"max_steps": 3, "max_tokens": 100_000}}
        run_id = httpx.post(f"{base}/runs", json=body, timeout=30).json()["run_id"]
        with open_page(browser, f"{base}/#run={run_id}") as (page, problems):
            expect(page.get_by_test_id("run-status")).to_have_text("failed", timeout=WAIT_MS)
            steps = page.get_by_test_id("budget-steps")
            expect(steps).to_have_attribute("data-limit", "3")
            expect(steps).to_have_attribute("data-used", "3")
            expect(page.get_by_test_id("budget-steps-text")).to_have_text("3 / 3")
            tokens = page.get_by_test_id("budget-tokens")
            expect(tokens).to_have_attribute("data-limit", "100000")
            used = int(tokens.get_attribute("data-used") or "0")
            assert used == read_run_events(base, run_id)[-1]["data"]["total_tokens"] > 0
            expect(page.get_by_test_id("budget-tokens-text")).to_have_text(f"{used:,} / 100,000")
            notes = page.locator('[data-testid="timeline-note"][data-event="guardrail"]')
            expect(notes).to_have_text([re.compile(r"^budget warn"), re.compile(r"^budget block")])
            screenshot(page, "dashboard-budget.png")
            assert problems == []


def test_dashboard_drops_the_text_a_takeover_voided(browser: Browser) -> None:
    """A durable run's log (as `tests/test_durable.py` makes them): the half answer before `run_resumed`
    is void and redone after it; the page shows the answer once and notes the takeover."""
    from pydantic_deep.streaming.types import RunResumedData

    resumed = StreamEvent(
        event_type=StreamEventType.RUN_RESUMED,
        data=RunResumedData(from_step=1, void_after_seq=1, void_events=1, owner="web2", attempt=2),
    )
    events: list[Any] = [
        agent_start_event(agent_name="assistant"),
        progress_event(iteration=1),
        llm_chunk_event(text="Half an "),
        resumed,
        llm_chunk_event(text="Half an "),
        llm_chunk_event(text="answer."),
        progress_event(iteration=2),
        agent_end_event(agent_name="assistant", status="succeeded", output="Half an answer."),
    ]
    bus = InMemoryEventBus()

    async def write() -> None:
        await bus.open("run-taken-over", {"prompt": "Say it", "created_at": "2026-12-03T00:00:00+00:00"})
        for seq, event in enumerate(events):
            event.seq, event.run_id = seq, "run-taken-over"
            await bus.append("run-taken-over", event)
        await bus.close("run-taken-over")

    with ThreadPoolExecutor(1) as writer:  # Playwright's sync API holds this thread's event loop
        writer.submit(asyncio.run, write()).result()
    with serve(create_app(create_deep_agent(demo_model(delay=0)), bus=bus)) as base:
        with open_page(browser, f"{base}/#run=run-taken-over") as (page, problems):
            expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=WAIT_MS)
            expect(page.get_by_test_id("answer")).to_have_text("Half an answer.")
            expect(page.get_by_test_id("timeline-note").filter(has_text="resumed")).to_have_count(1)
            assert problems == []
