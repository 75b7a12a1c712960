"""The Python blocks of README.md and docs/*.md pass pyright in strict mode, as a reader's code would.

Each block is written to a module of its own (they run that way in test_docs.py) and the whole set
is checked in one pyright run against this project's virtual environment. A second check proves
the event types narrow: a misspelt payload key after testing `event_type` is an error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_docs import ROOT, blocks

PYRIGHT = Path(sys.executable).with_name("pyright")


def pyright(directory: Path) -> list[dict[str, object]]:
    config = {"strict": ["."], "pythonVersion": "3.11", "venvPath": str(ROOT), "venv": ".venv"}
    (directory / "pyrightconfig.json").write_text(json.dumps(config))
    result = subprocess.run(
        [str(PYRIGHT), "--outputjson", "-p", str(directory / "pyrightconfig.json")],
        capture_output=True,
        text=True,
        cwd=directory,
        timeout=300,
    )
    report = json.loads(result.stdout)
    return [d for d in report["generalDiagnostics"] if d["severity"] == "error"]


def test_docs_blocks_pass_pyright_strict(tmp_path: Path) -> None:
    for block in blocks():
        name = f"{block.path.stem.replace('-', '_')}_{block.line}.py"
        # Padding keeps the block's own line numbers in pyright's report.
        (tmp_path / name).write_text("\n" * (block.line - 1) + block.source)
    errors = [
        f"{Path(str(d['file'])).name}:{d['range']['start']['line'] + 1}: {d['message']}"  # type: ignore[index]
        for d in pyright(tmp_path)
    ]
    assert errors == []


NARROWING = """
from pydantic_deep.streaming import AnyStreamEvent, StreamEventType


def show(event: AnyStreamEvent) -> str:
    if event.event_type == StreamEventType.LLM_CHUNK:
        return event.data["txt"]
    if event.event_type == StreamEventType.TOOL_END:
        return str(event.data["duration_seconds"])
    return event.data["text"]
"""


def test_narrowing_on_the_event_type_types_the_payload(tmp_path: Path) -> None:
    (tmp_path / "narrowing.py").write_text(NARROWING)
    missing_keys: dict[int, set[str]] = {}
    for diagnostic in pyright(tmp_path):
        line = diagnostic["range"]["start"]["line"] + 1  # type: ignore[index]
        for detail in str(diagnostic["message"]).replace("\xa0", " ").splitlines()[1:]:
            missing_keys.setdefault(line, set()).add(detail.strip())
    # Line 7: a typo in the narrowed payload. Line 9: a key `tool_end` has is fine. Line 10: past both
    # tests, `event` is any other type, and `text` is a key of only the text payloads.
    others = {"AgentStartData", "ToolArgsDeltaData", "ToolStartData", "ToolProgressData", "ProgressData"}
    others |= {"PlanUpdateData", "FileChangeData", "SubagentStartData", "SubagentEndData", "ErrorData", "AgentEndData"}
    others |= {"ApprovalRequiredData", "ApprovalResolvedData", "GuardrailData", "RunResumedData"}
    assert missing_keys == {
        7: {'"txt" is not a defined key in "TextData"'},
        10: {f'"text" is not a defined key in "{name}"' for name in others},
    }
