"""common/locks.py: other processes are refused at once; this process's threads take turns."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ollama_stack.common.errors import StackError
from ollama_stack.common.locks import exclusive

BUSY = StackError("busy")


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    lock, order = tmp_path / "lock", []
    first_holds = threading.Event()

    def first() -> None:
        with exclusive(lock, BUSY):
            first_holds.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    first_holds.wait(5)
    with exclusive(lock, BUSY):  # waits for the first host, is not refused
        order.append("second")
    thread.join()
    assert order == ["first done", "second"]


def test_another_process_is_refused_at_once(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl,sys,time; f=open({str(lock)!r},'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(StackError, match="busy"), exclusive(lock, BUSY):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_the_same_thread_again_is_refused_as_before(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    with exclusive(lock, BUSY), pytest.raises(StackError), exclusive(lock, BUSY):
        pass
