"""`Tracing`: the Pydantic AI capability that records a run's spans into its `TraceContext`.

The span the current code runs in lives in a `ContextVar`. `wrap_run` sets it to the run's span before
the run body starts (Pydantic AI carries values set there into the body and its tool tasks), and
`wrap_tool_execute` sets it to the tool call's span while the tool runs, so a sub-agent started by
a tool (harness `SubAgents` delegation, or any `agent.run` inside a tool) opens its run span under
that call. Concurrent runs each start in their own task with their own context, so they build
separate trees even when they share one `TraceContext`.
"""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import NoOpTracer
from pydantic import ValidationError
from pydantic_ai import RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.capabilities.abstract import (
    RawToolArgs,
    ValidatedToolArgs,
    WrapModelRequestHandler,
    WrapRunHandler,
    WrapToolExecuteHandler,
)
from pydantic_ai.exceptions import ApprovalRequired, CallDeferred, ModelRetry, RunCancelled
from pydantic_ai.messages import ModelResponse, ToolCallPart
from pydantic_ai.models import ModelRequestContext
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import ToolDefinition

from .._engine import blocking_guardrail, jsonable, model_label, tool_args
from ._context import TraceContext
from ._span import CURRENT_SPAN, AgentRunData, ModelRequestData, Span, SpanEvent, ToolCallData

__all__ = ("Tracing",)


@dataclass
class Tracing(AbstractCapability[Any]):
    """Records a span for the run, each model request and each tool call into the run's `TraceContext`.

    The trace context is `trace_context` when given, else the run's `deps.trace_context` (as on
    `DeepAgentDeps`); with neither, every hook hands straight through, so it costs a run no more than
    any capability that does nothing. `create_deep_agent` installs it; add it to any other agent with
    `Agent(..., capabilities=[Tracing()])`. A sub-agent's run is nested under the delegating call when
    the sub-agent carries it too.
    """

    trace_context: TraceContext | None = None
    _: KW_ONLY
    id: str | None = "pydantic_deep_tracing"
    _trace: TraceContext | None = field(default=None, init=False, repr=False)
    _run_span: Span | None = field(default=None, init=False, repr=False)

    async def for_run(self, ctx: RunContext[Any]) -> Tracing:
        trace = self.trace_context if self.trace_context is not None else getattr(ctx.deps, "trace_context", None)
        if not isinstance(trace, TraceContext) or ctx.realtime:
            return self
        run = replace(self)
        run._trace = trace
        return run

    async def wrap_run(self, ctx: RunContext[Any], *, handler: WrapRunHandler) -> AgentRunResult[Any]:
        trace = self._trace
        if trace is None:
            return await handler()
        current = CURRENT_SPAN.get()
        # A run started inside a traced tool call (a delegated sub-agent) belongs under that call.
        parent = current[1] if current is not None and current[0] is trace else None
        agent_name = ctx.agent.name if ctx.agent is not None else None
        model = ctx.model
        data = AgentRunData(
            agent_name=agent_name,
            run_id=ctx.run_id,
            model=model_label(model),
            prompt=_prompt_text(ctx.prompt, trace),
        )
        span = trace.start_span(
            agent_name or "agent", data, parent=parent, instrumented=not isinstance(ctx.tracer, NoOpTracer)
        )
        self._run_span = span
        token = CURRENT_SPAN.set((trace, span))
        try:
            result = await handler()
        except BaseException as exc:
            _end_failed(trace, span, exc)
            raise
        finally:
            CURRENT_SPAN.reset(token)
        if trace.include_content:
            data.output = _summary(result.output, trace.max_content_chars)
        trace.end_span(span)
        return result

    async def wrap_model_request(
        self, ctx: RunContext[Any], *, request_context: ModelRequestContext, handler: WrapModelRequestHandler
    ) -> ModelResponse:
        trace, run_span = self._trace, self._run_span
        if trace is None or run_span is None:
            return await handler(request_context)
        model = request_context.model
        data = ModelRequestData(model=model.model_name, provider=model.system or None)
        span = trace.start_span(model.model_name, data, parent=run_span, instrumented=run_span.instrumented)
        run = run_span.data
        assert isinstance(run, AgentRunData)
        run.requests += 1
        try:
            response = await handler(request_context)
        except BaseException as exc:
            _end_failed(trace, span, exc)
            raise
        usage = response.usage
        data.response_model = response.model_name
        data.input_tokens = usage.input_tokens
        data.output_tokens = usage.output_tokens
        data.finish_reason = response.finish_reason
        run.input_tokens += usage.input_tokens
        run.output_tokens += usage.output_tokens
        if usage.cost is not None:
            data.cost_usd = float(usage.cost)
            run.cost_usd = (run.cost_usd or 0.0) + data.cost_usd
        trace.end_span(span)
        return response

    async def wrap_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: ValidatedToolArgs,
        handler: WrapToolExecuteHandler,
    ) -> Any:
        trace, run_span = self._trace, self._run_span
        if trace is None or run_span is None:
            return await handler(args)
        span = self._start_tool_span(trace, run_span, call)
        token = CURRENT_SPAN.set((trace, span))
        try:
            result = await handler(args)
        except (CallDeferred, ApprovalRequired) as exc:
            # Control flow, not a failure: the call waits for an approval or an external result.
            data = span.data
            assert isinstance(data, ToolCallData)
            data.result = f"(deferred: {type(exc).__name__})"
            trace.end_span(span)
            raise
        except BaseException as exc:
            _end_failed(trace, span, exc)
            raise
        finally:
            CURRENT_SPAN.reset(token)
        if trace.include_content:
            data = span.data
            assert isinstance(data, ToolCallData)
            data.result = _summary(result, trace.max_content_chars)
        trace.end_span(span)
        return result

    async def on_tool_validate_error(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: RawToolArgs,
        error: ValidationError | ModelRetry,
    ) -> ValidatedToolArgs:
        # The tool never runs, but the model asked for it: record the call as failed so the trace shows why.
        trace, run_span = self._trace, self._run_span
        if trace is not None and run_span is not None:
            span = self._start_tool_span(trace, run_span, call)
            trace.end_span(span, status="error", error=error)
        raise error

    def _start_tool_span(self, trace: TraceContext, run_span: Span, call: ToolCallPart) -> Span:
        run = run_span.data
        assert isinstance(run, AgentRunData)
        run.tool_calls += 1
        args: dict[str, Any] | None = None
        if trace.include_content:
            # The arguments as the model sent them (as in the stream's `tool_start`), not with defaults filled in.
            args = _truncated(jsonable(tool_args(call)), trace.max_content_chars)
        data = ToolCallData(tool_name=call.tool_name, tool_call_id=call.tool_call_id, args=args)
        return trace.start_span(call.tool_name, data, parent=run_span, instrumented=run_span.instrumented)


def _end_failed(trace: TraceContext, span: Span, exc: BaseException) -> None:
    kind = blocking_guardrail(exc) if isinstance(span.data, AgentRunData) else None
    if kind is not None:  # a budget or guardrail stopped the run: the decision, as the stream's `guardrail` says it
        block = {"kind": kind, "action": "block", "message": str(exc)}
        span.events.append(SpanEvent(name="guardrail", time=datetime.now(UTC), attributes=block))
    if isinstance(exc, RunCancelled):
        trace.end_span(span, status="cancelled", error=exc)
    elif isinstance(exc, Exception):
        trace.end_span(span, status="error", error=exc)
    else:  # asyncio.CancelledError (a consumer left the stream, a timeout), KeyboardInterrupt, GeneratorExit
        trace.end_span(span, status="cancelled")


def _prompt_text(prompt: object, trace: TraceContext) -> str | None:
    if prompt is None or not trace.include_content:
        return None
    if isinstance(prompt, str):
        return _cut(prompt, trace.max_content_chars)
    return _summary(prompt, trace.max_content_chars)


def _summary(value: object, limit: int) -> str:
    if isinstance(value, str):
        return _cut(value, limit)
    try:
        text = json.dumps(jsonable(value), ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return _cut(text, limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _truncated(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return _cut(value, limit)
    if isinstance(value, dict):
        return {key: _truncated(item, limit) for key, item in value.items()}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list):
        return [_truncated(item, limit) for item in value]  # pyright: ignore[reportUnknownVariableType]
    return value
