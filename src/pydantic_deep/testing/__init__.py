"""Test seams for your own tests: scripted models, stream assertions, cassettes, and a local OpenAI server.

`ScriptedModel` answers each request with the next step of a script; `assert_events` and
`assert_golden` check whole streams; `RecordingModel` and `ReplayModel` record a real provider once and
replay it offline (the pytest plugin's `cassette` fixture does both); `FakeOpenAIServer` is a local
OpenAI-compatible streaming server that answers from a script. Each is imported on first use, so
the pytest plugin costs nothing in a run that does not use it.

```python
from pydantic_deep.testing import FakeOpenAIServer

with FakeOpenAIServer(["Hello ", "world"]) as server:
    assert server.base_url.startswith("http://127.0.0.1:")
```

Point Pydantic AI's real OpenAI client at it with `OPENAI_BASE_URL=server.base_url` (and any
`OPENAI_API_KEY`), or pass `OpenAIProvider(base_url=server.base_url, api_key=...)`.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from ._assertions import (
        ANY,
        UPDATE_GOLDEN_ENV,
        ExpectedEvent,
        assert_events,
        assert_golden,
        normalize_events,
    )
    from ._cassette import (
        CassetteMismatch,
        RecordingModel,
        ReplayModel,
    )
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
    from ._scripted import (
        Chunk,
        Fail,
        ScriptedModel,
        ScriptedModelError,
        Step,
        Text,
        Thinking,
        ToolCall,
    )
    from ._server import (
        FakeOpenAIServer,
    )

_LAZY = {
    "ANY": "._assertions",
    "UPDATE_GOLDEN_ENV": "._assertions",
    "ExpectedEvent": "._assertions",
    "assert_events": "._assertions",
    "assert_golden": "._assertions",
    "normalize_events": "._assertions",
    "CassetteMismatch": "._cassette",
    "RecordingModel": "._cassette",
    "ReplayModel": "._cassette",
    "DEFAULT_TEXT_CHUNKS": "._script",
    "Script": "._script",
    "ScriptError": "._script",
    "ScriptMessage": "._script",
    "ScriptMessageToolCall": "._script",
    "ScriptReply": "._script",
    "ScriptRequest": "._script",
    "ScriptResult": "._script",
    "ScriptTool": "._script",
    "ScriptToolCall": "._script",
    "default_script": "._script",
    "Chunk": "._scripted",
    "Fail": "._scripted",
    "ScriptedModel": "._scripted",
    "ScriptedModelError": "._scripted",
    "Step": "._scripted",
    "Text": "._scripted",
    "Thinking": "._scripted",
    "ToolCall": "._scripted",
    "FakeOpenAIServer": "._server",
}
__getattr__ = lazy_attributes(__name__, _LAZY)

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
