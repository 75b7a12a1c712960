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
import json
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypedDict, cast

if TYPE_CHECKING:
    import uvicorn

__all__ = [
    "DEFAULT_TEXT_CHUNKS",
    "FakeOpenAIServer",
    "Script",
    "ScriptError",
    "ScriptMessage",
    "ScriptMessageToolCall",
    "ScriptReply",
    "ScriptRequest",
    "ScriptResult",
    "ScriptTool",
    "ScriptToolCall",
    "default_script",
]

DEFAULT_TEXT_CHUNKS: tuple[str, ...] = ("Hello", " from", " the", " fake", " OpenAI", " server.")
"""The chunks `default_script` streams: "Hello from the fake OpenAI server." split into words."""


# ---------------------------------------------------------------------------------------------
# What a script sees


class ScriptMessageToolCall(TypedDict):
    """A tool call the model made earlier in the conversation, as the client sent it back."""

    id: str
    name: str
    arguments: str
    """The arguments as the JSON text the model produced."""


class ScriptMessage(TypedDict):
    """One message of the conversation, in the same shape for both APIs.

    `role` is `system` for system and developer messages (and for the Responses API's
    `instructions`), `tool` for a tool result (`tool_call_id` says which call it answers).
    `content` is the message's text parts joined with newlines (`''` when it has none).
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ScriptMessageToolCall]
    tool_call_id: str | None


class ScriptTool(TypedDict):
    """A function tool offered to the model."""

    name: str
    description: str | None
    parameters: dict[str, Any]
    """The tool's JSON Schema, as sent."""


@dataclass(kw_only=True, frozen=True)
class ScriptRequest:
    """A request as the script sees it: the conversation and tools, normalised across both APIs."""

    api: Literal["chat", "responses"]
    """`chat` for `/v1/chat/completions`, `responses` for `/v1/responses`."""
    index: int
    """0 for the first request this server received, 1 for the second, and so on."""
    model: str
    stream: bool
    messages: list[ScriptMessage]
    """The whole conversation, including any stored history a Responses `previous_response_id` points at."""
    tools: list[ScriptTool]
    body: dict[str, Any]
    """The JSON body exactly as received."""

    @property
    def tool_results(self) -> list[ScriptMessage]:
        """The tool results in the conversation, oldest first."""
        return [message for message in self.messages if message["role"] == "tool"]

    @property
    def prompt(self) -> str:
        """The text of the last user message, or `''` if there is none."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


# ---------------------------------------------------------------------------------------------
# What a script returns


@dataclass
class ScriptToolCall:
    """A function tool call for the model to make; its JSON arguments are streamed in `fragments` pieces."""

    name: str
    args: Mapping[str, object] | str = field(default_factory=dict[str, object])
    """The arguments: a mapping (sent as JSON) or JSON text sent as is (which may be invalid on purpose)."""
    _: KW_ONLY
    id: str | None = None
    """The call id; `call_<n>` by default, numbered by the server."""
    fragments: int = 3

    @property
    def arguments(self) -> str:
        """The arguments as the JSON text the server sends."""
        return self.args if isinstance(self.args, str) else json.dumps(self.args, separators=(",", ":"))


@dataclass(kw_only=True)
class ScriptReply:
    """One model response: text chunks streamed in order, then tool calls.

    Token counts default to an estimate of four characters a token (at least 1), so cost is always
    positive for a priced model. `disconnect_after=n` drops the connection once `n` chunks (text
    chunks and tool-argument fragments) have been sent, without ending the stream; a non-streamed
    reply is cut off halfway through its body instead (and the OpenAI SDK retries that, as it
    retries any connection error, so give it replies for the retries or `max_retries=0`).
    """

    text: Sequence[str] = ()
    tool_calls: Sequence[ScriptToolCall] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    disconnect_after: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.text, str):
            self.text = (self.text,)


_ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: (
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    404: ("The model does not exist or you do not have access to it.", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached. Please try again later.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


@dataclass(kw_only=True)
class ScriptError:
    """An HTTP error answer with an OpenAI-style body: `{"error": {"message", "type", "param", "code"}}`.

    `message`, `type` and `code` default to what OpenAI sends for `status`. The response carries
    `x-should-retry: false` unless `retry=True`, so the OpenAI SDK raises at once instead of
    retrying with backoff (it obeys that header before its own status rules).
    """

    status: int = 500
    message: str | None = None
    type: str | None = None
    code: str | None = None
    retry: bool = False

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        message, type_, code = _ERROR_DEFAULTS.get(self.status, ("Request failed.", "invalid_request_error", None))
        return _error_body(
            self.message if self.message is not None else message,
            self.type if self.type is not None else type_,
            self.code if self.code is not None else code,
        )


def _error_body(message: str, type: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


ScriptResult: TypeAlias = ScriptReply | ScriptError | str | Sequence[str]
"""What a script returns for one request: a reply, an error, one text chunk, or a list of text chunks."""

Script: TypeAlias = Callable[[ScriptRequest], ScriptResult | Awaitable[ScriptResult]]
"""A sync or async function deciding each answer of a `FakeOpenAIServer`."""


def default_script(request: ScriptRequest) -> ScriptResult:
    """Answer every request with `DEFAULT_TEXT_CHUNKS`."""
    return list(DEFAULT_TEXT_CHUNKS)


# ---------------------------------------------------------------------------------------------
# The server


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
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider


    def script(request: ScriptRequest) -> ScriptResult:
        if not request.tool_results:
            return ScriptReply(tool_calls=[ScriptToolCall("add", {"a": 1, "b": 2})])
        return ["The answer is ", request.tool_results[0]["content"], "."]


    def add(a: int, b: int) -> int:
        return a + b


    with FakeOpenAIServer(script) as server:
        model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test"))
        print(Agent(model, tools=[add]).run_sync("What is 1 + 2?").output)
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
                "FakeOpenAIServer needs uvicorn: pip install 'pydantic-deep[server]' (or `uv add uvicorn`)"
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
            await _send_json(send, 404, _error_body(message, "invalid_request_error", None))
            return
        try:
            payload = _dict(json.loads(body), strict=True)
        except ValueError:
            message = "We could not parse the JSON body of your request. The request body must be a JSON object."
            await _send_json(send, 400, _error_body(message, "invalid_request_error", None))
            return
        self.requests.append(payload)

        try:
            self._check_auth(scope)
            request = self._script_request(api, payload)
            reply = await self._run_script(request)
        except _HTTPError as e:
            await _send_json(send, e.status, e.body, retry=e.retry)
            return
        plan = _Plan.build(request, reply, self._next_id)
        if api == "responses" and payload.get("store") is not False:
            self._stored[plan.response_id] = [*self._responses_history(payload), plan.assistant_message()]

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
            raise _HTTPError(401, _error_body(message, "invalid_request_error", None))
        if self.api_key is not None and key.strip() != self.api_key:
            shown = f"{key[:3]}...{key[-4:]}" if len(key) > 8 else key
            message = f"Incorrect API key provided: {shown}."
            raise _HTTPError(401, _error_body(message, "invalid_request_error", "invalid_api_key"))

    def _script_request(self, api: Literal["chat", "responses"], body: dict[str, Any]) -> ScriptRequest:
        if api == "chat":
            messages = _chat_messages(body.get("messages"))
        else:
            # As in the real API, a previous response's instructions are not carried over: only this request's count.
            instructions = body.get("instructions")
            messages = [_message("system", instructions)] if isinstance(instructions, str) and instructions else []
            messages += self._responses_history(body)
        return ScriptRequest(
            api=api,
            index=len(self.requests) - 1,
            model=str(body.get("model", "")),
            stream=bool(body.get("stream", False)),
            messages=messages,
            tools=_tools(body.get("tools")),
            body=body,
        )

    def _responses_history(self, body: dict[str, Any]) -> list[ScriptMessage]:
        """The conversation of a Responses request without its instructions: stored history, then `input`."""
        previous = body.get("previous_response_id")
        if previous is None:
            return _responses_messages(body.get("input"))
        if previous not in self._stored:
            message = f"Previous response with id '{previous}' not found."
            raise _HTTPError(400, _error_body(message, "invalid_request_error", "previous_response_not_found"))
        return [*self._stored[previous], *_responses_messages(body.get("input"))]

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
            raise _HTTPError(500, _error_body(message, "server_error", None)) from e
        if isinstance(result, ScriptError):
            raise _HTTPError(result.status, result.body(), retry=result.retry)
        if isinstance(result, ScriptReply):
            return result
        return ScriptReply(text=result)

    def _next_id(self) -> int:
        self._counter += 1
        return self._counter

    async def _send_stream(self, send: _Send, plan: _Plan, disconnected: asyncio.Event) -> None:
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
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                sent_chunks += 1
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_complete(self, send: _Send, plan: _Plan) -> None:
        body = _dumps(plan.complete_body()).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"connection", b"close"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", plan.request_id.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if plan.reply.disconnect_after is not None:
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            return
        await send({"type": "http.response.body", "body": body, "more_body": False})


# ---------------------------------------------------------------------------------------------
# Wire formats


@dataclass(kw_only=True)
class _Call:
    item_id: str
    call_id: str
    name: str
    arguments: str
    fragments: list[str]


@dataclass(kw_only=True)
class _Plan:
    """One reply laid out for the wire: ids, token counts, and the events or body of either API."""

    request: ScriptRequest
    reply: ScriptReply
    request_id: str
    response_id: str
    message_id: str
    created: int
    calls: list[_Call]
    input_tokens: int
    output_tokens: int

    @classmethod
    def build(cls, request: ScriptRequest, reply: ScriptReply, next_id: Callable[[], int]) -> _Plan:
        n = next_id()
        calls: list[_Call] = []
        for call in reply.tool_calls:
            m = next_id()
            arguments = call.arguments
            calls.append(
                _Call(
                    item_id=f"fc_{m}",
                    call_id=call.id or f"call_{m}",
                    name=call.name,
                    arguments=arguments,
                    fragments=_split(arguments, call.fragments),
                )
            )
        text = "".join(reply.text)
        sent = _dumps([request.messages, request.tools])
        return cls(
            request=request,
            reply=reply,
            request_id=f"req_{n}",
            response_id=f"chatcmpl-{n}" if request.api == "chat" else f"resp_{n}",
            message_id=f"msg_{n}",
            created=int(time.time()),
            calls=calls,
            input_tokens=reply.input_tokens if reply.input_tokens is not None else _estimate_tokens(sent),
            output_tokens=reply.output_tokens
            if reply.output_tokens is not None
            else _estimate_tokens(text + "".join(c.arguments for c in calls)),
        )

    @property
    def text(self) -> str:
        return "".join(self.reply.text)

    def assistant_message(self) -> ScriptMessage:
        """This reply as a message of the conversation, as a later request would send it back."""
        assistant = _message("assistant", self.text)
        assistant["tool_calls"] = [
            ScriptMessageToolCall(id=c.call_id, name=c.name, arguments=c.arguments) for c in self.calls
        ]
        return assistant

    def events(self) -> Iterator[tuple[bytes, bool]]:
        """Server-sent events with, for each, whether it is a chunk (text or argument fragment)."""
        if self.request.api == "chat":
            for data, is_chunk in self._chat_chunks():
                yield f"data: {data if isinstance(data, str) else _dumps(data)}\n\n".encode(), is_chunk
        else:
            for sequence_number, (event, is_chunk) in enumerate(self._responses_events()):
                event["sequence_number"] = sequence_number
                yield f"event: {event['type']}\ndata: {_dumps(event)}\n\n".encode(), is_chunk

    def complete_body(self) -> dict[str, Any]:
        if self.request.api == "responses":
            return self._response_object("completed", self._output_items("completed"), self._responses_usage())
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.text if self.reply.text or not self.calls else None,
            "refusal": None,
            "annotations": [],
        }
        if self.calls:
            message["tool_calls"] = [
                {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.calls
            ]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": self._finish_reason}
        return {**self._chat_base("chat.completion"), "choices": [choice], "usage": self._chat_usage()}

    # -- Chat Completions -----------------------------------------------------------------------

    @property
    def _finish_reason(self) -> str:
        return "tool_calls" if self.calls else "stop"

    def _chat_base(self, object_: str) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": object_,
            "created": self.created,
            "model": self.request.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _chat_usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _chat_chunks(self) -> Iterator[tuple[dict[str, Any] | str, bool]]:
        include_usage = bool(_dict(self.request.body.get("stream_options")).get("include_usage"))
        base = self._chat_base("chat.completion.chunk")
        if include_usage:
            # With `include_usage`, every chunk carries `"usage": null` and one last chunk without choices the totals.
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**base, "choices": [choice]}

        yield chunk({"role": "assistant", "content": "", "refusal": None}), False
        for text in self.reply.text:
            yield chunk({"content": text}), True
        for index, call in enumerate(self.calls):
            start = {"index": index, "id": call.call_id, "type": "function"}
            yield chunk({"tool_calls": [{**start, "function": {"name": call.name, "arguments": ""}}]}), False
            for fragment in call.fragments:
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}), True
        yield chunk({}, self._finish_reason), False
        if include_usage:
            yield {**base, "choices": [], "usage": self._chat_usage()}, False
        yield "[DONE]", False

    # -- Responses API ---------------------------------------------------------------------------

    def _responses_usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }

    def _response_object(
        self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        body = self.request.body
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.request.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text", {"format": {"type": "text"}}),
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": usage,
            "user": body.get("user"),
            "metadata": body.get("metadata", {}),
        }

    def _text_part(self) -> dict[str, Any]:
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": self.text}

    def _message_item(self, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.message_id, "type": "message", "status": status, "content": content, "role": "assistant"}

    def _call_item(self, call: _Call, status: str, arguments: str) -> dict[str, Any]:
        return {
            "id": call.item_id,
            "type": "function_call",
            "status": status,
            "arguments": arguments,
            "call_id": call.call_id,
            "name": call.name,
        }

    def _output_items(self, status: str) -> list[dict[str, Any]]:
        items = [self._message_item(status, [self._text_part()])] if self.reply.text else []
        return items + [self._call_item(call, status, call.arguments) for call in self.calls]

    def _responses_events(self) -> Iterator[tuple[dict[str, Any], bool]]:
        in_progress = self._response_object("in_progress", [], None)
        yield {"type": "response.created", "response": in_progress}, False
        yield {"type": "response.in_progress", "response": in_progress}, False
        output_index = 0
        if self.reply.text:
            where = {"item_id": self.message_id, "output_index": output_index, "content_index": 0}
            item = self._message_item("in_progress", [])
            yield {"type": "response.output_item.added", "output_index": output_index, "item": item}, False
            yield {"type": "response.content_part.added", **where, "part": {**self._text_part(), "text": ""}}, False
            for text in self.reply.text:
                yield {"type": "response.output_text.delta", **where, "delta": text, "logprobs": []}, True
            yield {"type": "response.output_text.done", **where, "text": self.text, "logprobs": []}, False
            yield {"type": "response.content_part.done", **where, "part": self._text_part()}, False
            item = self._message_item("completed", [self._text_part()])
            yield {"type": "response.output_item.done", "output_index": output_index, "item": item}, False
            output_index += 1
        for call in self.calls:
            where = {"item_id": call.item_id, "output_index": output_index}
            item = self._call_item(call, "in_progress", "")
            yield {"type": "response.output_item.added", "output_index": output_index, "item": item}, False
            for fragment in call.fragments:
                yield {"type": "response.function_call_arguments.delta", **where, "delta": fragment}, True
            yield {"type": "response.function_call_arguments.done", **where, "arguments": call.arguments}, False
            item = self._call_item(call, "completed", call.arguments)
            yield {"type": "response.output_item.done", "output_index": output_index, "item": item}, False
            output_index += 1
        completed = self._response_object("completed", self._output_items("completed"), self._responses_usage())
        yield {"type": "response.completed", "response": completed}, False


# ---------------------------------------------------------------------------------------------
# Helpers


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _split(text: str, pieces: int) -> list[str]:
    """`text` in `pieces` nearly equal consecutive fragments (fewer if it is shorter; none if empty)."""
    pieces = max(1, min(pieces, len(text)))
    return [text[i * len(text) // pieces : (i + 1) * len(text) // pieces] for i in range(pieces)] if text else []


async def _send_json(send: _Send, status: int, body: dict[str, Any], *, retry: bool = False) -> None:
    data = _dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"connection", b"close"),
        (b"content-length", str(len(data)).encode()),
        (b"x-should-retry", b"true" if retry else b"false"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def _message(role: Literal["system", "user", "assistant", "tool"], content: str) -> ScriptMessage:
    return ScriptMessage(role=role, content=content, tool_calls=[], tool_call_id=None)


def _text_of(content: object) -> str:
    """The text of a message's `content`: a string, or a list of parts whose `text` fields are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [_str(part.get("text")) for part in _dicts(cast(list[object], content))]
        return "\n".join(text for text in texts if text)
    return ""


def _dict(value: object, *, strict: bool = False) -> dict[str, Any]:
    """`value` if it is a JSON object, else `{}` (or `ValueError` when `strict`)."""
    if isinstance(value, dict):
        return cast(dict[str, Any], value)
    if strict:
        raise ValueError(f"expected a JSON object, got {value!r}")
    return {}


def _dicts(value: object) -> list[dict[str, Any]]:
    """The JSON objects in `value` if it is a list, else `[]`."""
    items = cast(list[object], value) if isinstance(value, list) else []
    return [cast(dict[str, Any], item) for item in items if isinstance(item, dict)]


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _role(value: object) -> Literal["system", "user", "assistant", "tool"]:
    """The normalised role: `developer` (and anything unknown) becomes `system`."""
    match value:
        case "user":
            return "user"
        case "assistant":
            return "assistant"
        case "tool":
            return "tool"
        case _:
            return "system"


def _chat_messages(raw: object) -> list[ScriptMessage]:
    messages: list[ScriptMessage] = []
    for item in _dicts(raw):
        message = _message(_role(item.get("role")), _text_of(item.get("content")))
        for call in _dicts(item.get("tool_calls")):
            function: dict[str, Any] = call.get("function") or {}
            message["tool_calls"].append(
                ScriptMessageToolCall(
                    id=_str(call.get("id")), name=_str(function.get("name")), arguments=_str(function.get("arguments"))
                )
            )
        if message["role"] == "tool":
            message["tool_call_id"] = _str(item.get("tool_call_id"))
        messages.append(message)
    return messages


def _responses_messages(raw: object) -> list[ScriptMessage]:
    if isinstance(raw, str):
        return [_message("user", raw)]
    messages: list[ScriptMessage] = []
    for item in _dicts(raw):
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(_role(item.get("role")), _text_of(item.get("content"))))
        elif kind == "function_call":
            call = ScriptMessageToolCall(
                id=_str(item.get("call_id")), name=_str(item.get("name")), arguments=_str(item.get("arguments"))
            )
            if not messages or messages[-1]["role"] != "assistant":
                messages.append(_message("assistant", ""))
            messages[-1]["tool_calls"].append(call)
        elif kind == "function_call_output":
            message = _message("tool", _text_of(item.get("output")))
            message["tool_call_id"] = _str(item.get("call_id"))
            messages.append(message)
        # Reasoning and other items carry nothing a script answers to.
    return messages


def _tools(raw: object) -> list[ScriptTool]:
    tools: list[ScriptTool] = []
    for item in _dicts(raw):
        if item.get("type") != "function":
            continue
        # Chat Completions nests the definition under `function`; the Responses API does not.
        definition: dict[str, Any] = item.get("function", item)
        description = definition.get("description")
        tools.append(
            ScriptTool(
                name=_str(definition.get("name")),
                description=description if isinstance(description, str) else None,
                parameters=definition.get("parameters") or {},
            )
        )
    return tools
