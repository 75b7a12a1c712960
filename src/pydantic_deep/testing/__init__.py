"""Test seams for your own tests: a local OpenAI-compatible streaming server that answers from a script.

```python
from pydantic_deep.testing import FakeOpenAIServer

with FakeOpenAIServer(["Hello ", "world"]) as server:
    assert server.base_url.startswith("http://127.0.0.1:")
```

Point Pydantic AI's real OpenAI client at it with `OPENAI_BASE_URL=server.base_url` (and any
`OPENAI_API_KEY`), or pass `OpenAIProvider(base_url=server.base_url, api_key=...)`.
"""

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
from ._server import FakeOpenAIServer

__all__ = (
    "DEFAULT_TEXT_CHUNKS",
    "FakeOpenAIServer",
    "Script",
    "ScriptError",
    "ScriptMessage",
    "ScriptMessageToolCall",
    "ScriptReply",
    "ScriptRequest",
    "ScriptResult",
    "ScriptTool",
    "ScriptToolCall",
    "default_script",
)
