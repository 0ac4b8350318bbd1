"""Writing a file whole or not at all, for every module that keeps files."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import ConfigError


def replace_atomically(path: Path, data: bytes, mode: int) -> None:
    """A temporary file, fsync, rename, fsync the directory: a crash or a full
    disk leaves the old file, never half a new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # exactly this mode, whatever the umask
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make renames and new names in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_existing(path: Path) -> None:
    if os.path.lexists(path):
        raise ConfigError(f"{path} already exists", "name a new file; an export never replaces one")


@contextlib.contextmanager
def new_file(path: Path, mode: int) -> Iterator[BinaryIO]:
    """Write a new file under a temporary name next to ``path``, fsync, and
    give it its name only when whole; never replace a file (not even one that
    appeared meanwhile). A failure leaves nothing under either name."""
    refuse_existing(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # exactly this, whatever the umask
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _link(tmp: Path, path: Path) -> None:
    """A hard link never replaces a file; where the filesystem has none, check and rename."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        refuse_existing(path)
    except OSError:
        refuse_existing(path)
        os.replace(tmp, path)
