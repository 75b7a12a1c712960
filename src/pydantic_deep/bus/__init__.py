"""The event bus: per-run append-only event logs that many readers follow at their own pace.

`InMemoryEventBus` serves one process; `RedisEventBus` (Redis Streams, the `redis` extra)
lets servers in several processes share runs. The HTTP server (`pydantic_deep.server`) writes every
run's events to a bus and streams them to clients from it, which is what makes resuming exact.
"""

from ._memory import InMemoryEventBus
from ._protocol import (
    SSE_ERROR_EVENT,
    BusUnavailableError,
    EventBatch,
    EventBus,
    UnknownRunError,
    follow,
    sse_event_frame,
    sse_event_name,
)
from ._redis import RedisEventBus

__all__ = (
    "SSE_ERROR_EVENT",
    "BusUnavailableError",
    "EventBatch",
    "EventBus",
    "InMemoryEventBus",
    "RedisEventBus",
    "UnknownRunError",
    "follow",
    "sse_event_frame",
    "sse_event_name",
)
