"""What the OpenAPI document says about answers the routes' signatures cannot tell FastAPI."""

from __future__ import annotations

from typing import Any

from ._errors import ErrorBody

__all__ = ("SSE_ANSWERS", "door_answers", "json_errors", "protocol_answers")

_DESCRIPTIONS = {
    401: "A token is configured and the request did not carry it.",
    403: "Sent from a web page on an origin this server does not allow (`--cors-origin`).",
    404: "No such run (never started, or dropped after the retention time).",
    409: "The run has no conversation to give yet: it is still running, or ended before it had one.",
    413: "The prompt or the request body is over the limit.",
    415: "The body is not sent as `Content-Type: application/json`.",
    421: "Addressed to a host name this server does not answer to (`--allowed-host`).",
    422: "Malformed JSON, or a missing, empty or invalid field (named in `error.field`).",
    429: "Too many runs in progress; `Retry-After` says when to try again.",
    503: "The server is shutting down, or its event bus (Redis) is unreachable; retry after `Retry-After`.",
}


def json_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route can give, each with the `ErrorBody` schema."""
    return {status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses}


SSE_EVENT: dict[str, Any] = {
    "description": "One Server-Sent Event, as an `EventSource` dispatches it (OpenAPI 3.2's `itemSchema`).",
    "type": "object",
    "required": ["data"],
    "properties": {
        "id": {"type": "string"},
        "event": {"type": "string"},
        "data": {"type": "string"},
        "retry": {"type": "integer"},
    },
}

SSE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events, one per line group: `id: <seq>`, `event: <event_type>` "
        "(`run_error` for `error`, which browsers would take for a connection failure), "
        "`data: <StreamEvent JSON>`; `: keep-alive` comments while idle. Ends after `agent_end`.",
        "content": {"text/event-stream": {"itemSchema": SSE_EVENT}},
    },
    204: {"description": "The run has finished and the client has already seen its last event."},
}


def protocol_answers(description: str) -> dict[int | str, dict[str, Any]]:
    """A UI protocol endpoint's answers: its own event stream, or one of our errors."""
    return {
        200: {"description": description, "content": {"text/event-stream": {"itemSchema": SSE_EVENT}}},
        **json_errors(401, 413, 415, 422, 429, 503),
    }


def door_answers(path: str, method: str) -> dict[str, dict[str, Any]]:
    """The answers every route can get from the doors (`_guard.Doors`): 421 for a foreign `Host`, and 403
    for a foreign origin on requests that change something (and `GET /chat`, which starts a run)."""
    statuses = [421]
    if method.upper() not in ("GET", "HEAD", "OPTIONS") or path == "/chat":
        statuses.append(403)
    return {
        str(status): {
            "description": _DESCRIPTIONS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        for status in statuses
    }
