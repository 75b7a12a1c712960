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

The event model (`types`) and the fold of a stream (`state`) import nothing of Pydantic AI, so a
program that only reads events (a log viewer, replay) starts fast; the functions that run agents
are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from .state import ApprovalState, CallStatus, PlanStep, RunPhase, RunState, SubagentActivity, ToolCall
from .types import (
    DEFERRED_CALL_ERROR,
    AgentEndData,
    AgentEndStreamEvent,
    AgentStartData,
    AgentStartStreamEvent,
    AnyStreamEvent,
    ApprovalRequiredData,
    ApprovalRequiredStreamEvent,
    ApprovalResolvedData,
    ApprovalResolvedStreamEvent,
    ErrorData,
    ErrorStreamEvent,
    FileChangeData,
    FileChangeStreamEvent,
    GuardrailData,
    GuardrailStreamEvent,
    LlmChunkStreamEvent,
    PlanUpdateData,
    PlanUpdateStreamEvent,
    ProgressData,
    ProgressStreamEvent,
    RunResumedData,
    RunResumedStreamEvent,
    RunStatus,
    StreamEvent,
    StreamEventType,
    SubagentEndData,
    SubagentEndStreamEvent,
    SubagentStartData,
    SubagentStartStreamEvent,
    TextData,
    ThinkingChunkStreamEvent,
    ToolArgsDeltaData,
    ToolArgsDeltaStreamEvent,
    ToolEndData,
    ToolEndStreamEvent,
    ToolProgressData,
    ToolProgressStreamEvent,
    ToolStartData,
    ToolStartStreamEvent,
    agent_end_event,
    agent_start_event,
    error_event,
    llm_chunk_event,
    payload_types,
    progress_event,
    stream_event_json_schema,
    thinking_chunk_event,
    tool_end_event,
    tool_start_event,
)

if TYPE_CHECKING:
    from ._core import IdleTimeoutError, RunTimeoutError
    from ._views import (
        EventCallback,
        RunOptions,
        ToolCallUpdate,
        collect_stream_result,
        merge_streams,
        run_stream,
        run_stream_with_tools,
        stream_text,
        stream_tool_calls,
    )
    from .approvals import (
        ApprovalCallback,
        ApprovalConflictError,
        ApprovalDecision,
        ApprovalPolicy,
        approve,
        deny,
        require_approval,
    )
    from .capability import StreamTap, ToolProgressEvent, relay_subagent_events, report_progress

_LAZY = {
    "ApprovalCallback": ".approvals",
    "ApprovalConflictError": ".approvals",
    "ApprovalDecision": ".approvals",
    "ApprovalPolicy": ".approvals",
    "approve": ".approvals",
    "deny": ".approvals",
    "require_approval": ".approvals",
    "EventCallback": "._views",
    "IdleTimeoutError": "._core",
    "RunTimeoutError": "._core",
    "RunOptions": "._views",
    "ToolCallUpdate": "._views",
    "collect_stream_result": "._views",
    "merge_streams": "._views",
    "run_stream": "._views",
    "run_stream_with_tools": "._views",
    "stream_text": "._views",
    "stream_tool_calls": "._views",
    "StreamTap": ".capability",
    "ToolProgressEvent": ".capability",
    "relay_subagent_events": ".capability",
    "report_progress": ".capability",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = (
    "DEFERRED_CALL_ERROR",
    "AgentEndData",
    "AgentEndStreamEvent",
    "AgentStartData",
    "AgentStartStreamEvent",
    "AnyStreamEvent",
    "ApprovalCallback",
    "ApprovalConflictError",
    "ApprovalDecision",
    "ApprovalPolicy",
    "ApprovalRequiredData",
    "ApprovalRequiredStreamEvent",
    "ApprovalResolvedData",
    "ApprovalResolvedStreamEvent",
    "ApprovalState",
    "CallStatus",
    "ErrorData",
    "ErrorStreamEvent",
    "EventCallback",
    "FileChangeData",
    "FileChangeStreamEvent",
    "GuardrailData",
    "GuardrailStreamEvent",
    "IdleTimeoutError",
    "LlmChunkStreamEvent",
    "PlanStep",
    "PlanUpdateData",
    "PlanUpdateStreamEvent",
    "ProgressData",
    "ProgressStreamEvent",
    "RunOptions",
    "RunPhase",
    "RunResumedData",
    "RunResumedStreamEvent",
    "RunState",
    "RunStatus",
    "RunTimeoutError",
    "StreamEvent",
    "StreamEventType",
    "StreamTap",
    "SubagentActivity",
    "SubagentEndData",
    "SubagentEndStreamEvent",
    "SubagentStartData",
    "SubagentStartStreamEvent",
    "TextData",
    "ThinkingChunkStreamEvent",
    "ToolArgsDeltaData",
    "ToolArgsDeltaStreamEvent",
    "ToolCall",
    "ToolCallUpdate",
    "ToolEndData",
    "ToolEndStreamEvent",
    "ToolProgressData",
    "ToolProgressEvent",
    "ToolProgressStreamEvent",
    "ToolStartData",
    "ToolStartStreamEvent",
    "agent_end_event",
    "agent_start_event",
    "approve",
    "collect_stream_result",
    "deny",
    "error_event",
    "llm_chunk_event",
    "merge_streams",
    "payload_types",
    "progress_event",
    "relay_subagent_events",
    "report_progress",
    "require_approval",
    "run_stream",
    "run_stream_with_tools",
    "stream_event_json_schema",
    "stream_text",
    "stream_tool_calls",
    "thinking_chunk_event",
    "tool_end_event",
    "tool_start_event",
)
