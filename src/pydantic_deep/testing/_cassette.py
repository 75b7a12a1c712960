"""Cassettes: record a real model's responses once, replay them offline and deterministically.

A cassette is a JSONL file: a header line, then one line per model request with the request's
essentials (its messages without timestamps or ids, and the tools offered) and the response as it
streamed (each delta with its time offset, then usage, finish reason, model and provider names, or
the provider's error). `RecordingModel` writes it around any Pydantic AI model; `ReplayModel` answers
the same requests from it in order and raises `CassetteMismatch` at the first request that differs.
Nothing of the HTTP exchange is recorded, and known secrets are redacted from every line.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import TypeAdapter
from pydantic_ai import RunContext
from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelResponse,
    ModelResponseStreamEvent,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

from ._playback import Delta, DeltaKind, PlaybackModel, PlaybackResponse, feed

__all__ = ("CassetteMismatch", "RecordingModel", "ReplayModel")

CASSETTE_VERSION = 1
_USAGE = TypeAdapter(RequestUsage)
# Keys that change from run to run without changing what was asked: left out of a request's essentials.
_VOLATILE = frozenset(
    {
        "timestamp",
        "run_id",
        "conversation_id",
        "provider_response_id",
        "provider_details",
        "provider_name",
        "metadata",
        "id",
        "usage",
    }
)
_SECRET_PATTERNS = (re.compile(r"sk-[A-Za-z0-9_\-]{8,}"), re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"))
REDACTED = "<redacted>"


class CassetteMismatch(AssertionError):
    """A replayed run sent a request the cassette did not record (or more requests than it holds)."""


def request_essentials(messages: list[ModelMessage], parameters: ModelRequestParameters) -> dict[str, Any]:
    """What a request asks: its messages (without timestamps, ids and usage) and the tools it offers."""
    dumped = ModelMessagesTypeAdapter.dump_python(messages, mode="json")
    return {
        "messages": _without_volatile(dumped),
        "tools": sorted(t.name for t in [*parameters.function_tools, *parameters.output_tools]),
    }


def _without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        items = cast(dict[str, Any], value).items()
        return {k: _without_volatile(v) for k, v in items if k not in _VOLATILE}
    if isinstance(value, list):
        return [_without_volatile(v) for v in cast(list[Any], value)]
    return value


def first_difference(recorded: Any, sent: Any, path: str = "") -> str | None:
    """Where two JSON values first differ, as `path: recorded ..., got ...`; `None` when equal."""
    if isinstance(recorded, dict) and isinstance(sent, dict):
        old, new = cast(dict[str, Any], recorded), cast(dict[str, Any], sent)
        for key in [*old, *(k for k in new if k not in old)]:
            where = f"{path}.{key}" if path else str(key)
            if key not in new or key not in old:
                return f"{where}: recorded {old.get(key, '(absent)')!r}, got {new.get(key, '(absent)')!r}"
            found = first_difference(old[key], new[key], where)
            if found is not None:
                return found
        return None
    if isinstance(recorded, list) and isinstance(sent, list):
        old_list, new_list = cast(list[Any], recorded), cast(list[Any], sent)
        for index, (a, b) in enumerate(zip(old_list, new_list, strict=False)):
            found = first_difference(a, b, f"{path}[{index}]")
            if found is not None:
                return found
        if len(old_list) != len(new_list):
            return f"{path}: recorded {len(old_list)} items, got {len(new_list)}"
        return None
    return None if recorded == sent else f"{path or 'value'}: recorded {recorded!r}, got {sent!r}"


def redact(text: str) -> str:
    """`text` with API keys and tokens (from the environment, and `sk-...` / bearer tokens) replaced."""
    for name, value in os.environ.items():
        upper = name.upper()
        if len(value) >= 8 and ("API_KEY" in upper or "TOKEN" in upper or "SECRET" in upper) and value in text:
            text = text.replace(value, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.lastindex else "") + REDACTED, text)
    return text


# ---- recording -------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class _Interaction:
    request: dict[str, Any]
    streamed: bool
    started: float = field(default_factory=time.perf_counter)
    deltas: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])

    def add(self, delta: Delta) -> None:
        entry: dict[str, Any] = {"kind": delta.kind, "index": delta.index, "content": delta.content}
        if delta.kind == "tool_call":
            entry |= {"tool_name": delta.tool_name, "tool_call_id": delta.tool_call_id}
        entry["at"] = round(time.perf_counter() - self.started, 4)
        self.deltas.append(entry)

    def line(
        self, response: ModelResponse | StreamedResponse | None, *, error: BaseException | None = None
    ) -> dict[str, Any]:
        """The cassette line of this interaction: the request, the deltas and how `response` ended."""
        usage = response.usage if response is not None else None
        timestamp = response.timestamp if response is not None else None
        return {
            "request": self.request,
            "streamed": self.streamed,
            "deltas": self.deltas,
            "usage": _USAGE.dump_python(usage, mode="json") if usage is not None else None,
            "finish_reason": response.finish_reason if response is not None else None,
            "model_name": response.model_name if response is not None else None,
            "provider_name": response.provider_name if response is not None else None,
            "provider_url": response.provider_url if response is not None else None,
            "timestamp": timestamp.isoformat() if timestamp is not None else None,
            "error": _error_record(error),
        }


def _error_record(error: BaseException | None) -> dict[str, Any] | None:
    if error is None:
        return None
    if isinstance(error, ModelHTTPError):
        return {
            "type": "ModelHTTPError",
            "status_code": error.status_code,
            "model_name": error.model_name,
            "body": error.body,
        }
    if isinstance(error, ModelAPIError):
        return {"type": "ModelAPIError", "model_name": error.model_name, "message": error.message}
    return {"type": type(error).__name__, "message": str(error)}


def _error_of(record: dict[str, Any]) -> BaseException:
    match record["type"]:
        case "ModelHTTPError":
            return ModelHTTPError(record["status_code"], record["model_name"], record["body"])
        case "ModelAPIError":
            return ModelAPIError(record["model_name"], record["message"])
        case other:
            return RuntimeError(f"{other}: {record['message']}")


def _deltas_of(event: ModelResponseStreamEvent) -> list[Delta]:
    """The deltas a provider's stream event carried, in the form the cassette keeps."""
    index = getattr(event, "index", 0)
    if isinstance(event, PartStartEvent):
        part = event.part
        if isinstance(part, TextPart | ThinkingPart):
            return [Delta(kind="text" if isinstance(part, TextPart) else "thinking", index=index, content=part.content)]
        if isinstance(part, ToolCallPart):
            return [_tool_delta(index, part.args, part.tool_name, part.tool_call_id)]
    elif isinstance(event, PartDeltaEvent):
        delta = event.delta
        if isinstance(delta, TextPartDelta | ThinkingPartDelta):
            kind = "text" if isinstance(delta, TextPartDelta) else "thinking"
            return [Delta(kind=kind, index=index, content=delta.content_delta)]
        if isinstance(delta, ToolCallPartDelta):
            return [_tool_delta(index, delta.args_delta, delta.tool_name_delta, delta.tool_call_id)]
    return []


def _tool_delta(index: int, args: object, name: str | None, call_id: str | None) -> Delta:
    """A tool call's fragment; arguments a provider sent as an object are kept as their JSON text."""
    text = args if isinstance(args, str) or args is None else json.dumps(args, default=repr)
    return Delta(kind="tool_call", index=index, content=text, tool_name=name, tool_call_id=call_id)


def _deltas_of_response(response: ModelResponse) -> list[Delta]:
    deltas: list[Delta] = []
    for index, part in enumerate(response.parts):
        deltas.extend(_deltas_of(PartStartEvent(index=index, part=part)))
    return deltas


@dataclass(kw_only=True)
class _RecordingResponse(StreamedResponse):
    """Passes the wrapped model's stream through, delta by delta, recording each one as it goes."""

    inner: StreamedResponse
    interaction: _Interaction
    done: Callable[[dict[str, Any]], None]

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        error: BaseException | None = None
        try:
            async for event in self.inner:
                for delta in _deltas_of(event):
                    self.interaction.add(delta)
                    for ours in feed(self._parts_manager, delta):
                        yield ours
        except Exception as exc:
            error = exc
            raise
        finally:
            self._usage = self.inner.usage
            self.finish_reason = self.inner.finish_reason
            self.provider_response_id = self.inner.provider_response_id
            self.done(self.interaction.line(self.inner, error=error))

    async def close_stream(self) -> None:
        await self.inner.close_stream()

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def provider_name(self) -> str | None:
        return self.inner.provider_name

    @property
    def provider_url(self) -> str | None:
        return self.inner.provider_url

    @property
    def timestamp(self) -> datetime:
        return self.inner.timestamp


class RecordingModel(WrapperModel):
    """Wraps any model and records each request's essentials and its response to the cassette at `path`.

    The file is started afresh when the first request is recorded, and each interaction is appended
    (and flushed) as it completes, so a run that fails part-way leaves what it did.
    """

    def __init__(self, wrapped: Model, path: str | Path) -> None:
        super().__init__(wrapped)
        self.path = Path(path)
        self._started = False

    def _write(self, line: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = "a" if self._started else "w"
        with self.path.open(mode, encoding="utf-8") as out:
            if not self._started:
                header = {
                    "cassette": CASSETTE_VERSION,
                    "model_name": self.wrapped.model_name,
                    "system": self.wrapped.system,
                }
                out.write(redact(json.dumps(header, ensure_ascii=False)) + "\n")
                self._started = True
            out.write(redact(json.dumps(line, ensure_ascii=False, default=str)) + "\n")

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        interaction = _Interaction(request=request_essentials(messages, model_request_parameters), streamed=False)
        try:
            response = await self.wrapped.request(messages, model_settings, model_request_parameters)
        except Exception as exc:
            self._write(interaction.line(None, error=exc))
            raise
        for delta in _deltas_of_response(response):
            interaction.add(delta)
        self._write(interaction.line(response))
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        interaction = _Interaction(request=request_essentials(messages, model_request_parameters), streamed=True)
        try:
            opened = self.wrapped.request_stream(messages, model_settings, model_request_parameters, run_context)
            inner = await opened.__aenter__()
        except Exception as exc:
            self._write(interaction.line(None, error=exc))
            raise
        try:
            yield _RecordingResponse(
                model_request_parameters=model_request_parameters,
                inner=inner,
                interaction=interaction,
                done=self._write,
            )
        except BaseException as exc:
            if not await opened.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await opened.__aexit__(None, None, None)


# ---- replay ----------------------------------------------------------------------------------------------


class ReplayModel(PlaybackModel):
    """Answers requests from a cassette, in order, streaming the recorded deltas.

    `timing="instant"` (the default) sends every delta at once; `"recorded"` waits as long between
    them as the recording did. A request whose essentials differ from the recorded one, or one past
    the last recorded request, raises `CassetteMismatch` naming the request and the first difference.
    """

    def __init__(self, path: str | Path, *, timing: Literal["instant", "recorded"] = "instant") -> None:
        super().__init__()
        self.path = Path(path)
        self.timing = timing
        lines = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines or lines[0].get("cassette") != CASSETTE_VERSION:
            raise ValueError(f"{str(self.path)!r} is not a pydantic-deep cassette (version {CASSETTE_VERSION})")
        self.header: dict[str, Any] = lines[0]
        self.interactions: list[dict[str, Any]] = lines[1:]
        self._next = 0

    @property
    def model_name(self) -> str:
        return str(self.header.get("model_name") or "replay")

    @property
    def system(self) -> str:
        return str(self.header.get("system") or "replay")

    def _play(self, messages: list[ModelMessage], parameters: ModelRequestParameters) -> PlaybackResponse:
        number = self._next + 1
        if self._next >= len(self.interactions):
            raise CassetteMismatch(
                f"request {number}: the cassette {str(self.path)!r} recorded only {len(self.interactions)} request(s)"
            )
        recorded = self.interactions[self._next]
        self._next += 1
        sent = request_essentials(messages, parameters)
        difference = first_difference(recorded["request"], json.loads(redact(json.dumps(sent, default=str))))
        if difference is not None:
            raise CassetteMismatch(f"request {number} differs from the recording: {difference}")
        deltas: list[Delta] = []
        previous = 0.0
        for entry in recorded["deltas"]:
            at = float(entry.get("at") or 0.0)
            deltas.append(
                Delta(
                    kind=cast(DeltaKind, entry["kind"]),
                    index=int(entry["index"]),
                    content=entry.get("content"),
                    tool_name=entry.get("tool_name"),
                    tool_call_id=entry.get("tool_call_id"),
                    delay=max(0.0, at - previous) if self.timing == "recorded" else None,
                )
            )
            previous = at
        usage = recorded.get("usage")
        timestamp = recorded.get("timestamp")
        return PlaybackResponse(
            model_request_parameters=parameters,
            deltas=deltas,
            name=recorded.get("model_name") or self.model_name,
            provider=recorded.get("provider_name"),
            url=recorded.get("provider_url"),
            at=datetime.fromisoformat(timestamp) if timestamp else None,
            final_usage=_USAGE.validate_python(usage) if usage is not None else RequestUsage(),
            final_finish_reason=recorded.get("finish_reason"),
            error=_error_of(recorded["error"]) if recorded.get("error") else None,
        )
