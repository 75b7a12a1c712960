"""The OpenAI wire formats a `FakeOpenAIServer` speaks: Chat Completions and the Responses API.

Requests come in as JSON bodies and are normalised into a `ScriptRequest`; a script's `ScriptReply`
goes out as a `WireReply`, which lays it out as server-sent events or one JSON body of either API.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

from ._script import ScriptMessage, ScriptMessageToolCall, ScriptReply, ScriptRequest, ScriptTool

__all__ = ["WireReply", "dumps", "parse_body", "responses_messages", "script_request"]


def dumps(value: object) -> str:
    """`value` as compact JSON, as the real API sends it."""
    return json.dumps(value, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# Requests


def parse_body(data: bytes) -> dict[str, Any]:
    """The JSON object of a request body; `ValueError` if it is not JSON or not an object."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {value!r}")
    return cast(dict[str, Any], value)


def script_request(
    api: Literal["chat", "responses"], body: dict[str, Any], *, index: int, history: list[ScriptMessage]
) -> ScriptRequest:
    """`body` as a script sees it; `history` is a Responses request's conversation (see `responses_messages`)."""
    if api == "chat":
        messages = _chat_messages(body.get("messages"))
    else:
        # As in the real API, a previous response's instructions are not carried over: only this request's count.
        instructions = body.get("instructions")
        messages = [_message("system", instructions)] if isinstance(instructions, str) and instructions else []
        messages += history
    return ScriptRequest(
        api=api,
        index=index,
        model=str(body.get("model", "")),
        stream=bool(body.get("stream", False)),
        messages=messages,
        tools=_tools(body.get("tools")),
        body=body,
    )


def responses_messages(raw: object) -> list[ScriptMessage]:
    """The conversation in a Responses request's `input`: a string, or a list of items."""
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
            messages.append(_message("tool", _text_of(item.get("output")), tool_call_id=_str(item.get("call_id"))))
        # Reasoning and other items carry nothing a script answers to.
    return messages


def _chat_messages(raw: object) -> list[ScriptMessage]:
    messages: list[ScriptMessage] = []
    for item in _dicts(raw):
        role = _role(item.get("role"))
        tool_call_id = _str(item.get("tool_call_id")) if role == "tool" else None
        message = _message(role, _text_of(item.get("content")), tool_call_id=tool_call_id)
        for call in _dicts(item.get("tool_calls")):
            function: dict[str, Any] = call.get("function") or {}
            message["tool_calls"].append(
                ScriptMessageToolCall(
                    id=_str(call.get("id")), name=_str(function.get("name")), arguments=_str(function.get("arguments"))
                )
            )
        messages.append(message)
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


def _message(
    role: Literal["system", "user", "assistant", "tool"], content: str, *, tool_call_id: str | None = None
) -> ScriptMessage:
    return ScriptMessage(role=role, content=content, tool_calls=[], tool_call_id=tool_call_id)


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


def _text_of(content: object) -> str:
    """The text of a message's `content`: a string, or a list of parts whose `text` fields are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [_str(part.get("text")) for part in _dicts(cast(list[object], content))]
        return "\n".join(text for text in texts if text)
    return ""


def _dict(value: object) -> dict[str, Any]:
    """`value` if it is a JSON object, else `{}`."""
    return cast(dict[str, Any], value) if isinstance(value, dict) else {}


def _dicts(value: object) -> list[dict[str, Any]]:
    """The JSON objects in `value` if it is a list, else `[]`."""
    items = cast(list[object], value) if isinstance(value, list) else []
    return [cast(dict[str, Any], item) for item in items if isinstance(item, dict)]


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------------------------------------
# Replies


@dataclass(kw_only=True)
class _Call:
    item_id: str
    call_id: str
    name: str
    arguments: str
    fragments: list[str]


@dataclass(kw_only=True)
class WireReply:
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
    def build(cls, request: ScriptRequest, reply: ScriptReply, next_id: Callable[[], int]) -> WireReply:
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
        sent = dumps([request.messages, request.tools])
        produced = "".join(reply.text) + "".join(c.arguments for c in calls)
        return cls(
            request=request,
            reply=reply,
            request_id=f"req_{n}",
            response_id=f"chatcmpl-{n}" if request.api == "chat" else f"resp_{n}",
            message_id=f"msg_{n}",
            created=int(time.time()),
            calls=calls,
            input_tokens=reply.input_tokens if reply.input_tokens is not None else _estimate_tokens(sent),
            output_tokens=reply.output_tokens if reply.output_tokens is not None else _estimate_tokens(produced),
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
                yield f"data: {data if isinstance(data, str) else dumps(data)}\n\n".encode(), is_chunk
        else:
            for sequence_number, (event, is_chunk) in enumerate(self._responses_events()):
                event["sequence_number"] = sequence_number
                yield f"event: {event['type']}\ndata: {dumps(event)}\n\n".encode(), is_chunk

    def complete_body(self) -> dict[str, Any]:
        """The JSON body of a non-streamed answer."""
        if self.request.api == "responses":
            return self._completed_response()
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

    def _completed_response(self) -> dict[str, Any]:
        items = [self._message_item("completed", [self._text_part()])] if self.reply.text else []
        items += [self._call_item(call, "completed", call.arguments) for call in self.calls]
        return self._response_object("completed", items, self._responses_usage())

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
        yield {"type": "response.completed", "response": self._completed_response()}, False


def _estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _split(text: str, pieces: int) -> list[str]:
    """`text` in `pieces` nearly equal consecutive fragments (fewer if it is shorter; none if empty)."""
    pieces = max(1, min(pieces, len(text)))
    return [text[i * len(text) // pieces : (i + 1) * len(text) // pieces] for i in range(pieces)] if text else []
