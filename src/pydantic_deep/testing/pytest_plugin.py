"""The pytest plugin: a `cassette` fixture that records a real model once and replays it after.

It is installed with the package (entry point `pytest11`) and stays inert until a test asks for the
`cassette` fixture or a run passes one of its options:

- `--record-cassettes`: record every cassette a test uses, overwriting the file.
- `--update-golden`: rewrite the golden files `assert_golden` compares with.

`cassette(model)` returns the model to use: a `RecordingModel` when recording (the option is given,
or the file is missing and the provider's API key is set), a `ReplayModel` when the file exists, and
otherwise the test fails saying how to record it. Cassettes live next to the test file, in
`cassettes/<test module>/<test name>.jsonl`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ._assertions import UPDATE_GOLDEN_ENV

if TYPE_CHECKING:  # Pydantic AI is imported when a test uses the fixture, not when pytest loads the plugin
    from pydantic_ai.models import Model

__all__ = ("cassette", "cassette_path")

API_KEY_ENV = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "google-gla": "GEMINI_API_KEY",
    "groq": "GROQ_API_KEY",
    "mistral": "MISTRAL_API_KEY",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pydantic-deep")
    group.addoption("--record-cassettes", action="store_true", help="record every model cassette a test uses, anew")
    group.addoption("--update-golden", action="store_true", help="rewrite the golden files of assert_golden")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--update-golden", default=False):
        os.environ[UPDATE_GOLDEN_ENV] = "1"


def cassette_path(node: pytest.Item) -> Path:
    """Where the cassette of a test lives: `cassettes/<module>/<test name>.jsonl` beside its file."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", node.name).strip("_")
    return node.path.parent / "cassettes" / node.path.stem / f"{name}.jsonl"


def _key_env(model: Model | str) -> str | None:
    system = model.split(":", 1)[0] if isinstance(model, str) else model.system
    return API_KEY_ENV.get(system)


@pytest.fixture
def cassette(request: pytest.FixtureRequest) -> Callable[[Model | str], Model]:
    """`cassette(model)`: the model to run this test with, recording or replaying its cassette."""
    item = request.node
    assert isinstance(item, pytest.Item)
    path = cassette_path(item)
    record = bool(request.config.getoption("--record-cassettes"))

    def use(model: Model | str) -> Model:
        from pydantic_ai.models import infer_model

        from ._cassette import RecordingModel, ReplayModel

        key = _key_env(model)
        has_key = bool(os.environ.get(key)) if key else False
        if record or (not path.exists() and has_key):
            return RecordingModel(infer_model(model) if isinstance(model, str) else model, path)
        if path.exists():
            return ReplayModel(path)
        how = f"set {key} and run pytest with --record-cassettes" if key else "run pytest with --record-cassettes"
        pytest.fail(f"no cassette at {str(path)!r} and no API key to record one: {how}", pytrace=False)

    return use
