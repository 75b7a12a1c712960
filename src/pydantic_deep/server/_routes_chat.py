"""`GET /chat`: the streaming guide's SSE example done right, for `new EventSource("/chat?prompt=...")`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response

from ..bus import SSE_ERROR_EVENT, EventBatch
from ..streaming import AnyStreamEvent, StreamEventType
from ._context import Context, Principal, json_text, open_log, parse_resume_point, require_visible
from ._docs import SSE_ANSWERS, json_errors
from ._errors import ApiError, FieldError
from ._sse import EventStreamResponse, is_last, sse_frame

__all__ = ("router",)

router = APIRouter(tags=["chat"])


@router.get(
    "/chat",
    response_model=None,
    summary="Start a run and stream its answer text (SSE)",
    responses={**SSE_ANSWERS, **json_errors(401, 404, 413, 422, 429, 503)},
)
async def chat(
    context: Context,
    principal: Principal,
    prompt: Annotated[
        str,
        Query(
            description="The user prompt; not empty, at most the server's limit.",
            json_schema_extra={"minLength": 1, "pattern": "\\S"},
        ),
    ],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)] = None,
) -> Response:
    """A text-only stream for `new EventSource("/chat?prompt=...")`.

    Messages: `event: run` with `{"run_id"}` first; then the answer as plain `message` events whose data is
    a JSON string (so newlines survive); `event: run_error` with `{"error", "exception_type"}` if the run fails
    (not `error`, which would fire the browser's `onerror`);
    and last `event: done` with `{"run_id", "success", "status", "output"}`. Every message's id is
    `<run_id>:<seq>`, so when the browser reconnects with `Last-Event-ID` the same run resumes instead of a
    new one starting, and once it has finished the answer is 204, which tells `EventSource` to stop.
    """
    if last_event_id is not None and last_event_id.strip():
        run_id, _, seq = last_event_id.strip().rpartition(":")
        after = parse_resume_point(seq, field="Last-Event-ID") if run_id else None
        if after is None:
            message = "must be an id this endpoint sent (<run_id>:<seq>)"
            raise ApiError.invalid([FieldError(field="Last-Event-ID", message=message)])
        await require_visible(context, run_id, principal)
        first = await open_log(context.bus, run_id, after)
        if first is None:
            return Response(status_code=204)
        announce = b""
    else:
        context.check_prompt(prompt)
        record = await context.runs.start(prompt, principal=principal)
        run_id, after = record.run_id, -1
        first = await open_log(context.bus, run_id, after) or EventBatch()
        announce = sse_frame(json_text({"run_id": run_id}), event="run", id=f"{run_id}:-1")

    def frames(batch: EventBatch) -> bytes:
        return b"".join(_chat_frame(run_id, event) for event in batch.events)

    async def body() -> AsyncIterator[bytes]:
        if announce:
            yield announce
        async for chunk in context.sse(run_id, after, first, frames):
            yield chunk

    return EventStreamResponse(body(), stop=context.stopping)


def _chat_frame(run_id: str, event: AnyStreamEvent) -> bytes:
    event_id = f"{run_id}:{event.seq}"
    if event.depth != 0:
        return b""
    match event.event_type:
        case StreamEventType.LLM_CHUNK:
            return sse_frame(json_text(event.data["text"]), id=event_id)
        case StreamEventType.ERROR:
            return sse_frame(json_text(event.data), event=SSE_ERROR_EVENT, id=event_id)
        case StreamEventType.AGENT_END if is_last(event):
            data = event.data
            done = {"run_id": run_id, "success": data["success"], "status": data["status"], "output": data["output"]}
            return sse_frame(json_text(done), event="done", id=event_id)
        case _:
            return b""
