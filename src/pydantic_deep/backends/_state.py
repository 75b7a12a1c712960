"""`StateBackend`: a workspace whose files live in memory, one environment per backend."""

from __future__ import annotations

import errno
import os
import posixpath
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from anyio.lowlevel import checkpoint
from pydantic_ai.workspaces import (
    FileEntry,
    SupportsFilesystem,
    SupportsRealpath,
    WorkspaceBackend,
    WorkspaceRef,
    WorkspaceUnavailableError,
)

from ._paths import is_root_or_ancestor, normalize, parents

__all__ = ("STATE_PROVIDER", "StateBackend")

STATE_PROVIDER = "pydantic-deep-state"
"""`WorkspaceRef.provider` of an in-memory environment."""

_WORKING_DIR = "/workspace"


def _error(kind: type[OSError], code: int, path: str) -> OSError:
    # Built like the OS builds them, so callers see `errno`, `strerror` and `filename` as usual.
    return kind(code, os.strerror(code), path)


@dataclass(eq=False, kw_only=True)
class _Environment:
    """The files and directories of one in-memory environment, and the lock that keeps them consistent.

    Every method takes the lock for its whole (synchronous) body, so an operation is atomic for
    tasks on one event loop and for threads alike; nothing awaits while holding it.
    """

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    working_dir: str = _WORKING_DIR
    files: dict[str, bytes] = field(default_factory=dict[str, bytes])
    dirs: dict[str, set[str]] = field(default_factory=dict[str, set[str]])
    """Each directory's path, mapped to the names of its children."""
    destroyed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.dirs["/"] = set()
        self._make_dirs(self.working_dir)

    # Callers hold the lock for the helpers below.

    def _check_parents(self, path: str, *, missing: type[OSError] | None = None) -> None:
        """Raise `NotADirectoryError` if a parent of `path` is a file, else `missing` if one is absent."""
        for parent in parents(path):
            if parent in self.files:
                raise _error(NotADirectoryError, errno.ENOTDIR, path)
            if parent not in self.dirs:
                if missing is not None:
                    raise _error(missing, errno.ENOENT, path)
                return

    def _make_dirs(self, path: str) -> None:
        """Create `path` and its missing parents; the caller has checked that none of them is a file."""
        for directory in [*parents(path), path]:
            if directory not in self.dirs:
                self.dirs[directory] = set()
                self.dirs[posixpath.dirname(directory)].add(posixpath.basename(directory))

    def _missing(self, path: str) -> OSError:
        self._check_parents(path)
        return _error(FileNotFoundError, errno.ENOENT, path)

    # Operations.

    def read(self, path: str) -> bytes:
        with self.lock:
            if path in self.dirs:
                raise _error(IsADirectoryError, errno.EISDIR, path)
            try:
                return self.files[path]
            except KeyError:
                raise self._missing(path) from None

    def write(self, path: str, data: bytes) -> None:
        with self.lock:
            if path in self.dirs:
                raise _error(IsADirectoryError, errno.EISDIR, path)
            self._check_parents(path)
            self._make_dirs(posixpath.dirname(path))
            self.files[path] = data
            self.dirs[posixpath.dirname(path)].add(posixpath.basename(path))

    def stat(self, path: str) -> FileEntry:
        with self.lock:
            name = posixpath.basename(path)
            if path in self.dirs:
                return FileEntry(name=name, path=path, is_dir=True, size=None)
            if path in self.files:
                return FileEntry(name=name, path=path, is_dir=False, size=len(self.files[path]))
            raise self._missing(path)

    def list(self, path: str) -> list[FileEntry]:
        with self.lock:
            if path in self.files:
                raise _error(NotADirectoryError, errno.ENOTDIR, path)
            if path not in self.dirs:
                raise self._missing(path)
            entries: list[FileEntry] = []
            for name in sorted(self.dirs[path]):
                child = posixpath.join(path, name)
                data = self.files.get(child)
                entries.append(
                    FileEntry(name=name, path=child, is_dir=data is None, size=None if data is None else len(data))
                )
            return entries

    def make_dir(self, path: str) -> None:
        with self.lock:
            if path in self.files:
                raise _error(FileExistsError, errno.EEXIST, path)
            self._check_parents(path)
            self._make_dirs(path)

    def remove(self, path: str) -> None:
        with self.lock:
            if is_root_or_ancestor(path, self.working_dir):
                raise ValueError(f"cannot remove {path!r}: it is the working directory or one of its ancestors")
            if path in self.files:
                del self.files[path]
            elif path in self.dirs:
                pending = [path]
                while pending:
                    directory = pending.pop()
                    for name in self.dirs.pop(directory):
                        child = posixpath.join(directory, name)
                        if child in self.dirs:
                            pending.append(child)
                        else:
                            del self.files[child]
            else:
                raise self._missing(path)
            self.dirs[posixpath.dirname(path)].discard(posixpath.basename(path))

    def exists(self, path: str) -> bool:
        with self.lock:
            return path in self.files or path in self.dirs

    def snapshot(self) -> dict[str, str]:
        with self.lock:
            return {path: self.files[path].decode("utf-8", errors="replace") for path in sorted(self.files)}

    def destroy(self) -> None:
        with self.lock:
            self.destroyed = True
            self.files.clear()
            self.dirs.clear()


# Environments by id, so `StateBackend(ref=...)` reaches one from the same process. Weak: an
# environment lives exactly as long as some backend holds it, and nothing outlives the last one.
_live_environments: weakref.WeakValueDictionary[str, _Environment] = weakref.WeakValueDictionary()
_live_environments_lock = threading.Lock()


def _initial_environment(files: Mapping[str, str | bytes], environment_id: str | None = None) -> _Environment:
    environment = _Environment() if environment_id is None else _Environment(id=environment_id)
    for name, content in files.items():
        if not isinstance(name, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"file names must be strings, got {name!r}")
        if isinstance(content, str):
            data = content.encode()
        elif isinstance(content, bytes):  # pyright: ignore[reportUnnecessaryIsInstance]
            data = content
        else:
            raise TypeError(f"file contents must be str or bytes, got {type(content).__name__} for {name!r}")
        path = normalize(posixpath.join(environment.working_dir, name))
        try:
            environment.write(path, data)
        except OSError as error:
            raise ValueError(
                f"initial file {name!r} cannot be created at {path!r} ({error.strerror}): "
                "a file and a directory of the same name conflict"
            ) from None
    return environment


class StateBackend(WorkspaceBackend, SupportsFilesystem, SupportsRealpath):
    """Keep an agent's files in memory: the default backend, for runs that need no disk and leave no trace.

    ```python
    from pydantic_deep import StateBackend

    backend = StateBackend(files={"notes.md": "Buy bread"})
    assert backend.ref is None  # no environment until the first operation
    assert backend.files == {"/workspace/notes.md": "Buy bread"}
    ```

    Each backend is its own environment: two backends share nothing, and one backend is safe to
    share between concurrent runs (each operation is atomic, for tasks and threads alike). The
    working directory is `/workspace`; relative paths (through `pydantic_ai.workspaces.Workspace`
    or the harness file tools) resolve under it, and any other absolute path is a valid place too.
    Directories are tracked, so the builtin file errors are those of a real filesystem. There are no
    symlinks, permissions or commands.

    The environment is created by the first operation, which sets [`ref`][pydantic_deep.StateBackend.ref].
    `StateBackend(ref=ref)` reaches the same environment from the same process while some backend
    still holds it (the ref names memory, so it does not survive the process); after that, or after
    [`destroy`][pydantic_deep.StateBackend.destroy], operations raise `WorkspaceUnavailableError`.

    Args:
        files: Initial files, created with the environment: each name, relative to `/workspace` or
            absolute, maps to its text (stored as UTF-8) or bytes. Missing parent directories are
            created; a name that is both a file and another's parent raises `ValueError`.
        ref: Attach to an existing in-memory environment instead of creating one.
        environment_id: The id of the environment `files` create (default: a new random one): a run that
            goes on in another process (a durable server) gets a workspace of the same id there.
        on_change: Awaited after each file this backend writes (`path`, its bytes) or removes (`path`,
            `None`), before the operation returns: a durable server keeps the files with it.
    """

    def __init__(
        self,
        files: Mapping[str, str | bytes] | None = None,
        *,
        ref: WorkspaceRef | None = None,
        on_change: Callable[[str, bytes | None], Awaitable[None]] | None = None,
        environment_id: str | None = None,
    ) -> None:
        if ref is not None:
            if files:
                raise ValueError("pass `files` to create an environment or `ref` to attach to one, not both")
            if ref.provider != STATE_PROVIDER:
                raise ValueError(f"unsupported workspace provider {ref.provider!r}; expected {STATE_PROVIDER!r}")
        self._ref = ref
        # Built now (memory only, no I/O) so bad initial files fail at construction, not mid-run.
        if ref is not None and environment_id is not None:
            raise ValueError("pass `environment_id` to create an environment or `ref` to attach to one, not both")
        if environment_id is not None:  # its ref is known before the first operation
            self._ref = WorkspaceRef(provider=STATE_PROVIDER, id=environment_id)
        self._pending = None if ref is not None else _initial_environment(files or {}, environment_id)
        self._environment: _Environment | None = None
        self._lock = threading.Lock()
        self._on_change = on_change

    @property
    def ref(self) -> WorkspaceRef | None:
        """`WorkspaceRef(provider='pydantic-deep-state', id=<uuid>)` from the first operation on; `None` before."""
        return self._ref

    @property
    def files(self) -> dict[str, str]:
        """A snapshot of every file: absolute path (as the workspace reports it) to its UTF-8 text.

        Keys are sorted; undecodable bytes read as U+FFFD. The dict is a copy: later writes don't
        change it, and changing it doesn't write. Reading it does not create the environment.
        """
        pending = self._pending
        return (pending if pending is not None else self._attached()).snapshot()

    def destroy(self) -> None:
        """Delete this environment and its files, once whoever holds its ref no longer needs them.

        From then on every operation of this backend, and of every other backend attached to the same
        environment, raises `WorkspaceUnavailableError`. Destroying twice does nothing.
        """
        with self._lock:
            if self._environment is None and self._pending is not None:
                # Never used: nothing else can reach it, but this backend must not create one later.
                self._environment, self._pending = self._pending, None
        environment = self._environment
        if environment is None:
            try:
                environment = self._attached()
            except WorkspaceUnavailableError:
                return  # already gone
        environment.destroy()
        with _live_environments_lock:
            if _live_environments.get(environment.id) is environment:
                del _live_environments[environment.id]

    def _attached(self) -> _Environment:
        """The live environment, created or attached on first use."""
        environment = self._environment
        if environment is None:
            with self._lock:
                if self._environment is None:
                    if self._pending is not None:
                        environment = self._pending
                        with _live_environments_lock:
                            _live_environments[environment.id] = environment
                        self._ref = WorkspaceRef(provider=STATE_PROVIDER, id=environment.id)
                        self._pending = None
                    else:
                        assert self._ref is not None
                        with _live_environments_lock:
                            environment = _live_environments.get(self._ref.id)
                        if environment is None:
                            raise WorkspaceUnavailableError(
                                f"in-memory workspace {self._ref.id!r} no longer exists: it was destroyed, or no "
                                "backend in this process holds it; start a new `StateBackend()` instead"
                            )
                    self._environment = environment
                environment = self._environment
        if environment.destroyed:
            raise WorkspaceUnavailableError(f"in-memory workspace {environment.id!r} was destroyed")
        return environment

    async def _ready(self, path: str) -> tuple[_Environment, str]:
        # A checkpoint per operation, so a task doing many of them still yields and can be cancelled.
        await checkpoint()
        return self._attached(), normalize(path)

    async def working_dir(self) -> str:
        await checkpoint()
        return self._attached().working_dir

    async def read_bytes(self, path: str) -> bytes:
        environment, path = await self._ready(path)
        return environment.read(path)

    async def write_bytes(self, path: str, data: bytes) -> None:
        environment, path = await self._ready(path)
        data = bytes(data)
        environment.write(path, data)
        if self._on_change is not None:
            await self._on_change(path, data)

    async def stat(self, path: str) -> FileEntry:
        environment, path = await self._ready(path)
        return environment.stat(path)

    async def list_dir(self, path: str) -> Sequence[FileEntry]:
        environment, path = await self._ready(path)
        return environment.list(path)

    async def make_dir(self, path: str) -> None:
        environment, path = await self._ready(path)
        environment.make_dir(path)

    async def remove(self, path: str) -> None:
        environment, path = await self._ready(path)
        environment.remove(path)
        if self._on_change is not None:
            await self._on_change(path, None)

    async def exists(self, path: str) -> bool:
        environment, path = await self._ready(path)
        return environment.exists(path)

    async def realpath(self, path: str) -> str:
        """The normalized path: there are no symlinks in memory, so boundary checks can trust it."""
        _, path = await self._ready(path)
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ref={self._ref!r})"
