"""Where the JavaScript clients the suite drives live (tests/js), and whether they are installed."""

from __future__ import annotations

import shutil
from pathlib import Path

JS = Path(__file__).parent / "js"

MISSING = shutil.which("node") is None or not (JS / "node_modules" / "ai").is_dir()
"""Node or the npm packages pinned in tests/js/package-lock.json are not installed."""

WHY = "Node or the npm packages of tests/js are missing: `make services` installs them"
