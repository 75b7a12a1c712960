"""Every Python block in README.md and docs/*.md runs, as a reader would paste it.

pytest-examples' own runner crashes inside pytest's report hooks on this pytest version, so blocks are
run here directly: each compiled with its file and line, in a fresh module namespace.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCS = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.exists()]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    source: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found: list[Block] = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start(1)) + 1
            found.append(Block(path, line, match.group(1)))
    return found


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The demo model at full speed, no configured provider, and a scratch directory to write in."""
    monkeypatch.setenv("PYDANTIC_DEEP_DEMO_DELAY", "0")
    monkeypatch.delenv("PYDANTIC_DEEP_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("block", blocks(), ids=str)
def test_docs_example_runs(block: Block, offline_env: None) -> None:
    # Padding keeps the block's own line numbers in tracebacks.
    code = compile("\n" * (block.line - 1) + block.source, str(block.path), "exec")
    module = types.ModuleType(f"docs_example_{block.line}")
    sys.modules[module.__name__] = module
    try:
        exec(code, module.__dict__)
    finally:
        del sys.modules[module.__name__]


def test_docs_have_examples() -> None:
    assert len(blocks()) >= 10


def test_readme_shows_what_make_demo_prints() -> None:
    """The README's sample of `make demo` is the demo's real output, apart from timings and elided text."""
    readme = (ROOT / "README.md").read_text()
    sample = re.search(r"`make demo` prints.*?```text\n(.*?)```", readme, re.DOTALL)
    assert sample is not None, "the README lost its sample of `make demo`"
    makefile = (ROOT / "Makefile").read_text()
    command = re.search(r"^demo:.*?\n\t.*?pydantic-deep run (\"[^\"]+\")", makefile, re.DOTALL | re.MULTILINE)
    assert command is not None
    env = {k: v for k, v in os.environ.items() if k not in ("PYDANTIC_DEEP_MODEL", "OPENAI_API_KEY")}
    result = subprocess.run(
        [sys.executable, "-m", "pydantic_deep.cli", "run", *shlex.split(command.group(1))],
        capture_output=True,
        text=True,
        env={**env, "PYDANTIC_DEEP_DEMO_DELAY": "0", "NO_COLOR": "1", "COLUMNS": "100"},
        timeout=90,
    )
    assert result.returncode == 0, result.stderr

    def timeless(line: str) -> str:
        return re.sub(r"\d+(\.\d+)?(ms|s)\b", "T", line)

    printed = [timeless(line) for line in result.stdout.splitlines()]
    shown = [timeless(line) for line in sample.group(1).splitlines()]
    at = 0
    for line in shown:  # in order; a line ending in "…" stands for any line it begins
        if line == "…":
            continue
        prefix = line.removesuffix("…")
        found = [
            i
            for i in range(at, len(printed))
            if printed[i] == line or (line.endswith("…") and printed[i].startswith(prefix))
        ]
        assert found, f"README line {line!r} is not in the demo's output:\n{result.stdout}"
        at = found[0] + 1
