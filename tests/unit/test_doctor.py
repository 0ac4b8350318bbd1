"""stack/doctor.py: each check's verdict from fake host shells and engine answers."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from python_on_whales.exceptions import DockerException

from ollama_stack.common.errors import ConfigError
from ollama_stack.compose.client import ContainerRun, EngineInfo
from ollama_stack.stack import config, doctor
from ollama_stack.stack.hosts.target import Target
from ollama_stack.stack.runtime import Runtime

from .helpers import FakeShell, linux_shell

GIB = 1 << 30
ENGINE = EngineInfo("27.3.1", ("runc",), "/var/lib/docker", "Debian", 4, 8 * GIB)


def make_runtime(local_paths, shell: FakeShell, **settings: Any) -> Runtime:
    return Runtime(Target(None, _shell=shell), local_paths, config.validate([("t", settings)]))


def df_line(free_bytes: int, mount: str = "/var/lib/docker") -> tuple[int, str]:
    return (0, f"/dev/sda1 999999999 1 {free_bytes // 1024} 1% {mount}\n")


def test_a_bad_config_is_one_failed_check():
    checks = doctor.run_doctor(None, ConfigError("bad config: x", "fix it"))
    assert [(c.name, c.verdict, c.detail, c.remedy) for c in checks] == [
        ("config", "fail", "bad config: x", "fix it")
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Docker Compose version v2.29.7", (2, 29)),
        ("v2.20.0", (2, 20)),
        ("2.3.3", (2, 3)),
        ("Docker Compose version v5.6.1", (5, 6)),
        ("docker-compose version 1.29.2, build 5becea4c", (1, 29)),
        ("garbage", (0, 0)),
    ],
)
def test_compose_version_tuple(text, expected):
    assert doctor._compose_version_tuple(text) == expected


@pytest.mark.parametrize(
    ("free", "verdict"),
    [(4 * GIB, "fail"), (5 * GIB, "warn"), (19 * GIB, "warn"), (20 * GIB, "pass")],
)
def test_disk_thresholds(local_paths, free, verdict):
    shell = linux_shell(2, **{"df -Pk": df_line(free)})
    check = doctor.check_disk(make_runtime(local_paths, shell), ENGINE)
    assert check.verdict == verdict
    assert check.detail == f"{free / GIB:.1f} GiB free under /var/lib/docker"
    assert "df -Pk /var/lib/docker" in shell.commands[-1]


def test_disk_without_engine_checks_the_root(local_paths):
    shell = linux_shell(2, **{"df -Pk": df_line(50 * GIB, "/")})
    check = doctor.check_disk(make_runtime(local_paths, shell), None)
    assert check.detail.endswith("under /")
    assert "df -Pk /" in shell.commands[-1]


def test_disk_unreadable_is_a_warning(local_paths):
    check = doctor.check_disk(make_runtime(local_paths, linux_shell(2)), ENGINE)
    assert check.verdict == "warn"


@pytest.mark.parametrize(
    ("rules", "engine", "verdict"),
    [
        ({}, ENGINE, "pass"),  # no GPU
        ({"nvidia0": (0, "")}, ENGINE, "fail"),  # GPU, no toolkit
        ({"nvidia0": (0, "")}, EngineInfo("27", ("nvidia", "runc"), "/", "", 1, 1), "pass"),
        ({"nvidia0": (0, ""), "grep": (0, "/etc/cdi/nvidia.yaml")}, ENGINE, "pass"),
    ],
)
def test_gpu_check(local_paths, rules, engine, verdict):
    check = doctor.check_gpu(make_runtime(local_paths, linux_shell(2, **rules)), engine)
    assert check.verdict == verdict
    if verdict == "fail":
        assert "NVIDIA Container Toolkit" in check.remedy


def test_install_check(local_paths):
    rt = make_runtime(local_paths, linux_shell())
    assert doctor.check_install(rt).verdict == "warn"
    config.install(local_paths, {})
    assert doctor.check_install(rt).verdict == "pass"


def test_port_checks_name_the_holder(local_paths, pow_calls):
    pow_calls.stdout = ""  # compose ps: nothing of ours runs
    ss = 'LISTEN 0 511 127.0.0.1:8080 0.0.0.0:* users:(("nginx",pid=77,fd=6))\n'
    rt = make_runtime(local_paths, linux_shell(2, ss=(0, ss)))
    checks = {c.name: c for c in doctor.check_ports(rt)}
    assert set(checks) == {"port 11434", "port 8080", "port 8200"}
    assert checks["port 8080"].verdict == "fail"
    assert checks["port 8080"].detail == "webui: 127.0.0.1:8080 is held by nginx (pid 77)"
    assert checks["port 11434"].verdict == "pass"


def test_port_held_by_our_own_container_passes(local_paths, pow_calls):
    pow_calls.stdout = json.dumps(
        {
            "Name": "ollama-stack-webui-1",
            "Service": "webui",
            "State": "running",
            "Publishers": [{"URL": "127.0.0.1", "TargetPort": 8080, "PublishedPort": 8080}],
        }
    )
    ss = 'LISTEN 0 4096 127.0.0.1:8080 0.0.0.0:* users:(("docker-proxy",pid=9,fd=4))\n'
    rt = make_runtime(local_paths, linux_shell(2, ss=(0, ss)))
    check = next(c for c in doctor.check_ports(rt) if c.name == "port 8080")
    assert check.verdict == "pass"
    assert check.detail.endswith("(ours)")


def test_doctor_with_docker_down(local_paths, monkeypatch, fake_docker):
    import python_on_whales.components.compose.cli_wrapper as compose_cli
    import python_on_whales.components.system.cli_wrapper as system_cli

    def down(args, **kwargs):
        raise DockerException(
            [str(a) for a in args],
            1,
            stderr=b"Cannot connect to the Docker daemon at unix:///nope.sock. "
            b"Is the docker daemon running?",
        )

    monkeypatch.setattr(system_cli, "run", down)
    monkeypatch.setattr(compose_cli, "run", down)
    shell = linux_shell(2, **{"df -Pk": df_line(100 * GIB, "/")})
    checks = doctor.run_doctor(make_runtime(local_paths, shell))
    verdicts = {c.name: c.verdict for c in checks}
    assert verdicts == {
        "config": "pass",
        "docker": "fail",
        "compose": "fail",
        "disk": "pass",
        "gpu": "pass",
        "install": "warn",
        "bind": "pass",
    }
    docker = next(c for c in checks if c.name == "docker")
    assert "unix:///nope.sock" in docker.detail
    assert "start the Docker daemon" in docker.remedy


def test_compose_too_old(local_paths, monkeypatch, fake_docker):
    import python_on_whales.components.compose.cli_wrapper as compose_cli

    monkeypatch.setattr(compose_cli, "run", lambda args, **kw: "Docker Compose version v2.17.3")
    check = doctor.check_compose(make_runtime(local_paths, linux_shell()))
    assert check.verdict == "fail"
    assert "v2.17.3 is too old" in check.detail
    # inline `configs: content:` (mcpo's config) needs 2.23.1
    monkeypatch.setattr(compose_cli, "run", lambda args, **kw: "Docker Compose version v2.20.0")
    old = doctor.check_compose(make_runtime(local_paths, linux_shell()))
    assert (old.verdict, old.remedy) == ("fail", "install Compose v2.23.1 or newer")
    monkeypatch.setattr(compose_cli, "run", lambda args, **kw: "Docker Compose version v2.29.7\n")
    assert doctor.check_compose(make_runtime(local_paths, linux_shell())).verdict == "pass"


# -- the running stack's containers ----------------------------------------------------------

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "exit_code", "restarts", "started", "verdict", "detail"),
    [
        ("running", 0, 0, "2026-12-01T00:00:00Z", "pass", "running"),
        ("restarting", 1, 4, "2026-12-03T11:59:58.1Z", "fail", "crash-looping: restarted 4"),
        # caught between two crashes: up again, but only for seconds and many times
        ("running", 1, 3, "2026-12-03T11:59:40.123456789Z", "fail", "running, restarted 3"),
        # restarted once weeks ago (an OOM, a reboot): worth a look, not a failure
        ("running", 137, 1, "2026-11-01T00:00:00Z", "warn", "running, restarted 1"),
        # a running container reports exit code 0: no "last exit code" from it
        ("running", 0, 5, "2026-11-01T00:00:00Z", "warn", "running, restarted 5 times"),
        ("exited", 0, 0, "2026-12-01T00:00:00Z", "warn", "exited with code 0"),
        ("exited", 143, 0, "2026-12-01T00:00:00Z", "warn", "exited with code 143"),
        ("exited", 2, 0, "2026-12-01T00:00:00Z", "fail", "exited with code 2"),
        ("paused", 0, 0, "", "warn", "paused"),
    ],
)
def test_container_verdicts(status, exit_code, restarts, started, verdict, detail):
    run = ContainerRun("mcp_proxy", "p-mcp_proxy-1", status, exit_code, restarts, started)
    got = doctor._container_verdict(run, NOW)
    assert got[0] == verdict
    assert detail in got[1]


def test_doctor_lists_each_container_with_a_remedy_for_a_bad_one(local_paths, pow_calls):
    inspected = {
        "webui": "webui\t\tid-w\trunning\t0\t0\t2026-12-01T00:00:00Z",
        "mcp_proxy": "mcp_proxy\t\tid-m\trestarting\t1\t9\t2026-12-03T11:59:59Z",
        # a leftover `compose run` container is not the service's
        "oneoff": "webui\tTrue\tid-r\texited\t1\t0\t2026-12-01T00:00:00Z",
    }

    def engine(argv: list[str]) -> str:
        if "ps" in argv:
            return "\n".join(
                json.dumps({"Name": f"p-{s}-1", "Service": s, "State": "running"})
                for s in inspected
            )
        return "\n".join(inspected.values())

    pow_calls.on_run = engine
    rt = make_runtime(local_paths, linux_shell(2))
    checks = doctor.check_containers(rt, NOW)
    assert [(c.name, c.verdict) for c in checks] == [
        ("container mcp_proxy", "fail"),
        ("container webui", "pass"),
    ]
    assert checks[0].detail == "crash-looping: restarted 9 times, last exit code 1"
    assert checks[0].remedy == "see `inv stack.logs -s mcp_proxy`"


def test_doctor_without_containers_lists_none(local_paths, pow_calls):
    pow_calls.stdout = ""
    assert doctor.check_containers(make_runtime(local_paths, linux_shell(2))) == []


# -- exposure and the secrets file ---------------------------------------------------------------


@pytest.mark.parametrize("bind", ["0.0.0.0", "::"])
def test_binding_every_interface_is_a_warning_that_says_what_is_exposed(local_paths, bind):
    check = doctor.check_exposure(make_runtime(local_paths, linux_shell(), bind=bind))
    assert check.verdict == "warn"
    assert check.detail == (
        f"bind {bind} publishes ollama, webui, mcp_proxy on every network this host is on; "
        "Ollama's API has no authentication"
    )


def test_loopback_bind_passes(local_paths):
    assert doctor.check_exposure(make_runtime(local_paths, linux_shell())).verdict == "pass"


def test_a_private_secrets_file_passes(local_paths):
    config.install(local_paths, {})
    assert doctor.check_secrets_file(make_runtime(local_paths, linux_shell())).verdict == "pass"


def test_a_readable_secrets_file_fails(local_paths):
    config.install(local_paths, {})
    local_paths.secrets_file.chmod(0o644)
    check = doctor.check_secrets_file(make_runtime(local_paths, linux_shell()))
    assert check.verdict == "fail"
    assert "has mode 0644, readable by others" in check.detail
    assert "chmod 600" in check.remedy


def test_a_secrets_file_that_is_a_link_fails(local_paths, tmp_path):
    config.install(local_paths, {})
    elsewhere = tmp_path / "elsewhere.env"
    elsewhere.write_bytes(local_paths.secrets_file.read_bytes())
    elsewhere.chmod(0o600)
    local_paths.secrets_file.unlink()
    local_paths.secrets_file.symlink_to(elsewhere)
    check = doctor.check_secrets_file(make_runtime(local_paths, linux_shell()))
    assert check.verdict == "fail" and "is not a regular file" in check.detail


def test_a_secrets_file_owned_by_someone_else_fails(local_paths):
    config.install(local_paths, {})
    os.chown(local_paths.secrets_file, 4242, 4242)  # the tests run as root
    check = doctor.check_secrets_file(make_runtime(local_paths, linux_shell()))
    assert check.verdict == "fail" and "is owned by uid 4242" in check.detail
