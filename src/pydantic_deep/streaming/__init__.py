"""Live, typed event streams of agent runs.

```python
from pydantic_deep import DeepAgentDeps, create_deep_agent
from pydantic_deep.streaming import StreamEventType, run_stream


async def main() -> None:
    agent = create_deep_agent()
    async for event in run_stream(agent, "Say hello", DeepAgentDeps()):
        if event.event_type == StreamEventType.LLM_CHUNK:
            print(event.data["text"], end="")
```
"""

from ._relay import StreamTap, ToolProgressEvent, relay_subagent_events, report_progress
from ._views import (
    ToolCallUpdate,
    collect_stream_result,
    merge_streams,
    run_stream,
    run_stream_with_tools,
    stream_text,
    stream_tool_calls,
)
from .types import (
    StreamEvent,
    StreamEventType,
    agent_end_event,
    agent_start_event,
    error_event,
    llm_chunk_event,
    progress_event,
    stream_event_json_schema,
    thinking_chunk_event,
    tool_end_event,
    tool_start_event,
)

__all__ = (
    "StreamEvent",
    "StreamEventType",
    "StreamTap",
    "ToolCallUpdate",
    "ToolProgressEvent",
    "agent_end_event",
    "agent_start_event",
    "collect_stream_result",
    "error_event",
    "llm_chunk_event",
    "merge_streams",
    "progress_event",
    "relay_subagent_events",
    "report_progress",
    "run_stream",
    "run_stream_with_tools",
    "stream_event_json_schema",
    "stream_text",
    "stream_tool_calls",
    "thinking_chunk_event",
    "tool_end_event",
    "tool_start_event",
)
