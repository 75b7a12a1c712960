"""Tool approvals: which calls wait for a person, and how a stream's consumer answers them.

Built on Pydantic AI's deferred tools. A policy (`require_approval(...)`, a harness `ToolGuardrail`)
raises `ApprovalRequired` for the calls it picks; the call's `tool_start` is followed by an
`approval_required` event, and the run waits (in the tool step: no model request is open) until the
call is decided. `StreamTap`, the capability every streamed run (and its sub-agents) has, answers
Pydantic AI's deferred-call hook with the decision from the stream's `ApprovalBroker`:

- from the consumer, inside its own loop: `approve(event)`, `approve(event, args={...})` (run it with
  other arguments), `deny(event, "why")`;
- from `on_approval=`, a callback (sync or async) that gets the `approval_required` event and returns
  `True`, `False` or an `ApprovalDecision`;
- from `approval_timeout=` seconds without a decision: the call is denied.

An `approval_resolved` event then says what was decided and by whom; a denied call ends with
`tool_end` whose `error` is the denial, and the run goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import RunContext, ToolApproved, ToolDenied
from pydantic_ai.exceptions import ApprovalRequired
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults
from pydantic_ai_harness.guardrails import GuardrailResult, ToolCallInfo, ToolGuardrail

from .types import AnyStreamEvent, ApprovalRequiredStreamEvent, StreamEventType

__all__ = (
    "ApprovalCallback",
    "ApprovalConflictError",
    "ApprovalDecision",
    "ApprovalPolicy",
    "approve",
    "decide_in_stream",
    "deny",
    "require_approval",
)

logger = logging.getLogger("pydantic_deep.streaming")


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """What was decided about a call that waits: run it (with `args` instead, when given) or not."""

    approved: bool
    reason: str | None = None
    args: dict[str, Any] | None = None
    """Arguments to run the call with instead of the model's (approve only)."""
    decided_by: str | None = None

    def __post_init__(self) -> None:
        if self.args is not None and not self.approved:
            raise ValueError("args edit an approved call; a denied call does not run")


ApprovalCallback = Callable[
    [ApprovalRequiredStreamEvent], "bool | ApprovalDecision | Awaitable[bool | ApprovalDecision]"
]
"""`on_approval=`: gets each `approval_required` event, returns the decision (sync or async)."""

ApprovalPolicy = Collection[str] | Callable[[str, Mapping[str, Any]], bool | str | None]
"""Tool names, or a function of the call's name and arguments: true (or a reason) means ask first."""


class ApprovalConflictError(ValueError):
    """The call was already decided the other way (or with other arguments)."""


@dataclass
class ApprovalBroker:
    """One stream's calls that wait for a decision, and the decisions given (each call decided once)."""

    callback: ApprovalCallback | None = None
    timeout: float | None = None
    on_wait: Callable[[bool], None] | None = None
    """Told `True` when a call starts waiting and `False` when no call waits any more (idle timeouts pause)."""
    pending: dict[str, ApprovalRequiredStreamEvent] = field(default_factory=dict[str, ApprovalRequiredStreamEvent])
    decisions: dict[str, ApprovalDecision] = field(default_factory=dict[str, ApprovalDecision])
    _waiters: dict[str, asyncio.Future[ApprovalDecision]] = field(
        default_factory=dict[str, "asyncio.Future[ApprovalDecision]"]
    )

    def expect(self, event: ApprovalRequiredStreamEvent) -> None:
        """A call now waits (its `approval_required` event is on its way to the consumer)."""
        self.pending[event.data["tool_call_id"]] = event
        _OPEN[(event.run_id, event.data["tool_call_id"])] = self

    def answer(self, tool_call_id: str, decision: ApprovalDecision) -> ApprovalDecision:
        """Decide a waiting call. The same decision again is a no-op; a different one is `ApprovalConflictError`.

        Returns the decision in force. `KeyError` when no such call waits or was decided here.
        """
        given = self.decisions.get(tool_call_id)
        if given is not None:
            if (given.approved, given.args) != (decision.approved, decision.args):
                raise ApprovalConflictError(
                    f"the call {tool_call_id!r} was already {'approved' if given.approved else 'denied'}"
                )
            return given
        if tool_call_id not in self.pending:
            raise KeyError(f"no call {tool_call_id!r} waits for approval")
        self.decisions[tool_call_id] = decision
        waiter = self._waiters.get(tool_call_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(decision)
        return decision

    def resolved(self, tool_call_id: str) -> ApprovalDecision | None:
        """The call's decision, once its `approval_resolved` event is made: it no longer waits."""
        event = self.pending.pop(tool_call_id, None)
        if event is not None:
            _OPEN.pop((event.run_id, tool_call_id), None)
        return self.decisions.get(tool_call_id)

    async def decide(self, tool_call_id: str) -> ApprovalDecision:
        """Wait for the call's decision: given already, from the callback, by the consumer, or the timeout's."""
        if tool_call_id in self.decisions:
            return self.decisions[tool_call_id]
        waiter: asyncio.Future[ApprovalDecision] = asyncio.get_running_loop().create_future()
        self._waiters[tool_call_id] = waiter
        asking = None
        event = self.pending.get(tool_call_id)
        if self.callback is not None and event is not None:
            asking = asyncio.ensure_future(self._ask(event))
        self._waiting(+1)
        try:
            async with asyncio.timeout(self.timeout):
                return await waiter
        except TimeoutError:
            denial = ApprovalDecision(False, reason=f"no decision within {self.timeout:g} s", decided_by="timeout")
            return self.answer(tool_call_id, denial)
        finally:
            self._waiting(-1)
            self._waiters.pop(tool_call_id, None)
            if asking is not None and not asking.done():
                asking.cancel()

    async def _ask(self, event: ApprovalRequiredStreamEvent) -> None:
        assert self.callback is not None
        try:
            answer = self.callback(event)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:  # the callback's bug: the call is denied, the run goes on, the log says why
            logger.exception("on_approval failed for %s; the call is denied", event.data["tool_name"])
            answer = ApprovalDecision(False, reason=f"the approval callback failed: {exc!r}", decided_by="callback")
        decision = answer if isinstance(answer, ApprovalDecision) else ApprovalDecision(bool(answer))
        if decision.decided_by is None:
            decision = ApprovalDecision(decision.approved, decision.reason, decision.args, "callback")
        self.answer(event.data["tool_call_id"], decision)

    _count: int = 0

    def _waiting(self, step: int) -> None:
        before, self._count = self._count, self._count + step
        if self.on_wait is not None and (before == 0) != (self._count == 0):
            self.on_wait(self._count > 0)

    def close(self) -> None:
        """The stream ended: forget its calls."""
        for tool_call_id, event in self.pending.items():
            _OPEN.pop((event.run_id, tool_call_id), None)
        self.pending.clear()


_OPEN: dict[tuple[str, str], ApprovalBroker] = {}
"""Waiting calls by (run id, tool call id): how `approve`/`deny` find the stream an event came from."""


def _answer(event: AnyStreamEvent, decision: ApprovalDecision) -> ApprovalDecision:
    if event.event_type is not StreamEventType.APPROVAL_REQUIRED:
        raise TypeError(f"only an approval_required event can be answered, not {event.event_type.value}")
    tool_call_id = event.data["tool_call_id"]
    broker = _OPEN.get((event.run_id, tool_call_id))
    if broker is None:
        raise KeyError(f"the call {tool_call_id!r} no longer waits in a stream of this process")
    return broker.answer(tool_call_id, decision)


def approve(event: AnyStreamEvent, *, args: dict[str, Any] | None = None, reason: str | None = None) -> None:
    """Let the call of this `approval_required` event run (with `args` instead of the model's, when given)."""
    _answer(event, ApprovalDecision(True, reason=reason, args=args, decided_by="stream"))


def deny(event: AnyStreamEvent, reason: str | None = None) -> None:
    """Refuse the call of this `approval_required` event: it ends with `tool_end` whose `error` is the denial."""
    _answer(event, ApprovalDecision(False, reason=reason, decided_by="stream"))


def _results(requests: DeferredToolRequests, decisions: list[ApprovalDecision]) -> DeferredToolResults:
    approvals: dict[str, bool | ToolApproved | ToolDenied] = {}
    for call, decision in zip(requests.approvals, decisions, strict=True):
        if not decision.approved:
            approvals[call.tool_call_id] = ToolDenied(decision.reason or "The user denied this tool call.")
        elif decision.args is not None:
            approvals[call.tool_call_id] = ToolApproved(override_args=decision.args)
        else:
            approvals[call.tool_call_id] = True
    return DeferredToolResults(approvals=approvals)


async def decide_in_stream(requests: DeferredToolRequests) -> DeferredToolResults | None:
    """The decisions on the calls of `requests` that wait for approval, from the current stream's broker.

    `None` outside a stream (and for calls executed elsewhere): they end the run as `DeferredToolRequests`,
    as Pydantic AI does.
    """
    from .capability import CURRENT_STREAM

    state = CURRENT_STREAM.get()
    broker = state.approvals if state is not None else None
    if broker is None or not requests.approvals:
        return None
    decisions = await asyncio.gather(*(broker.decide(call.tool_call_id) for call in requests.approvals))
    return _results(requests, list(decisions))


_Picker = Callable[[str, Mapping[str, Any]], bool | str | None]


def policy_picker(policy: ApprovalPolicy) -> _Picker:
    """`policy` as a function of a call's name and arguments (a `TypeError` for anything else)."""
    if callable(policy):
        return policy
    names = frozenset(policy)
    if isinstance(policy, str) or not all(isinstance(name, str) and name for name in names):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"require_approval takes tool names or a function of (name, args), got {policy!r}")

    def by_name(name: str, args: Mapping[str, Any]) -> bool | str | None:
        return name in names

    return by_name


def stream_policy(name: str, args: Mapping[str, Any]) -> bool | str | None:
    """The policy of the stream the call runs in (`run_stream(..., require_approval=...)`), for sub-agents."""
    from .capability import CURRENT_STREAM

    state = CURRENT_STREAM.get()
    return state.policy(name, args) if state is not None and state.policy is not None else None


def require_approval(policy: ApprovalPolicy) -> ToolGuardrail[Any]:
    """A harness `ToolGuardrail` that makes the calls `policy` picks wait for approval.

    `policy` is a collection of tool names, or a function of the call's name and arguments returning
    true (or a reason, shown in `approval_required`) to ask first. An approved call is not asked again.
    """
    picks = policy_picker(policy)

    def guard(ctx: RunContext[Any], call: ToolCallInfo) -> GuardrailResult:
        if ctx.tool_call_approved:
            return GuardrailResult.allow()
        verdict = picks(call.name, call.args)
        if not verdict:
            return GuardrailResult.allow()
        reason = verdict if isinstance(verdict, str) else f"{call.name} needs approval"
        raise ApprovalRequired(metadata={"reason": reason})

    return ToolGuardrail(guard=guard)
