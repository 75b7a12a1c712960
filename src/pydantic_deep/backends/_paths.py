"""Path arithmetic shared by the backends: absolute POSIX paths compared as text."""

from __future__ import annotations

import posixpath

__all__ = ("contains", "is_root_or_ancestor", "normalize", "parents")


def normalize(path: str) -> str:
    """Check that `path` is an absolute POSIX path and collapse its `.`, `..` and `//` segments as text.

    Raises `TypeError` for a non-string and `ValueError` for a relative path or one holding a NUL byte,
    the errors the workspace protocol reserves for invalid arguments.
    """
    if not isinstance(path, str):  # pyright: ignore[reportUnnecessaryIsInstance] - callers are untyped tools
        raise TypeError(f"path must be a string, got {path!r}")
    if not path.startswith("/"):
        raise ValueError(f"path must be absolute, got {path!r}; join it onto the working directory first")
    if "\0" in path:
        raise ValueError(f"path must not contain a NUL byte, got {path!r}")
    # `normpath` keeps a leading `//` (POSIX leaves its meaning to the system); we treat it as `/`.
    return "/" + posixpath.normpath(path).lstrip("/")


def contains(root: str, path: str) -> bool:
    """Whether normalized `path` is `root` itself or somewhere below it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def is_root_or_ancestor(path: str, working_dir: str) -> bool:
    """Whether removing normalized `path` would take `working_dir` with it."""
    return contains(path, working_dir)


def parents(path: str) -> list[str]:
    """The directories above normalized `path`, from `/` down to its parent (empty for `/`)."""
    result: list[str] = []
    parent = posixpath.dirname(path)
    while path != parent:
        result.append(parent)
        path, parent = parent, posixpath.dirname(parent)
    result.reverse()
    return result
