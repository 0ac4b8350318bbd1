"""A real image registry on loopback for integration tests.

Debian's ``docker-registry`` (distribution 2.8) with filesystem storage in a
temp directory, on 127.0.0.1 and a free port. The engine pushes to it without
any daemon configuration because 127.0.0.0/8 is an insecure-allowed range.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REGISTRY_BIN = Path("/usr/bin/docker-registry")
START_TIMEOUT = 20.0
_PUSHED = re.compile(r"digest: (sha256:[0-9a-f]{64})")
# Loopback only: never through a proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Registry:
    address: str  # "127.0.0.1:PORT", the image-name prefix
    directory: Path
    process: subprocess.Popen[bytes]
    log_file: IO[bytes]
    launched_at: float  # time.monotonic() at Popen
    started_in: float = 0.0  # seconds from Popen until /v2/ answered

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def log(self) -> Path:
        return self.directory / "registry.log"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log_file.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(directory: Path, port: int) -> str:
    # JSON is YAML; no yaml dependency needed for writing it.
    document = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(directory / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    return json.dumps(document, indent=2)


def answers(url: str) -> bool:
    try:
        with _NO_PROXY.open(f"{url}/v2/", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_registry(directory: Path) -> Registry:
    """Start a registry storing under ``directory``; it answers /v2/ on return."""
    if not REGISTRY_BIN.exists():
        raise FileNotFoundError(f"{REGISTRY_BIN} missing (apt-get install docker-registry)")
    directory.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _ in range(3):  # the free port can be taken between probe and bind
        registry = _launch(directory, _free_port())
        if _wait_ready(registry):
            return registry
        registry.stop()
        last_error = registry.log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"docker-registry did not answer /v2/:\n{last_error}")


def _launch(directory: Path, port: int) -> Registry:
    config = directory / "config.yml"
    config.write_text(_config(directory, port))
    # REGISTRY_* variables override the config file; keep the caller's out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    log_file = (directory / "registry.log").open("ab")
    started = time.monotonic()
    process = subprocess.Popen(
        [str(REGISTRY_BIN), "serve", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
    )
    return Registry(f"127.0.0.1:{port}", directory, process, log_file, started)


def _wait_ready(registry: Registry) -> bool:
    deadline = registry.launched_at + START_TIMEOUT
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            return False
        if answers(registry.url):
            registry.started_in = time.monotonic() - registry.launched_at
            return True
        time.sleep(0.05)
    return False


@dataclass(frozen=True)
class RegistryService:
    """The session's registry, a compose service run by pytest-docker."""

    address: str  # "127.0.0.1:PORT", the image-name prefix

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def build_registry_image(tag: str, context: Path) -> None:
    """Debian's registry binary on the Debian/Python base made by dev.standins."""
    shutil.copy2(REGISTRY_BIN, context / "registry")
    (context / "Dockerfile").write_text(
        "FROM ollama-stack-base/debian-python:bookworm\n"
        "COPY registry /usr/local/bin/registry\n"
        'ENTRYPOINT ["registry", "serve", "/etc/registry.yml"]\n'
    )
    build_image(tag, context)


def build_image(tag: str, context: Path, args: dict[str, str] | None = None) -> str:
    """`docker build` with the classic builder (no buildx here); the image ID."""
    build_args = [f"--build-arg={key}={value}" for key, value in (args or {}).items()]
    result = subprocess.run(
        ["docker", "build", "-q", *build_args, "-t", tag, str(context)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise AssertionError(f"building {tag} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _docker(*args: str) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def push(registry: Registry, source_image: str, repository: str, tag: str) -> str:
    """Tag ``source_image`` into the registry, push it, return the pushed digest.

    The digest is read from the engine's RepoDigests and cross-checked with the
    one ``docker push`` printed, so a mismatch fails here, not later.
    """
    target = f"{registry.address}/{repository}:{tag}"
    _docker("tag", source_image, target)
    printed = _PUSHED.findall(_docker("push", target))
    repo_digests = json.loads(
        _docker("image", "inspect", "--format", "{{json .RepoDigests}}", target)
    )
    prefix = f"{registry.address}/{repository}@"
    recorded = [d.removeprefix(prefix) for d in repo_digests or [] if d.startswith(prefix)]
    if not printed or printed[-1] not in recorded:
        raise AssertionError(f"push printed {printed}, RepoDigests hold {repo_digests}")
    return printed[-1]
