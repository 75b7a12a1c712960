"""The storage backends: Pydantic AI's conformance suite, plus what each backend promises on its own."""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.workspaces import (
    FileEntry,
    SupportsCommands,
    SupportsFilesystem,
    SupportsRealpath,
    Workspace,
    WorkspaceBackend,
    WorkspaceRef,
    WorkspaceUnavailableError,
)
from pydantic_ai.workspaces.conformance import WorkspaceBackendSuite
from pydantic_ai_harness import FileSystem

from pydantic_deep import FilesystemBackend, StateBackend
from pydantic_deep.backends import FILESYSTEM_PROVIDER, STATE_PROVIDER

# ---------------------------------------------------------------------------------------------------------------------
# Conformance


class TestStateBackendConformance(WorkspaceBackendSuite):
    @pytest.fixture
    def backend(self) -> WorkspaceBackend:
        return StateBackend()

    @pytest.fixture
    def fresh_backend(self) -> Callable[[], WorkspaceBackend]:
        return StateBackend

    @pytest.fixture
    def attach_backend(self) -> Callable[[WorkspaceRef], WorkspaceBackend]:
        return lambda ref: StateBackend(ref=ref)

    @pytest.fixture
    def destroy_environment(self) -> Callable[[WorkspaceBackend], Awaitable[None]]:
        async def destroy(backend: WorkspaceBackend) -> None:
            cast(StateBackend, backend).destroy()

        return destroy

    @pytest.fixture
    def has_real_posix_shell(self) -> bool:
        return False


class TestFilesystemBackendConformance(WorkspaceBackendSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> WorkspaceBackend:
        return FilesystemBackend(tmp_path / "root")

    @pytest.fixture
    def fresh_backend(self, tmp_path: Path) -> Callable[[], WorkspaceBackend]:
        return lambda: FilesystemBackend(tmp_path / f"fresh-{uuid.uuid4().hex}")

    @pytest.fixture
    def attach_backend(self) -> Callable[[WorkspaceRef], WorkspaceBackend]:
        return lambda ref: FilesystemBackend(ref=ref)

    @pytest.fixture
    def destroy_environment(self) -> Callable[[WorkspaceBackend], Awaitable[None]]:
        async def destroy(backend: WorkspaceBackend) -> None:
            await anyio.to_thread.run_sync(shutil.rmtree, await backend.working_dir())

        return destroy

    @pytest.fixture
    def can_detect_exit_with_inherited_output_pipes(self) -> bool:
        # That rule needs commands, which this backend lacks; left on, the suite's cleanup spends 30 s
        # waiting for a background child that never started before the rule skips for want of commands.
        return False

    async def test_cancellation_stops_foreground_work(self, backend: WorkspaceBackend) -> None:
        # The suite's version skips from inside a task group when there are no commands, which leaves a task
        # whose exception nobody retrieves. asyncio logs it, traceback and all, whenever the collector finds
        # it; on CPython 3.11.7, formatting that traceback (an `ast.parse`) in the middle of another
        # `ast.parse` (say, in `create_deep_agent`) raises SystemError there (CPython gh-106905).
        assert not isinstance(backend, SupportsCommands)
        pytest.skip("backend does not implement SupportsCommands")


def test_backends_are_filesystem_only() -> None:
    for backend in (StateBackend(), FilesystemBackend("unused-root")):
        assert isinstance(backend, WorkspaceBackend)
        assert isinstance(backend, SupportsFilesystem)
        assert isinstance(backend, SupportsRealpath)
        assert not isinstance(backend, SupportsCommands)


# ---------------------------------------------------------------------------------------------------------------------
# StateBackend


async def test_files_is_a_snapshot_of_text_by_absolute_path() -> None:
    backend = StateBackend()
    workspace = Workspace(backend)
    await workspace.write_text("notes/plan.md", "# Plan\n")
    await workspace.write_bytes("/workspace/blob.bin", b"ok\xff")
    await workspace.write_text("/elsewhere/outside.txt", "anywhere is fine in memory")
    await workspace.make_dir("empty")

    snapshot = backend.files
    assert snapshot == {
        "/elsewhere/outside.txt": "anywhere is fine in memory",
        "/workspace/blob.bin": "ok\ufffd",
        "/workspace/notes/plan.md": "# Plan\n",
    }
    assert list(snapshot) == sorted(snapshot)

    # A copy both ways: later writes don't show up in it, and changing it doesn't write.
    await workspace.write_text("notes/plan.md", "changed")
    snapshot["/workspace/new.md"] = "not written"
    assert snapshot["/workspace/notes/plan.md"] == "# Plan\n"
    assert not await workspace.exists("new.md")
    assert backend.files["/workspace/notes/plan.md"] == "changed"


async def test_initial_files_resolve_under_the_working_dir_without_creating_the_environment() -> None:
    backend = StateBackend(files={"notes.md": "hello", "docs/a/b.txt": b"\x00bytes", "/data/x.csv": "1,2"})
    assert backend.files == {
        "/data/x.csv": "1,2",
        "/workspace/docs/a/b.txt": "\x00bytes",
        "/workspace/notes.md": "hello",
    }
    assert backend.ref is None

    workspace = Workspace(backend)
    assert await workspace.read_text("notes.md") == "hello"
    assert isinstance(backend.ref, WorkspaceRef)
    assert backend.ref.provider == STATE_PROVIDER
    assert [(entry.name, entry.is_dir) for entry in await workspace.list_dir(".")] == [
        ("docs", True),
        ("notes.md", False),
    ]
    assert await workspace.stat("docs/a/b.txt") == FileEntry(
        name="b.txt", path="/workspace/docs/a/b.txt", is_dir=False, size=6
    )


def test_initial_files_that_conflict_are_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("initial file 'a/b'")):
        StateBackend(files={"a": "file", "a/b": "under a file"})
    with pytest.raises(ValueError, match=re.escape("initial file '.'")):
        StateBackend(files={".": "the working directory itself"})
    with pytest.raises(TypeError, match="str or bytes"):
        StateBackend(files={"a": 1})  # pyright: ignore[reportArgumentType]


def test_state_backend_refs_are_checked() -> None:
    with pytest.raises(ValueError, match="unsupported workspace provider 'docker'"):
        StateBackend(ref=WorkspaceRef(provider="docker", id="x"))
    with pytest.raises(ValueError, match="not both"):
        StateBackend({"a": "b"}, ref=WorkspaceRef(provider=STATE_PROVIDER, id="x"))


async def test_two_state_backends_share_nothing() -> None:
    first, second = StateBackend(), StateBackend()
    await Workspace(first).write_text("shared-name.txt", "first")
    await Workspace(second).write_text("shared-name.txt", "second")
    await Workspace(second).write_text("only-second.txt", "second")

    assert first.files == {"/workspace/shared-name.txt": "first"}
    assert second.files == {"/workspace/only-second.txt": "second", "/workspace/shared-name.txt": "second"}
    assert first.ref is not None
    assert second.ref is not None
    assert first.ref != second.ref

    await Workspace(first).remove("shared-name.txt")
    assert first.files == {}
    assert second.files["/workspace/shared-name.txt"] == "second"


async def test_fifty_concurrent_writers_on_one_state_backend() -> None:
    backend = StateBackend()
    workspace = Workspace(backend)
    writers = 50

    async def writer(index: int) -> None:
        await workspace.write_text(f"out/{index:02d}/result.txt", f"writer {index}\n" * 100)
        await workspace.write_text("out/shared.txt", f"writer {index}\n" * 100)
        await workspace.make_dir(f"out/{index:02d}/scratch")
        await workspace.write_text(f"out/{index:02d}/scratch/tmp", "temporary")
        await workspace.remove(f"out/{index:02d}/scratch")

    async with anyio.create_task_group() as group:
        for index in range(writers):
            group.start_soon(writer, index)

    files = backend.files
    assert files.pop("/workspace/out/shared.txt") in {f"writer {index}\n" * 100 for index in range(writers)}
    assert files == {f"/workspace/out/{index:02d}/result.txt": f"writer {index}\n" * 100 for index in range(writers)}
    entries = await workspace.list_dir("out")
    assert [entry.name for entry in entries] == [*(f"{index:02d}" for index in range(writers)), "shared.txt"]
    for index in range(writers):
        listed = await workspace.list_dir(f"out/{index:02d}")
        assert [(entry.name, entry.is_dir, entry.size) for entry in listed] == [
            ("result.txt", False, len(f"writer {index}\n") * 100)
        ]


async def test_state_backend_attached_by_ref_sees_the_same_files_until_destroyed() -> None:
    backend = StateBackend()
    await Workspace(backend).write_text("a.txt", "from the first backend")
    assert backend.ref is not None
    attached = StateBackend(ref=backend.ref)
    assert attached.files == {"/workspace/a.txt": "from the first backend"}
    await Workspace(attached).write_text("b.txt", "from the second")
    assert backend.files == {"/workspace/a.txt": "from the first backend", "/workspace/b.txt": "from the second"}

    attached.destroy()
    attached.destroy()  # idempotent
    for gone in (backend, attached, StateBackend(ref=backend.ref)):
        with pytest.raises(WorkspaceUnavailableError):
            await gone.working_dir()
        with pytest.raises(WorkspaceUnavailableError):
            gone.files  # noqa: B018

    never_used = StateBackend()
    never_used.destroy()
    assert never_used.ref is None
    with pytest.raises(WorkspaceUnavailableError):
        await never_used.read_bytes("/workspace/x")


async def test_state_backend_errors_match_a_real_filesystem() -> None:
    backend = StateBackend()
    await backend.write_bytes("/workspace/file", b"x")
    with pytest.raises(NotADirectoryError):
        await backend.read_bytes("/workspace/file/child")
    with pytest.raises(NotADirectoryError):
        await backend.stat("/workspace/file/child")
    with pytest.raises(NotADirectoryError):
        await backend.remove("/workspace/file/child")
    with pytest.raises(FileNotFoundError) as missing:
        await backend.read_bytes("/workspace/missing/child")
    assert (missing.value.errno, missing.value.filename) == (2, "/workspace/missing/child")
    with pytest.raises(IsADirectoryError):
        await backend.write_bytes("/", b"x")
    with pytest.raises(ValueError, match="must be absolute"):
        await backend.read_bytes("relative")
    with pytest.raises(ValueError, match="NUL"):
        await backend.write_bytes("/workspace/a\0b", b"x")
    # `//` and `..` are collapsed as text: there are no symlinks in memory.
    await backend.write_bytes("//workspace/sub/../other", b"y")
    assert await backend.realpath("/workspace/sub/../other") == "/workspace/other"
    assert backend.files == {"/workspace/file": "x", "/workspace/other": "y"}


# ---------------------------------------------------------------------------------------------------------------------
# FilesystemBackend


def _tree(directory: Path) -> dict[str, bytes | None]:
    """Every entry below `directory`: file contents, `None` for a directory, the target for a symlink."""
    tree: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            relative = str(path.relative_to(directory))
            if path.is_symlink():
                tree[relative] = b"-> " + os.readlink(path).encode()
            else:
                tree[relative] = None if path.is_dir() else path.read_bytes()
    return tree


@pytest.fixture
def confined(tmp_path: Path) -> tuple[FilesystemBackend, Path, Path]:
    """A backend rooted at `root`, beside an `outside` directory holding a secret, with links pointing out."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    (outside / "dir" / "inner.txt").write_text("inner")
    root.mkdir()
    (root / "inside.txt").write_text("inside")
    (root / "sub").mkdir()
    (root / "link-to-secret").symlink_to(outside / "secret.txt")
    (root / "link-to-dir").symlink_to(outside / "dir")
    (root / "relative-link-out").symlink_to(Path("..", "outside", "secret.txt"))
    (root / "dangling-out").symlink_to(outside / "not-yet.txt")
    (root / "sub" / "up").symlink_to(outside / "dir")
    return FilesystemBackend(root), root, outside


async def test_paths_leading_outside_the_root_are_refused(confined: tuple[FilesystemBackend, Path, Path]) -> None:
    backend, root, outside = confined
    workspace = Workspace(backend)
    before = _tree(outside)
    inside_before = _tree(root)
    links_out = ["link-to-secret", "relative-link-out", "dangling-out", "link-to-dir", "sub/up"]
    attempts = [
        "../outside/secret.txt",
        "../outside/new.txt",
        "/etc/passwd",
        str(outside / "secret.txt"),
        str(outside / "new.txt"),
        "link-to-dir/inner.txt",
        "link-to-dir/new.txt",
        "link-to-dir/newdir/new.txt",
        "sub/up/inner.txt",
        *links_out,
    ]
    for path in attempts:
        resolved = await workspace.resolve(path)
        with pytest.raises(PermissionError, match=re.escape(repr(resolved))):
            await workspace.read_bytes(path)
        with pytest.raises(PermissionError, match=re.escape(repr(resolved))):
            await workspace.write_bytes(path, b"pwned")
        for directory in (path, f"{path}/new-dir"):
            with pytest.raises(PermissionError, match=re.escape(repr(await workspace.resolve(directory)))):
                await workspace.make_dir(directory)
        if path in links_out:
            # The link is an entry of the root; nothing about its target is reported.
            assert await workspace.stat(path) == FileEntry(
                name=posixpath.basename(path), path=resolved, is_dir=False, size=None
            )
            assert await workspace.exists(path)
        else:
            with pytest.raises(PermissionError, match=re.escape(repr(resolved))):
                await workspace.stat(path)
            with pytest.raises(PermissionError, match=re.escape(repr(resolved))):
                await workspace.exists(path)
    for directory in ("..", "/etc", "link-to-dir", "sub/up"):
        with pytest.raises(PermissionError):
            await workspace.list_dir(directory)
    for path in ("../outside/secret.txt", str(outside / "dir"), "link-to-dir/inner.txt"):
        with pytest.raises(PermissionError):
            await workspace.remove(path)
    with pytest.raises(PermissionError, match=re.escape("'/etc/passwd' is outside the workspace root")):
        await workspace.realpath("/etc/passwd")

    # `..` after a link climbs from the link's target, as the kernel does: the backend resolves it so.
    for path in (f"{root}/link-to-dir/../escaped.txt", f"{root}/sub/up/../../escaped.txt"):
        with pytest.raises(PermissionError, match="through a symlink"):
            await backend.write_bytes(path, b"pwned")
        with pytest.raises(PermissionError, match="through a symlink"):
            await backend.read_bytes(path)
    with pytest.raises(PermissionError):
        await backend.read_bytes(f"{root}/link-to-dir/../secret.txt")

    assert _tree(outside) == before
    assert _tree(root) == inside_before
    assert (outside / "secret.txt").read_text() == "secret"


async def test_links_that_stay_inside_the_root_work(confined: tuple[FilesystemBackend, Path, Path]) -> None:
    backend, root, outside = confined
    workspace = Workspace(backend)
    (root / "link-to-inside").symlink_to("inside.txt")
    (root / "sub-link").symlink_to(root / "sub")
    (root / "loop").symlink_to("loop")

    await workspace.write_text("link-to-inside", "written through a link")
    assert (root / "inside.txt").read_text() == "written through a link"
    await workspace.write_text("sub-link/new.txt", "in sub")
    assert (root / "sub" / "new.txt").read_text() == "in sub"
    assert await workspace.read_text("sub-link/new.txt") == "in sub"
    assert await workspace.realpath("sub-link/missing") == str(root / "sub" / "missing")
    # Lexically `..` then re-entering the root is inside, and fine.
    assert await workspace.read_text(f"../{root.name}/inside.txt") == "written through a link"
    # An absolute path inside the root is fine; a link leading out resolves outside, for callers to refuse.
    assert await workspace.read_text(str(root / "sub" / "new.txt")) == "in sub"
    assert await workspace.realpath("link-to-dir/x") == str(outside / "dir" / "x")

    entries = {entry.name: (entry.is_dir, entry.size) for entry in await workspace.list_dir(".")}
    assert entries == {
        # Links leading out report nothing about their targets.
        "dangling-out": (False, None),
        "inside.txt": (False, len("written through a link")),
        "link-to-dir": (False, None),
        "link-to-inside": (False, len("written through a link")),
        "link-to-secret": (False, None),
        "loop": (False, None),
        "relative-link-out": (False, None),
        "sub": (True, None),
        "sub-link": (True, None),
    }
    assert await workspace.stat("sub-link/new.txt") == FileEntry(
        name="new.txt", path=str(root / "sub-link" / "new.txt"), is_dir=False, size=6
    )
    listed = await workspace.list_dir("sub-link")
    assert [entry.path for entry in listed] == [str(root / "sub-link" / "new.txt"), str(root / "sub-link" / "up")]

    # Removing a link removes the link, never what it points at.
    await workspace.remove("link-to-dir")
    await workspace.remove("link-to-secret")
    await workspace.remove("sub-link")
    assert not (root / "link-to-dir").is_symlink()
    assert not (root / "sub-link").exists()
    assert (outside / "dir" / "inner.txt").read_text() == "inner"
    assert (outside / "secret.txt").read_text() == "secret"
    assert (root / "sub" / "new.txt").read_text() == "in sub"

    with pytest.raises(ValueError, match="workspace root"):
        await backend.remove(f"{root}/sub/..")
    with pytest.raises(OSError):
        await workspace.read_bytes("loop")
    assert await workspace.stat("loop") == FileEntry(name="loop", path=str(root / "loop"), is_dir=False, size=None)


async def test_a_symlink_loop_is_one_entry_of_a_listing_not_its_failure(tmp_path: Path) -> None:
    from pydantic_deep import DeepAgentDeps, create_deep_agent

    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "ping").symlink_to("pong")
    (tmp_path / "pong").symlink_to("ping")
    (tmp_path / "notes.txt").write_text("hi")
    returned: list[str] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        results = [str(p.content) for p in messages[-1].parts if isinstance(p, ToolReturnPart)]
        if results:
            returned.extend(results)
            return ModelResponse(parts=[TextPart("done")])
        calls = [ToolCallPart("list_directory", {"path": "."}), ToolCallPart("read_file", {"path": "loop"})]
        return ModelResponse(parts=calls)

    agent = create_deep_agent(FunctionModel(model), planning=False)
    await agent.run("list", deps=DeepAgentDeps(backend=FilesystemBackend(tmp_path)))
    assert returned == [
        "loop  (size unknown)\nnotes.txt  (2 bytes)\nping  (size unknown)\npong  (size unknown)",
        "The path resolves through a symlink loop.",
    ]


async def test_realpath_resolves_like_the_kernel(tmp_path: Path) -> None:
    """The conformance rule that needs `ln -s`, with the links made here instead."""
    backend = FilesystemBackend(tmp_path)
    a = tmp_path / "a"
    (a / "b").mkdir(parents=True)
    for name, target in (("rel", "b"), ("up", "../out"), ("loop1", "loop2"), ("loop2", "loop1")):
        (a / name).symlink_to(target)
    assert await backend.realpath(f"{a}/rel/missing") == f"{a}/b/missing"
    assert await backend.realpath(f"{a}/up/missing") == f"{tmp_path}/out/missing"
    assert await backend.realpath(f"{a}/rel/..") == str(a)
    assert await backend.realpath(f"{a}/up/..") == str(tmp_path)
    with anyio.fail_after(10):
        assert (await backend.realpath(f"{a}/loop1/q")).startswith(f"{a}/")
    assert {entry.name: entry.is_dir for entry in await backend.list_dir(str(a))} == {
        "b": True,
        "loop1": False,
        "loop2": False,
        "rel": True,
        "up": False,
    }


async def test_fifo_read_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    with anyio.fail_after(10), pytest.raises(OSError, match="not a regular file"):
        await backend.read_bytes(str(tmp_path / "fifo"))


async def test_filesystem_backend_creates_its_root_and_attaches_by_ref(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "project"
    backend = FilesystemBackend(root)
    assert backend.ref is None
    assert not root.exists()
    assert await backend.working_dir() == str(root)
    assert backend.ref == WorkspaceRef(provider=FILESYSTEM_PROVIDER, id=str(root))
    assert root.is_dir()

    await Workspace(backend).write_text("notes.md", "kept on disk")
    attached = FilesystemBackend(ref=backend.ref)
    assert await Workspace(attached).read_text("notes.md") == "kept on disk"
    assert (root / "notes.md").read_text() == "kept on disk"

    shutil.rmtree(root)
    for gone in (backend, attached, FilesystemBackend(ref=backend.ref)):
        with pytest.raises(WorkspaceUnavailableError):
            await Workspace(gone).read_bytes("notes.md")
    assert not root.exists()  # never created again once it existed


async def test_filesystem_backend_reaches_its_root_through_a_symlinked_spelling(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    backend = FilesystemBackend(tmp_path / "alias")
    assert await backend.working_dir() == str(tmp_path / "real")
    await backend.write_bytes(str(tmp_path / "alias" / "via-alias.txt"), b"x")
    assert (tmp_path / "real" / "via-alias.txt").read_bytes() == b"x"
    with pytest.raises(ValueError, match="workspace root"):
        await backend.remove(str(tmp_path / "alias"))
    with pytest.raises(PermissionError):
        await backend.write_bytes(str(tmp_path / "elsewhere.txt"), b"x")
    assert sorted(os.listdir(tmp_path)) == ["alias", "real"]


async def test_filesystem_backend_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        FilesystemBackend()
    with pytest.raises(ValueError, match="exactly one"):
        FilesystemBackend(tmp_path, ref=WorkspaceRef(provider=FILESYSTEM_PROVIDER, id=str(tmp_path)))
    with pytest.raises(ValueError, match="unsupported workspace provider 'local'"):
        FilesystemBackend(ref=WorkspaceRef(provider="local", id=str(tmp_path)))
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkspaceUnavailableError, match="cannot create the workspace directory"):
        await FilesystemBackend(tmp_path / "file").working_dir()
    backend = FilesystemBackend(tmp_path)
    with pytest.raises(ValueError, match="must be absolute"):
        await backend.read_bytes("relative.txt")
    assert posixpath.isabs(str(FilesystemBackend("relative-root").root))


# ---------------------------------------------------------------------------------------------------------------------
# Both, under the harness file tools


@pytest.mark.parametrize("kind", ["state", "filesystem"])
async def test_harness_file_tools_work_on_both_backends(kind: str, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    if kind == "state":
        backend: StateBackend | FilesystemBackend = StateBackend()
    else:
        (tmp_path / "root").mkdir()
        (tmp_path / "root" / "escape").symlink_to(tmp_path / "outside")
        backend = FilesystemBackend(tmp_path / "root")
    calls = [
        ("create_directory", {"path": "notes"}),
        ("write_file", {"path": "notes/plan.md", "content": "step one"}),
        ("edit_file", {"path": "notes/plan.md", "old_text": "one", "new_text": "two"}),
        ("read_file", {"path": "notes/plan.md"}),
        ("write_file", {"path": "escape/new.txt", "content": "pwned"}),
        ("search_files", {"pattern": "secret|step"}),
    ]

    def script(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        done = sum(isinstance(part, ToolReturnPart) for message in messages for part in message.parts)
        if done < len(calls):
            name, args = calls[done]
            return ModelResponse(parts=[ToolCallPart(name, args, tool_call_id=f"call-{done}")])
        return ModelResponse(parts=[TextPart("done")])

    agent = Agent(FunctionModel(script), capabilities=[FileSystem(content_hashes=False)])
    result = await agent.run("go", workspace=backend)
    returns = [
        str(part.content)
        for message in result.all_messages()
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    ]
    refusal = (
        "Parent directory 'escape' does not exist. Create the parent directory first."
        if kind == "state"
        else "`escape/new.txt` leads outside the project root "
        f"`{tmp_path / 'root'}` through a symlink; the file tools only work inside it. "
        "Use a path inside the project, or a shell tool if you have one."
    )
    assert returns == [
        "Created directory: notes",
        "Wrote 8 chars (1 lines) to notes/plan.md.",
        "Edited notes/plan.md.",
        "[notes/plan.md | 1 lines]\n     1\tstep two\n",
        refusal,
        "notes/plan.md:1:step two",
    ]
    assert await Workspace(backend).read_text("notes/plan.md") == "step two"
    assert sorted(os.listdir(tmp_path / "outside")) == ["secret.txt"]
