"""`create_deep_agent`: a plain Pydantic AI agent with file tools, planning and delegation wired in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_ai import Agent, RunContext, Tool
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.models import Model
from pydantic_ai.tools import ToolFuncEither
from pydantic_ai.workspaces import WorkspaceBackend, WorkspaceRef
from pydantic_ai_harness import FileSystem, Planning, SubAgent, SubAgents
from pydantic_ai_harness.guardrails import ToolGuardrail

from ._guardrails import recorded
from .budget import Budget
from .deps import DeepAgentDeps
from .models import resolve_model
from .streaming.approvals import ApprovalPolicy, stream_policy
from .streaming.approvals import require_approval as approval_guard
from .streaming.capability import StreamTap, relay_subagent_events
from .tracing import Tracing

__all__ = ("DEFAULT_INSTRUCTIONS", "create_deep_agent")

DEFAULT_INSTRUCTIONS = """\
You are a capable assistant that works in steps and shows its work.
- For any task with more than one step, first write a short plan with `write_plan`, and update each \
step's status with `update_task_status` as you go.
- Keep notes, drafts and results in files: `write_file` creates or replaces a file, `edit_file` changes \
part of one (`old_text` must match exactly once), `read_file` reads one, `list_directory` and `find_files` \
show what exists. Paths are relative to the workspace.
- Delegate self-contained sub-tasks with `delegate_task` when a listed sub-agent fits them better.
- Finish with a clear, direct answer to the user."""


@dataclass
class DepsWorkspace(AbstractCapability[DeepAgentDeps]):
    """Hands the harness file tools the run's `DeepAgentDeps.backend` as its workspace."""

    id: str | None = "deps_workspace"

    def get_workspace(self, ctx: RunContext[DeepAgentDeps], *, ref: WorkspaceRef | None) -> WorkspaceBackend | None:
        backend = ctx.deps.backend
        if ref is not None and ref != backend.ref:
            # A ref from an earlier conversation must not redirect this run to another environment.
            return None
        return backend


def create_deep_agent(
    model: Model | str | None = None,
    *,
    instructions: str | None = None,
    tools: Sequence[Tool[DeepAgentDeps] | ToolFuncEither[DeepAgentDeps, ...]] = (),
    subagents: Sequence[Agent[DeepAgentDeps, Any] | SubAgent[DeepAgentDeps]] = (),
    name: str = "assistant",
    description: str | None = None,
    file_tools: bool = True,
    planning: bool = True,
    delegation: bool = True,
    capabilities: Sequence[AbstractCapability[DeepAgentDeps]] = (),
    retries: int = 2,
    require_approval: ApprovalPolicy | None = None,
    budget: Budget | None = None,
    guardrails: Sequence[AbstractCapability[DeepAgentDeps]] = (),
) -> Agent[DeepAgentDeps, str]:
    """Build a deep agent: a plain `pydantic_ai.Agent[DeepAgentDeps, str]` with the harness capabilities.

    ```python
    import asyncio

    from pydantic_deep import DeepAgentDeps, StateBackend, create_deep_agent

    agent = create_deep_agent()  # the offline demo model unless PYDANTIC_DEEP_MODEL is set
    deps = DeepAgentDeps(backend=StateBackend())
    result = asyncio.run(agent.run("Plan a picnic", deps=deps))
    assert "demo model" in result.output
    assert list(deps.backend.files) == ["/workspace/notes-plan-a-picnic.md"]
    ```

    By default the agent has the harness `FileSystem` tools working on the run's `deps.backend`,
    `Planning`, and, when `subagents` are given, `SubAgents` delegation whose sub-agent events stream
    live through `pydantic_deep.streaming`. `file_tools=False`, `planning=False` and `delegation=False`
    switch each off. `tools` takes plain functions (with or without a `RunContext` first argument)
    and `pydantic_ai.Tool`s. `instructions` replaces the default instructions, which describe the tools.
    `require_approval` (tool names, or a function of a call's name and arguments) makes those calls,
    the sub-agents' included, wait for a decision in the stream (`pydantic_deep.streaming.approvals`).
    `budget` (a `Budget`) limits every run's tokens, dollars, steps and seconds. `guardrails` takes the
    harness's `InputGuardrail`, `OutputGuardrail` and `ToolGuardrail` (tool guardrails apply to the
    sub-agents' calls too); in a stream, each redaction and refused tool call is a `guardrail` event, and
    one that fails the run a `guardrail` block event before its `error`.
    """
    if not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    guardrails = [recorded(guard) for guard in guardrails]  # their redactions and refusals reach the stream
    caps: list[AbstractCapability[DeepAgentDeps]] = []
    policy: list[AbstractCapability[DeepAgentDeps]] = []
    if require_approval is not None:
        policy.append(approval_guard(require_approval))
    policy += [guard for guard in guardrails if isinstance(guard, ToolGuardrail)]
    if file_tools:
        caps += [DepsWorkspace(), FileSystem[DeepAgentDeps](content_hashes=False)]
    if planning:
        caps.append(Planning[DeepAgentDeps]())
    if delegation and subagents:
        entries = [entry if isinstance(entry, SubAgent) else SubAgent(entry) for entry in subagents]
        caps.append(
            SubAgents[DeepAgentDeps](
                agents=entries,
                event_stream_handler=relay_subagent_events,
                # Delegated runs stream into the parent's stream and trace under the delegating call.
                # ... and wait for approval where the run's own policy says so (`run_stream(require_approval=)`).
                shared_capabilities=[StreamTap(), Tracing(), *policy, approval_guard(stream_policy)],
            )
        )
    caps.append(Tracing())  # records spans when the run's deps carry a trace_context; a pass-through otherwise
    caps.extend(policy)
    caps += [guard for guard in guardrails if not isinstance(guard, ToolGuardrail)]
    if budget is not None:
        caps.extend(budget.capabilities())
    caps.extend(capabilities)
    return Agent(
        resolve_model(model),
        deps_type=DeepAgentDeps,
        output_type=str,
        name=name,
        description=description,
        instructions=instructions if instructions is not None else DEFAULT_INSTRUCTIONS,
        tools=list(tools),
        capabilities=caps,
        retries=retries,
    )
