"""`Budget`: how much one run may spend (tokens, dollars, steps, seconds), warned before it is gone.

Tokens and dollars are counted by the harness's `SpendLimits` (a `run` window), steps and seconds by
`StepsAndTime`; both are checked before each model request, so the request that crosses a limit
completes and the next one is refused. In a stream, crossing `warn_at` of a limit gives a `guardrail`
event (`action: warn`); a spent budget ends the run with `guardrail` (`action: block`), `error`
(`exception_type` `SpendLimitExceeded` or `BudgetExceeded`, both Pydantic AI `UsageLimitExceeded`s) and
`agent_end`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic_ai import AgentRunResult, CapabilityEvent, RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.capabilities.abstract import WrapRunHandler
from pydantic_ai.exceptions import UsageLimitExceeded
from pydantic_ai.models import ModelRequestContext
from pydantic_ai_harness import SpendLimits
from pydantic_ai_harness.spend import Budget as SpendBudget

__all__ = ("BUDGET_NAME", "Budget", "BudgetExceeded", "BudgetWarning", "StepsAndTime")

BUDGET_NAME = "pydantic_deep"
"""The name of the `SpendLimits` budget a `Budget` sets up (its events are read by that name)."""

Metric = Literal["tokens", "cost_usd", "steps", "seconds"]


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Limits for one run; `None` is no limit. `warn_at` (a fraction, `None` for no warning) warns first.

    ```python
    from pydantic_deep import Budget, create_deep_agent

    agent = create_deep_agent(budget=Budget(max_tokens=50_000, max_cost_usd=0.50, max_steps=20))
    ```
    """

    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_steps: int | None = None
    """Model requests."""
    max_seconds: float | None = None
    """Wall-clock seconds since the run started, checked before each model request."""
    warn_at: float | None = 0.8

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_cost_usd", "max_steps", "max_seconds"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"Budget.{name} must be a positive number, got {value!r}")
        if self.warn_at is not None and not 0 < self.warn_at <= 1:
            raise ValueError(f"Budget.warn_at must be a fraction in (0, 1], got {self.warn_at!r}")

    def capabilities(self) -> list[AbstractCapability[Any]]:
        """The capabilities that hold a run to this budget."""
        caps: list[AbstractCapability[Any]] = []
        if self.max_tokens is not None or self.max_cost_usd is not None:
            spend = SpendBudget[Any](
                usd=Decimal(str(self.max_cost_usd)) if self.max_cost_usd is not None else None,
                tokens=self.max_tokens,
                window="run",
                warn_at=self.warn_at,
                name=BUDGET_NAME,
            )
            caps.append(SpendLimits[Any](budgets=[spend]))
        if self.max_steps is not None or self.max_seconds is not None:
            caps.append(StepsAndTime(self))
        return caps


class BudgetExceeded(UsageLimitExceeded):
    """A `Budget`'s steps or seconds are spent: the run stops before its next model request."""

    _HINT = "Give the run a larger Budget."

    def __init__(self, metric: Metric, limit: float, used: float) -> None:
        self.metric, self.limit, self.used = metric, limit, used
        unit = "model requests" if metric == "steps" else metric
        super().__init__(f"the budget of {limit:g} {unit} is spent ({used:g} used)")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.metric, self.limit, self.used))


@dataclass(kw_only=True)
class BudgetWarning(CapabilityEvent, namespace="pydantic_deep", name="budget_warning"):
    """A run has used `warn_at` of a step or time limit (a `guardrail` warn event in a stream)."""

    metric: str = "steps"
    limit: float = 0
    used: float = 0


@dataclass
class StepsAndTime(AbstractCapability[Any]):
    """Holds runs to a `Budget`'s `max_steps` and `max_seconds`, warning at `warn_at` of each."""

    budget: Budget
    clock: Callable[[], float] = time.monotonic
    """Where the seconds come from (a test or a simulation can give its own)."""
    _started: dict[str, float] = field(default_factory=dict[str, float])
    _warned: dict[str, set[str]] = field(default_factory=dict[str, set[str]])

    async def wrap_run(self, ctx: RunContext[Any], *, handler: WrapRunHandler) -> AgentRunResult[Any]:
        run = ctx.run_id or ""
        self._started[run] = self.clock()
        try:
            return await handler()
        finally:
            self._started.pop(run, None)
            self._warned.pop(run, None)

    async def before_model_request(
        self, ctx: RunContext[Any], request_context: ModelRequestContext
    ) -> ModelRequestContext:
        run = ctx.run_id or ""
        readings: list[tuple[Metric, float | None, float]] = [("steps", self.budget.max_steps, ctx.usage.requests)]
        started = self._started.get(run)
        if started is not None:
            readings.append(("seconds", self.budget.max_seconds, round(self.clock() - started, 3)))
        for metric, limit, used in readings:
            if limit is None:
                continue
            if used >= limit:
                raise BudgetExceeded(metric, limit, used)
            warn_at = self.budget.warn_at
            warned = self._warned.setdefault(run, set())
            # A step limit warns when the request about to be made reaches `warn_at` of it.
            level = used + 1 if metric == "steps" else used
            if warn_at is not None and level >= warn_at * limit and metric not in warned:
                warned.add(metric)
                await ctx.emit(BudgetWarning(metric=metric, limit=limit, used=level))
        return request_context
