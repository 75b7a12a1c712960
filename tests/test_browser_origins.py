"""Pages on another origin in the system Chromium, through `--cors-origin`: native `EventSource`, and the
Vercel AI SDK's `DefaultChatTransport`.

Each page is served by a second local server (another port: another origin). One runs the browser example
from docs/server.md as written, and sees a failed run's `run_error` and `agent_end`, also when it closes
the stream in `onerror` as browser code usually does. Another sends a chat message with the AI SDK
(bundled from tests/js by esbuild) and reconnects as `useChat({ resume: true })` does.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from _browser_helpers import BROWSER_MARKS, WAIT_MS, open_page, serve
from _browser_helpers import browser as browser  # the fixture
from _js_helpers import JS, MISSING, WHY
from _server_helpers import Script
from pydantic_deep.server import create_app

pytestmark = BROWSER_MARKS

DOCS = Path(__file__).parents[1] / "docs" / "server.md"


def docs_example() -> str:
    """The ```js block of docs/server.md that follows a run in the browser."""
    blocks = re.findall(r"```js\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.DOTALL)
    (example,) = [block for block in blocks if block.startswith("// base: the server's URL")]
    return example


def page_app(holder: dict[str, str]) -> Starlette:
    """A page that follows `holder["run_id"]` on `holder["base"]` with the documented code."""

    async def page(request: object) -> HTMLResponse:
        # What browser code usually does; a message named `error` would make it drop the run's end.
        closes_on_error = "source.onerror = () => { source.close(); status.dataset.closed = 'yes'; };"
        closes_on_error = closes_on_error if holder.get("close_on_error") else ""
        script = (
            f"const base = {json.dumps(holder['base'])}; const runId = {json.dumps(holder['run_id'])};\n"
            'const answer = document.getElementById("answer");\n'
            'const problem = document.getElementById("problem");\n'
            'const status = document.getElementById("status");\n'
            f"{docs_example()}\n{closes_on_error}\n"
        )
        body = '<pre id="answer"></pre><p id="problem"></p><p id="status"></p>'
        return HTMLResponse(f"<!doctype html><html><body>{body}<script>{script}</script></body></html>")

    async def no_icon(request: object) -> HTMLResponse:
        return HTMLResponse("", status_code=204)

    return Starlette(routes=[Route("/", page), Route("/favicon.ico", no_icon)])


def test_an_event_source_on_another_origin_sees_a_failed_runs_end(browser: Browser) -> None:
    holder: dict[str, str] = {}
    with serve(page_app(holder)) as page_origin:
        app = create_app(Script(["partial ", "answer"], fail_with="the tool broke").agent(), cors_origins=[page_origin])
        with serve(app) as base:
            run_id = httpx.post(f"{base}/runs", json={"prompt": "x"}, timeout=30).json()["run_id"]
            with httpx.stream("GET", f"{base}/runs/{run_id}/events", timeout=30) as response:
                frames = response.read().decode()
            assert "\nevent: run_error\n" in frames and "\nevent: error\n" not in frames
            holder.update(base=base, run_id=run_id)
            for close_on_error in ("", "yes"):
                holder["close_on_error"] = close_on_error
                with open_page(browser, f"{page_origin}/") as (page, problems):
                    expect(page.locator("#status")).to_have_text("failed", timeout=WAIT_MS)
                    assert page.locator("#answer").text_content() == "partial answer"
                    assert page.locator("#problem").text_content() == "the tool broke"
                    assert problems == []


def test_an_event_source_on_an_origin_not_allowed_gets_nothing(browser: Browser) -> None:
    holder: dict[str, str] = {}
    with serve(page_app(holder)) as page_origin:
        app = create_app(Script(["hidden"]).agent())  # no --cors-origin
        with serve(app) as base:
            run_id = httpx.post(f"{base}/runs", json={"prompt": "x"}, timeout=30).json()["run_id"]
            holder.update(base=base, run_id=run_id, close_on_error="yes")
            with open_page(browser, f"{page_origin}/") as (page, problems):
                # The browser refuses the answer (no CORS header): the stream fails before any event.
                expect(page.locator("#status")).to_have_attribute("data-closed", "yes", timeout=WAIT_MS)
                assert page.locator("#answer").text_content() == ""
                assert page.locator("#status").text_content() == ""
                del problems  # Chromium also logs the CORS refusal on the console


def chat_bundle() -> str:
    """tests/js/chat_page.mjs with the `ai` package, bundled for a browser (esbuild, pinned in tests/js)."""
    if MISSING:
        pytest.skip(WHY)
    done = subprocess.run(["node", str(JS / "bundle.mjs")], capture_output=True, text=True, cwd=JS, check=True)
    return done.stdout


def chat_page_app(holder: dict[str, str], bundle: str) -> Starlette:
    """A chat page that sends one message with the AI SDK's `DefaultChatTransport`, then tries to resume."""

    async def page(request: object) -> HTMLResponse:
        script = (
            f"const base = {json.dumps(holder['base'])};\n"
            "const show = (message) => {\n"
            "  const text = message.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');\n"
            "  document.getElementById('answer').textContent = text;\n"
            "  const tool = message.parts.find((p) => p.type.startsWith('tool-'));\n"
            "  if (tool) document.getElementById('tool').textContent = `${tool.state}: ${tool.output ?? ''}`;\n"
            "  const deep = message.metadata?.pydantic_deep;\n"
            "  if (deep?.status) document.getElementById('status').textContent = deep.status;\n"
            "};\n"
            "window.chat.send(base, 'chat-b', 'weather?', show)\n"
            "  .then(() => window.chat.resume(base, 'chat-b', show))\n"
            "  .then((resumed) => { document.getElementById('resumed').textContent = String(resumed); })\n"
            "  .catch((error) => { document.getElementById('problem').textContent = String(error); });\n"
        )
        body = '<pre id="answer"></pre><p id="tool"></p><p id="status"></p><p id="resumed"></p><p id="problem"></p>'
        html = f"<!doctype html><html><body>{body}<script>{bundle}</script><script>{script}</script></body></html>"
        return HTMLResponse(html)

    async def no_icon(request: object) -> HTMLResponse:
        return HTMLResponse("", status_code=204)

    return Starlette(routes=[Route("/", page), Route("/favicon.ico", no_icon)])


def lookup(city: str) -> str:
    """Look up the weather."""
    return f"sunny in {city}"


def test_the_ai_sdk_chat_transport_on_another_origin(browser: Browser) -> None:
    holder: dict[str, str] = {}
    with serve(chat_page_app(holder, chat_bundle())) as page_origin:
        script = Script(["It is ", "sunny."], tool="lookup", tool_args={"city": "Paris"})
        app = create_app(script.agent(tools=[lookup]), cors_origins=[page_origin])
        with serve(app) as base:
            holder["base"] = base
            with open_page(browser, f"{page_origin}/") as (page, problems):
                expect(page.locator("#resumed")).to_have_text("false", timeout=WAIT_MS)
                assert page.locator("#problem").text_content() == ""
                assert page.locator("#answer").text_content() == "It is sunny."
                assert page.locator("#tool").text_content() == "output-available: sunny in Paris"
                assert page.locator("#status").text_content() == "succeeded"
                assert problems == []
            runs = httpx.get(f"{base}/runs", timeout=30).json()["runs"]
            with open_page(browser, f"{base}/") as (dashboard, problems):  # the dashboard lists it too
                item = dashboard.locator(f'[data-testid=run-item][data-run-id="{runs[0]["run_id"]}"]')
                expect(item).to_contain_text("weather?", timeout=WAIT_MS)
                assert problems == []
    assert [(run["protocol"], run["conversation"], run["status"]) for run in runs] == [
        ("vercel-ai", "chat-b", "succeeded")
    ]
