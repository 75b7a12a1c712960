"""`/ag-ui` and `/vercel-ai`: runs for AG-UI and Vercel AI SDK clients, on the run log like every other run.

The request is read by Pydantic AI's adapter (`AGUIAdapter`, `VercelAIAdapter`): its messages, the
client's tools and answers to deferred calls. The run starts in the registry, so it is listed, can be
cancelled (`POST /runs/{run_id}/cancel`), outlives its client and is followed by any process; the
response reads the run's log (see `_protocols`). The run's id is in the `X-Run-Id` header.

Resuming: the AI SDK's convention (`useChat({ resume: true })` asks `GET /vercel-ai/{chat_id}/stream`:
the chat's running run from its start, or 204), and for AG-UI, the same `RunAgentInput` sent again
(same `threadId` and `runId`) with `Last-Event-ID: <id of the last frame seen>`: it joins the run it
started instead of starting another.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from pydantic import ValidationError
from pydantic_ai import DeferredToolRequests
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.capabilities import AbstractCapability, ReinjectSystemPrompt
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
from pydantic_ai.ui import UIAdapter, UIEventStream
from pydantic_ai.ui.vercel_ai import VercelAIAdapter

from ._context import Context, Principal, ServerContext, open_log, parse_resume_point
from ._docs import json_errors, protocol_answers
from ._errors import ApiError, FieldError, validation_errors
from ._protocols import LogReplay, VercelAILogStream, agui_log_stream, native_events, protocol_frames
from ._runs import ProtocolRun, RunRecord
from ._sse import EventStreamResponse
from ._wire import RunProtocol

__all__ = ("protocol_run", "rebuild_protocol_run", "router")

router = APIRouter(tags=["protocols"])

_AG_UI_RUNS = uuid.UUID("6f1d5c3e-4a8b-4f57-9d0e-2b7c1a9e8f31")
"""The namespace of the run ids of AG-UI runs: one per principal, thread and client run id."""

_Adapter = TypeVar("_Adapter", bound=UIAdapter[Any, Any, Any, Any, Any])

_AI_SDK_VERSION: Literal[6] = 6
"""The UI message stream of AI SDK 6 (7 speaks the same): with tool approval parts, which an AI SDK 5
client only meets when a call asks for approval."""

_CURSOR = "The id of the last frame received: frames after it are sent (a resumed stream)."


@router.post("/ag-ui", summary="Run the agent for an AG-UI client", responses=protocol_answers("AG-UI events (SSE)."))
async def ag_ui(
    request: Request,
    context: Context,
    principal: Principal,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", description=_CURSOR)] = None,
) -> Response:
    """The AG-UI protocol: the body is a `RunAgentInput`. Sending the same `threadId` and `runId` again
    joins that run (from its start, or after `Last-Event-ID`) instead of starting another."""
    try:
        from pydantic_ai.ui.ag_ui import AGUIAdapter
    except ImportError:
        raise ApiError(
            501, "not_installed", "AG-UI needs the ag-ui-protocol package: install this project's `server` extra"
        ) from None
    after = parse_resume_point(last_event_id, field="Last-Event-ID")
    adapter = await _read(AGUIAdapter[Any, Any], request, context)
    body = await request.body()
    run_input = adapter.run_input
    run_id = str(uuid.uuid5(_AG_UI_RUNS, f"{principal}\n{run_input.thread_id}\n{run_input.run_id}"))
    record = await context.runs.get(run_id)
    if record is None:
        record = await _start(context, adapter, body, principal, "ag-ui", run_input.thread_id, run_id=run_id)
    replay = LogReplay()
    stream = agui_log_stream(
        run_input=run_input,
        replay=replay,
        accept=adapter.accept,
        ag_ui_version=adapter.ag_ui_version,
        manage_system_prompt=adapter.manage_system_prompt,
        preserve_file_data=adapter.preserve_file_data,
        run_key=record.run_id,
        started_at=int(record.created_at.timestamp() * 1000),
    )
    return await _follow(context, record, stream, -1 if after is None else after, replay)


@router.post(
    "/vercel-ai",
    summary="Run the agent for a Vercel AI SDK client",
    responses=protocol_answers("Vercel AI UI message stream (SSE)."),
)
async def vercel_ai(request: Request, context: Context, principal: Principal) -> Response:
    """The Vercel AI SDK's UI message stream protocol (`useChat`, `DefaultChatTransport`)."""
    adapter = await _read(VercelAIAdapter[Any, Any], request, context, sdk_version=_AI_SDK_VERSION)
    last = adapter.run_input.messages[-1] if adapter.run_input.messages else None
    # Answering an approval request, the chat goes on with the assistant message that asked it.
    going_on = last.id if last is not None and last.role == "assistant" else None
    record = await _start(
        context, adapter, await request.body(), principal, "vercel-ai", adapter.run_input.id, message_id=going_on
    )
    return await _follow(context, record, _vercel_stream(adapter, record), -1, LogReplay())


@router.get(
    "/vercel-ai/{chat_id}/stream",
    summary="Resume a Vercel AI SDK chat's running stream",
    responses={
        200: protocol_answers("The chat's running run from its start (or after `Last-Event-ID`).")[200],
        204: {"description": "The chat has no running run: nothing to resume."},
        **json_errors(401, 422),
    },
)
async def vercel_ai_resume(
    chat_id: str,
    context: Context,
    principal: Principal,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", description=_CURSOR)] = None,
) -> Response:
    """Where `useChat({ resume: true })` (the AI SDK's `reconnectToStream`) reconnects after a reload."""
    after = parse_resume_point(last_event_id, field="Last-Event-ID")
    record = await context.runs.latest("vercel-ai", chat_id, principal)
    if record is None or record.status != "running":
        return Response(status_code=204)
    message_id = record.message_id or record.run_id
    stream = VercelAILogStream(sdk_version=_AI_SDK_VERSION, server_message_id=message_id, run_key=record.run_id)
    return await _follow(context, record, stream, -1 if after is None else after, LogReplay())


def _vercel_stream(adapter: VercelAIAdapter[Any, Any], record: RunRecord) -> VercelAILogStream:
    return VercelAILogStream(
        adapter.run_input,
        accept=adapter.accept,
        sdk_version=adapter.sdk_version,
        server_message_id=adapter.server_message_id or record.message_id or record.run_id,
        manage_system_prompt=adapter.manage_system_prompt,
        run_key=record.run_id,
    )


async def _read(adapter_type: type[_Adapter], request: Request, context: ServerContext, **options: Any) -> _Adapter:
    try:
        return await adapter_type.from_request(request, agent=context.agent, **options)
    except ValidationError as exc:
        raise ApiError.invalid(validation_errors(exc.errors())) from None


async def _start(
    context: ServerContext,
    adapter: UIAdapter[Any, Any, Any, Any, Any],
    body: bytes,
    principal: str | None,
    protocol: RunProtocol,
    conversation: str,
    *,
    run_id: str | None = None,
    message_id: str | None = None,
) -> RunRecord:
    """Start the adapter's run in the registry: its messages as history, the client's tools, its answers."""
    via, messages = protocol_run(adapter, protocol, conversation, message_id=message_id, request=body)
    try:
        return await context.runs.start(
            _last_prompt(messages), message_history=messages, principal=principal, run_id=run_id, via=via
        )
    except ValueError:  # the same AG-UI run, started by another request a moment ago: join it
        assert run_id is not None
        return await context.runs.require(run_id, principal)


def protocol_run(
    adapter: UIAdapter[Any, Any, Any, Any, Any],
    protocol: RunProtocol,
    conversation: str,
    *,
    message_id: str | None,
    request: bytes | None = None,
) -> tuple[ProtocolRun, list[ModelMessage]]:
    """What a protocol request's run is: the client's tools and answers, and its messages as the history."""
    try:
        deferred = adapter.deferred_tool_results
    except UserError as exc:  # an AG-UI `resume` payload that is not an answer
        raise ApiError.invalid([FieldError(field="resume", message=str(exc))]) from None
    messages = adapter.sanitize_messages(adapter.messages, deferred_tool_results=deferred)
    if not messages:
        raise ApiError.invalid(
            [FieldError(field="messages", message="must hold the conversation, ending with the user's message")]
        )
    capabilities: list[AbstractCapability[Any]] = []
    if adapter.manage_system_prompt == "server":  # the client's system prompts were dropped: the agent's own go in
        capabilities.append(ReinjectSystemPrompt(replace_existing=True, id=None))
    toolset = adapter.toolset
    via = ProtocolRun(
        protocol=protocol,
        conversation=conversation,
        toolsets=[toolset] if toolset is not None else (),
        capabilities=capabilities,
        # Calls for the client's tools, and calls that need approval, end the run the protocol's way: the
        # client answers them (tool results, approval responses, AG-UI `resume`) in its next request.
        output_type=[adapter.agent.output_type, DeferredToolRequests],
        deferred_tool_results=deferred,
        message_id=message_id,
        request=request,
        accept=adapter.accept,
    )
    return via, messages


def rebuild_protocol_run(
    agent: AbstractAgent[Any, Any], protocol: RunProtocol, request: bytes, *, conversation: str, message_id: str | None
) -> ProtocolRun:
    """A protocol run again from its request (another process goes on with a durable run)."""
    adapter: UIAdapter[Any, Any, Any, Any, Any]
    if protocol == "ag-ui":
        from pydantic_ai.ui.ag_ui import AGUIAdapter

        adapter = AGUIAdapter[Any, Any](agent=agent, run_input=AGUIAdapter.build_run_input(request))
    else:
        run_input = VercelAIAdapter.build_run_input(request)
        adapter = VercelAIAdapter[Any, Any](agent=agent, run_input=run_input, sdk_version=_AI_SDK_VERSION)
    via, _ = protocol_run(adapter, protocol, conversation, message_id=message_id, request=request)
    return via


def _last_prompt(messages: list[ModelMessage]) -> str:
    """The text of the last user message: what `GET /runs` shows as the run's prompt."""
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in reversed(message.parts):
                if isinstance(part, UserPromptPart):
                    return (
                        part.content
                        if isinstance(part.content, str)
                        else " ".join(item for item in part.content if isinstance(item, str))
                    )
    return ""


async def _follow(
    context: ServerContext, record: RunRecord, stream: UIEventStream[Any, Any, Any, Any], after: int, replay: LogReplay
) -> Response:
    """The run's log from its start as the protocol's frames (those after `after`), live until its end."""
    first = await open_log(context.bus, record.run_id, -1)
    if first is None:
        return Response(status_code=204)
    native = native_events(context.batches(record.run_id, -1, first), replay)
    headers = {**(stream.response_headers or {}), "x-run-id": record.run_id}
    return EventStreamResponse(protocol_frames(stream, native, after), headers=headers, stop=context.stopping)
