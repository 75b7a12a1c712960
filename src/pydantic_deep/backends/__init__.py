"""Where a deep agent's files live: backends on Pydantic AI's workspace protocol.

`StateBackend` keeps them in memory; `FilesystemBackend` confines them to a directory on disk.
Both implement `pydantic_ai.workspaces.WorkspaceBackend` with `SupportsFilesystem` and
`SupportsRealpath`, and pass Pydantic AI's `WorkspaceBackendSuite`.
"""

from ._filesystem import FILESYSTEM_PROVIDER, FilesystemBackend
from ._state import STATE_PROVIDER, StateBackend

__all__ = ("FILESYSTEM_PROVIDER", "STATE_PROVIDER", "FilesystemBackend", "StateBackend")
