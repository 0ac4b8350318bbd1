"""An OpenSSH process whose stdin and stdout are our socket: how docker reaches
an ``ssh://`` engine (`ssh HOST docker system dial-stdio`), and how a bulk
forward runs (`ssh -W`). The ``ssh`` on PATH with its own config, as docker's
ssh:// uses, and never prompting: a login that needs a prompt fails instead.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence


def batch_argv(user: str | None, port: int | None, *options: str) -> list[str]:
    """``ssh`` that never prompts (BatchMode), with ``options``, as ``user`` on ``port``."""
    argv = ["ssh", "-o", "BatchMode=yes", *options]
    argv += ["-l", user] if user else []
    argv += ["-p", str(port)] if port else []
    return argv


def stdio_socket(
    argv: Sequence[str], timeout: float
) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """Our end of a socket pair, and the process that has the other end as its
    stdin and stdout. An OSError (no ssh to run) leaves nothing open."""
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            list(argv), stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL
        )
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.settimeout(timeout)
    return ours, process


def end(process: subprocess.Popen[bytes], grace: float) -> None:
    """ssh ends when its stdin closes; one that lingers past ``grace`` seconds is stopped."""
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
