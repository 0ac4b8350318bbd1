"""Read-only questions to the Docker Engine API, without the docker CLI.

`ComposeProject` (compose/client.py) asks here first for what it only reads
(its containers, a question asked inside one): one HTTP request over the
engine's unix socket costs a millisecond, where `docker compose ps` costs a
process and python-on-whales ~0.2 s of imports. The engine is found as the
docker CLI finds it (``DOCKER_HOST``, then ``DOCKER_CONTEXT`` or the current
context in its config.json); an ``ssh://`` engine is reached through
`ssh HOST docker system dial-stdio`, whose stdin and stdout carry the HTTP.

Whatever this module cannot do (a tcp:// or TLS engine, an engine that does
not answer, an SSH login that needs a prompt) raises ``EngineUnreachable``;
the caller then asks the CLI, which says what is wrong the way it always did.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ollama_stack.common import sshpipe

DEFAULT_SOCKET = "/var/run/docker.sock"
TIMEOUT = 10.0  # seconds for one answer (an SSH login included)
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
ONEOFF_LABEL = "com.docker.compose.oneoff"
NUMBER_LABEL = "com.docker.compose.container-number"


class EngineUnreachable(Exception):
    """This path cannot answer; the docker CLI is asked instead."""


@dataclass(frozen=True)
class Engine:
    """Where the Engine API answers: a unix socket, or an SSH command whose
    stdin and stdout are the connection (`docker system dial-stdio`)."""

    socket_path: str = ""
    ssh_argv: tuple[str, ...] = ()

    @contextmanager
    def connection(self, timeout: float = TIMEOUT) -> Iterator[http.client.HTTPConnection]:
        """One HTTP connection to the engine, closed (and its ssh ended) afterwards.

        ``timeout`` is the caller's time left too (an exec's deadline): ending
        the ssh waits no longer than that, nor than 2 s."""
        ends_by = time.monotonic() + timeout
        sock, process = self._dial(timeout)
        conn = _Dialled("docker", timeout=timeout)
        conn.sock = sock
        try:
            yield conn
        except HTTPError:
            raise  # an answer: the engine said no
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise EngineUnreachable(str(exc) or type(exc).__name__) from None
        finally:
            conn.close()
            sock.close()
            if process is not None:
                # never under 0.1 s: an ssh about to end by itself gets to end
                sshpipe.end(process, grace=max(0.1, min(2.0, ends_by - time.monotonic())))

    def _dial(self, timeout: float) -> tuple[socket.socket, subprocess.Popen[bytes] | None]:
        if self.socket_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(self.socket_path)
            except OSError as exc:
                sock.close()
                raise EngineUnreachable(f"{self.socket_path}: {exc.strerror or exc}") from None
            return sock, None
        try:
            return sshpipe.stdio_socket(self.ssh_argv, timeout)
        except OSError as exc:
            raise EngineUnreachable(str(exc)) from None

    def get_json(self, path: str, timeout: float = TIMEOUT) -> Any:
        """A listing's answer; any refusal means the CLI should ask instead."""
        try:
            with self.connection(timeout) as conn:
                return _answer(conn, "GET", path)
        except HTTPError as exc:
            raise EngineUnreachable(str(exc)) from None


class _Dialled(http.client.HTTPConnection):
    """HTTP over the connection we dialled. http.client would open a TCP one to
    "docker:80" when the engine closes ours; there is none to open."""

    def connect(self) -> None:
        raise ConnectionError("the engine closed the connection")


def _answer(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> Any:
    """The decoded JSON of one request; a status outside 2xx is an HTTPError."""
    payload = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if not 200 <= response.status < 300:
        raise HTTPError(response.status, _message(data))
    return json.loads(data) if data.strip() else None


class HTTPError(http.client.HTTPException):
    """The engine answered, and said no (404: no such container, 409: not running)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _message(data: bytes) -> str:
    try:
        return str(json.loads(data).get("message", "")) or data.decode(errors="replace")
    except (ValueError, AttributeError):
        return data.decode(errors="replace").strip()


# -- finding the engine, as the docker CLI does ---------------------------------


def locate(docker_host: str | None, environ: Mapping[str, str] = os.environ) -> Engine:
    """The engine the docker CLI would talk to for ``docker_host`` (None: this
    machine's, by ``DOCKER_HOST`` or the current context)."""
    host = docker_host or environ.get("DOCKER_HOST") or _context_host(environ)
    return engine_at(host or f"unix://{DEFAULT_SOCKET}")


def engine_at(host: str) -> Engine:
    parts = urlsplit(host)
    if parts.scheme == "unix" and parts.path:
        return Engine(socket_path=parts.path)
    if parts.scheme == "ssh" and parts.hostname:
        try:
            port = parts.port
        except ValueError:  # a scoped IPv6 address (fe80::1%eth0): the CLI knows it
            raise EngineUnreachable(f"{host} is asked through the CLI") from None
        # urlsplit lowercases the host; an ~/.ssh/config alias is passed as written
        host = parts.netloc.rpartition("@")[2].removesuffix(f":{port}").strip("[]")
        return Engine(ssh_argv=_ssh_argv(parts.username, host, port))
    raise EngineUnreachable(f"{parts.scheme or host}:// engines are asked through the CLI")


def _ssh_argv(user: str | None, host: str, port: int | None) -> tuple[str, ...]:
    """The docker CLI's own ssh command for an ``ssh://`` engine, but never
    prompting: a login that needs one is left to the CLI."""
    argv = sshpipe.batch_argv(user, port, "-o", "ConnectTimeout=30", "-T")
    return (*argv, "--", host, "docker", "system", "dial-stdio")


def _context_host(environ: Mapping[str, str]) -> str | None:
    """The docker endpoint of the current context (``DOCKER_CONTEXT``, else
    config.json's currentContext); None for the default context."""
    config_dir = Path(environ.get("DOCKER_CONFIG") or Path(environ.get("HOME", "~")) / ".docker")
    name = environ.get("DOCKER_CONTEXT") or _current_context(config_dir)
    if not name or name == "default":
        return None
    digest = hashlib.sha256(name.encode()).hexdigest()
    if (config_dir / "contexts" / "tls" / digest).exists():
        raise EngineUnreachable(f"context {name} uses TLS")
    try:
        meta = json.loads((config_dir / "contexts" / "meta" / digest / "meta.json").read_text())
        return str(meta["Endpoints"]["docker"]["Host"])
    except (OSError, ValueError, KeyError, TypeError):
        raise EngineUnreachable(f"context {name} cannot be read here") from None


def _current_context(config_dir: Path) -> str | None:
    try:
        return json.loads((config_dir / "config.json").read_text()).get("currentContext")
    except (OSError, ValueError, AttributeError):
        return None


# -- the questions ----------------------------------------------------------------


def project_containers(engine: Engine, project: str) -> list[dict[str, Any]]:
    """Every container of a compose project, as `docker compose ps --all
    --format json` prints them (the fields we read), sorted by name.

    Compose lists containers carrying the project's label and a config hash
    (one-off and orphaned ones too, with --all), and gives health only for
    a running container: the engine's status line carries it.
    """
    return [compose_row(c) for c in project_summaries(engine, project)]


def project_summaries(engine: Engine, project: str) -> list[dict[str, Any]]:
    """The engine's own summaries of those containers (with ImageID), by name."""
    labels = [f"{PROJECT_LABEL}={project}", CONFIG_HASH_LABEL]
    query = urlencode({"all": "1", "filters": json.dumps({"label": labels})})
    listed = engine.get_json(f"/containers/json?{query}") or []
    return sorted(listed, key=lambda c: _canonical_name(c.get("Names") or []))


def project_volumes(engine: Engine, project: str, having: str = "") -> list[dict[str, Any]]:
    """The volumes of a compose project (``having``: only those with that
    label), by name, as `docker volume ls --filter label=...` lists them."""
    labels = [f"{PROJECT_LABEL}={project}", *([having] if having else [])]
    listed = engine.get_json(f"/volumes?{urlencode({'filters': json.dumps({'label': labels})})}")
    volumes = (listed.get("Volumes") if isinstance(listed, dict) else None) or []
    return sorted(volumes, key=lambda v: v.get("Name") or "")


def image(engine: Engine, reference: str) -> dict[str, Any] | None:
    """`docker image inspect REFERENCE`'s answer; None when the engine has no such image."""
    try:
        with engine.connection() as conn:
            return _answer(conn, "GET", f"/images/{quote(reference, safe='/:@')}/json")
    except HTTPError as exc:
        if exc.status == 404:
            return None
        raise EngineUnreachable(str(exc)) from None


def compose_row(container: Mapping[str, Any]) -> dict[str, Any]:
    """One Engine API container summary as one row of `compose ps --format json`."""
    labels = container.get("Labels") or {}
    ports = sorted(container.get("Ports") or [], key=lambda p: p.get("PrivatePort", 0))
    state = str(container.get("State", ""))
    status = str(container.get("Status", ""))
    return {
        "Name": _canonical_name(container.get("Names") or []),
        "Service": labels.get(SERVICE_LABEL, ""),
        "State": state,
        "Health": _health(state, status),
        "Image": container.get("Image", ""),
        "Status": status,
        "Publishers": [
            {
                "URL": p.get("IP", ""),
                "TargetPort": p.get("PrivatePort", 0),
                "PublishedPort": p.get("PublicPort", 0),
                "Protocol": p.get("Type", ""),
            }
            for p in ports
        ],
        "Labels": ",".join(f"{key}={value}" for key, value in labels.items()),
    }


def _canonical_name(names: list[str]) -> str:
    """The container's own name: links add names with more than one slash."""
    for name in names:
        if name.count("/") == 1:
            return name.lstrip("/")
    return names[0].lstrip("/") if names else ""


_HEALTH_SUFFIXES = {
    "(healthy)": "healthy",
    "(unhealthy)": "unhealthy",
    "(health: starting)": "starting",
}


def _health(state: str, status: str) -> str:
    if state != "running":
        return ""
    return next((h for suffix, h in _HEALTH_SUFFIXES.items() if status.endswith(suffix)), "")


def exec_in(
    engine: Engine, project: str, service: str, argv: list[str], timeout: float
) -> tuple[int, str]:
    """`docker compose exec -T SERVICE ARGV` through the Engine API: (exit code,
    stdout, or stderr and stdout on failure), as `bounded_run` answers.

    One deadline covers every step (the lookup, create, start, output and exit
    code); when it passes the answer is 124. A failure before the start request
    is sent is ``EngineUnreachable``: nothing ran, and the CLI may ask. From the
    start request on the command may run, so a failure is ``ExecLost``: running
    it a second time would be wrong for anything not idempotent.
    """
    deadline = time.monotonic() + timeout
    started = False
    try:
        # One connection up to the start, which the engine hands over to the
        # output; the exit code is asked on a second one.
        with engine.connection(_left(deadline)) as conn:
            exec_id = _create_exec(conn, project, service, argv, deadline)
            if exec_id is None:
                return 1, f'service "{service}" is not running'
            sock = _open(conn)  # the start needs it: closed by the engine, nothing ran
            started = True
            out, err = _run_exec(conn, sock, exec_id, deadline)
        exit_code = _exit_code(engine, exec_id, deadline)
    except EngineUnreachable as exc:
        if "timed out" in str(exc):
            return 124, f"no answer within {timeout:g} s"
        if started:
            raise ExecLost(str(exc)) from None
        raise
    except HTTPError as exc:  # no such container, not running, or the start refused
        return 1, exc.message
    return exit_code, out if exit_code == 0 else err + out


class ExecLost(Exception):
    """The exec was started and its answer lost (the connection dropped, the
    exit code could not be read): it may have run, and is not run again."""


def _open(conn: http.client.HTTPConnection) -> socket.socket:
    """The connection's socket; an engine that answers with `Connection: close`
    (a socket proxy, Podman) has closed it, which is a lost connection."""
    if conn.sock is None:
        raise ConnectionError("the engine closed the connection")
    return conn.sock


def _left(deadline: float) -> float:
    """Seconds until the deadline; a deadline passed is a time-out."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise EngineUnreachable("timed out")
    return left


def _create_exec(
    conn: http.client.HTTPConnection, project: str, service: str, argv: list[str], deadline: float
) -> str | None:
    """The exec instance made in the service's container (None: none runs)."""
    container = _service_container(conn, project, service)
    if container is None:
        return None
    _open(conn).settimeout(_left(deadline))
    create = {"AttachStdout": True, "AttachStderr": True, "Cmd": list(argv)}
    return str(_answer(conn, "POST", f"/containers/{quote(container)}/exec", create)["Id"])


def _service_container(conn: http.client.HTTPConnection, project: str, service: str) -> str | None:
    """The running container `compose exec` picks: the service's number 1 (or its first)."""
    labels = [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}", f"{ONEOFF_LABEL}=False"]
    query = urlencode({"filters": json.dumps({"label": labels, "status": ["running"]})})
    listed = _answer(conn, "GET", f"/containers/json?{query}") or []
    listed.sort(key=lambda c: (c.get("Labels") or {}).get(NUMBER_LABEL) != "1")
    return str(listed[0]["Id"]) if listed else None


def _run_exec(
    conn: http.client.HTTPConnection, sock: socket.socket, exec_id: str, deadline: float
) -> tuple[str, str]:
    """Start it and read its output to the end, by the deadline: the engine hands
    the connection over to the stream (8-byte frame headers: which stream, then
    the size). ``sock`` is conn's: http.client lets go of it once the response
    owns the stream."""
    sock.settimeout(_left(deadline))
    body = json.dumps({"Detach": False, "Tty": False}).encode()
    conn.request(
        "POST", f"/exec/{exec_id}/start", body=body, headers={"Content-Type": "application/json"}
    )
    response = conn.getresponse()
    if response.status != 200:
        raise HTTPError(response.status, _message(response.read()))
    chunks = []
    while True:
        sock.settimeout(_left(deadline))  # a trickle of output cannot outlast it
        chunk = response.read1(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    data = b"".join(chunks)
    streams: dict[int, list[bytes]] = {1: [], 2: []}
    offset = 0
    while offset + 8 <= len(data):
        kind, size = struct.unpack(">BxxxL", data[offset : offset + 8])
        streams.setdefault(kind, []).append(data[offset + 8 : offset + 8 + size])
        offset += 8 + size
    stdout, stderr = (b"".join(streams[n]).decode(errors="replace") for n in (1, 2))
    return stdout, stderr


def _exit_code(engine: Engine, exec_id: str, deadline: float) -> int:
    """The exec's exit code, once the engine has recorded it (by the deadline)."""
    try:
        while True:  # dialled again when the engine closes the connection after an answer
            with engine.connection(_left(deadline)) as conn:
                while conn.sock is not None:
                    conn.sock.settimeout(_left(deadline))
                    inspected = _answer(conn, "GET", f"/exec/{exec_id}/json")
                    if not inspected.get("Running") and inspected.get("ExitCode") is not None:
                        return int(inspected["ExitCode"])
                    time.sleep(min(0.01, _left(deadline)))
    except HTTPError as exc:  # the exec ran; only its exit code is not known
        raise EngineUnreachable(f"its exit code: {exc}") from None
