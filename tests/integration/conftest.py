"""Integration fixtures: the real CLI against a live engine, stand-in images,
and a real second host (network namespace + dockerd + sshd) for --remote.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "ollama-stack"
STANDIN_TAG = "test"
BROKEN_TAG = "test-broken"
REQUIRE = os.environ.get("OST_REQUIRE_INTEGRATION") == "1"  # set by scripts/test.sh
SERVICES = ("ollama", "webui", "mcp_proxy")


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"integration prerequisite missing: {reason}")
    pytest.skip(reason)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or dict(os.environ),
        stdin=subprocess.DEVNULL,
        cwd=Path(os.environ["HOME"]),  # no invoke.yaml or compose file picked up by accident
    )


def docker(*args: str, host: str | None = None, check: bool = True) -> str:
    env = dict(os.environ)
    if host:
        env["DOCKER_HOST"] = host
    result = subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="session")
def engine() -> None:
    if shutil.which("docker") is None:
        _unavailable("no docker CLI")
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        _unavailable("no Docker engine reachable")
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if compose.returncode != 0:
        _unavailable("no Compose v2 plugin")


@pytest.fixture(scope="session")
def standin_images(engine: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Build the stand-ins through the tool itself (dev.standins), once per run."""
    home = tmp_path_factory.mktemp("standin-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_STACK_")}
    env["OLLAMA_STACK_HOME"] = str(home)
    for tag in (STANDIN_TAG, BROKEN_TAG):
        result = run_cli("dev.standins", "--version", tag, env=env)
        assert result.returncode == 0, result.stderr
    images = yaml.safe_load((home / "config.yaml").read_text())["images"]
    assert images["ollama"] == f"ollama-stack-standin/ollama:{BROKEN_TAG}"
    return {svc: image.replace(BROKEN_TAG, STANDIN_TAG) for svc, image in images.items()}


@dataclass
class Installation:
    project: str
    ports: dict[str, int]
    env: dict[str, str]
    remote: str | None = None
    docker_host: str | None = None
    extra: list[str] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        remote = ["--remote", self.remote] if self.remote and args[0] != "dev.standins" else []
        return run_cli(*args, *remote, env=self.env, timeout=timeout)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.cli(*args)
        assert result.returncode == 0, f"{args} exited {result.returncode}: {result.stderr}"
        return result

    def status(self) -> dict:
        return json.loads(self.ok("stack.status", "--json").stdout)

    def _labelled(self, *listing: str) -> list[str]:
        """Names of this project's resources, by compose label, from the plain docker CLI."""
        label = f"label=com.docker.compose.project={self.project}"
        out = docker(
            *listing[:-1], "--filter", label, "--format", listing[-1], host=self.docker_host
        )
        return sorted(out.split())

    def containers(self) -> list[str]:
        return self._labelled("ps", "-a", "{{.Names}}")

    def volumes(self) -> list[str]:
        return self._labelled("volume", "ls", "{{.Name}}")

    def networks(self) -> list[str]:
        return self._labelled("network", "ls", "{{.Name}}")

    def teardown(self) -> None:
        # Clean up by label with the plain docker CLI: independent of the code under test.
        removals = (
            (["rm", "-f"], self.containers),
            (["volume", "rm", "-f"], self.volumes),
            (["network", "rm"], self.networks),
        )
        for command, listing in removals:
            names = listing()
            if names:
                docker(*command, *names, host=self.docker_host, check=False)
        # The adoption mark (`stack.adopt`) carries the project label, so it went
        # above; by its name too, should a test have made it without the label.
        mark = f"{self.project}_ollama-stack-adoption"
        docker("volume", "rm", "-f", mark, host=self.docker_host, check=False)
        rollback = docker(
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            f"ollama-stack-rollback/{self.project}/*",
            host=self.docker_host,
        ).split()
        if rollback:
            docker("rmi", *rollback, host=self.docker_host, check=False)


@pytest.fixture
def make_installation(standin_images: dict[str, str]) -> Iterator:
    made: list[Installation] = []

    def make(
        *,
        install: bool = True,
        images: dict[str, str] | None = None,
        remote: str | None = None,
        docker_host: str | None = None,
        **settings: str,
    ) -> Installation:
        project = f"ost{uuid.uuid4().hex[:8]}"
        ports = dict(zip(SERVICES, free_ports(3), strict=True))
        env = dict(os.environ)
        # Each installation has its own home, as two real ones would.
        env["OLLAMA_STACK_HOME"] = str(Path(os.environ["OLLAMA_STACK_HOME"]) / project)
        env["OLLAMA_STACK_PROJECT"] = project
        for service, port in ports.items():
            env[f"OLLAMA_STACK_PORTS_{service.upper()}"] = str(port)
        for service, image in {**standin_images, **(images or {})}.items():
            env[f"OLLAMA_STACK_IMAGES_{service.upper()}"] = image
        for key, value in settings.items():
            env[f"OLLAMA_STACK_{key.upper()}"] = value
        inst = Installation(project, ports, env, remote, docker_host)
        made.append(inst)
        if install:
            inst.ok("stack.install")
        return inst

    yield make
    for inst in made:
        inst.teardown()


# -- the second host ----------------------------------------------------------


@dataclass
class TestHost:
    name: str
    dir: Path
    addr: str
    docker_host: str  # the namespace daemon's socket, for asserting from outside

    def trust(self, home: Path, known: bool = True) -> None:
        """Give the temp home an ssh config alias and, if ``known``, the host's key.

        The block goes in without its UserKnownHostsFile, so ~/.ssh/known_hosts
        alone decides (test_remote also reaches the host through an Include).
        """
        block = (self.dir / "ssh_config").read_text().splitlines()
        kept = [line for line in block if "UserKnownHostsFile" not in line]
        (home / ".ssh" / "config").write_text("\n".join(kept) + "\n")
        known_hosts = home / ".ssh" / "known_hosts"
        if known:
            shutil.copy(self.dir / "known_hosts", known_hosts)
        else:
            known_hosts.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def test_host(
    standin_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestHost]:
    if os.geteuid() != 0:
        _unavailable("the second host needs root (network namespace, dockerd)")
    for tool in ("ip", "nsenter", "dockerd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            _unavailable(f"{tool} is missing")
    name = f"os{uuid.uuid4().hex[:5]}"
    directory = tmp_path_factory.mktemp("testhost")
    script = ROOT / "scripts" / "testhost.sh"
    up = subprocess.run(
        ["bash", str(script), "up", name, str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert up.returncode == 0, f"testhost up failed:\n{up.stdout}\n{up.stderr}"
        env = dict(
            line.split("=", 1) for line in (directory / "env").read_text().split() if "=" in line
        )
        host = TestHost(name, directory, env["TESTHOST_ADDR"], env["TESTHOST_DOCKER_HOST"])
        # Images reach the remote daemon the way an operator would ship them: save | ssh load.
        save = subprocess.Popen(
            ["docker", "save", *standin_images.values()], stdout=subprocess.PIPE
        )
        load = subprocess.run(
            ["/usr/bin/ssh", "-F", str(directory / "ssh_config"), name, "docker", "load"],
            stdin=save.stdout,
            capture_output=True,
            text=True,
            timeout=300,
        )
        save.wait(timeout=300)
        assert load.returncode == 0 and save.returncode == 0, load.stderr
        yield host
    finally:
        subprocess.run(
            ["bash", str(script), "down", name, str(directory)], capture_output=True, timeout=300
        )


@pytest.fixture
def remote_host(test_host: TestHost, isolated_home: Path) -> TestHost:
    test_host.trust(isolated_home)
    return test_host


# -- a real registry on loopback ------------------------------------------------


@pytest.fixture(scope="session")
def standin_v2(engine: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A second, newer build of the stand-ins (a different digest, same behaviour)."""
    home = tmp_path_factory.mktemp("standin-v2-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_STACK_")}
    env["OLLAMA_STACK_HOME"] = str(home)
    result = run_cli("dev.standins", "--version", "v2", env=env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load((home / "config.yaml").read_text())["images"]


# The registry beside the stack runs as a compose service that pytest-docker
# starts, waits for and removes: Debian's docker-registry in an image built
# here on the Debian/Python base (nothing can be pulled).
REGISTRY_IMAGE = "ollama-stack-test/registry:2.8"


@pytest.fixture(scope="session")
def registry_image(standin_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    from .registry import REGISTRY_BIN, build_registry_image

    if not REGISTRY_BIN.exists():
        _unavailable(f"{REGISTRY_BIN} missing (apt-get install docker-registry)")
    build_registry_image(REGISTRY_IMAGE, tmp_path_factory.mktemp("registry-image"))
    return REGISTRY_IMAGE


@pytest.fixture(scope="session")
def docker_compose_file(registry_image: str) -> str:
    return str(ROOT / "tests" / "integration" / "services.yml")


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"osttest{os.getpid()}"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["up -d"]  # the image is ours, built above: nothing to build or pull


@pytest.fixture(scope="session")
def registry(docker_services, docker_ip: str) -> Iterator:
    from .registry import RegistryService, answers

    port = docker_services.port_for("registry", 5000)
    served = RegistryService(f"{docker_ip}:{port}")
    docker_services.wait_until_responsive(
        check=lambda: answers(served.url), timeout=30.0, pause=0.1
    )
    yield served


# -- a native Ollama on this host --------------------------------------------------

BUSYBOX = "/bin/busybox"


@pytest.fixture(scope="session")
def host_gateway(standin_images: dict[str, str]) -> str:
    """The address `host.docker.internal` (host-gateway) gives containers: this
    machine's side of the bridge the test run's dockerd made."""
    out = docker(
        "run", "--rm", "--add-host", "gw:host-gateway", "--entrypoint", "getent",
        standin_images["ollama"], "hosts", "gw",
    )  # fmt: skip
    return out.split()[0]


@pytest.fixture
def ollama_api(tmp_path: Path, host_gateway: str) -> Iterator[tuple[str, Path]]:
    """(url, the file served as /api/version) from a busybox httpd we start and stop.

    It listens on loopback (the URL given) and on the bridge gateway, as a
    native Ollama run with OLLAMA_HOST=0.0.0.0 must for Open WebUI's container
    to reach it, but with nothing on any outside interface.
    """
    if not Path(BUSYBOX).exists():
        _unavailable("busybox is not installed")
    docroot = tmp_path / "www"
    (docroot / "api").mkdir(parents=True)
    version_file = docroot / "api" / "version"
    version_file.write_text('{"version":"0.5.1"}')
    port = free_ports(1)[0]
    servers = [
        subprocess.Popen(
            [BUSYBOX, "httpd", "-f", "-p", f"{address}:{port}", "-h", str(docroot)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for address in ("127.0.0.1", host_gateway)
    ]
    try:
        _wait_listening(port, servers[0])
        yield f"http://127.0.0.1:{port}", version_file
    finally:
        for httpd in servers:
            httpd.terminate()
            httpd.wait(timeout=10)


def _wait_listening(port: int, httpd: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if httpd.poll() is not None:
            pytest.fail(
                f"busybox httpd exited: {httpd.stderr.read().decode() if httpd.stderr else ''}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"busybox httpd did not listen on 127.0.0.1:{port}")


def standin(path: Path, body: str, log: Path) -> None:
    """An executable that logs its argv to ``log``, then runs ``body``."""
    path.write_text(f'#!/bin/bash\necho "{path.name} $*" >> "{log}"\n{body}\n')
    path.chmod(0o755)
