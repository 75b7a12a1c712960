"""The package's shape: private modules stay private, and importing a part costs only that part."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports, resolved to its absolute dotted name, with the line."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def test_no_module_imports_another_packages_private_module() -> None:
    """`a.b._c` is private to package `a.b`: only modules inside `a.b` may import it."""
    offences: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        importer = ".".join(path.relative_to(SRC).with_suffix("").parts)
        for line, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] != "pydantic_deep":
                continue
            for depth, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:depth])
                    if not (importer == owner or importer.startswith(owner + ".")):
                        offences.append(f"{path.relative_to(SRC)}:{line} imports {module}")
                    break
    assert offences == []


def modules_after(code: str) -> set[str]:
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(result.stdout.splitlines()[-1]))


HEAVY = ("fastapi", "uvicorn", "redis", "opentelemetry.sdk", "starlette")


@pytest.mark.parametrize(
    ("code", "absent"),
    [
        ("import pydantic_deep", (*HEAVY, "pydantic_ai", "pydantic_ai_harness")),
        ("import pydantic_deep.streaming", (*HEAVY, "pydantic_ai")),
        ("from pydantic_deep import create_deep_agent, DeepAgentDeps", HEAVY),
        ("from pydantic_deep.streaming import run_stream, RunState", HEAVY),
        ("from pydantic_deep.cli import main", (*HEAVY, "pydantic_ai")),
        # Loaded into every pytest run of a project that installs us: it must cost next to nothing.
        ("import pydantic_deep.testing.pytest_plugin", (*HEAVY, "pydantic_ai")),
    ],
)
def test_importing_a_part_imports_only_what_it_needs(code: str, absent: tuple[str, ...]) -> None:
    loaded = modules_after(code)
    assert (
        sorted(m for m in loaded if m.split(".")[0] in {a.split(".")[0] for a in absent} and m.startswith(absent)) == []
    )


def test_help_and_replay_do_not_import_pydantic_ai(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    log.write_text(
        '{"event_type":"agent_start","data":{"agent_name":"a","prompt":"p","model":null},'
        '"timestamp":"2026-01-01T00:00:00+00:00","seq":0,"run_id":"r","agent_name":"a",'
        '"parent_run_id":null,"parent_tool_call_id":null,"depth":0}\n'
    )
    for argv in (["--help"], ["replay", str(log), "--instant"]):
        code = (
            "import sys\nfrom pydantic_deep.cli import app\n"
            f"try:\n    app({argv!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        )
        loaded = modules_after(code)
        assert "pydantic_ai" not in loaded, argv
        assert "pydantic_deep.agent" not in loaded, argv
