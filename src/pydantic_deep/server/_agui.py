"""The AG-UI encoding of a run's log (a module of its own: it needs the optional `ag-ui-protocol` package)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ag_ui.core import BaseEvent, MessagesSnapshotEvent, RunErrorEvent
from ag_ui.core import CustomEvent as AGUICustomEvent
from pydantic_ai import CustomEvent
from pydantic_ai.ui import NativeEvent
from pydantic_ai.ui.ag_ui import AGUIAdapter, AGUIEventStream

from ..streaming import StreamEventType
from ._protocols import KEEP_ALIVE_NAME, LogEvent, LogReplay, RunFailed

__all__ = ("AGUILogStream",)

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class AGUILogStream(AGUIEventStream[Any, Any]):
    """Pydantic AI's AG-UI encoding of a run's log: ids made from the run id, times from its events
    (so every reader gets the same frames).

    The encoding mints some ids itself (a reasoning message's); each is replaced, in order, by one made
    from the run id, so a client resuming mid-message sees the ids it saw before.
    """

    run_key: str = field(default="", kw_only=True)
    replay: LogReplay | None = field(default=None, kw_only=True)
    _minted: int = field(default=0, kw_only=True)
    _stable: dict[str, str] = field(default_factory=dict[str, str], kw_only=True)

    def new_message_id(self) -> str:
        self._minted += 1
        self.message_id = f"{self.run_key}-{self._minted}"
        return self.message_id

    started_at: int | None = field(default=None, kw_only=True)
    """`RUN_STARTED`'s timestamp (ms): when the run started, however late this reader comes."""

    async def handle_event(self, event: NativeEvent) -> AsyncIterator[BaseEvent]:
        async for frame in super().handle_event(event):
            self._steady(frame)
            yield frame

    async def before_stream(self) -> AsyncIterator[BaseEvent]:
        async for frame in super().before_stream():
            if self.started_at is not None:
                frame.timestamp = self.started_at
            yield frame

    async def after_stream(self) -> AsyncIterator[BaseEvent]:
        async for frame in super().after_stream():
            self._steady(frame)
            yield frame

    def _steady(self, frame: BaseEvent) -> None:
        message_id = getattr(frame, "message_id", None)
        if isinstance(message_id, str) and _UUID.fullmatch(message_id):
            frame.message_id = self._stable.setdefault(message_id, f"{self.run_key}-r{len(self._stable) + 1}")  # pyright: ignore[reportAttributeAccessIssue]
        entity_id = getattr(frame, "entity_id", None)
        if getattr(frame, "subtype", None) == "message" and isinstance(entity_id, str) and _UUID.fullmatch(entity_id):
            frame.entity_id = self._stable.setdefault(entity_id, f"{self.run_key}-r{len(self._stable) + 1}")  # pyright: ignore[reportAttributeAccessIssue]
        if self.replay is not None and self.replay.timestamp is not None:
            frame.timestamp = int(self.replay.timestamp.timestamp() * 1000)

    async def handle_custom_event(self, event: CustomEvent) -> AsyncIterator[BaseEvent]:
        if not isinstance(event, LogEvent):
            async for frame in super().handle_custom_event(event):
                yield frame
            return
        if event.event is None:
            yield AGUICustomEvent(name=KEEP_ALIVE_NAME, value=None)
            return
        logged: Any = event.event
        yield AGUICustomEvent(name=logged.event_type.value, value=dict(logged.data))
        if logged.event_type is StreamEventType.RUN_RESUMED and self.replay is not None:
            yield self._snapshot(logged.seq)

    def _snapshot(self, seq: int) -> MessagesSnapshotEvent:
        """The conversation without what a takeover voided: the client's messages, then the run's so far.

        The ids of the run's messages are made from the run id and the event's `seq` (every reader gets the
        same snapshot); the client replaces its messages with these, so the voided text is gone."""
        assert self.replay is not None
        dumped = AGUIAdapter.dump_messages(self.replay.settled_messages(), ag_ui_version=self.ag_ui_version)
        for number, message in enumerate(dumped, start=1):
            message.id = f"{self.run_key}-s{seq}-{number}"
        given = self.run_input.messages if self.run_input is not None else []
        return MessagesSnapshotEvent(messages=[*given, *dumped])

    async def on_error(self, error: Exception) -> AsyncIterator[BaseEvent]:
        async for frame in super().on_error(error):
            if isinstance(frame, RunErrorEvent) and isinstance(error, RunFailed):
                frame.code = error.exception_type
            self._steady(frame)
            yield frame
