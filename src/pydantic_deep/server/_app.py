"""`create_app`: the ASGI app that runs agents and streams their events over SSE, WebSocket, AG-UI and Vercel AI."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request, WebSocket
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter, sanitize_messages
from pydantic_ai.models import Model
from pydantic_ai.ui import UIAdapter
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from ..bus import EventBus, InMemoryEventBus, UnknownRunError
from ..deps import DeepAgentDeps
from ..models import ModelConfigError, resolve_model
from ..streaming import StreamEvent, StreamEventType
from ._errors import ApiError, ErrorBody, FieldError, install_error_handlers, validation_errors
from ._guard import BodyLimit, RequireToken, TokenCheck
from ._runs import RunRegistry
from ._sse import KEEP_ALIVE, EventStreamResponse, event_frame, follow_log, is_last, sse_frame
from ._wire import RunCreated, RunInfo, RunList, RunRequest

__all__ = ("TOKEN_ENV_VAR", "create_app")

logger = logging.getLogger("pydantic_deep.server")

TOKEN_ENV_VAR = "PYDANTIC_DEEP_TOKEN"

_PLACEHOLDER_PAGE = """<!doctype html>
<html lang="en"><meta charset="utf-8"><title>pydantic-deep</title>
<body><h1>pydantic-deep</h1><p>The dashboard page is not installed with this package.
The API is here: <code>POST /runs</code>, <code>GET /runs/{run_id}/events</code>; see
<code>/openapi.json</code>.</p></body></html>
"""

# The page is one self-contained file: it may run its own inline script and style and talk to this server only.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _json_error(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        401: "A token is configured and the request did not carry it.",
        404: "No such run (never started, or dropped after the retention time).",
        413: "The prompt or the request body is over the limit.",
        422: "Malformed JSON, or a missing, empty or invalid field (named in `error.field`).",
        429: "Too many runs in progress; `Retry-After` says when to try again.",
    }
    return {status: {"model": ErrorBody, "description": descriptions[status]} for status in statuses}


_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events, one per line group: `id: <seq>`, `event: <event_type>`, "
        "`data: <StreamEvent JSON>`; `: keep-alive` comments while idle. Ends after `agent_end`.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    204: {"description": "The run has finished and the client has already seen its last event."},
}


def create_app(
    agent: AbstractAgent[Any, Any] | None = None,
    *,
    bus: EventBus | None = None,
    token: str | None = None,
    model: Model | str | None = None,
    deps: Callable[[], Any] | None = None,
    max_prompt_chars: int = 100_000,
    max_request_bytes: int = 16 * 1024 * 1024,
    max_concurrent_runs: int = 32,
    retention_seconds: float = 3600.0,
    max_retained_runs: int = 1000,
    keepalive_seconds: float = 15.0,
) -> FastAPI:
    """Build the ASGI app: start runs over HTTP and stream their events to any number of clients.

    ```python
    import asyncio

    import httpx

    from pydantic_deep import create_deep_agent, demo_model
    from pydantic_deep.server import create_app


    async def main() -> None:
        app = create_app(create_deep_agent(demo_model(delay=0)))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                created = await client.post("/runs", json={"prompt": "Plan a picnic"})
                run_id = created.json()["run_id"]
                stream = await client.get(f"/runs/{run_id}/events")
                assert stream.text.startswith("id: 0")
                assert "event: agent_end" in stream.text


    asyncio.run(main())
    ```

    `agent` defaults to `create_deep_agent(model)`; each run gets `deps()` (a fresh `DeepAgentDeps` by
    default). Events go to `bus` (an `InMemoryEventBus` unless given: pass a `RedisEventBus` to share
    runs between processes), and every reader follows that log at its own pace. `token` (or the
    `PYDANTIC_DEEP_TOKEN` environment variable) makes every endpoint but the dashboard page require
    `Authorization: Bearer <token>`. Limits: `max_prompt_chars` (413 above), `max_request_bytes` (413),
    `max_concurrent_runs` (429 with `Retry-After`); finished runs are dropped after `retention_seconds`
    or when more than `max_retained_runs` are held. `keepalive_seconds` spaces the SSE keep-alive comments.
    """
    if token is None:
        token = os.environ.get(TOKEN_ENV_VAR) or None
    elif not token.strip():
        raise ValueError("token must not be empty: pass None for no token")
    for name, value in (
        ("max_prompt_chars", max_prompt_chars),
        ("max_request_bytes", max_request_bytes),
        ("max_concurrent_runs", max_concurrent_runs),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value!r}")
    if retention_seconds < 0 or max_retained_runs < 0 or keepalive_seconds <= 0:
        raise ValueError("retention_seconds and max_retained_runs must be >= 0 and keepalive_seconds > 0")
    if agent is None:
        from ..agent import create_deep_agent

        agent = create_deep_agent(model)
    own_bus = bus is None
    event_bus: EventBus = bus if bus is not None else InMemoryEventBus()
    check = TokenCheck(token)
    runs = RunRegistry(
        agent=agent,
        bus=event_bus,
        deps=deps or DeepAgentDeps,
        max_concurrent_runs=max_concurrent_runs,
        retention_seconds=retention_seconds,
        max_retained_runs=max_retained_runs,
    )
    the_agent = agent
    new_deps = deps or DeepAgentDeps

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            await runs.aclose()
            if own_bus:
                await event_bus.aclose()

    app = FastAPI(
        title="pydantic-deep",
        version=_version(),
        description=(
            "Run a deep agent over HTTP and stream everything it does as typed events. "
            "Besides these endpoints, `WS /runs/{run_id}/ws` streams the same events as WebSocket JSON text "
            "frames (resume with `?last_event_id=N`; token as `?token=` or subprotocol `bearer.<token>`)."
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = plain_openapi()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                ok = operation.get("responses", {}).get("200", {}).get("content", {})
                if "text/event-stream" in ok:  # FastAPI adds a JSON body to every 200; these only stream
                    ok.pop("application/json", None)
        return schema

    app.openapi = openapi
    app.state.runs = runs
    app.state.bus = event_bus
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    app.add_middleware(RequireToken, check=check)

    # ---- helpers ----------------------------------------------------------------------------------------

    def check_prompt(prompt: str) -> None:
        if not prompt.strip():
            raise ApiError.invalid([FieldError(field="prompt", message="must not be empty")])
        if len(prompt) > max_prompt_chars:
            raise ApiError(
                413,
                "prompt_too_long",
                f"the prompt has {len(prompt)} characters; this server's limit is {max_prompt_chars}",
                field="prompt",
            )

    def parse_history(raw: list[dict[str, Any]] | None) -> list[ModelMessage] | None:
        if raw is None:
            return None
        try:
            messages = ModelMessagesTypeAdapter.validate_python(raw)
        except ValidationError as exc:
            raise ApiError.invalid(validation_errors(exc.errors(), prefix=("message_history",))) from None
        # History from a client is untrusted: drop system prompts and the like, as Pydantic AI's UI adapters do.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            messages = sanitize_messages(messages)
        for warning in caught:
            logger.info("message_history sanitised: %s", warning.message)
        return messages

    def pick_model(name: str | None) -> Model | None:
        if name is None:
            return None
        try:
            return resolve_model(name)
        except ModelConfigError as exc:
            raise ApiError.invalid([FieldError(field="model", message=str(exc))]) from None

    def not_found(run_id: str) -> ApiError:
        return ApiError(404, "run_not_found", f"no run {run_id!r}: it never existed or was dropped", field="run_id")

    def resume_point(header: str | None, query: int | None) -> int:
        if header is not None and header.strip():
            try:
                value = int(header.strip())
            except ValueError:
                raise ApiError.invalid(
                    [FieldError(field="Last-Event-ID", message="must be an event's seq (an integer)")]
                ) from None
            if value < -1:
                raise ApiError.invalid([FieldError(field="Last-Event-ID", message="must be -1 or more")])
            return value
        return -1 if query is None else query

    async def protocol_response(adapter_type: type[UIAdapter[Any, Any, Any, Any, Any]], request: Request) -> Response:
        """Run the agent for a UI protocol's request through Pydantic AI's adapter, counted against the run limit."""
        try:
            adapter = await adapter_type.from_request(request, agent=the_agent)
        except ValidationError as exc:
            raise ApiError.invalid(validation_errors(exc.errors())) from None
        release = runs.acquire_slot()
        try:
            response = adapter.streaming_response(adapter.run_stream(deps=new_deps()))
        except BaseException:
            release()
            raise
        return _Releasing(response, release)

    # ---- the page -----------------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, summary="The dashboard page", tags=["dashboard"])
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(_dashboard_html(), headers=_PAGE_HEADERS)

    # ---- runs ---------------------------------------------------------------------------------------------

    @app.post(
        "/runs",
        status_code=201,
        response_model=RunCreated,
        summary="Start a run",
        tags=["runs"],
        responses=_json_error(401, 413, 422, 429),
    )
    async def start_run(body: RunRequest, response: Response) -> RunCreated:
        """Start a run that executes whether or not anyone watches; follow it at `/runs/{run_id}/events`."""
        check_prompt(body.prompt)
        history = parse_history(body.message_history)
        run_model = pick_model(body.model)
        record = await runs.start(body.prompt, message_history=history, model=run_model, model_name=body.model)
        response.headers["Location"] = f"/runs/{record.run_id}"
        return RunCreated(run_id=record.run_id)

    @app.get("/runs", response_model=RunList, summary="List recent runs", tags=["runs"], responses=_json_error(401))
    async def list_runs() -> RunList:
        """The runs the server still holds (running ones and finished ones within retention), newest first."""
        return RunList(runs=[record.summary() for record in await runs.list()])

    @app.get(
        "/runs/{run_id}",
        response_model=RunInfo,
        summary="A run's status",
        tags=["runs"],
        responses=_json_error(401, 404),
    )
    async def get_run(run_id: str) -> RunInfo:
        """Status (`running`, `succeeded`, `failed`, `cancelled`), timestamps, usage so far, output when done."""
        record = await runs.get(run_id)
        if record is None:
            raise not_found(run_id)
        return record.info()

    @app.post(
        "/runs/{run_id}/cancel",
        status_code=202,
        response_model=RunInfo,
        summary="Cancel a run",
        tags=["runs"],
        responses=_json_error(401, 404),
    )
    async def cancel_run(run_id: str) -> RunInfo:
        """Ask a running run to stop: its stream ends with `agent_end` whose status is `cancelled`.

        Cancelling a finished run changes nothing and answers with its status.
        """
        record = await runs.cancel(run_id)
        if record is None:
            raise not_found(run_id)
        return record.info()

    @app.get(
        "/runs/{run_id}/events",
        response_model=None,
        summary="Stream a run's events (SSE)",
        tags=["runs"],
        responses={**_SSE_DOC, **_json_error(401, 404, 422)},
    )
    async def run_events(
        run_id: str,
        last_event_id: Annotated[
            int | None, Query(ge=-1, description="Resume after this `seq` (the `Last-Event-ID` header wins).")
        ] = None,
        last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)] = None,
    ) -> Response:
        """Every event with `seq` greater than the resume point, then live ones, until `agent_end`."""
        after = resume_point(last_event_id_header, last_event_id)
        try:
            first = await event_bus.read(run_id, after, wait=0)
        except UnknownRunError:
            raise not_found(run_id) from None
        if first.closed and not first.events:
            return Response(status_code=204)

        async def frames() -> AsyncIterator[bytes]:
            async for batch in follow_log(event_bus, run_id, after, keepalive=keepalive_seconds, first=first):
                if not batch.events:
                    yield KEEP_ALIVE
                    continue
                yield b"".join(map(event_frame, batch.events, batch.lines))

        return EventStreamResponse(frames())

    @app.websocket("/runs/{run_id}/ws")
    async def run_websocket(websocket: WebSocket, run_id: str) -> None:
        params = websocket.query_params
        allowed, subprotocol = check.websocket(params.get("token"), websocket.scope.get("subprotocols") or [])
        await websocket.accept(subprotocol=subprotocol)
        if not allowed:
            await websocket.close(4401, "unauthorized: pass ?token=<token> or the subprotocol bearer.<token>")
            return
        raw = params.get("last_event_id")
        try:
            after = -1 if raw is None or not raw.strip() else int(raw)
            if after < -1:
                raise ValueError(raw)
        except ValueError:
            await websocket.close(4422, "last_event_id must be an event's seq (an integer >= -1)")
            return
        try:
            first = await event_bus.read(run_id, after, wait=0)
        except UnknownRunError:
            await websocket.close(4404, f"no run {run_id!r}")
            return

        async def pump() -> None:
            batches = follow_log(event_bus, run_id, after, keepalive=keepalive_seconds, first=first)
            async for batch in batches:
                for line in batch.lines:
                    await websocket.send_text(line)
            await websocket.close(1000)

        async def drain() -> None:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass

        await _first_of(pump(), drain(), ignore=(WebSocketDisconnect, OSError, RuntimeError))

    # ---- the guide's SSE example, done right ----------------------------------------------------------------

    @app.get(
        "/chat",
        response_model=None,
        summary="Start a run and stream its answer text (SSE)",
        tags=["chat"],
        responses={**_SSE_DOC, **_json_error(401, 404, 413, 422, 429)},
    )
    async def chat(
        prompt: Annotated[str, Query(description="The user prompt.")],
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)] = None,
    ) -> Response:
        """A text-only stream for `new EventSource("/chat?prompt=...")`.

        Messages: `event: run` with `{"run_id"}` first; then the answer as plain `message` events whose data is
        a JSON string (so newlines survive); `event: error` with `{"error", "exception_type"}` if the run fails;
        and last `event: done` with `{"run_id", "success", "status", "output"}`. Every message's id is
        `<run_id>:<seq>`, so when the browser reconnects with `Last-Event-ID` the same run resumes instead of a
        new one starting, and once it has finished the answer is 204, which tells `EventSource` to stop.
        """
        if last_event_id is not None and last_event_id.strip():
            run_id, _, seq = last_event_id.strip().rpartition(":")
            try:
                after = int(seq)
            except ValueError:
                raise ApiError.invalid(
                    [FieldError(field="Last-Event-ID", message="must be an id this endpoint sent (<run_id>:<seq>)")]
                ) from None
            try:
                first = await event_bus.read(run_id, after, wait=0)
            except UnknownRunError:
                raise not_found(run_id) from None
            if first.closed and not first.events:
                return Response(status_code=204)
            announce = False
        else:
            check_prompt(prompt)
            record = await runs.start(prompt)
            run_id, after, announce = record.run_id, -1, True
            first = await event_bus.read(run_id, after, wait=0)

        async def frames() -> AsyncIterator[bytes]:
            if announce:
                yield sse_frame(json.dumps({"run_id": run_id}), event="run", id=f"{run_id}:-1")
            async for batch in follow_log(event_bus, run_id, after, keepalive=keepalive_seconds, first=first):
                if not batch.events:
                    yield KEEP_ALIVE
                    continue
                yield b"".join(_chat_frame(run_id, event) for event in batch.events)

        return EventStreamResponse(frames())

    # ---- protocol endpoints -------------------------------------------------------------------------------

    @app.post(
        "/ag-ui",
        summary="Run the agent for an AG-UI client",
        tags=["protocols"],
        responses={
            200: {
                "description": "AG-UI events (SSE).",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_json_error(401, 429),
        },
    )
    async def ag_ui(request: Request) -> Response:
        """The AG-UI protocol through Pydantic AI's `AGUIAdapter`: the body is a `RunAgentInput`."""
        try:
            from pydantic_ai.ui.ag_ui import AGUIAdapter
        except ImportError:
            raise ApiError(
                501, "not_installed", "AG-UI needs the ag-ui-protocol package: pip install 'pydantic-deep[server]'"
            ) from None
        return await protocol_response(AGUIAdapter[Any, Any], request)

    @app.post(
        "/vercel-ai",
        summary="Run the agent for a Vercel AI SDK client",
        tags=["protocols"],
        responses={
            200: {
                "description": "Vercel AI UI message stream (SSE).",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_json_error(401, 429),
        },
    )
    async def vercel_ai(request: Request) -> Response:
        """The Vercel AI SDK data stream protocol through Pydantic AI's `VercelAIAdapter` (`useChat`)."""
        from pydantic_ai.ui.vercel_ai import VercelAIAdapter

        return await protocol_response(VercelAIAdapter[Any, Any], request)

    return app


def _chat_frame(run_id: str, event: StreamEvent) -> bytes:
    event_id = f"{run_id}:{event.seq}"
    if event.depth != 0:
        return b""
    match event.event_type:
        case StreamEventType.LLM_CHUNK:
            return sse_frame(json.dumps(event.data["text"], ensure_ascii=False), id=event_id)
        case StreamEventType.ERROR:
            return sse_frame(json.dumps(event.data, ensure_ascii=False), event="error", id=event_id)
        case StreamEventType.AGENT_END if is_last(event):
            data = event.data
            done = {"run_id": run_id, "success": data["success"], "status": data["status"], "output": data["output"]}
            return sse_frame(json.dumps(done, ensure_ascii=False, default=str), event="done", id=event_id)
        case _:
            return b""


class _Releasing(Response):
    """Wraps a protocol endpoint's response so its concurrency slot is released when the response ends."""

    def __init__(self, inner: Response, release: Callable[[], None]) -> None:
        self.inner = inner
        self.release = release
        self.status_code = inner.status_code
        self.background = None
        self.raw_headers = inner.raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.inner(scope, receive, send)
        finally:
            self.release()


async def _first_of(*coros: Any, ignore: tuple[type[BaseException], ...]) -> None:
    """Run coroutines until the first finishes, cancel the rest; `ignore` lists errors that just mean "gone"."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, ignore):
            raise result


def _dashboard_html() -> str:
    try:
        return (
            resources.files(__package__ or "pydantic_deep.server")
            .joinpath("static", "dashboard.html")
            .read_text(encoding="utf-8")
        )
    except (FileNotFoundError, NotADirectoryError, OSError):
        return _PLACEHOLDER_PAGE


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pydantic-deep")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return "0"
