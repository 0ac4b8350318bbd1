"""An exclusive lock on a file, given up when its holder ends (even by kill -9)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from .errors import StackError


@contextlib.contextmanager
def exclusive(path: Path, busy: StackError) -> Iterator[None]:
    """Hold ``path`` locked, or raise ``busy`` at once if another process does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        yield
