"""Locks on a file, given up when their holder ends (even by kill -9)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import StackError


@contextlib.contextmanager
def exclusive(path: Path, busy: StackError) -> Iterator[None]:
    """Hold ``path`` locked, or raise ``busy`` at once if another process does.
    Threads of this process take turns instead (a fleet's hosts backing up
    into one store)."""
    with _in_turn(path), _flock(path, fcntl.LOCK_EX, busy):
        yield


@contextlib.contextmanager
def shared(path: Path, busy: StackError) -> Iterator[None]:
    """Hold ``path`` locked with other sharers, or raise ``busy`` at once if a
    process holds it exclusively."""
    with _flock(path, fcntl.LOCK_SH, busy):
        yield


@contextlib.contextmanager
def _flock(path: Path, mode: int, busy: StackError) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        yield


_TURNS: dict[str, threading.RLock] = {}
_TURNS_GUARD = threading.Lock()


@contextlib.contextmanager
def _in_turn(path: Path) -> Iterator[None]:
    """One thread of this process at a time holds ``path`` (the same thread
    again goes on to flock, which refuses it as before)."""
    with _TURNS_GUARD:
        turn = _TURNS.setdefault(os.path.abspath(path), threading.RLock())
    while not turn.acquire(timeout=0.2):  # in steps: a fleet's stop must reach the waiter
        pass
    try:
        yield
    finally:
        turn.release()
