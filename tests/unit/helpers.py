"""Test doubles shared by the unit tests: a fake shell and real HTTP servers."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# -- a fake shell for host checks ----------------------------------------------


@dataclass
class FakeResult:
    exited: int
    stdout: str
    stderr: str = ""


@dataclass
class FakeShell:
    """Answers ``run`` by the first rule whose key occurs in the command.

    Unmatched commands fail with 127, like a command that is not installed.
    """

    rules: dict[str, tuple[int, str]] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)

    def run(self, command: str, **kwargs: Any) -> FakeResult:
        self.commands.append(command)
        self.kwargs.append(kwargs)
        for key, (code, out) in self.rules.items():
            if key in command:
                return FakeResult(code, out)
        return FakeResult(127, "")


def linux_shell(cpus: int = 2, **extra: tuple[int, str]) -> FakeShell:
    """A Linux x86_64 host with ``cpus`` CPUs, no NVIDIA GPU, and no `ss`."""
    rules = {"uname": (0, f"Linux x86_64\n{cpus}\n")}
    rules.update(extra)
    return FakeShell(rules)


# -- real HTTP servers that answer like the services -----------------------------


@dataclass
class Route:
    status: int
    body: bytes
    delay: float = 0.0
    content_type: str = "application/json"


def json_route(status: int, document: Any, delay: float = 0.0) -> Route:
    return Route(status, json.dumps(document).encode(), delay)


def ollama_routes(delay: float = 0.0) -> dict[str, Route]:
    return {"/api/version": json_route(200, {"version": "0.5.7"}, delay)}


def webui_routes(delay: float = 0.0) -> dict[str, Route]:
    return {"/health": json_route(200, {"status": True}, delay)}


def mcpo_routes(delay: float = 0.0) -> dict[str, Route]:
    document = {"openapi": "3.1.0", "info": {"title": "mcp-time", "version": "1.0.4"}, "paths": {}}
    return {"/openapi.json": json_route(200, document, delay)}


class _Handler(BaseHTTPRequestHandler):
    server: ServiceServer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        self.server.headers.append(dict(self.headers))
        route = self.server.routes.get(self.path)
        if self.server.api_key and self.headers.get("Authorization") != (
            f"Bearer {self.server.api_key}"
        ):
            route = json_route(401, {"detail": "Missing or invalid Authorization header"})
        if route is None:
            route = Route(404, b"<html>not found</html>", content_type="text/html")
        if route.delay:
            time.sleep(route.delay)
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        self.wfile.write(route.body)

    def do_POST(self) -> None:
        """Keeps the body it was sent (a blob upload) and answers 201, as Ollama's /api/blobs."""
        self.server.requests.append(f"POST {self.path}")
        self.server.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ServiceServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes: dict[str, Route]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = routes
        self.requests: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.api_key = ""  # when set, every request needs it as a bearer token (mcpo --strict-auth)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def dial(host: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


class SocketChannel:
    """Stands in for the paramiko Channel Target.dial returns for a remote box:
    the calls a Channel has, over a real socket, but not a ``socket.socket``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.closed = False

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def close(self) -> None:
        self.closed = True
        self._sock.close()


def channel_dialer(channels: list[SocketChannel]) -> Callable[[str, int, float], SocketChannel]:
    """A dialer like a remote Target's: each call a new channel, kept in ``channels``."""

    def dial_channel(host: str, port: int, timeout: float) -> SocketChannel:
        channels.append(SocketChannel(dial(host, port, timeout)))
        return channels[-1]

    return dial_channel


# -- python-on-whales' process runners --------------------------------------------


class Recorder:
    """Stands in for ``python_on_whales.utils.run`` and ``stream_stdout_and_stderr``.

    Remembers every argv; ``run`` answers with ``on_run(argv)`` (or ``stdout``),
    the stream yields ``lines`` then raises ``error`` if one is set.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.stdout = ""
        self.on_run: Callable[[list[str]], str] | None = None
        self.lines: list[tuple[str, bytes]] = []
        self.error: Exception | None = None
        self.error_after_lines = False

    def run(self, args: list[Any], **kwargs: Any) -> str:
        argv = [str(a) for a in args]
        self.calls.append((argv, kwargs))
        if self.error:
            raise self.error
        return self.on_run(argv) if self.on_run else self.stdout

    def bounded(self, argv: list[str], timeout: float) -> tuple[int, str]:
        """Stands in for ``compose.client.bounded_run``: ``run``'s answer, or its failure."""
        from python_on_whales.exceptions import DockerException

        try:
            return 0, self.run(argv, timeout=timeout)
        except DockerException as exc:
            return exc.return_code, (exc.stderr or "") + (exc.stdout or "")

    def stream(self, full_cmd: list[Any], **kwargs: Any) -> Iterator[tuple[str, bytes]]:
        self.calls.append(([str(a) for a in full_cmd], kwargs))
        if self.error and not self.error_after_lines:
            raise self.error
        yield from self.lines
        if self.error:
            raise self.error

    @property
    def argv(self) -> list[str]:
        assert len(self.calls) == 1, self.calls
        return self.calls[0][0]

    def subcommands(self) -> list[str]:
        """The compose (or docker) subcommand of each call, in order."""
        result = []
        for argv, _ in self.calls:
            if "--project-name" in argv:
                result.append(argv[argv.index("--project-name") + 2])
            else:
                result.append(argv[1])
        return result


# -- a service of the tests' own, for the catalog ------------------------------------


def extra_service(name: str, fragment: Any, **description: Any) -> Any:
    """A ServiceSpec the way an extension would describe one (not registered)."""
    from ollama_stack.stack.health import ProbeSpec
    from ollama_stack.stack.services import ServiceSpec
    from ollama_stack.stack.services.core import check_ollama

    defaults: dict[str, Any] = {
        "title": name.capitalize(),
        "env_prefix": name.upper(),
        "image": f"example.invalid/{name}:1",
        "port": 9999,
        "container_port": 80,
        "probe": ProbeSpec("/api/version", check_ollama),
    }
    return ServiceSpec(name=name, fragment=fragment, **(defaults | description))
