"""The HTTP server: start agent runs and stream their events over SSE, WebSocket, AG-UI and Vercel AI.

```python
from pydantic_deep import create_deep_agent, demo_model
from pydantic_deep.server import create_app

app = create_app(create_deep_agent(demo_model()))  # an ASGI app: uvicorn module:app, or serve()
```

Needs the `server` extra (see the README's Install). See docs/server.md for every endpoint.
"""

from ._app import TOKEN_ENV_VAR, create_app, read_tokens_file
from ._errors import ErrorBody, ErrorDetail, FieldError
from ._guard import AuthFunction
from ._serve import ServeOptions, ServerConfigError, check_bind, is_loopback, openapi_schema, serve
from ._wire import ADMIN, RunCreated, RunInfo, RunList, RunRequest, RunSummary, RunUsageInfo

__all__ = (
    "ADMIN",
    "TOKEN_ENV_VAR",
    "AuthFunction",
    "ErrorBody",
    "ErrorDetail",
    "FieldError",
    "RunCreated",
    "RunInfo",
    "RunList",
    "RunRequest",
    "RunSummary",
    "RunUsageInfo",
    "ServeOptions",
    "ServerConfigError",
    "check_bind",
    "create_app",
    "is_loopback",
    "openapi_schema",
    "read_tokens_file",
    "serve",
)
