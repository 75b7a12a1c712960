"""Every error the server sends is one JSON shape: `{"error": {"code", "message", "field"?, "errors"?}}`.

Exceptions:

    ApiError                       an error the client can act on (its status, code and message are sent)
    TooManyRuns (from _runs)       the registry is at its concurrency limit: sent as 429 with Retry-After
    ServerDraining (from _runs)    the server is shutting down: sent as 503 with Retry-After
    BusUnavailableError (bus)      Redis cannot be reached: sent as 503 with Retry-After
    UnknownRunError (from bus)     no such run in the registry or on the bus: sent as 404 `run_not_found`
    RequestValidationError         FastAPI's, for bad bodies and query parameters: sent as 422 naming the field
    starlette HTTPException        unknown routes (404), wrong methods (405), media types (415): sent as is
    any other Exception            sent as 500 "internal error"; the traceback goes to the log, never the client
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from ..bus import BusUnavailableError, UnknownRunError
from ._runs import ServerDraining, TooManyRuns

__all__ = ("ApiError", "ErrorBody", "ErrorDetail", "FieldError", "error_response", "install_error_handlers")

logger = logging.getLogger("pydantic_deep.server")


class FieldError(BaseModel):
    """One problem with one field of the request."""

    field: str
    message: str


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str
    """A stable machine-readable name: `invalid_request`, `prompt_too_long`, `run_not_found`, ..."""
    message: str
    field: str | None = None
    """The request field at fault (dotted for nested ones), when one is."""
    errors: list[FieldError] | None = None
    """Every field problem, for `invalid_request`."""


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class ApiError(Exception):
    """An error response the client caused or can act on."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        errors: list[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field
        self.errors = errors
        self.headers = dict(headers or {})

    @classmethod
    def invalid(cls, errors: list[FieldError]) -> ApiError:
        """422 naming the first field at fault, with every problem in `errors`."""
        first = errors[0] if errors else FieldError(field="body", message="invalid request")
        return cls(
            422, "invalid_request", f"{first.field}: {first.message}", field=first.field, errors=errors or [first]
        )


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field, errors=errors))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status_code, headers=dict(headers or {}))


def field_name(loc: Sequence[Any]) -> str:
    """`("body", "message_history", 0, "parts")` → `"message_history.0.parts"`; the body itself is `"body"`."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or ["body" if loc[0] == "body" else str(loc[0])]
    return ".".join(parts) or "body"


def validation_errors(errors: Sequence[Any], *, prefix: Sequence[Any] = ()) -> list[FieldError]:
    """Pydantic-style error dicts as `FieldError`s; the client's input is never echoed back."""
    out: list[FieldError] = []
    for error in errors:
        loc = [*prefix, *error.get("loc", ())]
        kind = error.get("type", "")
        if kind == "json_invalid":
            message = "malformed JSON: " + str(error.get("ctx", {}).get("error", "cannot parse the body"))
            out.append(FieldError(field="body", message=message))
        elif list(loc) == ["body"] and kind in ("missing", "model_attributes_type", "dict_type"):
            message = "a JSON object is required (sent with Content-Type: application/json)"
            out.append(FieldError(field="body", message=message))
        else:
            out.append(FieldError(field=field_name(loc), message=str(error.get("msg", "invalid value"))))
    return out


def _allowed_methods(request: Request, routes: Sequence[BaseRoute]) -> list[str]:
    """Every method some route takes on the request's path."""
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI, routes: Sequence[BaseRoute] = ()) -> None:
    """Render every failure as an `ErrorBody`, with no stack trace in any response.

    `routes` (the app's own, as declared) give a 405's `Allow` header every method of the path.
    """

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(
            exc.status_code, exc.code, exc.message, field=exc.field, errors=exc.errors, headers=exc.headers
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return await on_api_error(request, ApiError.invalid(validation_errors(exc.errors())))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type"}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the methods of the first route on the path only
            headers["Allow"] = ", ".join(_allowed_methods(request, routes))
        return error_response(
            exc.status_code, code.get(exc.status_code, "http_error"), str(exc.detail), headers=headers
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal server error; the server log has the details")

    async def on_too_many_runs(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TooManyRuns)
        return error_response(429, "too_many_runs", str(exc), headers={"Retry-After": str(exc.retry_after)})

    app.add_exception_handler(ApiError, on_api_error)

    async def on_unknown_run(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, UnknownRunError)
        message = f"no run {exc.run_id!r}: it never existed or was dropped"
        return error_response(404, "run_not_found", message, field="run_id")

    async def on_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, ServerDraining):
            return error_response(503, "shutting_down", str(exc), headers={"Retry-After": "1"})
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
        message = "the event bus (Redis) is unavailable; try again shortly"
        return error_response(503, "bus_unavailable", message, headers={"Retry-After": "2"})

    app.add_exception_handler(ServerDraining, on_unavailable)
    app.add_exception_handler(BusUnavailableError, on_unavailable)
    app.add_exception_handler(TooManyRuns, on_too_many_runs)
    app.add_exception_handler(UnknownRunError, on_unknown_run)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
