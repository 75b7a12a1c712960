"""A streamed response played from a list of deltas: what `ScriptedModel` and `ReplayModel` send.

Each `Delta` goes through Pydantic AI's own parts manager, exactly as a provider's chunks do, so a
played response streams the same part and delta events a real one would.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic_ai import RunContext
from pydantic_ai.messages import FinishReason, ModelMessage, ModelResponse, ModelResponseStreamEvent
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

if TYPE_CHECKING:
    from pydantic_ai._parts_manager import ModelResponsePartsManager

__all__ = ("Delta", "PlaybackModel", "PlaybackResponse", "feed")

DeltaKind = Literal["text", "thinking", "tool_call"]


@dataclass(frozen=True, kw_only=True)
class Delta:
    """One chunk of a response: text, thinking, or a fragment of a tool call, in part `index`."""

    kind: DeltaKind
    index: int
    content: str | None = None
    """The text or thinking delta, or a fragment of the tool call's JSON arguments."""
    tool_name: str | None = None
    tool_call_id: str | None = None
    delay: float | None = None
    """Seconds to wait before sending this delta."""
    gate: asyncio.Event | None = field(default=None, compare=False)
    """Wait until the test sets this event before sending the delta (a liveness handshake)."""


def feed(manager: ModelResponsePartsManager, delta: Delta) -> list[ModelResponseStreamEvent]:
    match delta.kind:
        case "text":
            return list(manager.handle_text_delta(vendor_part_id=delta.index, content=delta.content or ""))
        case "thinking":
            return list(manager.handle_thinking_delta(vendor_part_id=delta.index, content=delta.content))
        case "tool_call":
            event = manager.handle_tool_call_delta(
                vendor_part_id=delta.index,
                tool_name=delta.tool_name,
                args=delta.content,
                tool_call_id=delta.tool_call_id,
            )
            return [event] if event is not None else []


@dataclass(kw_only=True)
class PlaybackResponse(StreamedResponse):
    """Streams `deltas`, then reports `final_usage` and `final_finish_reason`, or raises `error`."""

    deltas: Sequence[Delta]
    name: str
    provider: str | None
    final_usage: RequestUsage
    final_finish_reason: FinishReason | None
    error: BaseException | None = None
    url: str | None = None
    at: datetime | None = None
    """The response's timestamp (now when not given)."""
    _timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        for delta in self.deltas:
            if delta.gate is not None:
                await delta.gate.wait()
            if delta.delay:
                await asyncio.sleep(delta.delay)
            for event in feed(self._parts_manager, delta):
                yield event
        self._usage = self.final_usage
        self.finish_reason = self.final_finish_reason
        if self.error is not None:
            raise self.error

    async def close_stream(self) -> None:
        pass

    async def whole(self) -> ModelResponse:
        """Play every delta and return the response they add up to (for a request that is not streamed)."""
        async for _ in self:
            pass
        return self.get()

    @property
    def model_name(self) -> str:
        return self.name

    @property
    def provider_name(self) -> str | None:
        return self.provider

    @property
    def provider_url(self) -> str | None:
        return self.url

    @property
    def timestamp(self) -> datetime:
        return self.at or self._timestamp


class PlaybackModel(Model):
    """A model whose every answer is a `PlaybackResponse`: streamed as it is, or played whole."""

    @abstractmethod
    def _play(self, messages: list[ModelMessage], parameters: ModelRequestParameters) -> PlaybackResponse: ...

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        return await self._play(messages, model_request_parameters).whole()

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        yield self._play(messages, model_request_parameters)
