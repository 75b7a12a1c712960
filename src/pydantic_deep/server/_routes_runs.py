"""`/runs`: start, list, inspect and cancel runs, and follow a run's events over SSE or WebSocket."""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, WebSocket
from fastapi.responses import Response
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter, sanitize_messages
from pydantic_ai.models import Model
from starlette.websockets import WebSocketDisconnect

from ..budget import Budget
from ..bus import EventBatch, UnknownRunError
from ..models import ModelConfigError, resolve_model
from ..streaming.approvals import ApprovalConflictError, ApprovalDecision
from ._context import Context, Principal, ServerContext, open_log, parse_resume_point, require_visible
from ._docs import SSE_ANSWERS, json_errors
from ._errors import ApiError, FieldError
from ._runs import RunRecord
from ._sse import EventStreamResponse
from ._wire import ApprovalAnswer, RunCreated, RunInfo, RunList, RunRequest

__all__ = ("router",)

logger = logging.getLogger("pydantic_deep.server")

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post(
    "",
    status_code=201,
    response_model=RunCreated,
    summary="Start a run",
    responses=json_errors(401, 404, 409, 413, 422, 429, 503),
)
async def start_run(body: RunRequest, response: Response, context: Context, principal: Principal) -> RunCreated:
    """Start a run that executes whether or not anyone watches; follow it at `/runs/{run_id}/events`."""
    context.check_prompt(body.prompt)
    history = _parse_history(body.message_history)
    earlier = None
    if body.continue_from is not None:
        if history is not None:
            message = "give message_history or continue_from, not both"
            raise ApiError.invalid([FieldError(field="continue_from", message=message)])
        earlier = await context.runs.require(body.continue_from, principal)
        history = ModelMessagesTypeAdapter.validate_python(json.loads(await _conversation(context, earlier)))
    run_model = _pick_model(body.model)
    budget = Budget(**body.budget.model_dump()) if body.budget is not None else None
    record = await context.runs.start(
        body.prompt,
        message_history=history,
        model=run_model,
        model_name=body.model,
        principal=principal,
        continue_from=earlier,
        require_approval=body.require_approval or (),
        budget=budget,
    )
    response.headers["Location"] = f"/runs/{record.run_id}"
    return RunCreated(run_id=record.run_id)


@router.get("", response_model=RunList, summary="List recent runs", responses=json_errors(401))
async def list_runs(context: Context, principal: Principal) -> RunList:
    """The runs the server still holds (running ones and finished ones within retention), newest first.

    With users (`--tokens-file`), each sees the runs they started; `admin` sees all.
    """
    runs = await context.runs.list(principal)
    return RunList(runs=[r.summary() if isinstance(r, RunRecord) else r for r in runs])


@router.get("/{run_id}", response_model=RunInfo, summary="A run's status", responses=json_errors(401, 404))
async def get_run(run_id: str, context: Context, principal: Principal) -> RunInfo:
    """Status (`running`, `succeeded`, `failed`, `cancelled`), timestamps, usage so far, output when done."""
    return (await context.runs.require(run_id, principal)).info()


@router.get(
    "/{run_id}/messages",
    response_model=list[ModelMessage],
    summary="A finished run's conversation",
    responses=json_errors(401, 404, 409),
)
async def run_messages(run_id: str, context: Context, principal: Principal) -> Response:
    """The run's messages as it ended, in Pydantic AI's JSON (`ModelMessagesTypeAdapter`): send them back as
    `message_history`, or start the next turn with `continue_from`."""
    record = await context.runs.require(run_id, principal)
    return Response(await _conversation(context, record), media_type="application/json")


async def _conversation(context: ServerContext, record: RunRecord) -> str:
    """The run's messages (JSON), or 409 while it runs or when it ended without a conversation."""
    messages = await context.runs.messages(record)
    if messages is None:
        reason = "it is still running" if record.status == "running" else "it ended before it had one"
        message = f"run {record.run_id!r} has no conversation yet: {reason}"
        raise ApiError(409, "no_conversation", message, field="run_id")
    return messages


@router.post(
    "/{run_id}/cancel",
    status_code=202,
    response_model=RunInfo,
    summary="Cancel a run",
    responses=json_errors(401, 404),
)
async def cancel_run(run_id: str, context: Context, principal: Principal) -> RunInfo:
    """Ask a running run to stop: its stream ends with `agent_end` whose status is `cancelled`.

    Cancelling a finished run changes nothing and answers with its status.
    """
    return (await context.runs.cancel(run_id, principal)).info()


@router.post(
    "/{run_id}/approvals",
    status_code=202,
    response_model=RunInfo,
    summary="Decide a call that waits for approval",
    responses=json_errors(401, 404, 409, 422),
)
async def answer_approval(run_id: str, body: ApprovalAnswer, context: Context, principal: Principal) -> RunInfo:
    """Approve (optionally with other `args`) or deny a call the run waits on (`pending_approvals`).

    Works on any server process of a fleet; the run's stream goes on with `approval_resolved`. Sending
    the same decision again changes nothing; a different one for a decided call is a 409.
    """
    if body.args is not None and not body.approved:
        raise ApiError.invalid([FieldError(field="args", message="only an approved call runs with other arguments")])
    decision = ApprovalDecision(body.approved, reason=body.reason, args=body.args, decided_by=principal)
    try:
        record = await context.runs.answer(run_id, principal, body.tool_call_id, decision)
    except ApprovalConflictError as exc:
        raise ApiError(409, "approval_conflict", str(exc), field="approved") from None
    except UnknownRunError:
        raise
    except KeyError:
        message = f"run {run_id!r} has no call {body.tool_call_id!r} that waits for approval"
        raise ApiError(404, "no_such_approval", message, field="tool_call_id") from None
    except ValueError as exc:
        raise ApiError(409, "run_ended", str(exc), field="run_id") from None
    return record.info()


@router.get(
    "/{run_id}/events",
    response_model=None,
    summary="Stream a run's events (SSE)",
    responses={**SSE_ANSWERS, **json_errors(401, 404, 422)},
)
async def run_events(
    run_id: str,
    context: Context,
    principal: Principal,
    last_event_id: Annotated[
        int | None, Query(ge=-1, description="Resume after this `seq` (the `Last-Event-ID` header wins).")
    ] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)] = None,
) -> Response:
    """Every event with `seq` greater than the resume point, then live ones, until `agent_end`."""
    after = parse_resume_point(last_event_id_header, field="Last-Event-ID")
    after = after if after is not None else (-1 if last_event_id is None else last_event_id)
    await require_visible(context, run_id, principal)
    first = await open_log(context.bus, run_id, after)
    if first is None:
        return Response(status_code=204)
    return EventStreamResponse(context.sse(run_id, after, first, _event_frames), stop=context.stopping)


def _event_frames(batch: EventBatch) -> bytes:
    return b"".join(batch.sse_frames())


@router.websocket("/{run_id}/ws")
async def run_websocket(websocket: WebSocket, run_id: str, context: Context, principal: Principal) -> None:
    """The same events as JSON text frames; resume with `?last_event_id=N`."""
    params = websocket.query_params
    await websocket.accept(subprotocol=context.check.subprotocol(websocket.scope.get("subprotocols") or []))
    if principal is None:
        await websocket.close(
            4401, "unauthorized: send Authorization: Bearer <token>, the subprotocol bearer.<token> or ?token=<token>"
        )
        return
    try:
        after = parse_resume_point(params.get("last_event_id"), field="last_event_id")
        await require_visible(context, run_id, principal)
        first = await open_log(context.bus, run_id, -1 if after is None else after)
    except ApiError as exc:
        await websocket.close(4000 + exc.status_code, exc.message[:120])
        return
    except UnknownRunError:
        await websocket.close(4404, f"no run {run_id!r}"[:120])
        return
    await _first_of(
        _pump(websocket, context, run_id, -1 if after is None else after, first),
        _drain(websocket),
        _stopped(websocket, context),
    )


async def _pump(
    websocket: WebSocket, context: ServerContext, run_id: str, after: int, first: EventBatch | None
) -> None:
    if first is not None:
        async for batch in context.batches(run_id, after, first):
            for line in batch.lines:
                await websocket.send_text(line)
    await websocket.close(1000)


async def _stopped(websocket: WebSocket, context: ServerContext) -> None:
    """The server shuts down: close with 1012 (service restart), so the client reconnects elsewhere and resumes."""
    await context.stopping.wait()
    await websocket.close(1012, "server restarting: reconnect and resume with last_event_id")


async def _drain(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _first_of(*coros: Any) -> None:
    """Run coroutines until the first finishes, cancel the rest; a client that went away is not an error."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, WebSocketDisconnect | OSError | RuntimeError):
            raise result


def _parse_history(messages: list[ModelMessage] | None) -> list[ModelMessage] | None:
    if messages is None:
        return None
    # History from a client is untrusted: drop system prompts and the like, as Pydantic AI's UI adapters do.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages = sanitize_messages(messages)
    for warning in caught:
        logger.info("message_history sanitised: %s", warning.message)
    return messages


def _pick_model(name: str | None) -> Model | None:
    if name is None:
        return None
    try:
        return resolve_model(name)
    except ModelConfigError as exc:
        raise ApiError.invalid([FieldError(field="model", message=str(exc))]) from None
