"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for driving real OpenAI clients in tests.

`FakeOpenAIServer` serves `POST /v1/chat/completions` (Chat Completions, what `"openai-chat:<model>"` uses)
and `POST /v1/responses` (the Responses API, what `"openai:<model>"` uses), streamed as server-sent
events or as one JSON body, in the wire format of the real API. Each answer comes from a script: a
function of the request (or a list of answers, one per request) returning text chunks, tool calls, or
an error. The server runs uvicorn in a background thread, so sync tests, async tests and
subprocesses (through `OPENAI_BASE_URL`) can all reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ._script import (
    Script,
    ScriptError,
    ScriptMessage,
    ScriptReply,
    ScriptRequest,
    ScriptResult,
    default_script,
    error_body,
)
from ._wire import WireReply, dumps, parse_body, responses_messages, script_request

if TYPE_CHECKING:
    import uvicorn

__all__ = ["FakeOpenAIServer"]


_Scope: TypeAlias = MutableMapping[str, Any]
_Message: TypeAlias = MutableMapping[str, Any]
_Receive: TypeAlias = Callable[[], Awaitable[_Message]]
_Send: TypeAlias = Callable[[_Message], Awaitable[None]]

_ENDPOINTS: dict[str, Literal["chat", "responses"]] = {"/v1/chat/completions": "chat", "/v1/responses": "responses"}


class _HTTPError(Exception):
    """Ends a request with an error status and an OpenAI-style error body."""

    def __init__(self, status: int, body: dict[str, Any], *, retry: bool = False) -> None:
        super().__init__(status, body)
        self.status, self.body, self.retry = status, body, retry


@dataclass
class FakeOpenAIServer:
    """An OpenAI-compatible streaming server on 127.0.0.1, answering from a script.

    ```python
    import asyncio

    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from pydantic_deep.testing import FakeOpenAIServer, ScriptReply, ScriptRequest, ScriptResult, ScriptToolCall


    def script(request: ScriptRequest) -> ScriptResult:
        if not request.tool_results:
            return ScriptReply(tool_calls=[ScriptToolCall("add", {"a": 1, "b": 2})])
        return ["The answer is ", request.tool_results[0]["content"], "."]


    def add(a: int, b: int) -> int:
        return a + b


    with FakeOpenAIServer(script) as server:
        model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test"))
        print(asyncio.run(Agent(model, tools=[add]).run("What is 1 + 2?")).output)
        #> The answer is 3.
    ```

    `script` is a function of each `ScriptRequest` (sync or async), or a list of answers used one per
    request in order (running out is an error). Every request needs an `Authorization: Bearer` header
    (any key, or exactly `api_key` when set), like the real API. A script that raises answers HTTP 500
    and the exception is re-raised when the `with` block ends. Streams stop when the client goes away.
    Every response says `Connection: close`, so no client keeps a socket to a server that has stopped.
    """

    script: Script | Sequence[ScriptResult] = default_script
    _: KW_ONLY
    chunk_delay: float = 0.0
    """Seconds to wait before each text chunk and tool-argument fragment of a stream."""
    api_key: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]], init=False, repr=False)
    """The JSON body of every request received on the two endpoints, in order (including rejected ones)."""
    cancelled_streams: int = field(default=0, init=False)
    """How many streams the client closed before their end; final once the server has stopped."""

    _server: uvicorn.Server | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _port: int | None = field(default=None, init=False, repr=False)
    _script_fn: Script = field(default=default_script, init=False, repr=False)
    _replies: deque[ScriptResult] | None = field(default=None, init=False, repr=False)
    _stored: dict[str, list[ScriptMessage]] = field(
        default_factory=dict[str, list[ScriptMessage]], init=False, repr=False
    )
    _counter: int = field(default=0, init=False, repr=False)
    _script_errors: list[BaseException] = field(default_factory=list[BaseException], init=False, repr=False)
    _thread_error: BaseException | None = field(default=None, init=False, repr=False)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API base URL, ending in `/v1`, for `OpenAIProvider(base_url=...)` or `OPENAI_BASE_URL`."""
        if self._port is None:
            raise RuntimeError("FakeOpenAIServer is not running; use it as `with FakeOpenAIServer() as server:`")
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def env(self) -> dict[str, str]:
        """`OPENAI_BASE_URL` and `OPENAI_API_KEY` pointing at this server, for `monkeypatch` or a subprocess."""
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": self.api_key or "test-key"}

    def start(self) -> FakeOpenAIServer:
        """Start serving on a free port; returns once the server accepts connections."""
        try:
            import uvicorn
        except ImportError as e:  # pragma: no cover
            raise ImportError(
                "FakeOpenAIServer needs uvicorn: install this project's `server` extra (or `uv add uvicorn`)"
            ) from e
        if self._thread is not None:
            raise RuntimeError("FakeOpenAIServer is already running")

        if callable(self.script):
            self._script_fn = self.script
        else:
            self._replies = deque(self.script)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            lifespan="off",
            ws="none",
            http="h11",
            loop="asyncio",
            log_config=None,
            timeout_graceful_shutdown=2,
        )
        server = self._server = uvicorn.Server(config)

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as e:  # reported by start(); a thread must not raise into threading.excepthook
                self._thread_error = e

        self._thread = threading.Thread(target=serve, name=f"FakeOpenAIServer:{self._port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError("FakeOpenAIServer failed to start") from self._thread_error
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the server thread to end."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():  # pragma: no cover - a stream that ignores disconnects
            server.force_exit = True
            thread.join()
        self._server = self._thread = self._port = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if exc is None and self._script_errors:
            raise self._script_errors[0]

    # -- the ASGI app --------------------------------------------------------------------------

    async def _app(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - lifespan is off, websockets are disabled
            return
        body = b""
        while True:
            received = await receive()
            if received["type"] == "http.disconnect":
                return
            body += received.get("body", b"")
            if not received.get("more_body", False):
                break

        api = _ENDPOINTS.get(scope["path"])
        if api is None or scope["method"] != "POST":
            message = f"Invalid URL ({scope['method']} {scope['path']})"
            await _send_error(send, 404, error_body(message, "invalid_request_error", None))
            return
        try:
            payload = parse_body(body)
        except ValueError:
            message = "We could not parse the JSON body of your request. The request body must be a JSON object."
            await _send_error(send, 400, error_body(message, "invalid_request_error", None))
            return
        self.requests.append(payload)

        try:
            self._check_auth(scope)
            history = self._responses_history(payload) if api == "responses" else []
            request = script_request(api, payload, index=len(self.requests) - 1, history=history)
            reply = await self._run_script(request)
        except _HTTPError as e:
            await _send_error(send, e.status, e.body, retry=e.retry)
            return
        plan = WireReply.build(request, reply, self._next_id)
        if api == "responses" and payload.get("store") is not False:
            self._stored[plan.response_id] = [*history, plan.assistant_message()]

        disconnected = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass  # pragma: no cover
            disconnected.set()

        watcher = asyncio.create_task(watch_disconnect())
        try:
            if request.stream:
                await self._send_stream(send, plan, disconnected)
            else:
                await self._send_complete(send, plan)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def _check_auth(self, scope: _Scope) -> None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        authorization = next((v.decode("latin-1") for k, v in headers if k == b"authorization"), "")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            message = (
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            raise _HTTPError(401, error_body(message, "invalid_request_error", None))
        if self.api_key is not None and key.strip() != self.api_key:
            shown = f"{key[:3]}...{key[-4:]}" if len(key) > 8 else key
            message = f"Incorrect API key provided: {shown}."
            raise _HTTPError(401, error_body(message, "invalid_request_error", "invalid_api_key"))

    def _responses_history(self, body: dict[str, Any]) -> list[ScriptMessage]:
        """The conversation of a Responses request without its instructions: stored history, then `input`."""
        previous = body.get("previous_response_id")
        if previous is None:
            return responses_messages(body.get("input"))
        if previous not in self._stored:
            message = f"Previous response with id '{previous}' not found."
            raise _HTTPError(400, error_body(message, "invalid_request_error", "previous_response_not_found"))
        return [*self._stored[previous], *responses_messages(body.get("input"))]

    async def _run_script(self, request: ScriptRequest) -> ScriptReply:
        try:
            if self._replies is not None:
                if not self._replies:
                    raise LookupError(
                        f"FakeOpenAIServer's script list has no reply left for request #{request.index}; "
                        "add one more reply to the list, or pass a function as `script`"
                    )
                result: ScriptResult = self._replies.popleft()
            else:
                returned = self._script_fn(request)
                result = await returned if inspect.isawaitable(returned) else returned
        except Exception as e:
            self._script_errors.append(e)
            message = f"FakeOpenAIServer script raised {type(e).__name__}: {e}"
            raise _HTTPError(500, error_body(message, "server_error", None)) from e
        if isinstance(result, ScriptError):
            raise _HTTPError(result.status, result.body(), retry=result.retry)
        if isinstance(result, ScriptReply):
            return result
        return ScriptReply(text=result)

    def _next_id(self) -> int:
        self._counter += 1
        return self._counter

    async def _send_stream(self, send: _Send, plan: WireReply, disconnected: asyncio.Event) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"connection", b"close"),
                    (b"cache-control", b"no-cache"),
                    (b"x-request-id", plan.request_id.encode()),
                ],
            }
        )
        sent_chunks = 0
        for data, is_chunk in plan.events():
            if disconnected.is_set():
                self.cancelled_streams += 1
                return
            if is_chunk:
                if plan.reply.disconnect_after is not None and sent_chunks >= plan.reply.disconnect_after:
                    return  # uvicorn closes the connection mid-stream (and logs that the response was incomplete)
                if plan.reply.end_after is not None and sent_chunks >= plan.reply.end_after:
                    break  # a clean end of the body, without the completion event
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                sent_chunks += 1
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_complete(self, send: _Send, plan: WireReply) -> None:
        body = dumps(plan.complete_body()).encode()
        headers = _json_headers(body, (b"x-request-id", plan.request_id.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if plan.reply.disconnect_after is not None:
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            return
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_error(send: _Send, status: int, body: dict[str, Any], *, retry: bool = False) -> None:
    data = dumps(body).encode()
    headers = _json_headers(data, (b"x-should-retry", b"true" if retry else b"false"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def _json_headers(body: bytes, extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"connection", b"close"),
        (b"content-length", str(len(body)).encode()),
        extra,
    ]
