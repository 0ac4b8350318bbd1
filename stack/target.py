"""Where the stack runs: this machine, or a box reached over SSH.

A target hands out two things: a shell for host checks (an invoke ``Context``
locally, a Fabric ``Connection`` remotely — the same ``run`` interface), and a
``docker_host`` for the compose wrapper (``ssh://…`` remotely). Nothing is
installed on the remote box; it needs sshd and a Docker engine.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ollama_stack.common.errors import SSHError

if TYPE_CHECKING:
    import invoke
    import paramiko


class Shell(Protocol):
    def run(self, command: str, **kwargs: Any) -> Any: ...


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _connection_class() -> type:
    """Build the Fabric subclass lazily: importing fabric costs ~0.15 s."""
    import fabric
    import paramiko

    class RejectUnknownHost(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
            raise SSHError(
                f"unknown SSH host key for {hostname} ({key.get_name()} {fingerprint(key)})",
                f"if that fingerprint is right, run `ssh {hostname}` once to accept it, "
                f"or `ssh-keyscan {hostname} >> ~/.ssh/known_hosts`",
            )

    class VerifiedConnection(fabric.Connection):
        """Fabric's Connection, but host keys are checked against known_hosts.

        Fabric trusts any key it has not seen (AutoAddPolicy); a maintenance
        tool holding secrets must not.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.client.set_missing_host_key_policy(RejectUnknownHost())
            for path in self._known_hosts_files():
                if path.exists():
                    self.client.load_host_keys(str(path))

        def _known_hosts_files(self) -> list[Path]:
            listed = self.ssh_config.get("userknownhostsfile", "")
            files = [Path(p).expanduser() for p in listed.split()] if listed else []
            return [*files, Path("~/.ssh/known_hosts").expanduser()]

    return VerifiedConnection


def _ssh_failure(host: str, exc: BaseException) -> SSHError:
    import paramiko

    if isinstance(exc, SSHError):
        return exc
    if isinstance(exc, paramiko.AuthenticationException):
        return SSHError(
            f"SSH login to {host} was refused ({exc})",
            "check the user and key (ssh-agent or IdentityFile in ~/.ssh/config)",
        )
    if isinstance(exc, socket.gaierror):
        return SSHError(f"cannot resolve SSH host {host}", "check the name or ~/.ssh/config alias")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return SSHError(f"SSH to {host} timed out", "check that the box is up and reachable")
    if isinstance(exc, OSError):
        return SSHError(
            f"cannot reach SSH on {host}: {exc.strerror or exc}",
            "check that sshd runs there and the port is right",
        )
    return SSHError(f"SSH to {host} failed: {exc}", "try `ssh HOST` by hand to see why")


@dataclass
class Target:
    """This machine (``host=None``) or ``alias`` / ``user@host[:port]``."""

    host: str | None = None
    _shell: Any = field(default=None, repr=False)

    @property
    def is_remote(self) -> bool:
        return self.host is not None

    @property
    def label(self) -> str:
        return self.host or "local"

    @property
    def docker_host(self) -> str | None:
        return f"ssh://{self.host}" if self.host else None

    def shell(self) -> Shell:
        if self._shell is None:
            self._shell = self._open_remote() if self.host else _local_context()
        return self._shell

    def _open_remote(self) -> Any:
        assert self.host
        try:
            conn = _connection_class()(self.host, connect_timeout=10)
            conn.open()
        except Exception as exc:  # paramiko raises a zoo; map them in one place
            raise _ssh_failure(self.host, exc) from None
        return conn

    def dial(self, host: str, port: int, timeout: float) -> Any:
        """A connected socket-like object to host:port as seen from the target."""
        if not self.host:
            return socket.create_connection((host, port), timeout=timeout)
        transport = self.shell().client.get_transport()  # type: ignore[attr-defined]
        channel = transport.open_channel(
            "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout
        )
        channel.settimeout(timeout)
        return channel

    def close(self) -> None:
        if self._shell is not None and self.host:
            self._shell.close()
        self._shell = None


def _local_context() -> invoke.Context:
    import invoke

    return invoke.Context()


def run_quiet(shell: Shell, command: str) -> tuple[int, str]:
    """Run a host command for a check: never echo, never raise on failure."""
    env = {"LC_ALL": "C"}
    try:
        result = shell.run(command, hide=True, warn=True, in_stream=False, env=env)
    except Exception as exc:  # the SSH session dropped under us
        host = getattr(shell, "host", None)
        if host is None:
            raise
        raise _ssh_failure(host, exc) from None
    return result.exited, result.stdout
