"""The `pydantic-deep` command and the terminal renderers it is built from.

`main` is the console script. `RunState` folds a run's `StreamEvent`s into what a terminal shows;
`RunView` renders a `RunState` with Rich (the live view, replay and tests all use it); `PlainPrinter`
prints a run as plain streaming lines; `read_event_log` reads a JSONL event log back.
"""

from ..streaming.state import PlanStep, RunState, SubagentActivity, ToolCall
from ._app import app, main
from ._format import summary_line
from ._log import EventLog, EventLogError, read_event_log, split_runs, write_event
from ._plain import PlainPrinter
from ._view import RunView

__all__ = (
    "EventLog",
    "EventLogError",
    "PlainPrinter",
    "PlanStep",
    "RunState",
    "RunView",
    "SubagentActivity",
    "ToolCall",
    "app",
    "main",
    "read_event_log",
    "split_runs",
    "summary_line",
    "write_event",
)
