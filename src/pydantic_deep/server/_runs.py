"""The runs a server owns, and what it knows of the runs other processes on the same bus own.

Each run executes in a task of its own; its events go through an outbox to the bus, so the run never
waits for the bus. A run keeps going whether or not anyone watches it; readers follow its log.

A fleet (several processes on one `RedisEventBus`) shares runs through the bus:

- status: a run this process does not own is described from its log (folded into a `RunState`);
- cancel: a request for a run owned elsewhere is published on the bus; its owner cancels it;
- leases: the owner renews a lease on each of its runs every `lease_seconds / 4`; when the process dies
  the lease lapses, and any live process ends the run's log with `error` and `agent_end` (status
  `failed`), so every follower on every process ends cleanly;
- the bus away: events wait in the run's outbox (at most `max_buffered_events`) and are written when
  the bus is back; a run whose outbox overflows is ended `failed`.

Finished runs are kept `retention_seconds` and at most `max_retained_runs` of them, then dropped with
their logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import aclosing, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, cast

from pydantic_ai import CancellationToken, DeferredToolResults
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter
from pydantic_ai.models import Model
from pydantic_ai.toolsets import AbstractToolset
from pydantic_ai.workspaces import WorkspaceBackend

from .._aio import raise_if_cancelling
from ..backends import StateBackend
from ..budget import Budget
from ..bus import BusUnavailableError, EventBus, InMemoryEventBus, UnknownRunError
from ..models import resolve_model
from ..streaming import AnyStreamEvent, RunState, StreamEventType, run_stream, run_stream_with_tools
from ..streaming.approvals import ApprovalConflictError, ApprovalDecision
from ..streaming.state import ToolCall, settles
from ..streaming.types import (
    ApprovalRequiredStreamEvent,
    RunResumedData,
    RunStatus,
    StreamEvent,
    agent_end_event,
    error_event,
    tool_end_event,
)
from ._durable import DurableRuns
from ._wire import ADMIN, BudgetRequest, PendingApproval, RunInfo, RunProtocol, RunStatusName, RunSummary, RunUsageInfo

__all__ = ("ProtocolRun", "RunRecord", "RunRegistry", "ServerDraining", "TooManyRuns")

logger = logging.getLogger("pydantic_deep.server")

RETRY_AFTER_SECONDS = 1
"""What a 429 tells the client to wait before trying again."""

LOST_SERVER_ERROR = "ServerLost"
"""`exception_type` of the `error` event that ends a run whose server died."""


class TooManyRuns(Exception):
    """The concurrency limit is reached; the client may try again after `retry_after` seconds."""

    def __init__(self, limit: int, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(f"{limit} runs are already in progress; try again shortly")
        self.limit = limit
        self.retry_after = retry_after


class ServerDraining(Exception):
    """The server is shutting down and takes no new runs; another process of the fleet will."""

    retry_after = 1

    def __str__(self) -> str:
        return "this server is shutting down and starts no new runs; retry (another server will take it)"


@dataclass(frozen=True, kw_only=True)
class ProtocolRun:
    """A run a UI protocol endpoint starts: the conversation it belongs to and what the protocol adds.

    Its prompt is the last user message of `message_history` (the run takes no separate prompt), and
    its log has `tool_args_delta` events, which the protocols stream as the tool call's input.
    """

    protocol: RunProtocol
    conversation: str | None = None
    """The client's chat (Vercel AI) or thread (AG-UI) id: a resuming client finds its run by it."""
    toolsets: Sequence[AbstractToolset[Any]] = ()
    """The client's own tools (AG-UI frontend tools): calls to them end the run as deferred requests."""
    capabilities: Sequence[AbstractCapability[Any]] = ()
    output_type: Any = None
    deferred_tool_results: DeferredToolResults | None = None
    message_id: str | None = None
    """The id of the client's assistant message the run's answer goes on with (a Vercel AI chat answering
    an approval request); `None`: the answer is a new message, its id the run id."""
    request: bytes | None = None
    """The request's body: a durable run's process rebuilds the run from it (see `rebuild_protocol_run`)."""
    accept: str | None = None


@dataclass(kw_only=True, eq=False)
class RunRecord:
    """What the server knows about one run: how it was started, and its events folded into a `RunState`."""

    run_id: str
    prompt: str
    model: str | None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    token: CancellationToken = field(default_factory=CancellationToken)
    state: RunState = field(default_factory=RunState)
    status: RunStatusName = "running"
    finished_at: datetime | None = None
    error: str | None = None
    """What ended the run when its own events do not say (the server stopped, the stream broke)."""
    task: asyncio.Task[None] | None = None
    finished_monotonic: float | None = None
    local: bool = True
    """Run by this process (`False`: described from the log of a run another process owns)."""
    principal: str | None = None
    """Who started it (see `Authenticate`); only they and `admin` see it. `None`: started before users."""
    messages: str | None = None
    """The conversation as the run ended (Pydantic AI's messages JSON), once it has."""
    deps: Any = None
    """The run's deps (its workspace: the files it wrote), kept while the run is, for the next turn."""
    protocol: RunProtocol = "runs"
    conversation: str | None = None
    """The chat or thread id of a run a protocol endpoint started (see `ProtocolRun`)."""
    message_id: str | None = None
    """The protocol message the run's answer goes on with (see `ProtocolRun.message_id`)."""
    via: ProtocolRun | None = None
    require_approval: Sequence[str] = ()
    """Tools whose calls wait for a decision in this run (the server's and the request's)."""
    budget: Budget | None = None
    decisions: dict[str, asyncio.Future[ApprovalDecision]] = field(
        default_factory=dict[str, "asyncio.Future[ApprovalDecision]"]
    )
    """The decisions `POST /runs/{run_id}/approvals` gave, by tool call, for the run's `on_approval` to take."""
    durable: bool = False
    """Run through the durable queue: cancelled by cancelling its task, handed over when this process stops."""
    handed_over: bool = False
    """This process stopped running it (shutting down) and left it to another: its log stays open."""

    def observe(self, event: AnyStreamEvent) -> None:
        self.state.apply(event)
        if event.event_type is StreamEventType.AGENT_END and event.depth == 0:
            self.end(event.data["status"], at=event.timestamp)

    def end(self, status: RunStatusName, *, at: datetime | None = None, error: str | None = None) -> None:
        if self.status != "running":
            return
        self.status = status
        self.finished_at = at or datetime.now(UTC)
        if error is not None and self.state.error is None:
            self.error = error

    @property
    def next_seq(self) -> int:
        return 0 if self.state.last_seq is None else self.state.last_seq + 1

    def pending(self) -> list[PendingApproval]:
        """The calls that wait for a decision now."""
        return [
            PendingApproval(
                tool_call_id=call.tool_call_id or "",
                tool_name=call.tool_name,
                args=call.args,
                reason=call.approval_reason,
                run_id=call.run_id,
                depth=call.depth,
            )
            for call in self.state.waiting_for_approval()
        ]

    def info(self) -> RunInfo:
        state = self.state
        pending = self.pending() if self.status == "running" else []
        duration = state.duration_seconds
        if duration is None and self.finished_at is not None:
            duration = (self.finished_at - self.created_at).total_seconds()
        return RunInfo(
            run_id=self.run_id,
            status="awaiting_approval" if pending else self.status,
            pending_approvals=pending,
            prompt=self.prompt,
            model=self.model,
            created_at=self.created_at,
            last_event_at=state.last_event_at,
            finished_at=self.finished_at,
            duration_seconds=duration,
            events=state.event_count,
            last_seq=state.last_seq,
            usage=RunUsageInfo(
                iterations=state.steps,
                requests=state.requests or 0,
                input_tokens=state.input_tokens or 0,
                output_tokens=state.output_tokens or 0,
                total_tokens=state.total_tokens or 0,
                tool_calls=state.tool_calls or 0,
                total_cost_usd=state.total_cost_usd,
            ),
            output=state.output,
            error=state.error or self.error,
            cancel_requested=self.token.cancelled,
            protocol=self.protocol,
            conversation=self.conversation,
            budget=BudgetRequest(**asdict(self.budget)) if self.budget is not None else None,
        )

    def summary(self) -> RunSummary:
        prompt = self.prompt if len(self.prompt) <= 200 else self.prompt[:199] + "…"
        return RunSummary(
            run_id=self.run_id,
            status=self.status,
            prompt=prompt,
            model=self.model,
            created_at=self.created_at,
            finished_at=self.finished_at,
            protocol=self.protocol,
            conversation=self.conversation,
        )


def _record_from_meta(run_id: str, meta: dict[str, str]) -> RunRecord:
    """What a run's meta on the bus says of it (a run another process owns); its events are not folded in."""
    record = RunRecord(
        run_id=run_id,
        prompt=meta.get("prompt", ""),
        model=meta.get("model") or None,
        created_at=_parse_time(meta.get("created_at")) or datetime.now(UTC),
        local=False,
        principal=meta.get("principal") or None,
        protocol=_protocol(meta.get("protocol")),
        conversation=meta.get("conversation") or None,
        message_id=meta.get("message_id") or None,
        budget=Budget(**json.loads(meta["budget"])) if meta.get("budget") else None,
    )
    record.status = _status(meta.get("status"))
    record.finished_at = _parse_time(meta.get("finished_at"))
    return record


def _protocol(value: str | None) -> RunProtocol:
    return value if value in ("ag-ui", "vercel-ai") else "runs"  # pyright: ignore[reportReturnType]


def _parse_time(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _status(value: str | None) -> RunStatusName:
    return value if value in ("succeeded", "failed", "cancelled") else "running"  # pyright: ignore[reportReturnType]


def process_name() -> str:
    """This process's name in leases and logs: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class _Outbox:
    """A run's events on their way to the bus: appended in batches, kept while the bus is away."""

    def __init__(self, bus: EventBus, run_id: str, limit: int) -> None:
        self.bus, self.run_id, self.limit = bus, run_id, limit
        self.direct = bus.append_now if isinstance(bus, InMemoryEventBus) else None
        self.pending: list[AnyStreamEvent] = []
        self.wake = asyncio.Event()
        self.finished = False
        self.unavailable_since: float | None = None
        self.task = asyncio.create_task(self._write(), name=f"pydantic-deep outbox {run_id}")

    @property
    def overflowing(self) -> bool:
        return len(self.pending) > self.limit

    def put(self, event: AnyStreamEvent) -> None:
        if self.direct is not None and not self.pending:
            self.direct(self.run_id, event)  # an in-process log takes it at once: no task hop per event
            return
        self.pending.append(event)
        self.wake.set()

    async def _write(self) -> None:
        failures = 0
        while True:
            if not self.pending:
                if self.finished:
                    return
                self.wake.clear()
                await self.wake.wait()
                continue
            batch = self.pending[:512]
            try:
                await self.bus.append_many(self.run_id, batch)
            except BusUnavailableError as exc:
                raise_if_cancelling()
                failures += 1
                if self.unavailable_since is None:
                    self.unavailable_since = time.monotonic()
                    logger.warning("run %s: the event bus is unavailable (%s); keeping its events", self.run_id, exc)
                await asyncio.sleep(min(0.05 * 2**failures, 1.0))
                continue
            except (ValueError, UnknownRunError) as exc:
                # The log refused them: another process ended it (our lease lapsed) or it was dropped.
                logger.warning("run %s: its event log refused new events (%s); dropping them", self.run_id, exc)
                self.pending.clear()
                continue
            if self.unavailable_since is not None:
                logger.info("run %s: the event bus is back; %d events written", self.run_id, len(self.pending))
                self.unavailable_since = None
            failures = 0
            del self.pending[: len(batch)]

    async def finish(self) -> None:
        """Write what is left, then stop; waits as long as the bus stays away (the caller bounds it)."""
        self.finished = True
        self.wake.set()
        await asyncio.shield(self.task)


class RunRegistry:
    """Starts runs, counts them against the concurrency limit, and forgets finished ones in time."""

    def __init__(
        self,
        *,
        agent: AbstractAgent[Any, Any],
        bus: EventBus,
        deps: Callable[[], Any],
        max_concurrent_runs: int,
        retention_seconds: float,
        max_retained_runs: int,
        shutdown_grace_seconds: float = 5.0,
        run_timeout: float | None = None,
        idle_timeout: float | None = None,
        lease_seconds: float = 10.0,
        max_buffered_events: int = 10_000,
        owner: str | None = None,
        require_approval: Sequence[str] = (),
        durable: DurableRuns | None = None,
        rebuild: Callable[[RunProtocol, bytes, str, str | None], ProtocolRun] | None = None,
    ) -> None:
        self.agent = agent
        self.durable = durable
        self.rebuild = rebuild
        """Makes a protocol run again from (protocol, request body, conversation, message id)."""
        self.bus = bus
        self.deps = deps
        self.max_concurrent_runs = max_concurrent_runs
        self.retention_seconds = retention_seconds
        self.max_retained_runs = max_retained_runs
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.run_timeout = run_timeout
        self.idle_timeout = idle_timeout
        self.lease_seconds = lease_seconds
        self.max_buffered_events = max_buffered_events
        self.owner = owner or process_name()
        self.require_approval = list(require_approval)
        self.draining = False
        self._runs: dict[str, RunRecord] = {}
        self._finished: dict[str, RunRecord] = {}
        """The finished runs of `_runs`, in the order they finished: pruning looks at the oldest only."""
        self._remote: OrderedDict[str, RunRecord] = OrderedDict()
        self._running = 0
        self._prune_timer: asyncio.TimerHandle | None = None
        """One timer, for the finished run that expires first (not one per run)."""
        self._chores: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []

    # ---- limits ----------------------------------------------------------------------------------------

    def _check_capacity(self) -> None:
        if self.draining:
            raise ServerDraining()
        if self._running >= self.max_concurrent_runs:
            raise TooManyRuns(self.max_concurrent_runs)

    # ---- runs ------------------------------------------------------------------------------------------

    async def start(
        self,
        prompt: str,
        *,
        message_history: Sequence[ModelMessage] | None = None,
        model: Model | None = None,
        model_name: str | None = None,
        principal: str | None = None,
        continue_from: RunRecord | None = None,
        run_id: str | None = None,
        via: ProtocolRun | None = None,
        require_approval: Sequence[str] = (),
        budget: Budget | None = None,
    ) -> RunRecord:
        """Start a run in its own task and return at once; `TooManyRuns` when the limit is reached.

        A run that continues another (`continue_from`, with its messages as `message_history`) works in
        the same workspace when this process ran it (its files are there); otherwise, and for a history
        the client sent, in a fresh one. `via` is a protocol endpoint's run (see `ProtocolRun`);
        `run_id` is its id when the caller chose one (`ValueError` when the bus already has that log).
        """
        await self.prune()
        self._check_capacity()
        record = RunRecord(
            run_id=run_id or str(uuid.uuid4()),
            prompt=prompt,
            model=model_name,
            principal=principal,
            protocol=via.protocol if via is not None else "runs",
            conversation=via.conversation if via is not None else None,
            message_id=via.message_id if via is not None else None,
            via=via,
            require_approval=[*self.require_approval, *require_approval],
            budget=budget,
        )
        if record.run_id in self._runs:
            raise ValueError(f"run {record.run_id!r} already has an event log")
        # A protocol's run (its tools come with the request) and a model given per request run here.
        durable = (
            self.durable is not None
            and model is None
            and (via is None or (via.request is not None and self.rebuild is not None))
        )
        if not durable:
            self._running += 1
            self._runs[record.run_id] = record
        meta = {"prompt": prompt, "created_at": record.created_at.isoformat(), "owner": self.owner}
        if model_name is not None:
            meta["model"] = model_name
        if principal is not None:
            meta["principal"] = principal
        if budget is not None:
            meta["budget"] = json.dumps(asdict(budget))
        if via is not None:
            meta["protocol"] = via.protocol
            if via.conversation is not None:
                meta["conversation"] = via.conversation
            if via.message_id is not None:
                meta["message_id"] = via.message_id
        if durable:
            meta["durable"] = "1"
            return await self._submit(record, meta, message_history, continue_from)
        try:
            await self.bus.open(record.run_id, meta)
            await self.bus.renew(self.owner, [record.run_id], self.lease_seconds)
        except BaseException:
            self._running -= 1
            del self._runs[record.run_id]
            raise
        earlier = continue_from.deps if continue_from is not None and continue_from.local else None
        record.deps = earlier if earlier is not None else self.deps()
        # A history from elsewhere names a workspace this run does not hold: work in the deps' own.
        backend = getattr(record.deps, "backend", None)
        fresh = message_history and earlier is None and isinstance(backend, WorkspaceBackend)
        workspace = backend if fresh and isinstance(backend, WorkspaceBackend) else None
        record.task = asyncio.create_task(
            self._execute(record, message_history, model, workspace), name=f"pydantic-deep run {record.run_id}"
        )
        return record

    # ---- durable runs ----------------------------------------------------------------------------------

    async def _submit(
        self,
        record: RunRecord,
        meta: dict[str, str],
        history: Sequence[ModelMessage] | None,
        continue_from: RunRecord | None,
    ) -> RunRecord:
        """Open the run's log and queue it: a worker of any process of the fleet runs it (see `_take`)."""
        assert self.durable is not None
        payload: dict[str, Any] = {
            "prompt": record.prompt,
            "model": record.model,
            "principal": record.principal,
            "require_approval": list(record.require_approval),
            "budget": asdict(record.budget) if record.budget is not None else None,
            "history": ModelMessagesTypeAdapter.dump_json(list(history)).decode() if history else None,
            "created_at": record.created_at.isoformat(),
            # The next turn of a conversation starts with the files the last turn left (kept in Postgres).
            "files_of": continue_from.run_id if continue_from is not None else None,
        }
        via = record.via
        if via is not None and via.request is not None:
            payload |= {
                "protocol": via.protocol,
                "conversation": via.conversation,
                "message_id": via.message_id,
                "request": via.request.decode("utf-8", "surrogateescape"),
            }
        await self.bus.open(record.run_id, meta)
        await self.bus.hand_over(record.run_id)  # written by whichever process's worker runs it
        # The lease is this process's until a worker claims the run (then the worker's).
        await self.bus.renew(self.owner, [record.run_id], self.lease_seconds)
        try:
            await self.durable.submit(record.run_id, payload)
        except Exception as exc:  # not queued: no process will run it, so its log ends here
            events = _closing_events(record, type(exc).__name__, f"the run could not be queued: {exc}")
            with suppress(Exception):
                await self.bus.append_many(record.run_id, events)
                await self.bus.close(record.run_id)
            raise
        record.local = False
        return record

    async def _take(self, run_id: str, payload: dict[str, Any], attempt: int) -> None:
        """Run a queued run in this process: from the start, or going on after its process was lost."""
        assert self.durable is not None
        budget = payload.get("budget")
        record = RunRecord(
            run_id=run_id,
            prompt=str(payload.get("prompt") or ""),
            model=payload.get("model") or None,
            created_at=_parse_time(payload.get("created_at")) or datetime.now(UTC),
            principal=payload.get("principal") or None,
            require_approval=list(payload.get("require_approval") or ()),
            budget=Budget(**budget) if budget else None,
            durable=True,
        )
        protocol = payload.get("protocol")
        if protocol in ("ag-ui", "vercel-ai") and self.rebuild is not None:
            request = str(payload.get("request") or "").encode("utf-8", "surrogateescape")
            conversation, message_id = str(payload.get("conversation") or ""), payload.get("message_id") or None
            record.via = self.rebuild(protocol, request, conversation, message_id)
            record.protocol, record.conversation, record.message_id = protocol, conversation, message_id
        (meta,) = await self.bus.metas([run_id])
        if meta is None:
            logger.warning("run %s: its event log is gone; not running it", run_id)
            return
        events: list[AnyStreamEvent] = []
        while True:
            batch = await self.bus.read(run_id, events[-1].seq if events else -1, limit=1024, wait=0)
            events.extend(batch.events)
            if not batch.events or batch.closed:
                break
        for event in events:
            record.observe(event)
        if record.status != "running":
            return  # it ended while no process ran it (cancelled)
        if await self.durable.cancel_requested(run_id):
            await self.bus.append_many(run_id, _closing_events(record, None, "cancelled", status="cancelled"))
            await self.bus.close(run_id)
            return
        resume = _Resumption(events, owner=self.owner, attempt=attempt) if events else None
        await self.bus.hand_over(run_id)  # what this process may have kept of it is stale
        self._runs[run_id] = record
        self._running += 1
        await self.bus.renew(self.owner, [run_id], self.lease_seconds)
        files_of = payload.get("files_of") if resume is None else None
        files = await self.durable.files(run_id if files_of is None else str(files_of))
        record.deps = self._durable_deps(run_id, files, fresh=resume is None and files_of is None)
        history_json = payload.get("history")
        history = ModelMessagesTypeAdapter.validate_json(history_json) if history_json else None
        # A history names the workspace of the run it came from: this run works in its own (as `start` does).
        backend = getattr(record.deps, "backend", None)
        workspace = backend if history and isinstance(backend, WorkspaceBackend) else None
        model = resolve_model(record.model) if record.model else None
        if resume is not None:
            logger.warning(
                "run %s: taken over (attempt %d) from step %d; %d events of the interrupted step are void",
                run_id,
                attempt,
                resume.data["from_step"],
                resume.data["void_events"],
            )
        record.task = asyncio.create_task(
            self._execute(record, history, model, workspace, resume=resume), name=f"pydantic-deep run {run_id}"
        )
        await record.task

    def _durable_deps(self, run_id: str, files: dict[str, bytes], *, fresh: bool) -> Any:
        """The run's deps, its in-memory workspace restored from what was kept and kept as it changes."""
        assert self.durable is not None
        deps = self.deps()
        backend = getattr(deps, "backend", None)
        if isinstance(backend, StateBackend):
            durable = self.durable
            initial: dict[str, str | bytes] = dict(backend.files) if fresh else dict(files)

            async def keep(path: str, content: bytes | None) -> None:
                await durable.save_file(run_id, path, content)

            # The same environment id in every process: a recorded workspace ref still names it after a takeover.
            deps.backend = StateBackend(files=initial, on_change=keep, environment_id=run_id)
        return deps

    async def _execute(
        self,
        record: RunRecord,
        history: Sequence[ModelMessage] | None,
        model: Model | None,
        workspace: WorkspaceBackend | None,
        *,
        resume: _Resumption | None = None,
    ) -> None:
        run_id = record.run_id
        outbox = _Outbox(self.bus, run_id, self.max_buffered_events)
        via = record.via
        durable = self.durable if record.durable else None
        agent_name = self.agent.name
        if resume is not None:
            resumed = StreamEvent(event_type=StreamEventType.RUN_RESUMED, data=resume.data)
            resumed.run_id, resumed.agent_name, resumed.seq = run_id, agent_name, record.next_seq
            record.observe(cast(AnyStreamEvent, resumed))
            outbox.put(cast(AnyStreamEvent, resumed))
        try:
            # A protocol's run takes its prompt from the history and streams each tool call's input.
            stream = (run_stream if via is None else run_stream_with_tools)(
                self.agent,
                record.prompt if via is None else None,
                record.deps,
                message_history=history,
                workspace=workspace,
                # A durable run is cancelled by cancelling its task: a token cannot cross a durable step.
                cancellation_token=record.token if durable is None else None,
                durability=None if durable is None else partial(_durability, durable, agent_name),
                model=model,
                run_id=run_id,
                run_timeout=self.run_timeout,
                idle_timeout=self.idle_timeout,
                on_messages=partial(self._keep_messages, record),
                toolsets=via.toolsets if via is not None else (),
                capabilities=via.capabilities if via is not None else (),
                budget=record.budget,
                require_approval=list(record.require_approval) or None,
                on_approval=partial(self._decision, record),
                output_type=via.output_type if via is not None else None,
                deferred_tool_results=via.deferred_tool_results if via is not None else None,
            )
            async with aclosing(stream) as events:
                async for event in events:
                    if resume is not None:
                        if not resume.keep(event):
                            continue
                        event.seq = record.next_seq
                    record.observe(event)
                    if record.status != "running":
                        # Settled before anyone can read its agent_end: a client that saw the end can start
                        # the next run at once, and sees the status the end announced.
                        self._settle(record)
                    outbox.put(event)
                    if outbox.overflowing and record.status == "running":
                        break
            if outbox.overflowing and record.status == "running":
                self._end_in_log(record, outbox, "BusUnavailableError", _overflow_message(outbox))
        except asyncio.CancelledError:
            if durable is not None and record.token.cancelled and record.status == "running":
                self._end_in_log(record, outbox, None, "cancelled", status="cancelled")  # cancelled for good
            elif durable is not None:
                record.handed_over = True  # the process stops: another takes the run over from its steps
                raise
            else:
                record.end("cancelled", error="the server stopped before the run finished")
                raise
        except Exception as exc:  # the run's own failure is already in its events; anything else is logged
            record.end("failed", error=f"{type(exc).__name__}: {exc}")
            logger.warning("run %s failed: %s: %s", run_id, type(exc).__name__, exc)
        finally:
            if record.handed_over:
                self._settle(record)
                self._runs.pop(run_id, None)
                self._finished.pop(run_id, None)
                await self._flush(run_id, outbox)
                await self.bus.hand_over(run_id)
                logger.warning("run %s: handed over to another process of the fleet (this one stops)", run_id)
            else:
                record.end("failed", error="the run ended without an agent_end event")
                self._settle(record)
                await self._flush_and_close(run_id, outbox)
                self._schedule_prune()

    async def _decision(self, record: RunRecord, event: ApprovalRequiredStreamEvent) -> ApprovalDecision:
        """A call of the run waits: its decision comes from `POST /runs/{run_id}/approvals`, on any process."""
        tool_call_id = event.data["tool_call_id"]
        waiter = record.decisions.get(tool_call_id)
        if waiter is None:
            waiter = record.decisions[tool_call_id] = asyncio.get_running_loop().create_future()
        return await waiter

    async def answer(
        self, run_id: str, principal: str | None, tool_call_id: str, decision: ApprovalDecision
    ) -> RunRecord:
        """Decide a call that waits, on whichever process runs it. The same answer again changes nothing.

        `UnknownRunError` for no such run; `KeyError` when no such call waits (or waited) for a decision;
        `ApprovalConflictError` when it was decided otherwise; `ValueError` when the run has ended.
        """
        record = await self.require(run_id, principal)
        call = record.state.find_call(tool_call_id)
        if call is None or call.approval is None:
            raise KeyError(f"no call {tool_call_id!r} of run {run_id!r} waits for approval")
        given = _given(record, tool_call_id, call.approval, call.args)
        if given is not None:
            if given != (decision.approved, decision.args):
                raise ApprovalConflictError(f"the call {tool_call_id!r} was already {call.approval or 'decided'}")
            return record
        if record.status != "running":
            raise ValueError(f"run {run_id!r} has ended")
        if record.local:
            self._decide(record, tool_call_id, decision)
        else:
            message = {"type": "approve", "run_id": run_id, "tool_call_id": tool_call_id, "from": self.owner}
            message["decision"] = json.dumps(
                {
                    "approved": decision.approved,
                    "reason": decision.reason,
                    "args": decision.args,
                    "by": decision.decided_by,
                }
            )
            await self.bus.publish(message)
        return record

    def _decide(self, record: RunRecord, tool_call_id: str, decision: ApprovalDecision) -> None:
        waiter = record.decisions.get(tool_call_id)
        if waiter is None:
            waiter = record.decisions[tool_call_id] = asyncio.get_running_loop().create_future()
        if not waiter.done():
            waiter.set_result(decision)

    async def _keep_messages(self, record: RunRecord, messages: list[ModelMessage]) -> None:
        """Keep the conversation as the run ends, here and on the bus (for the fleet), before its `agent_end`."""
        # ASCII JSON: text that is not valid Unicode (a lone surrogate from a tool) travels as an escape.
        record.messages = json.dumps(ModelMessagesTypeAdapter.dump_python(messages, mode="json"), ensure_ascii=True)
        try:
            await self.bus.save_messages(record.run_id, record.messages)
        except (BusUnavailableError, UnknownRunError) as exc:  # this process still has them
            logger.warning("run %s: its messages are kept in this process only: %s", record.run_id, exc)

    async def messages(self, record: RunRecord) -> str | None:
        """The run's conversation as it ended (JSON), `None` while it runs or when it ended without one."""
        if record.status == "running":
            return None
        return record.messages or await self.bus.messages(record.run_id)

    def _end_in_log(
        self,
        record: RunRecord,
        outbox: _Outbox,
        exception_type: str | None,
        message: str,
        *,
        status: RunStatus = "failed",
    ) -> None:
        """End a run whose stream stopped short: close its open tool calls, then `error` and `agent_end`."""
        for event in _closing_events(record, exception_type, message, status=status):
            outbox.put(event)
            record.observe(event)

    async def _flush(self, run_id: str, outbox: _Outbox) -> None:
        """Write what the outbox holds, leaving the log open (for the process that goes on with the run)."""
        try:
            async with asyncio.timeout(max(self.lease_seconds, 2.0)):
                await outbox.finish()
        except (TimeoutError, asyncio.CancelledError):
            outbox.task.cancel()
            logger.warning("run %s: could not write its last events before handing it over", run_id)

    async def _flush_and_close(self, run_id: str, outbox: _Outbox) -> None:
        try:
            # Bounded: a bus that stays away longer than a lease is given up on (the fleet ends the run).
            async with asyncio.timeout(max(self.lease_seconds * 3, 5.0)):
                await outbox.finish()
                await self.bus.close(run_id)
        except (TimeoutError, BusUnavailableError, UnknownRunError) as exc:
            outbox.task.cancel()
            logger.warning("run %s: could not write the end of its log (%s)", run_id, type(exc).__name__)
        except asyncio.CancelledError:
            outbox.task.cancel()
            raise

    def _settle(self, record: RunRecord) -> None:
        if record.finished_monotonic is None:
            record.finished_monotonic = time.monotonic()
            self._running -= 1
            self._finished[record.run_id] = record

    async def get(self, run_id: str) -> RunRecord | None:
        await self.prune()
        record = self._runs.get(run_id)
        if record is not None:
            return record
        return await self._describe(run_id)

    async def _describe(self, run_id: str) -> RunRecord | None:
        """A run another process owns, from its log (folded incrementally: only new events are read)."""
        (meta,) = await self.bus.metas([run_id])  # also tells a run dropped since it was cached
        if meta is None:
            self._remote.pop(run_id, None)
            return None
        record = self._remote.get(run_id)
        if record is None:
            record = _record_from_meta(run_id, meta)
            record.status, record.finished_at = "running", None  # its events say how it ended
            self._remote[run_id] = record
            while len(self._remote) > max(self.max_retained_runs, 1):
                self._remote.popitem(last=False)
        try:
            while record.status == "running":
                batch = await self.bus.read(run_id, record.next_seq - 1, limit=1024, wait=0)
                for event in batch.events:
                    record.observe(event)
                if not batch.events or batch.closed:
                    break
        except UnknownRunError:
            self._remote.pop(run_id, None)
            return None
        return record

    async def list(self, principal: str | None = None) -> list[RunRecord | RunSummary]:
        """The runs held, this process's and the fleet's, newest first; those `principal` may see."""
        await self.prune()
        local = [r for r in self._runs.values() if _visible(r.principal, principal)]
        others = [run_id for run_id in await self.bus.run_ids(self.max_retained_runs) if run_id not in self._runs]
        summaries: list[RunRecord | RunSummary] = list(local)
        for run_id, meta in zip(others, await self.bus.metas(others), strict=True):
            if meta is not None and _visible(meta.get("principal") or None, principal):
                summaries.append(_record_from_meta(run_id, meta).summary())
        return sorted(summaries, key=lambda r: r.created_at, reverse=True)[: max(self.max_retained_runs, 1)]

    async def latest(self, protocol: RunProtocol, conversation: str, principal: str | None) -> RunRecord | None:
        """The newest run `principal` may see that `protocol` started for `conversation` (a chat's id), if any."""
        for run in await self.list(principal):
            if run.protocol == protocol and run.conversation == conversation:
                return await self.get(run.run_id)
        return None

    async def require(self, run_id: str, principal: str | None = None) -> RunRecord:
        """The run's record; `UnknownRunError` when it never existed, was dropped, or is not `principal`'s.

        Another principal's run is unknown, not forbidden: its id tells the caller nothing.
        """
        record = await self.get(run_id)
        if record is None or not _visible(record.principal, principal):
            raise UnknownRunError(run_id)
        return record

    async def cancel(self, run_id: str, principal: str | None = None) -> RunRecord:
        """Ask a running run to stop; a finished one is left as it is. `UnknownRunError` for no such run.

        A run another process owns is cancelled by its owner, which hears the request through the bus.
        """
        record = await self.require(run_id, principal)
        if record.status == "running":
            self._cancel_local(record)
            if self.durable is not None and not record.local:
                await self.durable.request_cancel(run_id)  # whoever runs it next finds the run cancelled
            if not record.local:
                await self.bus.publish({"type": "cancel", "run_id": run_id, "from": self.owner})
            if self.durable is not None and not record.local and run_id in await self.bus.orphans():
                await self._cancel_ownerless(record)
        return record

    def _cancel_local(self, record: RunRecord) -> None:
        record.token.cancel()
        if record.durable and record.local and record.task is not None:
            record.task.cancel()

    async def _cancel_ownerless(self, record: RunRecord) -> None:
        """Cancel a durable run no process runs now (its process was lost): off the queue, its log ended."""
        assert self.durable is not None
        await self.durable.cancel(record.run_id)
        events = _closing_events(record, None, "cancelled", status="cancelled")
        try:
            await self.bus.append_many(record.run_id, events)
        except ValueError:
            return  # a process took it over first: it hears the cancel through the bus or finds it asked for
        for event in events:
            record.observe(event)
        with suppress(UnknownRunError):
            await self.bus.close(record.run_id)

    # ---- the fleet -------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the background work: lease renewal and lost-run checks, and listening for cancels."""
        self._background = [
            asyncio.create_task(self._keep_leases(), name="pydantic-deep leases"),
            asyncio.create_task(self._listen(), name="pydantic-deep control"),
        ]
        if self.durable is not None:
            await self.durable.open(self._take)

    async def _keep_leases(self) -> None:
        interval = self.lease_seconds / 4
        while True:
            await asyncio.sleep(interval)
            try:
                mine = [r.run_id for r in self._runs.values() if r.local and r.task is not None and not r.task.done()]
                await self.bus.renew(self.owner, mine, self.lease_seconds)
                for run_id in await self.bus.orphans():
                    if run_id not in self._runs and await self._lost(run_id):
                        await self._end_lost_run(run_id)
            except BusUnavailableError:
                raise_if_cancelling()
                continue  # the outbox and followers report it; try again next time
            except Exception:
                raise_if_cancelling()
                logger.exception("lease upkeep failed; retrying")

    async def _lost(self, run_id: str) -> bool:
        """Whether a run whose lease lapsed is lost: a durable one is not while its queue will run it again."""
        if self.durable is None:
            return True
        (meta,) = await self.bus.metas([run_id])
        if meta is None or meta.get("durable") != "1":
            return True
        state = await self.durable.state(run_id)
        if state is None:  # not queued yet (its process is queueing it) or never (that process died first)
            created = _parse_time(meta.get("created_at"))
            return created is None or datetime.now(UTC) - created > timedelta(seconds=max(30.0, 3 * self.lease_seconds))
        return state not in ("pending", "running")

    async def _end_lost_run(self, run_id: str) -> None:
        """End the log of a run whose server is gone: `error` (`ServerLost`) and `agent_end`, then close it."""
        record = await self._describe(run_id)
        if record is None:
            return
        if record.status == "running":
            message = "the server running this run was lost (its lease lapsed: the process died or lost Redis)"
            events = _closing_events(record, LOST_SERVER_ERROR, message)
            try:
                await self.bus.append_many(run_id, events)
            except ValueError:
                return  # its owner (or another process) appended first: it is not lost, or already ended
            for event in events:
                record.observe(event)
            logger.warning("run %s: its server was lost; ended it as failed", run_id)
        with suppress(UnknownRunError):
            await self.bus.close(run_id)

    async def _listen(self) -> None:
        async with aclosing(self.bus.subscribe()) as messages:
            async for message in messages:
                record = self._runs.get(message.get("run_id", ""))
                if record is None or record.status != "running":
                    continue
                if message.get("type") == "cancel":
                    self._cancel_local(record)
                elif message.get("type") == "approve":
                    try:
                        answer = json.loads(message.get("decision", "{}"))
                        decision = ApprovalDecision(
                            bool(answer["approved"]), answer.get("reason"), answer.get("args"), answer.get("by")
                        )
                    except (ValueError, KeyError, TypeError):
                        logger.warning("run %s: ignored a malformed approval message", record.run_id)
                        continue
                    self._decide(record, message.get("tool_call_id", ""), decision)

    # ---- retention -------------------------------------------------------------------------------------

    async def prune(self) -> None:
        """Drop finished runs past the retention time, and the oldest beyond the retained count, with their logs.

        Looks at the oldest finished runs only, up to the first it keeps: the cost of a prune does not grow
        with the number of runs retained (every request prunes).
        """
        now = time.monotonic()
        excess = len(self._finished) - self.max_retained_runs
        due: list[RunRecord] = []
        for index, record in enumerate(self._finished.values()):
            assert record.finished_monotonic is not None
            if index >= excess and now - record.finished_monotonic < self.retention_seconds:
                break  # every later one finished later still
            due.append(record)
        dropped: list[str] = []
        for record in due:
            if record.task is not None and not record.task.done():
                continue  # still writing the end of its log: the next prune takes it
            del self._runs[record.run_id]
            del self._finished[record.run_id]
            dropped.append(record.run_id)
        self._schedule_prune()
        for run_id in dropped:
            await self.bus.discard(run_id)
        if self.durable is not None and dropped:
            await self.durable.forget(dropped)

    def _schedule_prune(self) -> None:
        """Arm the one timer for when the earliest finished run is due to be dropped."""
        oldest = next(iter(self._finished.values()), None)
        if self._prune_timer is not None:
            self._prune_timer.cancel()
            self._prune_timer = None
        if oldest is None:
            return
        first = oldest.finished_monotonic
        assert first is not None
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._prune_timer = None
            task = loop.create_task(self._prune_quietly())
            self._chores.add(task)
            task.add_done_callback(self._chores.discard)

        # A little past the due time, so the run is past it when the timer fires, however the clock rounds.
        delay = max(0.0, first + self.retention_seconds - time.monotonic()) + 0.001
        self._prune_timer = loop.call_later(delay, fire)

    async def _prune_quietly(self) -> None:
        with suppress(BusUnavailableError):
            await self.prune()

    # ---- shutdown --------------------------------------------------------------------------------------

    def running(self) -> list[RunRecord]:
        return [r for r in self._runs.values() if r.task is not None and not r.task.done()]

    async def drain(self, seconds: float) -> None:
        """Take no new runs (503), let running ones finish for up to `seconds`, then cancel the rest."""
        self.draining = True
        if self.durable is not None:
            # Claims no more runs; those running get `seconds` to finish, then go back to the queue.
            durable_runs = [r for r in self.running() if r.durable]
            if durable_runs:
                logger.info(
                    "draining: %d durable runs get up to %g s to finish, then go on in another process",
                    len(durable_runs),
                    seconds,
                )
            await self.durable.release()
        tasks = [r.task for r in self.running() if r.task is not None]
        if tasks:
            logger.info("draining: waiting up to %g s for %d running runs", seconds, len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=seconds)
            if pending:
                logger.info("draining: cancelling %d runs still running", len(pending))
                await self.cancel_all()

    async def cancel_all(self) -> None:
        """Cancel running runs (they end with `agent_end` status `cancelled`); stop those that do not end in time."""
        tasks = [r.task for r in self.running() if r.task is not None]
        for record in self._runs.values():
            record.token.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.shutdown_grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel running runs, then stop the background work and what is left."""
        self.draining = True
        if self.durable is not None:
            await self.durable.aclose()  # hands its runs over (see `drain`) before the rest is cancelled
        await self.cancel_all()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._prune_timer is not None:
            self._prune_timer.cancel()
            self._prune_timer = None
        if self._chores:
            await asyncio.gather(*self._chores, return_exceptions=True)


def _given(
    record: RunRecord, tool_call_id: str, approval: str, args: dict[str, Any]
) -> tuple[bool, dict[str, Any] | None] | None:
    """The decision already taken on a call, as (approved, edited args), or `None` while it waits."""
    waiter = record.decisions.get(tool_call_id)
    if waiter is not None and waiter.done():
        taken = waiter.result()
        return (taken.approved, taken.args)
    if approval == "waiting":
        return None
    return (approval == "approved", None)  # from the log: its edited args are the call's args now


def _visible(owner: str | None, principal: str | None) -> bool:
    """Whether `principal` may see a run `owner` started: its own, or any for `admin` (and for no principal)."""
    return principal is None or principal == ADMIN or owner == principal


def _overflow_message(outbox: _Outbox) -> str:
    return (
        f"the event bus was unavailable while the run produced more than {outbox.limit} events; "
        "the run was stopped (its events are written when the bus is back)"
    )


def _closing_events(
    record: RunRecord, exception_type: str | None, message: str, *, status: RunStatus = "failed"
) -> list[AnyStreamEvent]:
    """`tool_end` for each call still open, then `error` (when `exception_type` is given) and `agent_end`,
    numbered after the record's last event."""
    now = datetime.now(UTC)
    events: list[AnyStreamEvent] = []
    for call in _open_calls(record.state.tools):
        end = tool_end_event(tool_name=call.tool_name, tool_call_id=call.tool_call_id, error=message)
        end.run_id, end.depth = call.run_id, call.depth
        events.append(end)
    if exception_type is not None:
        events.append(error_event(error=message, exception_type=exception_type))
    state = record.state
    events.append(
        agent_end_event(
            agent_name=state.agent_name,
            success=False,
            status=status,
            total_iterations=state.steps,
            total_tokens=state.total_tokens,
            total_cost_usd=state.total_cost_usd,
            duration_seconds=(now - record.created_at).total_seconds(),
        )
    )
    for offset, event in enumerate(events):
        event.seq = record.next_seq + offset
        event.timestamp = now
        if event.event_type is not StreamEventType.TOOL_END:
            event.run_id, event.agent_name = record.run_id, state.agent_name
    return events


def _open_calls(calls: list[ToolCall]) -> list[ToolCall]:
    open_calls: list[ToolCall] = []
    for call in calls:
        open_calls.extend(_open_calls(call.children))
        if call.ended_at is None:
            open_calls.append(call)
    return open_calls


def _durability(durable: DurableRuns, agent_name: str | None, live: Any) -> AbstractCapability[Any]:
    return durable.capability(live, agent_name)


class _Resumption:
    """How a durable run taken over goes on in its log: which of the new attempt's events are already there.

    The new attempt runs from the start, its settled steps answered from the record: their events are in
    the log already and are left out. The log's events after its last settled point (see `settles`) are
    void (the work they tell of was cut off and is done again); `run_resumed` says so before the new ones.
    """

    def __init__(self, events: Sequence[AnyStreamEvent], *, owner: str, attempt: int) -> None:
        last = max((i for i, event in enumerate(events) if settles(event)), default=0)
        settled = events[: last + 1]
        self.from_step = sum(1 for e in settled if e.depth == 0 and e.event_type is StreamEventType.PROGRESS)
        self.started = {_call_id(e) for e in settled if e.depth == 0 and e.event_type is StreamEventType.TOOL_START}
        self.ended = {_call_id(e) for e in settled if e.depth == 0 and e.event_type is StreamEventType.TOOL_END}
        self.data = RunResumedData(
            from_step=self.from_step,
            void_after_seq=events[last].seq,
            void_events=len(events) - last - 1,
            owner=owner,
            attempt=attempt,
        )
        self.step = 0
        self.replaying: str | None = None
        """The settled tool call whose replay is going by (its events are in the log)."""

    def keep(self, event: AnyStreamEvent) -> bool:
        if event.depth > 0:
            return self.replaying is None
        kind = event.event_type
        if self.replaying is not None:
            if kind is StreamEventType.TOOL_END and _call_id(event) == self.replaying:
                self.replaying = None
            return False
        match event.event_type:
            case StreamEventType.AGENT_START:
                return False
            case StreamEventType.PROGRESS:
                self.step = event.data["iteration"]
                return self.step > self.from_step
            case StreamEventType.LLM_CHUNK | StreamEventType.THINKING_CHUNK | StreamEventType.TOOL_ARGS_DELTA:
                return self.step >= self.from_step  # text of model request `step + 1`
            case StreamEventType.TOOL_START:
                call_id = _call_id(event)
                if call_id in self.ended:
                    self.replaying = call_id
                    return False
                return call_id not in self.started  # started before the settled point: it goes on, unstarted
            case StreamEventType.TOOL_END:
                return _call_id(event) not in self.ended
            case _:
                return True


def _call_id(event: AnyStreamEvent) -> str | None:
    return cast("str | None", event.data.get("tool_call_id"))
