"""--remote against a real second host: its own network namespace, sshd and
dockerd, made by scripts/testhost.sh for this run."""

from __future__ import annotations

import json

import pytest

from .conftest import docker

pytestmark = [pytest.mark.docker, pytest.mark.remote]


def test_remote_lifecycle_stays_on_the_remote_daemon(make_installation, remote_host) -> None:
    remote = make_installation(remote=remote_host.name, docker_host=remote_host.docker_host)
    local = make_installation()
    local.env["OLLAMA_STACK_PROJECT"] = remote.project  # same name on both engines on purpose
    local.project = remote.project
    local.ok("stack.install", "--force")

    started = remote.ok("stack.start", "--pull", "never")
    assert "stack healthy" in started.stdout

    # The containers exist on the namespace's daemon and not on this machine's.
    assert len(remote.containers()) == 3
    local_view = docker(
        "ps",
        "-a",
        "--filter",
        f"label=com.docker.compose.project={remote.project}",
        "--format",
        "{{.Names}}",
    )
    assert local_view.strip() == ""

    report = remote.status()
    assert report["target"] == remote_host.name
    assert {s["health"] for s in report["services"]} == {"healthy"}, report[
        "services"
    ]  # probed over SSH
    assert json.loads(local.ok("stack.status", "--json").stdout)["running"] is False

    check = json.loads(remote.ok("health.check", "--json").stdout)
    assert check["healthy"] is True and check["target"] == remote_host.name

    doctor = json.loads(remote.ok("health.doctor", "--json").stdout)
    verdicts = {c["name"]: c["verdict"] for c in doctor["checks"]}
    assert verdicts["docker"] == "pass" and verdicts["disk"] in ("pass", "warn")

    logs = remote.ok("stack.logs", "--services", "ollama", "--tail", "5")
    assert logs.stdout.strip()

    config = remote.ok("stack.config").stdout
    assert remote.project in config

    ollama = next(c for c in remote.containers() if "-ollama-" in c)
    docker(
        "exec",
        ollama,
        "sh",
        "-c",
        "echo remote-data > /root/.ollama/models/keep.txt",
        host=remote_host.docker_host,
    )
    remote.ok("stack.stop")
    states = {s["state"] for s in remote.status()["services"]}
    assert states == {"exited"}
    remote.ok("stack.restart", "--pull", "never")
    ollama = next(c for c in remote.containers() if "-ollama-" in c)
    kept = docker(
        "exec", ollama, "cat", "/root/.ollama/models/keep.txt", host=remote_host.docker_host
    )
    assert kept.strip() == "remote-data"


def test_remote_port_check_runs_on_the_remote_host(make_installation, remote_host) -> None:
    remote = make_installation(remote=remote_host.name, docker_host=remote_host.docker_host)
    # Hold the port inside the namespace: only a check run *there* can see it.
    holder = docker(
        "run",
        "-d",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "httpd",
        "ollama-stack-standin/webui:test",  # busybox: has httpd
        "-f",
        "-p",
        f"127.0.0.1:{remote.ports['webui']}",
        "-h",
        "/tmp",
        host=remote_host.docker_host,
    ).strip()
    try:
        result = remote.cli("stack.start", "--pull", "never")
    finally:
        docker("rm", "-f", holder, host=remote_host.docker_host, check=False)
    assert result.returncode == 5, result.stderr
    assert (
        f"port {remote.ports['webui']} for webui is in use on {remote_host.name}" in result.stderr
    )


def test_unknown_host_key_stops_with_fingerprint(
    make_installation, remote_host, isolated_home
) -> None:
    remote_host.trust(isolated_home, known=False)
    inst = make_installation(install=False, remote=remote_host.name)
    result = inst.cli("health.doctor")
    assert result.returncode == 8, result.stderr
    assert "unknown SSH host key" in result.stderr and "SHA256:" in result.stderr
    expected = (remote_host.dir / "host_key.pub").read_text().split()[1]
    assert expected  # the fingerprint printed must be the real key's
    import base64
    import hashlib

    digest = (
        base64.b64encode(hashlib.sha256(base64.b64decode(expected)).digest()).decode().rstrip("=")
    )
    assert f"SHA256:{digest}" in result.stderr
    assert "Traceback" not in result.stderr
    # Probes travel over SSH too: an untrusted host is an SSH error, never "unhealthy".
    check = inst.cli("health.check")
    assert check.returncode == 8 and "SHA256:" in check.stderr, check.stdout + check.stderr


def test_unreachable_host_is_one_line(make_installation, isolated_home) -> None:
    (isolated_home / ".ssh" / "config").write_text(
        "Host nowhere\n    HostName 127.0.0.1\n    Port 1\n    User root\n"
    )
    inst = make_installation(install=False, remote="nowhere")
    result = inst.cli("stack.status")
    assert result.returncode == 8, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_remote_uninstall_leaves_this_machine_alone(make_installation, remote_host) -> None:
    remote = make_installation(remote=remote_host.name, docker_host=remote_host.docker_host)
    local = make_installation()
    local.env["OLLAMA_STACK_PROJECT"] = remote.project  # the same project on both engines
    local.project = remote.project
    local.ok("stack.install", "--force")
    remote.ok("stack.start", "--pull", "never")
    local.ok("stack.start", "--pull", "never")
    local_containers, local_volumes = local.containers(), local.volumes()

    done = remote.ok("stack.uninstall", "--yes", "--remove-volumes")
    assert "remove volume" in done.stdout
    assert remote.containers() == [] and remote.volumes() == []
    assert local.containers() == local_containers and local.volumes() == local_volumes
    assert json.loads(local.ok("stack.status", "--json").stdout)["healthy"] is True


def test_a_host_known_only_through_an_included_ssh_config(
    make_installation, test_host, isolated_home
) -> None:
    """OpenSSH reads Include, paramiko does not: Fabric must be given OpenSSH's answer,
    or its host checks and health probes would look for a host named like the alias."""
    ssh_dir = isolated_home / ".ssh"
    (ssh_dir / "hosts.d").mkdir()
    (ssh_dir / "hosts.d" / "lab.conf").write_text((test_host.dir / "ssh_config").read_text())
    (ssh_dir / "config").write_text(f"Include {ssh_dir}/hosts.d/*.conf\n")
    # the tests' ssh shim names this file for OpenSSH (see tests/support/bin/ssh)
    (ssh_dir / "known_hosts").write_bytes((test_host.dir / "known_hosts").read_bytes())
    assert "HostName" not in (ssh_dir / "config").read_text()

    remote = make_installation(remote=test_host.name, docker_host=test_host.docker_host)
    started = remote.cli("stack.start", "--pull", "never")  # port check over Fabric first
    assert started.returncode == 0, started.stderr
    report = remote.status()  # probes through Fabric's SSH channels
    assert report["target"] == test_host.name
    assert {s["health"] for s in report["services"]} == {"healthy"}, report["services"]
    checks = {
        c["name"]: c for c in json.loads(remote.cli("health.doctor", "--json").stdout)["checks"]
    }
    assert checks["disk"]["verdict"] in ("pass", "warn")  # `df` ran there, over Fabric
    assert "cannot read free space" not in checks["disk"]["detail"]
