"""Private files and directories: what deployhook writes (dumps, Redis data, the mirror) is its own.

Full database dumps, the append-only file holding every deployment record and a mirror whose
config may name credentials must not be readable by the server's other users. The long-running
processes set a 0077 umask at start (`private_umask`), so whatever they or their children
create is private; the helpers here set the mode explicitly too, for callers that run elsewhere
(tests, a library user) and for directories created before this version.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

DIR_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077
SHARED_UMASK = 0o022
"""The usual umask, for files that leave deployhook: a checked-out worktree (see checkout.py)."""


def private_umask() -> int:
    """Make everything this process (and its children) creates private from now on; returns the old umask."""
    return os.umask(UMASK)


def private_dir(path: Path) -> Path:
    """Create path (and its missing parents) if needed, and make it 0700 whatever it was."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make an existing file 0600 (one a child process created, such as git's config)."""
    if path.exists() and path.stat().st_mode & 0o777 != FILE_MODE:
        path.chmod(FILE_MODE)
    return path


def open_private(path: Path, truncate: bool = True) -> BinaryIO:
    """Open path for writing, created 0600 (never world-readable, not even for a moment)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, "wb")


def private_tree(root: Path) -> None:
    """Take group and other access away from everything under root (root too); links are left alone."""
    for path in [root, *root.rglob("*")] if root.exists() else []:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            path.chmod(stat.S_IMODE(mode) & ~0o077)


@contextmanager
def shared_umask() -> Iterator[None]:
    """Create files with the usual 0644/0755 modes within the block (process-wide: keep it short)."""
    previous = os.umask(SHARED_UMASK)
    try:
        yield
    finally:
        os.umask(previous)
