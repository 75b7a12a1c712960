"""How `pydantic-deep run` decides the calls that wait for approval: a flag, or a person at the terminal."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO, cast

from ..streaming.approvals import ApprovalCallback, ApprovalDecision
from ..streaming.types import ApprovalRequiredStreamEvent
from ._format import short_args

__all__ = ("NOBODY_TO_ASK", "approval_callback")

NOBODY_TO_ASK = "nobody to ask: run on a terminal, or pass --approve-all or --deny-all"


def approval_callback(
    *, approve_all: bool, deny_all: bool, interactive: bool, pause: Callable[[bool], None]
) -> ApprovalCallback:
    """`--approve-all`, `--deny-all`, the terminal prompt (when stdin and the screen are a terminal), or denial."""
    if approve_all:
        return lambda event: ApprovalDecision(True, decided_by="--approve-all")
    if deny_all:
        return lambda event: ApprovalDecision(False, reason="denied by --deny-all", decided_by="--deny-all")
    if not interactive:
        return lambda event: ApprovalDecision(False, reason=NOBODY_TO_ASK, decided_by="pydantic-deep run")
    return _TerminalAsker(pause)


class _TerminalAsker:
    """Asks at the terminal, one call at a time, with the live view paused while it asks."""

    def __init__(self, pause: Callable[[bool], None], out: TextIO | None = None) -> None:
        self.pause = pause
        self.out = out if out is not None else sys.stderr
        self.lock = asyncio.Lock()

    async def __call__(self, event: ApprovalRequiredStreamEvent) -> ApprovalDecision:
        async with self.lock:  # parallel calls are asked in turn
            self.pause(True)
            try:
                return await self._ask(event)
            finally:
                self.pause(False)

    def _say(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    async def _ask(self, event: ApprovalRequiredStreamEvent) -> ApprovalDecision:
        data = event.data
        who = f" (sub-agent {event.agent_name})" if event.depth else ""
        self._say(f"\n? {data['tool_name']}({short_args(data['args'], 200)}){who} needs approval")
        self._say(f": {data['reason']}\n" if data["reason"] else "\n")
        while True:
            self._say("  [y] approve  [n] deny  [e] edit the arguments > ")
            answer = (await _read_line()).strip().lower()
            if answer in ("y", "yes"):
                return ApprovalDecision(True, decided_by="terminal")
            if answer in ("n", "no"):
                self._say("  why (optional) > ")
                reason = (await _read_line()).strip()
                return ApprovalDecision(False, reason=reason or "denied at the terminal", decided_by="terminal")
            if answer in ("e", "edit"):
                args = await self._edited(data["args"])
                if args is not None:
                    return ApprovalDecision(True, args=args, decided_by="terminal")

    async def _edited(self, current: dict[str, Any]) -> dict[str, Any] | None:
        self._say(f"  arguments as JSON (now {json.dumps(current)}) > ")
        text = (await _read_line()).strip()
        try:
            args = json.loads(text)
        except ValueError as exc:
            self._say(f"  not JSON ({exc}); asked again\n")
            return None
        if not isinstance(args, dict):
            self._say('  the arguments are a JSON object, e.g. {"path": "a.txt"}; asked again\n')
            return None
        edited: dict[str, Any] = {str(key): value for key, value in cast(dict[Any, Any], args).items()}
        return edited


async def _read_line() -> str:
    """One line from stdin without blocking the loop (Ctrl-C still cancels the run while it waits)."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    line: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        loop.remove_reader(fd)
        if not line.done():
            text = sys.stdin.readline()
            if text:
                line.set_result(text)
            else:
                line.set_exception(EOFError("stdin closed while a call waited for approval"))

    loop.add_reader(fd, readable)
    try:
        return await line
    finally:
        loop.remove_reader(fd)
