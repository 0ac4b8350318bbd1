"""Where the stack runs: this machine, or a box reached over SSH.

A target hands out two things: a shell for host checks (an invoke ``Context``
locally, a Fabric ``Connection`` remotely — the same ``run`` interface), and a
``docker_host`` for the compose wrapper (``ssh://…`` remotely). Nothing is
installed on the remote box; it needs sshd and a Docker engine.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ollama_stack.common import sshpipe
from ollama_stack.common.errors import ConfigError, SSHError

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
    import logging

    import fabric
    import paramiko

    # paramiko logs a refused port (a probe of a stopped service) as an error;
    # with no handler Python prints it on stderr. Failures reach us as exceptions.
    quiet = logging.getLogger("paramiko")
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())

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

        def __init__(
            self,
            identity: SSHIdentity,
            gateway: Any = None,
            host_commands: dict[str, Any] | None = None,
        ) -> None:
            # OpenSSH has already read the config (Include, Match); paramiko's
            # reader would miss those, so Fabric is given the answer instead.
            config = fabric.Config(overrides={"load_ssh_configs": False})
            for section, values in (host_commands or {}).items():
                config[section].update(values)
            keys = [f for f in identity.identity_files if Path(f).is_file()]
            auth: dict[str, Any] = {"key_filename": keys} if keys else {}
            if identity.identities_only:
                # OpenSSH still asks the agent for copies of the listed keys
                # (a passphrase-protected key lives there): keep the agent.
                auth["look_for_keys"] = False
            super().__init__(
                identity.hostname,
                user=identity.user or None,
                port=identity.port,
                config=config,
                gateway=gateway,
                connect_timeout=identity.connect_timeout or 10,
                connect_kwargs=auth,
            )
            self.client.set_missing_host_key_policy(RejectUnknownHost())
            files = [*identity.known_hosts_files, os.path.expanduser("~/.ssh/known_hosts")]
            for path in dict.fromkeys(files):
                if Path(path).is_file():
                    self.client.load_host_keys(path)

    return VerifiedConnection


def connect(spec: str, config: Any = None) -> Any:
    """A Fabric connection to ``spec`` with OpenSSH's settings, through its
    ProxyJump hops; its commands run with ``config``'s run.* and sudo.* settings."""
    identity = resolve_ssh(spec)
    gateway: Any = identity.proxy_command or None  # Fabric runs a string as ProxyCommand
    for hop in filter(None, identity.proxy_jump.split(",")):
        gateway = _connection_class()(resolve_ssh(hop), gateway)
    return _connection_class()(identity, gateway, host_commands(config))


HOST_COMMAND_SECTIONS = ("run", "sudo", "runners", "timeouts")


def host_commands(config: Any) -> dict[str, Any]:
    """The parts of invoke's configuration that shape host commands."""
    from ..config.layers import plain  # deferred: config imports the catalog, which imports us

    if config is None:
        return {}
    return {key: plain(config[key]) for key in HOST_COMMAND_SECTIONS if key in config}


@dataclass(frozen=True)
class SSHIdentity:
    """How OpenSSH reaches a host, after ~/.ssh/config (Include and Match too).

    Resolved once with `ssh -G`, the same program the docker CLI runs for an
    ``ssh://`` engine, so Fabric's connection and Docker's never disagree.
    """

    hostname: str
    user: str
    port: int
    identity_files: tuple[str, ...] = ()
    known_hosts_files: tuple[str, ...] = ()
    proxy_jump: str = ""  # "" or OpenSSH's [user@]host[:port][,…]
    connect_timeout: int | None = None
    identities_only: bool = False  # only the listed keys (and the agent's copies of them)
    proxy_command: str = ""  # with %h %p %r %% already filled in


_HOST_SPEC = re.compile(r"(?:[\w.][\w.\\+-]*@)?[\w.\[\]:%+-]+")


def check_host_spec(spec: str, what: str = "--remote") -> str:
    """The one place a --remote value (or a --hosts one: ``what``) is judged:
    an alias or ``[user@]host[:port]``.

    Anything else (a URL, an option, a shell word) is refused before it reaches
    ssh, the docker CLI or a file name.
    """
    how = "use an ~/.ssh/config alias or user@host[:port]"
    if spec.startswith("ssh://"):
        raise ConfigError(f"bad {what} {spec!r}: give the host without ssh://", how)
    if not _HOST_SPEC.fullmatch(spec) or spec.startswith("-"):
        raise ConfigError(f"bad {what} {spec!r}", how)
    _user, host, _port = split_host_spec(spec, what)
    if not host or host.startswith("-"):
        raise ConfigError(f"bad {what} {spec!r}: no host", how)
    return spec


def split_host_spec(spec: str, what: str = "--remote") -> tuple[str, str, int | None]:
    """``[user@]host[:port]`` → (user or "", host, port or None)."""
    user, _, rest = spec.rpartition("@")
    host, text = rest, None
    if rest.startswith("["):  # [v6 address] or [v6 address]:port
        host, _, after = rest[1:].partition("]")
        if after and not after.startswith(":"):
            raise ConfigError(f"bad {what} {spec!r}", "use user@[v6-address]:port")
        text = after[1:] if after else None
    elif rest.count(":") == 1:
        host, _, text = rest.partition(":")
    elif ":" in rest:  # a bare IPv6 address has no port; anything else is a typo
        try:
            ipaddress.IPv6Address(rest.split("%")[0])
        except ValueError:
            raise ConfigError(
                f"bad {what} {spec!r}", "use host:port, or [v6-address]:port"
            ) from None
    port = None
    if text is not None:
        port = int(text) if text.isdigit() else None
        if port is None or not 0 < port < 65536:
            raise ConfigError(f"bad SSH port in {spec!r}", "use user@host:port with a port 1-65535")
    return user, host, port


def parse_ssh_g(output: str) -> SSHIdentity:
    """`ssh -G` prints one lowercased `key value` line per option."""
    values: dict[str, list[str]] = {}
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key.lower(), []).append(value.strip())

    def one(key: str, default: str = "") -> str:
        return values.get(key, [default])[0]

    jump = one("proxyjump")
    timeout = one("connecttimeout", "none")
    hostname, user, port = one("hostname"), one("user"), int(one("port", "22"))
    command = one("proxycommand", "none")
    known = one("userknownhostsfile").split() + one("globalknownhostsfile").split()
    return SSHIdentity(
        hostname=hostname,
        user=user,
        port=port,
        identity_files=tuple(os.path.expanduser(p) for p in values.get("identityfile", [])),
        known_hosts_files=tuple(os.path.expanduser(p) for p in known if p),
        proxy_jump="" if jump == "none" else jump,
        connect_timeout=int(timeout) if timeout.isdigit() else None,
        identities_only=one("identitiesonly") == "yes",
        proxy_command="" if command == "none" else _fill_tokens(command, hostname, port, user),
    )


def _fill_tokens(command: str, host: str, port: int, user: str) -> str:
    """`ssh -G` prints ProxyCommand as written; ssh itself fills these in."""
    tokens = {"%h": host, "%p": str(port), "%r": user, "%%": "%"}
    return re.sub(r"%[hpr%]", lambda m: tokens[m.group(0)], command)


def resolve_ssh(spec: str) -> SSHIdentity:
    """Ask OpenSSH how it would reach ``spec``; it reads Include and Match, paramiko does not."""
    import subprocess

    user, host, port = split_host_spec(spec)
    if not host or host.startswith("-"):
        raise SSHError(f"bad SSH host {spec!r}", "use an ~/.ssh/config alias or user@host[:port]")
    argv = ["ssh", "-G", *(["-l", user] if user else []), *(["-p", str(port)] if port else [])]
    try:
        done = subprocess.run(
            [*argv, "--", host],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise SSHError(
            "the OpenSSH client (ssh) is not installed",
            "install it (Debian: apt-get install openssh-client); docker needs it for ssh:// too",
        ) from None
    except subprocess.TimeoutExpired:
        raise SSHError(f"`ssh -G {host}` did not answer", "check ~/.ssh/config") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise SSHError(f"cannot read the SSH settings for {spec}: {reason}", "check ~/.ssh/config")
    return parse_ssh_g(done.stdout)


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
    # invoke's configuration for host commands (run.*, sudo.*); invoke's defaults if None.
    config: Any = field(default=None, repr=False, compare=False)
    _shell: Any = field(default=None, repr=False)
    # Probes and update checks run in threads, and each may be the first to
    # need the shell: one SSH connection is opened, not one per thread.
    _opening: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.host is not None:
            check_host_spec(self.host)

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
        with self._opening:
            if self._shell is None:
                self._shell = self._open_remote() if self.host else _local_context(self.config)
            return self._shell

    def _open_remote(self) -> Any:
        assert self.host
        try:
            conn = connect(self.host, self.config)
            conn.open()
        except Exception as exc:  # paramiko raises a zoo; map them in one place
            raise _ssh_failure(self.host, exc) from None
        return conn

    def dial(self, host: str, port: int, timeout: float) -> Any:
        """A connected socket-like object to host:port as seen from the target."""
        if not self.host:
            # getaddrinfo encodes a str name with the idna codec, whose first use
            # imports unicodedata and stringprep (~2 ms of each status); an
            # ASCII name (an address, localhost) needs none of that.
            name = host.encode() if host.isascii() else host
            return socket.create_connection((name, port), timeout=timeout)
        transport = self.shell().client.get_transport()  # type: ignore[attr-defined]
        channel = transport.open_channel(
            "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout
        )
        channel.settimeout(timeout)
        return channel

    def dial_stream(self, host: str, port: int, timeout: float) -> Any:
        """Like ``dial``, for bulk data (a model blob): on a box, carried by an
        OpenSSH ``ssh -W`` process, whose crypto runs several times faster than
        a paramiko channel's (1 GiB: about 5 s against well over 20 here).
        Uses the ``ssh`` on PATH and its config, as docker's ssh:// does."""
        if not self.host:
            return socket.create_connection((host, port), timeout=timeout)
        user, name, ssh_port = split_host_spec(self.host)
        argv = sshpipe.batch_argv(user, ssh_port, "-W", f"{host}:{port}")
        try:
            ours, process = sshpipe.stdio_socket([*argv, "--", name], timeout)
        except OSError as exc:
            raise _ssh_failure(self.host, exc) from None
        return ForwardedSocket(ours, process)

    def close(self) -> None:
        if self._shell is not None and self.host:
            self._shell.close()
        self._shell = None


class ForwardedSocket:
    """Our end of a socket pair whose other end is an ``ssh -W`` process's
    stdin and stdout; closing it ends that process (waited for, never left)."""

    def __init__(self, sock: socket.socket, process: Any) -> None:
        self._sock, self._process = sock, process

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def close(self) -> None:
        self._sock.close()
        sshpipe.end(self._process, grace=10)


def _local_context(config: Any = None) -> invoke.Context:
    import invoke

    return invoke.Context(config=config)


def quiet_options(shell: Shell) -> dict[str, Any]:
    """How every host command runs: with invoke's run.* settings (run.env,
    run.shell, timeouts.command, …), but never echoed, never a dry run (a check
    must really ask, and --json output must stay one document) and in the C
    locale, which the parsers read."""
    configured = getattr(getattr(shell, "config", None), "run", None)
    env = dict(configured.env) if configured is not None and configured.env else {}
    return {
        "hide": True,
        "warn": True,
        "in_stream": False,
        "echo": False,
        "dry": False,
        "env": {**env, "LC_ALL": "C"},
    }


def run_quiet(shell: Shell, command: str) -> tuple[int, str]:
    """Run a host command for a check: never echo, never raise on failure
    (a configured command timeout that strikes is exit code 124, as timeout(1))."""
    from invoke.exceptions import CommandTimedOut

    try:
        result = shell.run(command, **quiet_options(shell))
    except CommandTimedOut as exc:
        return 124, exc.result.stdout or ""
    except Exception as exc:  # the SSH session dropped under us
        host = getattr(shell, "host", None)
        if host is None:
            raise
        raise _ssh_failure(host, exc) from None
    return result.exited, result.stdout
