"""`FilesystemBackend`: a workspace confined to one directory on disk."""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import anyio.to_thread
from pydantic_ai.workspaces import (
    FileEntry,
    LocalWorkspaceBackend,
    SupportsFilesystem,
    SupportsRealpath,
    WorkspaceBackend,
    WorkspaceRef,
    WorkspaceUnavailableError,
)

from ._paths import contains, is_root_or_ancestor, normalize

__all__ = ("FILESYSTEM_PROVIDER", "FilesystemBackend")

FILESYSTEM_PROVIDER = "pydantic-deep-filesystem"
"""`WorkspaceRef.provider` of a directory on this machine; the ref's `id` is the directory."""


@dataclass(frozen=True, kw_only=True)
class _Target:
    """Where a path leads inside the workspace, worked out before anything is opened."""

    root: str
    """The working directory: the root with its symlinks resolved."""
    location: str
    """The path with every symlink but the last component's resolved: what `remove` acts on."""
    real: str
    """The path with every symlink resolved, `..` climbing from a link's target as the kernel does."""

    @property
    def links_out(self) -> bool:
        """Whether the path is itself a link inside the root whose target is outside it."""
        return not contains(self.root, self.real)


def _resolve(path: str, root: str) -> tuple[str, str]:
    """`(location, real)` for `path` (see `_Target`); raise `WorkspaceUnavailableError` if the root is gone."""
    if not os.path.isdir(root):
        raise WorkspaceUnavailableError(f"the workspace directory {root!r} no longer exists")
    name = posixpath.basename(path)
    if name in ("", ".", ".."):
        location = os.path.realpath(path)
        return location, location
    location = posixpath.join(os.path.realpath(posixpath.dirname(path)), name)
    # The same as `realpath(path)`, as the parent is already resolved.
    return location, os.path.realpath(location)


def _list_dir(real: str, shown: str, root: str) -> list[FileEntry]:
    """List the directory at `real`, naming entries under `shown`, without opening anything outside `root`."""
    entries: list[FileEntry] = []
    with os.scandir(real) as scan:
        children = sorted(scan, key=lambda child: child.name)
    for child in children:
        path = posixpath.join(shown, child.name)
        if child.is_symlink() and not contains(root, os.path.realpath(child.path)):
            # The link itself is inside; what it points at is not, so report nothing about it.
            entries.append(FileEntry(name=child.name, path=path, is_dir=False, size=None))
            continue
        try:
            is_dir = child.is_dir()
        except OSError:  # a symlink loop has no target
            is_dir = False
        try:
            size = None if is_dir else child.stat().st_size
        except OSError:  # a broken symlink
            size = None
        entries.append(FileEntry(name=child.name, path=path, is_dir=is_dir, size=size))
    return entries


class FilesystemBackend(WorkspaceBackend, SupportsFilesystem, SupportsRealpath):
    """Keep an agent's files in a directory on disk, and nowhere else, for work that should outlive the run.

    ```python
    import tempfile
    from pathlib import Path

    from pydantic_deep import FilesystemBackend

    root = Path(tempfile.mkdtemp()) / "project"
    backend = FilesystemBackend(root)  # created on first use
    assert backend.ref is None
    ```

    Paths are this machine's absolute paths: the working directory is `root` with its symlinks
    resolved, relative paths resolve under it, and an absolute path inside it is fine. Any path that
    is, or leads, outside it raises `PermissionError` before anything is read or written: `..`
    segments, absolute paths elsewhere, a symlink inside the root pointing out (for reading, writing
    through it, or as a parent directory), and `..` after such a link. Links that stay inside work
    as usual. A link that leads out is an opaque entry whose target is never opened: `list_dir`,
    `stat` and `exists` report it as present, not a directory, of unknown size; `remove` deletes
    the link itself; `realpath` reports where it leads, so boundary checks can refuse it; anything
    else that would follow it raises `PermissionError`.

    There is no command execution: a shell could reach anywhere this process can. The confinement
    covers what goes through this backend; another process swapping a directory for a symlink
    between the check and the operation is outside its reach. File contents move in worker threads,
    through Pydantic AI's `LocalWorkspaceBackend` (POSIX only), which also serializes this backend's
    reads and writes of one file.

    The first operation creates `root` (with its parents) if missing and sets
    [`ref`][pydantic_deep.FilesystemBackend.ref]; `FilesystemBackend(ref=ref)` attaches to that
    directory and raises `WorkspaceUnavailableError` if it is gone, rather than creating it again.
    Nothing ever deletes the directory: whoever holds the ref decides.

    Args:
        root: The directory files live in; `~` is expanded and a relative path is taken from the
            current directory at construction.
        ref: Attach to the directory an earlier backend created instead; pass this or `root`.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, ref: WorkspaceRef | None = None) -> None:
        if (root is None) == (ref is None):
            raise ValueError("pass exactly one of `root`, the directory to work in, or `ref`, to attach to one")
        if ref is not None:
            if ref.provider != FILESYSTEM_PROVIDER:
                raise ValueError(f"unsupported workspace provider {ref.provider!r}; expected {FILESYSTEM_PROVIDER!r}")
            root = ref.id
        assert root is not None
        expanded = Path(root).expanduser()
        # Absolute now, so a later change of the process's directory cannot move the workspace.
        self._root = Path(os.path.normpath(expanded if expanded.is_absolute() else Path.cwd() / expanded))
        self._ref = ref
        self._created = ref is not None
        self._create_lock = anyio.Lock()
        self._local = LocalWorkspaceBackend(self._root)
        self._resolved_root: str | None = None

    @property
    def root(self) -> Path:
        """The directory as given (absolute, symlinks not resolved); `working_dir()` gives the resolved one."""
        return self._root

    @property
    def ref(self) -> WorkspaceRef | None:
        """`WorkspaceRef(provider='pydantic-deep-filesystem', id=<absolute root>)` once the first operation starts."""
        return self._ref

    async def _working_dir(self) -> str:
        """Create the root on first use, then return it resolved, raising `WorkspaceUnavailableError` if gone."""
        if not self._created:
            async with self._create_lock:
                if not self._created:
                    # Recorded before the directory exists: a cancelled caller's thread still creates it.
                    self._ref = WorkspaceRef(provider=FILESYSTEM_PROVIDER, id=str(self._root))
                    try:
                        await anyio.to_thread.run_sync(lambda: self._root.mkdir(parents=True, exist_ok=True))
                    except OSError as error:
                        raise WorkspaceUnavailableError(
                            f"cannot create the workspace directory {str(self._root)!r}: {error}"
                        ) from error
                    self._created = True
        return await self._local.working_dir()

    async def _target(self, path: str, *, parents_inside: bool = True) -> _Target:
        """Where `path` leads, refusing a path outside the root, or (unless told) whose parent directories lead out.

        A path written outside the root is refused without touching the disk. The last component may
        still be a link leading out (`_Target.links_out`): callers that follow it use `_real`.
        """
        root = self._resolved_root or await self._working_dir()
        self._resolved_root = root
        normalized = normalize(path)
        # The root's own spelling counts too: `/tmp/x` is inside when `/tmp` is a link to `/private/tmp`.
        if not (contains(root, normalized) or contains(str(self._root), normalized)):
            raise PermissionError(
                f"{path!r} is outside the workspace root {root!r}: this backend only reads and writes inside it; "
                "use a path relative to the working directory, or an absolute one under the root"
            )
        location, real = await anyio.to_thread.run_sync(_resolve, path, root)
        if parents_inside and not contains(root, location):
            raise self._leads_out(path, root)
        return _Target(root=root, location=location, real=real)

    async def _real(self, path: str) -> tuple[str, str]:
        """The root and the symlink-free path that `path` leads to, which must be inside the root."""
        target = await self._target(path)
        if target.links_out:
            raise self._leads_out(path, target.root)
        return target.root, target.real

    @staticmethod
    def _leads_out(path: str, root: str) -> PermissionError:
        # The link's target is not named: where links lead outside the root is none of the caller's business.
        return PermissionError(
            f"{path!r} leads outside the workspace root {root!r} through a symlink: this backend only reads "
            "and writes inside it; use a path that stays under the root"
        )

    async def working_dir(self) -> str:
        return await self._working_dir()

    async def read_bytes(self, path: str) -> bytes:
        _, real = await self._real(path)
        return await self._local.read_bytes(real)

    async def write_bytes(self, path: str, data: bytes) -> None:
        """Write bytes to a file, creating missing parents and writing through a symlink that stays inside."""
        _, real = await self._real(path)
        await self._local.write_bytes(real, data)

    async def stat(self, path: str) -> FileEntry:
        """Return metadata for a file or directory; a link leading out is reported as `list_dir` reports it."""
        shown = normalize(path)
        target = await self._target(path)
        if target.links_out:
            return FileEntry(name=posixpath.basename(shown), path=shown, is_dir=False, size=None)
        try:
            entry = await self._local.stat(target.real)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            # A symlink loop: the link exists but leads nowhere. Report it as `list_dir` does (no size),
            # so a listing of its directory shows it instead of failing; reading it still says why not.
            return FileEntry(name=posixpath.basename(shown), path=shown, is_dir=False, size=None)
        return replace(entry, name=posixpath.basename(shown), path=shown)

    async def list_dir(self, path: str) -> Sequence[FileEntry]:
        root, real = await self._real(path)
        return await anyio.to_thread.run_sync(_list_dir, real, normalize(path), root)

    async def make_dir(self, path: str) -> None:
        _, real = await self._real(path)
        await self._local.make_dir(real)

    async def remove(self, path: str) -> None:
        """Remove a file, a directory tree, or a symlink itself; refuse the root and its ancestors with `ValueError`."""
        root = self._resolved_root or await self._working_dir()
        normalized = normalize(path)
        if is_root_or_ancestor(normalized, root) or is_root_or_ancestor(normalized, str(self._root)):
            raise ValueError(f"cannot remove {path!r}: it is the workspace root or one of its ancestors")
        target = await self._target(path)
        if is_root_or_ancestor(target.location, target.root):
            raise ValueError(f"cannot remove {path!r}: it leads to the workspace root or one of its ancestors")
        await self._local.remove(target.location)

    async def exists(self, path: str) -> bool:
        """Whether a file or directory exists at the path; a link leading out exists, whatever its target."""
        target = await self._target(path)
        return target.links_out or await self._local.exists(target.real)

    async def realpath(self, path: str) -> str:
        """Resolve `path`'s symlinks, like `os.path.realpath`, for a path inside the root.

        The result lies outside the root when a link leads there: boundary checks (such as the
        harness file tools' `root_dir`) then see it and refuse. A path written outside the root
        raises `PermissionError`.
        """
        return (await self._target(path, parents_inside=False)).real

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._root)!r})"
