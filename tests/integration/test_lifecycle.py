"""The core stack against the live engine, through the installed CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from .conftest import BROKEN_TAG, CLI, SERVICES, docker, free_ports, run_cli

pytestmark = pytest.mark.docker


def test_full_cycle_keeps_data_across_stop_and_start(make_installation) -> None:
    inst = make_installation()
    secrets = Path(inst.env["OLLAMA_STACK_HOME"]) / "secrets.env"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600

    started = inst.ok("stack.start", "--pull", "never")
    assert "stack healthy" in started.stdout
    for service, port in inst.ports.items():
        assert f"http://127.0.0.1:{port}" in started.stdout, service

    report = inst.status()
    assert [s["name"] for s in report["services"]] == list(SERVICES)
    assert {s["state"] for s in report["services"]} == {"running"}
    assert {s["health"] for s in report["services"]} == {"healthy"}
    assert report["healthy"] is True and report["project"] == inst.project

    # Published on loopback only, never on all interfaces.
    for container in inst.containers():
        ports = json.loads(
            docker("inspect", "--format", "{{json .NetworkSettings.Ports}}", container)
        )
        bindings = [b for spec in ports.values() if spec for b in spec]
        assert bindings and {b["HostIp"] for b in bindings} == {"127.0.0.1"}, container

    logs = inst.ok("stack.logs", "--services", "ollama", "--tail", "20")
    assert logs.stdout.strip(), "ollama stand-in logs nothing"

    ollama = next(c for c in inst.containers() if "-ollama-" in c)
    marker = "/root/.ollama/models/keep-me.txt"
    docker("exec", ollama, "sh", "-c", f"echo precious > {marker}")

    stopped = inst.ok("stack.stop")
    assert "stopped" in stopped.stdout
    assert {s["state"] for s in inst.status()["services"]} == {"exited"}
    assert len(inst.volumes()) == 2, "stop must keep both data volumes"

    inst.ok("stack.start", "--pull", "never")
    ollama = next(c for c in inst.containers() if "-ollama-" in c)
    assert docker("exec", ollama, "cat", marker).strip() == "precious"


def test_starting_a_running_stack_is_a_no_op(make_installation) -> None:
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    before = docker(
        "ps",
        "--filter",
        f"label=com.docker.compose.project={inst.project}",
        "--format",
        "{{.ID}} {{.Status}}",
    )
    again = inst.ok("stack.start", "--pull", "never")
    assert "already running" in again.stdout
    after = docker(
        "ps", "--filter", f"label=com.docker.compose.project={inst.project}", "--format", "{{.ID}}"
    )
    assert sorted(after.split()) == sorted(line.split()[0] for line in before.splitlines())


def test_two_installations_run_side_by_side(make_installation) -> None:
    first = make_installation()
    second = make_installation()
    first.ok("stack.start", "--pull", "never")
    second.ok("stack.start", "--pull", "never")
    assert len(first.containers()) == 3 and len(second.containers()) == 3
    assert not set(first.containers()) & set(second.containers())

    second.ok("stack.stop")
    assert {s["state"] for s in first.status()["services"]} == {"running"}
    assert {s["state"] for s in second.status()["services"]} == {"exited"}


def test_port_taken_by_another_process_is_named(make_installation) -> None:
    inst = make_installation()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", inst.ports["webui"]))
    holder.listen()
    try:
        result = inst.cli("stack.start", "--pull", "never")
    finally:
        holder.close()
    assert result.returncode == 5, result.stderr
    assert f"port {inst.ports['webui']} for webui" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr  # the process holding it, from ss
    assert "OLLAMA_STACK_PORTS_WEBUI" in result.stderr
    assert inst.containers() == [], "nothing may be started when a port is taken"


def test_port_taken_by_another_installation_names_its_container(make_installation) -> None:
    first = make_installation()
    first.ok("stack.start", "--pull", "never")
    clash = make_installation(ports_ollama=str(first.ports["ollama"]))
    result = clash.cli("stack.start", "--pull", "never")
    assert result.returncode == 5, result.stderr
    assert f"{first.project}-ollama-1" in result.stderr


def test_unhealthy_service_times_out_with_its_logs(make_installation, standin_images) -> None:
    images = dict(
        standin_images, ollama=standin_images["ollama"].replace(":test", f":{BROKEN_TAG}")
    )
    inst = make_installation(images=images)
    began = time.monotonic()
    result = inst.cli("stack.start", "--pull", "never", "--timeout", "4")
    assert result.returncode == 7, result.stderr
    assert time.monotonic() - began < 60
    line = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1
    blamed, _, left = line[0].partition("; running now: ")
    assert "ollama" in blamed and "webui" not in blamed
    assert "last log" in blamed
    # and it says what it left running (it stops nothing behind the user's back)
    assert left.startswith("ollama, webui, mcp_proxy")
    assert "Traceback" not in result.stderr


def test_image_that_cannot_be_pulled(make_installation, standin_images) -> None:
    images = dict(standin_images, webui="127.0.0.1:1/ollama-stack/missing:never")
    inst = make_installation(images=images)
    result = inst.cli("stack.start", "--pull", "missing", timeout=180)
    assert result.returncode == 6, result.stderr
    assert "webui" in result.stderr and "dev.standins" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_is_refused_with_one_line(make_installation) -> None:
    inst = make_installation()
    config = Path(inst.env["OLLAMA_STACK_HOME"]) / "config.yaml"
    config.write_text("schema: 2\nplatform: gpu\n")
    result = inst.cli("stack.start")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "platform='gpu'" in result.stderr and "'nvidia'" in result.stderr
    assert str(config) in result.stderr

    config.write_text("ports: {webui: [unclosed\n")
    result = inst.cli("stack.status")
    assert result.returncode == 2 and "line" in result.stderr and "malformed YAML" in result.stderr


def test_docker_unreachable_is_reported(make_installation, tmp_path) -> None:
    inst = make_installation()
    inst.env["DOCKER_HOST"] = f"unix://{tmp_path}/no-such.sock"
    result = inst.cli("stack.start")
    assert result.returncode == 3, result.stderr
    assert "Docker is not reachable" in result.stderr and "Traceback" not in result.stderr
    doctor = inst.cli("health.doctor", "--json")
    assert doctor.returncode == 1
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["docker"]["verdict"] == "fail"


def test_status_before_install_says_how_to_begin(monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_STACK_PROJECT", f"ost{uuid.uuid4().hex[:8]}")  # surely unused
    result = run_cli("stack.status")
    assert result.returncode == 0
    assert "stack.install" in result.stdout


def test_install_refuses_to_overwrite(make_installation) -> None:
    inst = make_installation()
    secrets = (Path(inst.env["OLLAMA_STACK_HOME"]) / "secrets.env").read_text()
    again = inst.cli("stack.install")
    assert again.returncode == 10 and "--force" in again.stderr
    inst.ok("stack.install", "--force")
    assert (Path(inst.env["OLLAMA_STACK_HOME"]) / "secrets.env").read_text() == secrets


def test_config_prints_runnable_compose_without_secrets(make_installation) -> None:
    inst = make_installation()
    text = inst.ok("stack.config").stdout
    secrets = dict(
        line.split("=", 1)
        for line in (Path(inst.env["OLLAMA_STACK_HOME"]) / "secrets.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    for value in secrets.values():
        assert value not in text
    assert "${WEBUI_SECRET_KEY}" in text
    document = yaml.safe_load(text)
    assert set(document["services"]) == set(SERVICES)
    assert document["name"] == inst.project
    assert "container_name" not in text


def test_logs_are_printed_verbatim(make_installation) -> None:
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    webui = next(c for c in inst.containers() if "-webui-" in c)
    # Write to PID 1's stdout so it lands in the container log.
    docker("exec", webui, "sh", "-c", "echo 'markup [/x] [bold]not bold[/bold]' > /proc/1/fd/1")
    result = inst.ok("stack.logs", "--services", "webui", "--tail", "5")
    assert "markup [/x] [bold]not bold[/bold]" in result.stdout


def test_health_check_and_doctor_json(make_installation) -> None:
    inst = make_installation()
    down = inst.cli("health.check", "--json")
    assert down.returncode == 1
    assert json.loads(down.stdout)["healthy"] is False
    inst.ok("stack.start", "--pull", "never")
    up = json.loads(inst.ok("health.check", "--json").stdout)
    assert up["healthy"] is True and {s["service"] for s in up["services"]} == set(SERVICES)
    doctor = json.loads(inst.ok("health.doctor", "--json").stdout)
    verdicts = {c["name"]: c["verdict"] for c in doctor["checks"]}
    assert verdicts["docker"] == "pass" and verdicts["compose"] == "pass"
    assert verdicts[f"port {inst.ports['webui']}"] == "pass"  # ours does not count as taken


@pytest.fixture
def native_ollama(tmp_path):
    """A process on this host serving Ollama's API on loopback, like a native install."""
    root = tmp_path / "native-www"
    (root / "api").mkdir(parents=True)
    (root / "index.html").write_text("Ollama is running")
    (root / "api" / "version").write_text('{"version":"0.9.0-native"}')
    (root / "api" / "tags").write_text('{"models":[{"name":"llama3:8b"},{"name":"qwen:1b"}]}')
    (root / "api" / "ps").write_text('{"models":[{"name":"llama3:8b"}]}')
    port = free_ports(1)[0]
    server = subprocess.Popen(
        ["busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(root)]
    )
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


def test_native_ollama_is_used_not_started(make_installation, native_ollama) -> None:
    # The native Ollama listens on this machine's loopback only, as a default install
    # does: it answers here, but Open WebUI's container cannot reach it, and start says so.
    inst = make_installation(services_ollama_type="native-api", services_ollama_url=native_ollama)
    result = inst.cli("stack.start", "--pull", "never", "--timeout", "5")
    port = native_ollama.rsplit(":", 1)[1]
    assert result.returncode == 7, result.stderr
    assert f"webui (cannot reach Ollama at http://host.docker.internal:{port}" in result.stderr
    assert "OLLAMA_HOST=0.0.0.0" in result.stderr
    assert not any("-ollama-" in c for c in inst.containers())
    webui = next(c for c in inst.containers() if "-webui-" in c)
    env = docker("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", webui)
    assert f"OLLAMA_BASE_URL=http://host.docker.internal:{port}" in env.splitlines()
    services = {s["name"]: s for s in inst.status()["services"]}
    ollama = services["ollama"]
    assert ollama["type"] == "native-api" and ollama["state"] == "external"
    assert ollama["health"] == "healthy" and ollama["url"] == native_ollama
    assert (ollama["models"], ollama["loaded_models"]) == (2, 1)
    assert services["webui"]["health"] == "reachable"


def test_remote_api_service_that_does_not_answer_is_unhealthy(make_installation) -> None:
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    inst = make_installation(services_ollama_type="remote-api", services_ollama_url=dead)
    ollama = next(s for s in inst.status()["services"] if s["name"] == "ollama")
    assert ollama["type"] == "remote-api" and ollama["health"] == "unhealthy"
    result = inst.cli("stack.start", "--pull", "never", "--timeout", "3")
    assert result.returncode == 7 and "ollama" in result.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_wait_says_what_was_left(
    make_installation, standin_images, sig, code
) -> None:
    images = dict(
        standin_images, ollama=standin_images["ollama"].replace(":test", f":{BROKEN_TAG}")
    )
    inst = make_installation(images=images)
    cmd = [str(CLI), "stack.start", "--pull", "never", "--timeout", "120"]
    # Should it ever hang, SIGABRT makes Python print every thread's stack.
    env = inst.env | {"PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        cmd,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        # As a foreground command gets it: a test run started in the background
        # by a non-interactive shell has SIGINT ignored, and children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait until the health wait has begun
        seen.append(line)
        if line.startswith("• ollama "):
            break
    proc.send_signal(sig)
    try:
        _, rest = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, stacks = proc.communicate(timeout=30)
        pytest.fail(f"still running 30 s after the signal; its threads:\n{stacks}")
    assert proc.returncode == code, "".join(seen) + rest
    errors = [line for line in rest.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, rest
    assert "stopped waiting for health" in errors[0] and "stack.stop" in errors[0]
    assert "running now: ollama, webui, mcp_proxy" in errors[0]
    assert "Traceback" not in rest
    assert len(inst.containers()) == 3  # compose had finished; nothing half-created


def test_missing_compose_plugin_is_named(make_installation, tmp_path) -> None:
    inst = make_installation()
    inst.env["DOCKER_CONFIG"] = str(tmp_path / "empty-docker-config")
    probe = subprocess.run(["docker", "compose", "version"], env=inst.env, capture_output=True)
    if probe.returncode == 0:
        pytest.skip("a system-wide compose plugin is installed; cannot hide it")
    result = inst.cli("stack.start")
    assert result.returncode == 4, result.stderr
    assert "Compose v2 is not installed" in result.stderr


def test_two_services_on_one_port_are_refused_before_anything_starts(make_installation) -> None:
    inst = make_installation()
    inst.env["OLLAMA_STACK_PORTS_MCP_PROXY"] = inst.env["OLLAMA_STACK_PORTS_WEBUI"]
    for task in ("stack.start", "stack.config", "health.doctor"):
        result = inst.cli(task)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        if task == "health.doctor":  # doctor reports it as its failed config check
            assert result.returncode == 1 and "both want port" in result.stdout
            continue
        assert result.returncode == 2, result.stderr
        assert len(errors) == 1 and "webui and mcp_proxy both want port" in errors[0]
    assert inst.containers() == []  # nothing half-started
