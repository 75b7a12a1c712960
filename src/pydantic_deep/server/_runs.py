"""The runs a server owns: each executes in a task of its own and writes every event to the bus.

A run keeps going whether or not anyone watches it; readers follow its log in the bus. Finished runs are
kept `retention_seconds` and at most `max_retained_runs` of them, then dropped with their logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_ai import CancellationToken
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model

from ..bus import EventBus, UnknownRunError
from ..streaming import AnyStreamEvent, RunState, StreamEventType, run_stream
from ._wire import RunInfo, RunStatusName, RunSummary, RunUsageInfo

__all__ = ("RunRecord", "RunRegistry", "TooManyRuns")

logger = logging.getLogger("pydantic_deep.server")

RETRY_AFTER_SECONDS = 1
"""What a 429 tells the client to wait before trying again."""


class TooManyRuns(Exception):
    """The concurrency limit is reached; the client may try again after `retry_after` seconds."""

    def __init__(self, limit: int, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(f"{limit} runs are already in progress; try again shortly")
        self.limit = limit
        self.retry_after = retry_after


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

    def info(self) -> RunInfo:
        state = self.state
        duration = state.duration_seconds
        if duration is None and self.finished_at is not None:
            duration = (self.finished_at - self.created_at).total_seconds()
        return RunInfo(
            run_id=self.run_id,
            status=self.status,
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
        )


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
    ) -> None:
        self.agent = agent
        self.bus = bus
        self.deps = deps
        self.max_concurrent_runs = max_concurrent_runs
        self.retention_seconds = retention_seconds
        self.max_retained_runs = max_retained_runs
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self._runs: dict[str, RunRecord] = {}
        self._running = 0
        self._slots = 0  # runs of the protocol endpoints (AG-UI, Vercel AI), which stream to one client
        self._timers: set[asyncio.TimerHandle] = set()
        self._chores: set[asyncio.Task[None]] = set()

    # ---- limits ----------------------------------------------------------------------------------------

    def _check_capacity(self) -> None:
        if self._running + self._slots >= self.max_concurrent_runs:
            raise TooManyRuns(self.max_concurrent_runs)

    def acquire_slot(self) -> Callable[[], None]:
        """Count one protocol-endpoint run against the limit (`TooManyRuns` when full); call the result to free it."""
        self._check_capacity()
        self._slots += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._slots -= 1

        return release

    # ---- runs ------------------------------------------------------------------------------------------

    async def start(
        self,
        prompt: str,
        *,
        message_history: Sequence[ModelMessage] | None = None,
        model: Model | None = None,
        model_name: str | None = None,
    ) -> RunRecord:
        """Start a run in its own task and return at once; `TooManyRuns` when the limit is reached."""
        await self.prune()
        self._check_capacity()
        record = RunRecord(run_id=str(uuid.uuid4()), prompt=prompt, model=model_name)
        self._running += 1
        self._runs[record.run_id] = record
        try:
            await self.bus.open(record.run_id)
        except BaseException:
            self._running -= 1
            del self._runs[record.run_id]
            raise
        record.task = asyncio.create_task(
            self._execute(record, message_history, model), name=f"pydantic-deep run {record.run_id}"
        )
        return record

    async def _execute(self, record: RunRecord, history: Sequence[ModelMessage] | None, model: Model | None) -> None:
        run_id = record.run_id
        try:
            stream = run_stream(
                self.agent,
                record.prompt,
                self.deps(),
                message_history=history,
                cancellation_token=record.token,
                model=model,
                run_id=run_id,
            )
            async with aclosing(stream) as events:
                async for event in events:
                    record.observe(event)
                    if record.status != "running":
                        # Settled before anyone can read its agent_end: a client that saw the end can start
                        # the next run at once, and sees the status the end announced.
                        self._settle(record)
                    await self.bus.append(run_id, event)
        except asyncio.CancelledError:
            record.end("cancelled", error="the server stopped before the run finished")
            raise
        except Exception as exc:  # the run's own failure is already in its events; anything else is logged
            record.end("failed", error=f"{type(exc).__name__}: {exc}")
            logger.warning("run %s failed: %s: %s", run_id, type(exc).__name__, exc)
        finally:
            record.end("failed", error="the run ended without an agent_end event")
            self._settle(record)
            with suppress(Exception):
                await self.bus.close(run_id)
            self._schedule_prune()

    def _settle(self, record: RunRecord) -> None:
        if record.finished_monotonic is None:
            record.finished_monotonic = time.monotonic()
            self._running -= 1

    async def get(self, run_id: str) -> RunRecord | None:
        await self.prune()
        return self._runs.get(run_id)

    async def list(self) -> list[RunRecord]:
        """The runs held, newest first."""
        await self.prune()
        return sorted(self._runs.values(), key=lambda r: r.created_at, reverse=True)

    async def require(self, run_id: str) -> RunRecord:
        """The run's record; `UnknownRunError` when it never existed or was dropped."""
        record = await self.get(run_id)
        if record is None:
            raise UnknownRunError(run_id)
        return record

    async def cancel(self, run_id: str) -> RunRecord:
        """Ask a running run to stop; a finished one is left as it is. `UnknownRunError` for no such run."""
        record = await self.require(run_id)
        if record.status == "running":
            record.token.cancel()
        return record

    # ---- retention -------------------------------------------------------------------------------------

    async def prune(self) -> None:
        """Drop finished runs past the retention time, and the oldest beyond the retained count, with their logs."""
        now = time.monotonic()
        finished = sorted(
            (r for r in self._runs.values() if r.finished_monotonic is not None and (r.task is None or r.task.done())),
            key=lambda r: r.finished_monotonic or 0.0,
        )
        excess = len(finished) - self.max_retained_runs
        dropped: list[str] = []
        for index, record in enumerate(finished):
            assert record.finished_monotonic is not None
            if index < excess or now - record.finished_monotonic >= self.retention_seconds:
                del self._runs[record.run_id]
                dropped.append(record.run_id)
        for run_id in dropped:
            await self.bus.discard(run_id)

    def _schedule_prune(self) -> None:
        # Runs from the run's own task, which is not done yet: the timer drops it once the time is up.
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._timers.discard(handle)
            task = loop.create_task(self.prune())
            self._chores.add(task)
            task.add_done_callback(self._chores.discard)

        handle = loop.call_later(self.retention_seconds, fire)
        self._timers.add(handle)

    # ---- shutdown --------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Cancel running runs (they end with `agent_end` status `cancelled`), then stop what is left."""
        tasks = [r.task for r in self._runs.values() if r.task is not None and not r.task.done()]
        for record in self._runs.values():
            record.token.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.shutdown_grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._chores:
            await asyncio.gather(*self._chores, return_exceptions=True)
