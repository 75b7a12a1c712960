"""The JSON bodies the server reads and writes (pydantic models: these are the wire, and the OpenAPI schema)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, Field, field_validator
from pydantic_ai.messages import ModelMessage
from pydantic_core import PydanticCustomError

__all__ = (
    "ADMIN",
    "RunCreated",
    "RunInfo",
    "RunList",
    "RunProtocol",
    "RunRequest",
    "RunStatusName",
    "RunSummary",
    "RunUsageInfo",
)

_SURROGATE = re.compile("[\ud800-\udfff]")

ADMIN = "admin"
"""The principal that sees every run: the holder of the single `token`, a tokens-file entry named so, or
everyone when no authentication is configured (a server on this machine only)."""

RunStatusName = Literal["running", "succeeded", "failed", "cancelled"]

RunInfoStatus = Literal["running", "awaiting_approval", "succeeded", "failed", "cancelled"]
"""A run's status as `GET /runs/{run_id}` gives it: `awaiting_approval` while a call waits for a decision."""

RunProtocol = Literal["runs", "ag-ui", "vercel-ai"]
"""How a run was started: `POST /runs` (or `/chat`), `POST /ag-ui`, or `POST /vercel-ai`."""

_PROTOCOL = "How it was started: `runs` (`POST /runs`, `/chat`), `ag-ui` or `vercel-ai`."
_CONVERSATION = "The chat (Vercel AI `id`) or thread (AG-UI `threadId`) a protocol run belongs to."


class BudgetRequest(BaseModel):
    """A run's budget (`pydantic_deep.Budget`): past `warn_at` of a limit a `guardrail` warning, at it the run stops."""

    max_tokens: int | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_steps: int | None = Field(default=None, gt=0, description="Model requests.")
    max_seconds: float | None = Field(default=None, gt=0)
    warn_at: float | None = Field(default=0.8, gt=0, le=1)


class ApprovalAnswer(BaseModel):
    """`POST /runs/{run_id}/approvals`: the decision on a call that waits."""

    tool_call_id: str = Field(min_length=1)
    approved: bool
    reason: str | None = Field(default=None, description="Why; a denied call's `tool_end` error.")
    args: dict[str, Any] | None = Field(default=None, description="Run the approved call with these arguments.")

    @field_validator("tool_call_id", "reason", "args", mode="before")
    @classmethod
    def _valid_text(cls, value: Any) -> Any:
        require_valid_text(value)
        return value


class PendingApproval(BaseModel):
    """A call that waits for a decision."""

    tool_call_id: str
    tool_name: str
    args: dict[str, Any]
    reason: str | None = None
    run_id: str = Field(description="The run that made the call: this one, or a sub-agent's.")
    depth: int = 0


class RunRequest(BaseModel):
    """`POST /runs`: what to run."""

    prompt: str = Field(
        description="The user prompt; not empty, at most the server's limit (100,000 characters).",
        json_schema_extra={"minLength": 1, "pattern": "\\S"},
    )
    message_history: list[ModelMessage] | None = Field(
        default=None,
        description=(
            "Earlier messages of the conversation, as Pydantic AI's messages JSON "
            "(`ModelMessagesTypeAdapter.dump_json(result.all_messages())`). System prompts in it are ignored."
        ),
    )
    model: str | None = Field(
        default=None,
        description="A model for this run only, e.g. `openai:gpt-4o` or `demo`; the server's model when omitted.",
    )
    continue_from: str | None = Field(
        default=None,
        description=(
            "A finished run to continue: its conversation (`GET /runs/{run_id}/messages`) comes before this "
            "prompt. Not with `message_history`."
        ),
    )

    require_approval: list[str] | None = Field(
        default=None,
        description="Tools whose calls wait for a decision (`POST /runs/{run_id}/approvals`) in this run.",
    )
    budget: BudgetRequest | None = Field(default=None, description="Limits for this run.")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("empty_prompt", "must not be empty")
        return value

    @field_validator("prompt", "message_history", "model", "continue_from", mode="before")
    @classmethod
    def _valid_text(cls, value: Any) -> Any:
        require_valid_text(value)
        return value


def require_valid_text(value: Any) -> None:
    """Refuse text that cannot be encoded as UTF-8 (JSON's `\\ud800` escapes decode to lone surrogates).

    Such text could be read but never written back: every answer that echoed it would fail.
    """
    where = _invalid_text_at(value)
    if where is not None:
        inside = f" (at {where})" if where else ""
        raise PydanticCustomError(
            "invalid_text", "contains text that is not valid Unicode (a lone surrogate){inside}", {"inside": inside}
        )


def _invalid_text_at(value: Any, path: str = "") -> str | None:
    if isinstance(value, str):
        return None if value.isascii() or not _SURROGATE.search(value) else path
    if isinstance(value, dict):
        for key, item in cast("dict[Any, Any]", value).items():
            found = _invalid_text_at(key, path) if isinstance(key, str) else None
            found = found if found is not None else _invalid_text_at(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(cast("list[Any]", value)):
            found = _invalid_text_at(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


class RunCreated(BaseModel):
    """`POST /runs` → 201."""

    run_id: str


class RunUsageInfo(BaseModel):
    """Usage so far (cumulative for the run), from its latest `progress` and `agent_end` events."""

    iterations: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    tool_calls: int = 0
    total_cost_usd: float | None = None


class RunSummary(BaseModel):
    """One entry of `GET /runs`."""

    run_id: str
    status: RunStatusName
    prompt: str = Field(description="The prompt, cut to 200 characters.")
    model: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    protocol: RunProtocol = Field(default="runs", description=_PROTOCOL)
    conversation: str | None = Field(default=None, description=_CONVERSATION)


class RunList(BaseModel):
    """`GET /runs`: the runs the server still holds, newest first."""

    runs: list[RunSummary]


class RunInfo(BaseModel):
    """`GET /runs/{run_id}`: where a run stands."""

    run_id: str
    status: RunInfoStatus
    prompt: str
    model: str | None = None
    created_at: datetime
    last_event_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    events: int = Field(description="How many events the run has produced so far.")
    last_seq: int | None = Field(description="The `seq` of its latest event (`null` before the first).")
    usage: RunUsageInfo
    output: Any = Field(default=None, description="The final output once the run succeeded.")
    error: str | None = Field(default=None, description="What ended a failed run.")
    cancel_requested: bool = False
    protocol: RunProtocol = Field(default="runs", description=_PROTOCOL)
    conversation: str | None = Field(default=None, description=_CONVERSATION)
    pending_approvals: list[PendingApproval] = Field(
        default_factory=list[PendingApproval], description="Calls that wait for a decision now."
    )
    budget: BudgetRequest | None = Field(
        default=None, description="The budget the run was started with (the request's); `null` for none."
    )
