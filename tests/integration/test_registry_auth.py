"""Private registries: update.check and pulls use the login `docker login`
stored, against the real registry image run with htpasswd (Basic) auth on
loopback. DOCKER_CONFIG always points at a temp dir, never the real home."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import docker

pytestmark = pytest.mark.docker
USER, PASSWORD = "ost-user", f"pw-{uuid.uuid4().hex[:12]}"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def auth_registry(registry_image: str, tmp_path: Path) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a registry that answers only USER:PASSWORD (htpasswd, bcrypt)."""
    import bcrypt

    files = tmp_path / "auth-registry"
    files.mkdir()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (files / "htpasswd").write_text(f"{USER}:{hashed}\n")
    (files / "registry.yml").write_text(
        "version: 0.1\nlog: {level: info}\n"
        "storage: {filesystem: {rootdirectory: /var/lib/registry}}\n"
        'http: {addr: "0.0.0.0:5000"}\n'
    )
    name = f"ost-authreg-{uuid.uuid4().hex[:8]}"
    docker(
        "run", "-d", "--name", name, "-p", "127.0.0.1::5000",
        "-e", "REGISTRY_AUTH=htpasswd",
        "-e", "REGISTRY_AUTH_HTPASSWD_REALM=ost-test",
        "-e", "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd",
        "-v", f"{files / 'htpasswd'}:/auth/htpasswd:ro",
        "-v", f"{files / 'registry.yml'}:/etc/registry.yml:ro",
        registry_image,
    )  # fmt: skip
    try:
        address = docker("port", name, "5000").split()[0]
        _wait_for_a_challenge(address)
        yield address
    finally:
        docker("rm", "-f", "-v", name, check=False)


def _wait_for_a_challenge(address: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _NO_PROXY.open(f"http://{address}/v2/", timeout=1).close()
        except urllib.error.HTTPError as err:
            assert err.code == 401 and err.headers["WWW-Authenticate"].startswith("Basic")
            return
        except OSError:
            time.sleep(0.1)
            continue
        pytest.fail("the registry answered /v2/ without asking for a login")
    pytest.fail(f"the registry on {address} did not answer")


def docker_config(tmp_path: Path, isolated_home: Path, name: str, document: dict) -> str:
    """A DOCKER_CONFIG dir holding ``document`` and the compose plugin the CLI needs."""
    directory = tmp_path / name
    directory.mkdir()
    shutil.copytree(
        isolated_home / ".docker" / "cli-plugins", directory / "cli-plugins", symlinks=True
    )
    if document:
        (directory / "config.json").write_text(json.dumps(document))
    return str(directory)


def auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def webui_check(inst, config_dir: str) -> dict:
    inst.env["DOCKER_CONFIG"] = config_dir
    result = inst.cli("update.check", "--services", "webui", "--json")
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    (check,) = json.loads(result.stdout)["services"]
    return check


def test_update_check_and_pulls_use_the_docker_login(
    auth_registry, standin_images, make_installation, isolated_home, tmp_path
) -> None:
    logged_in = docker_config(tmp_path, isolated_home, "logged-in", {})
    login = subprocess.run(
        ["docker", "--config", logged_in, "login", "-u", USER, "--password-stdin", auth_registry],
        input=PASSWORD, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    stored = json.loads(Path(logged_in, "config.json").read_text())
    assert stored["auths"][auth_registry]["auth"] == auth(USER, PASSWORD)  # the CLI's own format

    repository = f"u{uuid.uuid4().hex[:6]}/webui"
    ref = f"{auth_registry}/{repository}:stable"
    docker("tag", standin_images["webui"], ref)
    pushed = subprocess.run(
        ["docker", "--config", logged_in, "push", ref], capture_output=True, text=True, timeout=120
    )
    assert pushed.returncode == 0, pushed.stderr
    digest = pushed.stdout.split("digest: ")[1].split()[0]
    docker("rmi", ref)  # the start below must really pull it, with the login
    try:
        inst = make_installation(images={"webui": ref})
        wrong = {"auths": {auth_registry: {"auth": auth(USER, "not-" + PASSWORD)}}}
        for name, document in (("none", {}), ("wrong", wrong)):
            inst.env["DOCKER_CONFIG"] = docker_config(tmp_path, isolated_home, name, document)
            failed = inst.cli("stack.start", "--pull", "missing")
            assert failed.returncode == 6, failed.stderr
            error = failed.stderr.strip().splitlines()[-1]
            assert error.startswith(f"error: cannot get webui ({ref}): its registry wants a login")
            assert f"`docker login {auth_registry}` on this machine" in error
            assert "not-" + PASSWORD not in failed.stdout + failed.stderr

        inst.env["DOCKER_CONFIG"] = logged_in
        started = inst.cli("stack.start", "--pull", "missing")
        assert started.returncode == 0, started.stderr
        assert digest in docker("image", "inspect", "--format", "{{json .RepoDigests}}", ref)

        found = webui_check(inst, logged_in)
        assert (found["status"], found["registry_digest"]) == ("up-to-date", digest), found

        anonymous = webui_check(inst, str(tmp_path / "none"))
        assert anonymous["detail"] == (
            f"registry {auth_registry} requires authentication for {repository}"
            f" (private, or it does not exist) and docker has no login for it:"
            f" `docker login {auth_registry}`"
        )

        refused = webui_check(inst, str(tmp_path / "wrong"))
        assert refused["detail"].startswith(
            f"registry {auth_registry} refused the login from docker's config"
        )
        assert f"`docker login {auth_registry}` again" in refused["detail"]
        assert "not-" + PASSWORD not in refused["detail"]

        # A credential helper named for the registry, as `credHelpers` does it.
        helpers = tmp_path / "helper-bin"
        helpers.mkdir()
        answer = json.dumps({"ServerURL": auth_registry, "Username": USER, "Secret": PASSWORD})
        script = helpers / "docker-credential-osttest"
        script.write_text(
            f"#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat >/dev/null\necho '{answer}'\n"
        )
        script.chmod(0o755)
        inst.env["PATH"] = f"{helpers}{os.pathsep}{inst.env['PATH']}"
        helped = {"credHelpers": {auth_registry: "osttest"}}
        through_helper = webui_check(inst, docker_config(tmp_path, isolated_home, "helper", helped))
        assert through_helper["status"] == "up-to-date", through_helper
    finally:
        docker("rmi", ref, check=False)
