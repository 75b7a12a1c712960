"""What a `FakeOpenAIServer` script sees (`ScriptRequest`) and what it returns (`ScriptResult`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal, TypeAlias, TypedDict

__all__ = [
    "DEFAULT_TEXT_CHUNKS",
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
    "error_body",
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
    `end_after=n` instead ends the streamed body cleanly after `n` chunks, before the API's completion
    event (no `finish_reason` and no `[DONE]`; no `response.completed`): a proxy or provider that
    closed the answer early, which a client cannot tell from a connection error by the transport.
    """

    text: Sequence[str] = ()
    tool_calls: Sequence[ScriptToolCall] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    disconnect_after: int | None = None
    end_after: int | None = None

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
        return error_body(
            self.message if self.message is not None else message,
            self.type if self.type is not None else type_,
            self.code if self.code is not None else code,
        )


def error_body(message: str, type: str, code: str | None) -> dict[str, Any]:
    """An OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


ScriptResult: TypeAlias = ScriptReply | ScriptError | str | Sequence[str]
"""What a script returns for one request: a reply, an error, one text chunk, or a list of text chunks."""

Script: TypeAlias = Callable[[ScriptRequest], ScriptResult | Awaitable[ScriptResult]]
"""A sync or async function deciding each answer of a `FakeOpenAIServer`."""


def default_script(request: ScriptRequest) -> ScriptResult:
    """Answer every request with `DEFAULT_TEXT_CHUNKS`."""
    return list(DEFAULT_TEXT_CHUNKS)
