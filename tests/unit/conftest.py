"""Fixtures for the unit tests.

Every test runs with OLLAMA_STACK_HOME and HOME pointing into its own tmp_path
and with no other OLLAMA_STACK_* variable set, so nothing reads or writes the
real home directory and the developer's environment cannot leak in.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ollama_stack.compose import engine
from ollama_stack.stack import config

from .helpers import Recorder, Route, ServiceServer


@pytest.fixture(autouse=True)
def unit_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Private OLLAMA_STACK_HOME and HOME; no stray OLLAMA_STACK_* settings."""
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)
    for name in ("XDG_CONFIG_HOME", "DOCKER_HOST", "DOCKER_CONTEXT", "COLUMNS", "LINES"):
        monkeypatch.delenv(name, raising=False)
    stack_home = tmp_path / "stack-home"
    home = tmp_path / "home"
    stack_home.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    monkeypatch.setenv(config.HOME_ENV, str(stack_home))
    # No unit test reaches a Docker engine: one that forgets to fake it fails fast.
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/ollama-stack-unit-tests.sock")
    # Nor an ssh:// one through the Engine API reader: reads go to the CLI,
    # whose argv the tests record (test_compose_engine.py tests the reader).
    monkeypatch.setattr(engine, "locate", _no_engine)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)  # no ./invoke.yaml from the checkout
    return stack_home


def _no_engine(docker_host: str | None, environ: object = None) -> engine.Engine:
    raise engine.EngineUnreachable("unit tests ask the CLI")


@pytest.fixture
def stack_home(unit_env: Path) -> Path:
    return unit_env


@pytest.fixture
def local_paths(stack_home: Path) -> config.InstallPaths:
    return config.InstallPaths.for_target(None)


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker` first on PATH that must never actually run.

    python-on-whales resolves the binary with shutil.which, so every argv it
    builds starts with this path; the tests patch the functions that would
    execute it.
    """
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    docker = bindir / "docker"
    docker.write_text("#!/bin/sh\necho 'fake docker must not run' >&2\nexit 99\n")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return docker


@pytest.fixture
def pow_calls(monkeypatch: pytest.MonkeyPatch, fake_docker: Path) -> Recorder:
    """python-on-whales' runners replaced by a recorder (the wrapper boundary)."""
    import python_on_whales.utils as pow_utils

    from ollama_stack.compose import client

    recorder = Recorder()
    monkeypatch.setattr(pow_utils, "run", recorder.run)
    monkeypatch.setattr(pow_utils, "stream_stdout_and_stderr", recorder.stream)
    monkeypatch.setattr(client, "stream_output", recorder.stream)
    monkeypatch.setattr(client, "bounded_run", recorder.bounded)
    return recorder


@pytest.fixture
def http_service() -> Iterator[Callable[[dict[str, Route]], ServiceServer]]:
    """Start a real HTTP server on 127.0.0.1:0 answering the given routes."""
    servers: list[ServiceServer] = []

    def start(routes: dict[str, Route]) -> ServiceServer:
        server = ServiceServer(routes)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.daemon = True
        thread.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
