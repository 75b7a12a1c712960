"""A one-event handoff between a run's task and the consumer of its stream."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    """Passes one item at a time; `put` returns only once the consumer has taken the item.

    This is what makes the stream live and bounded: the run can never be more than one event ahead of
    its reader, and memory does not grow with the length of the stream.
    """

    __slots__ = ("_getter", "_item", "_loaded", "_putter")

    def __init__(self) -> None:
        self._item: T | None = None
        self._loaded = False
        self._getter: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None

    async def put(self, item: T) -> None:
        self._item = item
        self._loaded = True
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)
        putter = self._putter = asyncio.get_running_loop().create_future()
        try:
            await putter
        finally:
            self._putter = None

    async def get(self) -> T:
        while not self._loaded:
            getter = self._getter = asyncio.get_running_loop().create_future()
            try:
                await getter
            finally:
                self._getter = None
        item = self._item
        self._item = None
        self._loaded = False
        putter = self._putter
        if putter is not None and not putter.done():
            putter.set_result(None)
        return item  # type: ignore[return-value]
