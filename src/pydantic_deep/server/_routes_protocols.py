"""`/ag-ui` and `/vercel-ai`: the agent for AG-UI and Vercel AI SDK clients, through Pydantic AI's adapters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from pydantic_ai.ui import UIAdapter
from starlette.types import Receive, Scope, Send

from ._context import Context, ServerContext
from ._docs import protocol_answers
from ._errors import ApiError, validation_errors

__all__ = ("router",)

router = APIRouter(tags=["protocols"])


@router.post("/ag-ui", summary="Run the agent for an AG-UI client", responses=protocol_answers("AG-UI events (SSE)."))
async def ag_ui(request: Request, context: Context) -> Response:
    """The AG-UI protocol through Pydantic AI's `AGUIAdapter`: the body is a `RunAgentInput`."""
    try:
        from pydantic_ai.ui.ag_ui import AGUIAdapter
    except ImportError:
        raise ApiError(
            501, "not_installed", "AG-UI needs the ag-ui-protocol package: install this project's `server` extra"
        ) from None
    return await _protocol_response(AGUIAdapter[Any, Any], request, context)


@router.post(
    "/vercel-ai",
    summary="Run the agent for a Vercel AI SDK client",
    responses=protocol_answers("Vercel AI UI message stream (SSE)."),
)
async def vercel_ai(request: Request, context: Context) -> Response:
    """The Vercel AI SDK data stream protocol through Pydantic AI's `VercelAIAdapter` (`useChat`)."""
    from pydantic_ai.ui.vercel_ai import VercelAIAdapter

    return await _protocol_response(VercelAIAdapter[Any, Any], request, context)


async def _protocol_response(
    adapter_type: type[UIAdapter[Any, Any, Any, Any, Any]], request: Request, context: ServerContext
) -> Response:
    """Run the agent for a UI protocol's request, counted against the run limit until its response ends."""
    try:
        adapter = await adapter_type.from_request(request, agent=context.agent)
    except ValidationError as exc:
        raise ApiError.invalid(validation_errors(exc.errors())) from None
    release = context.runs.acquire_slot()
    try:
        response = adapter.streaming_response(adapter.run_stream(deps=context.deps()))
    except BaseException:
        release()
        raise
    return _Releasing(response, release)


class _Releasing(Response):
    """Sends `inner` as it is and then frees its run slot, however the response ends."""

    def __init__(self, inner: Response, release: Callable[[], None]) -> None:
        super().__init__(status_code=inner.status_code)
        self.raw_headers = inner.raw_headers
        self.inner = inner
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.inner(scope, receive, send)
        finally:
            self.release()
