"""Shared fixtures: every async test runs on asyncio through anyio's pytest plugin."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic_ai import models

# A test that reaches a real provider is a bug: the fake server on 127.0.0.1 is the only model host.
models.ALLOW_MODEL_REQUESTS = False


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> None:
    # Marked while collected (not after), so parametrized coroutine tests get the backend fixture too.
    testable = isinstance(collector, pytest.Module | pytest.Class) and collector.istestfunction(obj, name)
    if testable and inspect.iscoroutinefunction(obj):
        pytest.mark.anyio(obj)
        pytest.mark.usefixtures("anyio_backend")(obj)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
