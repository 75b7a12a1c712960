"""Test seams for your own tests: scripted models, stream assertions, cassettes, and a local OpenAI server.

`ScriptedModel` answers each request with the next step of a script; `assert_events` and
`assert_golden` check whole streams; `RecordingModel` and `ReplayModel` record a real provider once and
replay it offline (the pytest plugin's `cassette` fixture does both); `FakeOpenAIServer` is a local
OpenAI-compatible streaming server that answers from a script.

```python
from pydantic_deep.testing import FakeOpenAIServer

with FakeOpenAIServer(["Hello ", "world"]) as server:
    assert server.base_url.startswith("http://127.0.0.1:")
```

Point Pydantic AI's real OpenAI client at it with `OPENAI_BASE_URL=server.base_url` (and any
`OPENAI_API_KEY`), or pass `OpenAIProvider(base_url=server.base_url, api_key=...)`.
"""

from ._assertions import ANY, UPDATE_GOLDEN_ENV, ExpectedEvent, assert_events, assert_golden, normalize_events
from ._cassette import CassetteMismatch, RecordingModel, ReplayModel
from ._script import (
    DEFAULT_TEXT_CHUNKS,
    Script,
    ScriptError,
    ScriptMessage,
    ScriptMessageToolCall,
    ScriptReply,
    ScriptRequest,
    ScriptResult,
    ScriptTool,
    ScriptToolCall,
    default_script,
)
from ._scripted import Chunk, Fail, ScriptedModel, ScriptedModelError, Step, Text, Thinking, ToolCall
from ._server import FakeOpenAIServer

__all__ = (
    "ANY",
    "DEFAULT_TEXT_CHUNKS",
    "UPDATE_GOLDEN_ENV",
    "CassetteMismatch",
    "Chunk",
    "ExpectedEvent",
    "Fail",
    "FakeOpenAIServer",
    "RecordingModel",
    "ReplayModel",
    "Script",
    "ScriptError",
    "ScriptMessage",
    "ScriptMessageToolCall",
    "ScriptReply",
    "ScriptRequest",
    "ScriptResult",
    "ScriptTool",
    "ScriptToolCall",
    "ScriptedModel",
    "ScriptedModelError",
    "Step",
    "Text",
    "Thinking",
    "ToolCall",
    "assert_events",
    "assert_golden",
    "default_script",
    "normalize_events",
)
