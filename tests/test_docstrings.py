"""Every ```python example in a docstring of the package runs (STYLE: a docstring's example is executed)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic_ai import models

import pydantic_deep

FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def documented() -> Iterator[tuple[str, str]]:
    seen: set[int] = set()
    for info in pkgutil.walk_packages(pydantic_deep.__path__, "pydantic_deep."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        objects: list[object] = [module]
        for _, value in vars(module).items():
            if getattr(value, "__module__", None) == module.__name__ and (
                inspect.isclass(value) or inspect.isfunction(value)
            ):
                objects.append(value)
                if inspect.isclass(value):
                    objects.extend(v for v in vars(value).values() if inspect.isfunction(v))
        for obj in objects:
            doc = inspect.getdoc(obj)
            if doc is None or id(obj) in seen:
                continue
            seen.add(id(obj))
            for index, match in enumerate(FENCE.finditer(doc)):
                yield f"{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}#{index}", match.group(1)


EXAMPLES = sorted(documented())


@pytest.mark.parametrize(("name", "source"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_docstring_example_runs(name: str, source: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYDANTIC_DEEP_DEMO_DELAY", "0")
    monkeypatch.delenv("PYDANTIC_DEEP_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("docstring_example")
    sys.modules[module.__name__] = module
    try:
        # Examples that start a local OpenAI server talk to it over HTTP like a real provider.
        with models.override_allow_model_requests(True):
            exec(compile(source, name, "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]


def test_there_are_docstring_examples() -> None:
    assert len(EXAMPLES) >= 5
