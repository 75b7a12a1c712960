"""Small asyncio helpers shared by the bus and the server."""

from __future__ import annotations

import asyncio

__all__ = ("raise_if_cancelling",)


def raise_if_cancelling() -> None:
    """Raise `CancelledError` when the current task was asked to stop.

    For loops that retry on errors: a client library can turn the cancellation that lands in its await into
    an error of its own (a connection or timeout error), and a retry would then swallow the request to stop,
    leaving the task to run on after whoever cancelled it has started waiting for it to end.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
