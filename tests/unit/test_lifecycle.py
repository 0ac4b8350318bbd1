"""stack/lifecycle.py with real HTTP services, a fake host shell, and python-on-whales'
runners replaced at the wrapper boundary."""

from __future__ import annotations

import json
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ollama_stack.common.errors import (
    ConfigError,
    HealthTimeout,
    NotInstalled,
    PortInUse,
    ServiceCrashed,
)
from ollama_stack.compose.client import UNMANAGED, ContainerRun, parse_ps_output
from ollama_stack.stack import config, lifecycle
from ollama_stack.stack.config import InstallPaths, Settings
from ollama_stack.stack.events import Event
from ollama_stack.stack.hosts.target import Target
from ollama_stack.stack.runtime import Runtime

from .helpers import (
    FakeShell,
    json_route,
    linux_shell,
    mcpo_routes,
    ollama_routes,
    webui_routes,
)


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch):
    monkeypatch.setattr(lifecycle, "POLL_SECONDS", 0.05)


@pytest.fixture
def services(http_service):
    return {
        "ollama": http_service(ollama_routes()),
        "webui": http_service(webui_routes()),
        "mcp_proxy": http_service(mcpo_routes()),
    }


def make_runtime(
    paths: InstallPaths, ports: dict[str, int], shell: FakeShell | None = None, **settings: Any
) -> Runtime:
    merged = config.validate([("test", {"platform": "cpu", "ports": ports, **settings})])
    return Runtime(Target(None, _shell=shell or linux_shell(2, ss=(0, ""))), paths, merged)


def ports_of(servers) -> dict[str, int]:
    return {name: server.port for name, server in servers.items()}


def ours() -> str:
    """This test's installation id (from its private OLLAMA_STACK_HOME)."""
    return config.installation_id(InstallPaths.for_target(None))


def ps_row(
    service: str, state: str = "running", port: int = 0, installation: str = ""
) -> dict[str, Any]:
    publishers = [{"URL": "127.0.0.1", "TargetPort": 1, "PublishedPort": port}] if port else []
    return {
        "Name": f"p-{service}-1",
        "Service": service,
        "State": state,
        "Image": f"img/{service}:1",
        "Status": "Up 3 minutes",
        "Publishers": publishers,
        "Labels": (
            f"com.docker.compose.project=p,com.docker.compose.config-hash=h{service},"
            f"io.ollama-stack.installation={installation or ours()}"
        ),
    }


def ps_answer(
    *rows: dict[str, Any],
    restarts: int = 0,
    link: str = '{"version":"0.5.7"}',
    hashes: dict[str, str] | None = None,
):
    """The engine's answers: `compose ps` rows, `inspect` of them, an exec in webui, and
    `config --hash` (by default what each row's container was made from: nothing changed)."""
    text = "\n".join(json.dumps(r) for r in rows)
    inspected = "\n".join(
        f"{r['Service']}\t\tid-{r['Name']}\t{r['State']}\t0\t{restarts}\t2026-01-01T00:00:00Z"
        for r in rows
    )

    def on_run(argv: list[str]) -> str:
        if "compose" in argv and "ps" in argv:
            return text
        if "compose" in argv and "exec" in argv:
            return link
        if "inspect" in argv:
            return inspected
        if "--hash" in argv:
            wanted = hashes or {r["Service"]: f"h{r['Service']}" for r in rows}
            return "".join(f"{service} {value}\n" for service, value in wanted.items())
        if "config" in argv:
            return "services: {}\n"
        return ""

    return on_run


@pytest.fixture(autouse=True)
def engine(pow_calls):
    """No test here reaches a real engine: an empty project unless a test says otherwise."""
    pow_calls.on_run = ps_answer()
    return pow_calls


def collect() -> tuple[list[Event], Any]:
    events: list[Event] = []
    return events, events.append


# -- service names -------------------------------------------------------------------------


def test_check_service_names():
    assert lifecycle.check_service_names(("webui", "ollama")) == ["webui", "ollama"]
    with pytest.raises(ConfigError) as info:
        lifecycle.check_service_names(["webui", "postgres", "redis"])
    assert info.value.code == 2
    assert info.value.message == "unknown service postgres, redis"
    assert "ollama, webui, mcp_proxy" in info.value.remedy


# -- waiting for health ---------------------------------------------------------------------


def test_wait_healthy_returns_when_all_answer(local_paths, services):
    rt = make_runtime(local_paths, ports_of(services))
    events, progress = collect()
    results = lifecycle.wait_healthy(rt, 5, progress)
    assert {n: r.health for n, r in results.items()} == dict.fromkeys(services, "healthy")
    assert [(e.kind, e.service, e.state) for e in events] == [
        ("service", "ollama", "healthy"),
        ("service", "webui", "healthy"),
        ("service", "mcp_proxy", "healthy"),
    ]


def test_wait_healthy_reports_each_change_once(local_paths, http_service, services):
    slow = http_service({"/health": json_route(200, {"status": False})})
    ports = ports_of(services) | {"webui": slow.port}
    rt = make_runtime(local_paths, ports)
    timer = threading.Timer(0.3, lambda: slow.routes.update(webui_routes()))
    timer.start()
    events, progress = collect()
    try:
        lifecycle.wait_healthy(rt, 5, progress, services=["webui"])
    finally:
        timer.cancel()
    assert [(e.service, e.state) for e in events] == [("webui", "reachable"), ("webui", "healthy")]
    assert events[1].message.startswith("webui healthy after ")
    assert len(slow.requests) >= 3  # it polled


def test_wait_healthy_times_out_with_the_last_log_lines(
    local_paths, services, closed_port, pow_calls
):
    pow_calls.lines = [("stdout", f"webui-1  | boot step {i}\n".encode()) for i in range(5)]
    rt = make_runtime(local_paths, ports_of(services) | {"webui": closed_port})
    with pytest.raises(HealthTimeout) as info:
        lifecycle.wait_healthy(rt, 0.3)
    err = info.value
    assert err.code == 7
    assert err.message.startswith("not healthy after 0.3 s: webui (nothing answers on ")
    assert "last log: webui-1  | boot step 2 | webui-1  | boot step 3 | webui-1  | boot step 4" in (
        err.message
    )
    assert "ollama" not in err.message
    logs_argv = next(argv for argv, _ in pow_calls.calls if "logs" in argv)
    assert logs_argv[-5:] == ["logs", "--no-color", "--tail", "3", "webui"]


def test_timeout_of_an_external_service_does_not_read_container_logs(
    local_paths, services, closed_port, pow_calls
):
    rt = make_runtime(
        local_paths,
        ports_of(services),
        services={"ollama": {"type": "native-api", "url": f"http://127.0.0.1:{closed_port}"}},
    )
    with pytest.raises(HealthTimeout) as info:
        lifecycle.wait_healthy(rt, 0.2)
    assert "ollama (nothing answers" in info.value.message
    assert "log" not in info.value.message
    # the docker services' containers are watched for crashes, but no logs are read
    assert "logs" not in pow_calls.subcommands()


# -- ports ------------------------------------------------------------------------------------


SS_NGINX = 'LISTEN 0 511 0.0.0.0:8080 0.0.0.0:* users:(("nginx",pid=77,fd=6))\n'
SS_PROXY = 'LISTEN 0 4096 127.0.0.1:8080 0.0.0.0:* users:(("docker-proxy",pid=9,fd=4))\n'


def test_check_ports_names_the_process_holding_a_port(local_paths, pow_calls):
    rt = make_runtime(local_paths, {"webui": 8080}, linux_shell(2, ss=(0, SS_NGINX)))
    with pytest.raises(PortInUse) as info:
        lifecycle.check_ports(rt, ["ollama", "webui"], [], None)
    assert info.value.code == 5
    assert info.value.message == "port 8080 for webui is in use on local by nginx (pid 77)"
    assert "OLLAMA_STACK_PORTS_WEBUI=<port>" in info.value.remedy
    assert str(local_paths.config_file) in info.value.remedy
    assert pow_calls.calls == []


def test_check_ports_names_the_container_behind_docker_proxy(local_paths, pow_calls, fake_docker):
    pow_calls.on_run = None
    pow_calls.stdout = "other-webui-1\n"
    rt = make_runtime(local_paths, {"webui": 8080}, linux_shell(2, ss=(0, SS_PROXY)))
    with pytest.raises(PortInUse) as info:
        lifecycle.check_ports(rt, ["webui"], [], None)
    assert info.value.message.endswith("by container other-webui-1")
    assert pow_calls.argv == [
        str(fake_docker),
        "ps",
        "--filter",
        "publish=8080",
        "--format",
        "{{.Names}}",
    ]


def test_check_ports_ignores_ports_our_running_containers_publish(local_paths, pow_calls):
    rt = make_runtime(local_paths, {"webui": 8080}, linux_shell(2, ss=(0, SS_PROXY)))
    ours = parse_ps_output(json.dumps(ps_row("webui", port=8080)))
    lifecycle.check_ports(rt, ["webui"], ours, None)
    assert pow_calls.calls == []
    stopped = parse_ps_output(json.dumps(ps_row("webui", "exited", port=8080)))
    pow_calls.stdout = "p-webui-1\n"
    with pytest.raises(PortInUse):
        lifecycle.check_ports(rt, ["webui"], stopped, None)


def test_check_ports_other_bind_address_is_free(local_paths):
    rt = make_runtime(
        local_paths, {"webui": 8080}, linux_shell(2, ss=(0, SS_PROXY)), bind="192.168.1.20"
    )
    lifecycle.check_ports(rt, ["webui"], [], None)


def test_check_ports_without_ss_warns_and_goes_on(local_paths):
    rt = make_runtime(local_paths, {"webui": 8080}, linux_shell(2))  # `ss` fails
    events, progress = collect()
    lifecycle.check_ports(rt, ["webui"], [], progress)
    assert [e.kind for e in events] == ["warn"]
    assert "ss" in events[0].message


# -- start / stop / status ---------------------------------------------------------------------


def test_start_writes_the_env_file_runs_up_and_waits(local_paths, services, pow_calls):
    config.install(local_paths, {})
    secrets = config.read_secrets(local_paths)
    pow_calls.on_run = ps_answer()
    rt = make_runtime(local_paths, ports_of(services))
    events, progress = collect()
    result = lifecycle.start(rt, pull="never", timeout=5, progress=progress)

    assert result.already_running is False
    assert result.platform == "cpu"
    assert set(result.health) == set(services) and all(r.ok for r in result.health.values())
    assert result.urls["webui"] == f"http://127.0.0.1:{services['webui'].port}"

    env_file = local_paths.runtime_env_file
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert env["WEBUI_PORT"] == str(services["webui"].port)
    assert env["WEBUI_SECRET_KEY"] == secrets["WEBUI_SECRET_KEY"]
    assert env["OLLAMA_CPUS"] == "2"
    assert config.read_state(local_paths)["platform"] == "cpu"

    # docker ps + volume ls: whose resources carry this project name? then compose ps, up;
    # the wait notes each container's restarts (ps) and asks webui whether it reaches Ollama
    assert pow_calls.subcommands() == ["ps", "volume", "ps", "up", "ps", "exec"]
    link = pow_calls.calls[5][0]
    assert link[link.index("exec") :] == [
        "exec",
        "-T",
        "webui",
        "curl",
        "-sS",
        "-f",
        "-m",
        "5",
        "http://ollama:11434/api/version",
    ]
    up = pow_calls.calls[3][0]
    assert up[up.index("--env-file") + 1] == str(env_file)
    assert up[up.index("up") :] == [
        "up",
        "--detach",
        "--pull",
        "never",
        "--remove-orphans",
        "ollama",
        "webui",
        "mcp_proxy",
    ]
    assert events[0].kind == "step" and events[0].message.startswith("platform cpu")


def test_start_when_already_running_and_healthy_does_nothing(local_paths, services, pow_calls):
    config.install(local_paths, {})
    pow_calls.on_run = ps_answer(*(ps_row(name) for name in services))
    rt = make_runtime(local_paths, ports_of(services))
    result = lifecycle.start(rt, timeout=5)
    assert result.already_running is True
    # looked (whose resources, compose ps, config --hash, webui's link), changed nothing
    assert pow_calls.subcommands() == ["ps", "volume", "ps", "config", "exec"]


def test_start_applies_a_changed_config_to_a_running_healthy_stack(
    local_paths, services, pow_calls
):
    # e.g. a new mcp_servers entry: compose's hash of mcp_proxy changes, everything answers
    config.install(local_paths, {})
    hashes = {"ollama": "hollama", "webui": "hwebui", "mcp_proxy": "new"}
    pow_calls.on_run = ps_answer(*(ps_row(name) for name in services), hashes=hashes)
    rt = make_runtime(local_paths, ports_of(services))
    result = lifecycle.start(rt, timeout=5)
    assert result.already_running is False
    assert "up" in pow_calls.subcommands()


def test_start_starts_only_docker_services(local_paths, services, pow_calls):
    config.install(local_paths, {})
    pow_calls.on_run = ps_answer()
    rt = make_runtime(
        local_paths,
        ports_of(services),
        services={"ollama": {"type": "native-api", "url": services["ollama"].url}},
    )
    lifecycle.start(rt, timeout=5)
    up = next(argv for argv, _ in pow_calls.calls if "up" in argv)
    assert up[-2:] == ["webui", "mcp_proxy"]
    assert "ollama" not in up[up.index("up") :]
    assert compose_files_in(up) == ["base.yml", "webui.yml", "mcp_proxy.yml"]


def compose_files_in(argv: list[str]) -> list[str]:
    return [Path(argv[i + 1]).name for i, arg in enumerate(argv) if arg == "--file"]


def test_start_on_apple_runs_ollama_natively_and_leaves_its_file_out(
    local_paths, services, pow_calls
):
    config.install(local_paths, {})
    pow_calls.on_run = ps_answer()
    rt = make_runtime(local_paths, ports_of(services), platform="apple")
    native = services["ollama"].port

    def to_the_native_ollama(host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((host, native if port == 11434 else port), timeout)

    rt.target.dial = to_the_native_ollama  # type: ignore[method-assign]
    result = lifecycle.start(rt, timeout=5)
    assert result.platform == "apple" and result.urls["ollama"] == "http://127.0.0.1:11434"
    up = next(argv for argv, _ in pow_calls.calls if "up" in argv)
    assert compose_files_in(up) == ["base.yml", "webui.yml", "mcp_proxy.yml"]
    assert up[up.index("up") :][-2:] == ["webui", "mcp_proxy"]
    env = local_paths.runtime_env_file.read_text()
    assert "OLLAMA_BASE_URL=http://host.docker.internal:11434\n" in env
    assert config.read_state(local_paths)["platform"] == "apple"


def test_start_on_apple_does_not_take_its_own_docker_ollama_for_a_native_one(
    local_paths, services, pow_calls
):
    """After a fallback to cpu, the stack's Docker Ollama publishes 11434 itself."""
    config.install(local_paths, {})
    pow_calls.on_run = ps_answer(ps_row("ollama", port=11434))
    rt = make_runtime(local_paths, ports_of(services), platform="apple")
    rt.target.dial = lambda host, port, timeout: socket.create_connection(  # type: ignore[method-assign]
        (host, services["ollama"].port if port == 11434 else port), timeout
    )
    resolved = rt.resolve()
    assert resolved.platform.name == "cpu"
    assert "no native Ollama answers" in resolved.platform.reason
    assert "ollama.yml" in [f.name for f in resolved.compose_files()]


def test_start_refuses_a_taken_port_before_up(local_paths, pow_calls):
    config.install(local_paths, {})
    pow_calls.on_run = ps_answer()
    rt = make_runtime(local_paths, {"webui": 8080}, linux_shell(2, ss=(0, SS_NGINX)))
    with pytest.raises(PortInUse):
        lifecycle.start(rt, timeout=1)
    assert "up" not in pow_calls.subcommands()


def test_start_before_install_touches_nothing(local_paths, pow_calls):
    rt = make_runtime(local_paths, {})
    with pytest.raises(NotInstalled):
        lifecycle.start(rt)
    assert pow_calls.calls == []
    assert not local_paths.runtime_env_file.exists()


def test_start_refuses_a_project_that_belongs_to_another_installation(
    local_paths, services, pow_calls
):
    config.install(local_paths, {})
    ours = config.installation_id(local_paths)
    answer = ps_answer()

    def on_run(argv: list[str]) -> str:
        if "--format" in argv and "io.ollama-stack.installation" in argv[-1]:
            return f"{ours}\n0123456789abcdef\n" if argv[1] == "volume" else ""
        return answer(argv)

    pow_calls.on_run = on_run
    rt = make_runtime(local_paths, ports_of(services))
    with pytest.raises(ConfigError) as info:
        lifecycle.start(rt, timeout=5)
    assert "0123456789abcdef" in info.value.message and ours not in info.value.message
    assert "up" not in pow_calls.subcommands()


def test_stop_stops_only_when_something_runs(local_paths, pow_calls):
    rt = make_runtime(local_paths, {})
    pow_calls.on_run = ps_answer(ps_row("ollama"), ps_row("webui", "exited"))
    assert lifecycle.stop(rt) == ["ollama"]
    # whose resources carry this project name (docker ps, volume ls), compose ps, stop
    assert pow_calls.subcommands() == ["ps", "volume", "ps", "stop"]
    assert pow_calls.calls[3][0][-1] == "stop"  # every service, data volumes untouched


def test_stop_also_stops_a_container_its_files_no_longer_hold(local_paths, services, pow_calls):
    """Ollama configured native after it ran in Docker: compose stop skips it."""
    native = {"ollama": {"type": "native-api", "url": services["ollama"].url}}
    rt = make_runtime(local_paths, {}, services=native)
    pow_calls.on_run = ps_answer(ps_row("ollama"), ps_row("webui"))
    assert lifecycle.stop(rt) == ["ollama", "webui"]
    assert pow_calls.subcommands() == ["ps", "volume", "ps", "stop", "stop"]
    assert pow_calls.calls[4][0][-2:] == ["stop", "p-ollama-1"]  # by name, with docker

    pow_calls.calls.clear()
    pow_calls.on_run = ps_answer(ps_row("webui", "exited"))
    assert lifecycle.stop(rt) == []
    assert pow_calls.subcommands() == ["ps", "volume", "ps"]


def test_stop_and_status_leave_another_homes_containers_alone(local_paths, pow_calls):
    """Same project name, another OLLAMA_STACK_HOME: `compose stop` would stop its
    containers, and `compose ps` would show them as ours."""
    theirs = ps_answer(ps_row("ollama", installation="0ther0ther0ther0"))

    def engine(argv: list[str]) -> str:
        if "--format" in argv and any("io.ollama-stack.installation" in a for a in argv):
            return "0ther0ther0ther0\n"
        return theirs(argv)

    pow_calls.on_run = engine
    rt = make_runtime(local_paths, {})
    with pytest.raises(ConfigError) as info:
        lifecycle.stop(rt)
    assert "belongs to another ollama-stack installation" in info.value.message
    assert "stop" not in pow_calls.subcommands()
    assert rt.compose.ps() == []  # never shown as ours


def test_status_names_containers_not_ours_and_asks_for_the_mark_only_then(local_paths, pow_calls):
    """Another home's containers under our project name are shown as theirs,
    never as ours; a stack of our own costs status no volume listing."""
    config.install(local_paths, {})
    rt = make_runtime(local_paths, {})
    pow_calls.on_run = ps_answer(ps_row("ollama"))
    assert lifecycle.status(rt).others is None
    assert "volume" not in pow_calls.subcommands()

    pow_calls.calls.clear()
    pow_calls.on_run = ps_answer(
        ps_row("ollama", installation="0ther0ther0ther0"), ps_row("webui", installation=UNMANAGED)
    )
    report = lifecycle.status(rt)
    assert report.others == lifecycle.OtherContainers(
        {"p-ollama-1": "0ther0ther0ther0", "p-webui-1": UNMANAGED}
    )
    assert report.others.holders() == [
        ("installation", "0ther0ther0ther0", ["p-ollama-1"]),
        ("by-hand", UNMANAGED, ["p-webui-1"]),
    ]
    assert report.others.blocks_start
    assert pow_calls.subcommands().count("volume") == 1  # no mark: nobody adopted it
    assert not report.running and {s.state for s in report.services} == {"absent"}
    assert report.to_json()["others"] == {
        "containers": {"p-ollama-1": "0ther0ther0ther0", "p-webui-1": UNMANAGED},
        "adopted_by": None,
        "adopter": None,
    }

    pow_calls.calls.clear()
    pow_calls.on_run = ps_answer(ps_row("ollama"), ps_row("webui", installation=UNMANAGED))
    report = lifecycle.status(rt)
    assert report.others is not None and report.others.holders()[0][0] == "by-hand"
    assert "volume" not in pow_calls.subcommands()  # ours run beside them: nobody adopted it

    pow_calls.calls.clear()
    not_ours = ps_row("db") | {"Labels": "com.docker.compose.project=p"}  # no label of ours
    pow_calls.on_run = ps_answer(not_ours)
    report = lifecycle.status(rt)
    assert report.others is not None and report.others.holders() == [
        ("other-project", "unlabelled", ["p-db-1"])
    ]
    assert not report.others.blocks_start  # `stack.start` goes on over those
    assert pow_calls.subcommands().count("volume") == 1  # none of ours: adopted elsewhere?

    pow_calls.calls.clear()
    pow_calls.on_run = ps_answer()  # nothing at all: only the mark could tell (none here)
    assert lifecycle.status(rt).others is None
    assert pow_calls.subcommands().count("volume") == 1


def test_status_shows_webui_that_cannot_reach_ollama(local_paths, services, pow_calls):
    from python_on_whales.exceptions import DockerException

    config.install(local_paths, {})
    answer = ps_answer(*(ps_row(name) for name in services))

    def engine(argv: list[str]) -> str:
        if "exec" in argv:
            raise DockerException(argv, 7, b"", b"curl: (7) Failed to connect to ollama")
        return answer(argv)

    pow_calls.on_run = engine
    rows = {
        s.name: s for s in lifecycle.status(make_runtime(local_paths, ports_of(services))).services
    }
    assert (rows["ollama"].health, rows["mcp_proxy"].health) == ("healthy", "healthy")
    assert rows["webui"].health == "reachable"
    assert rows["webui"].detail.endswith("curl: (7) Failed to connect to ollama")


def test_status_counts_the_models_while_the_link_is_asked(local_paths, http_service, pow_calls):
    # Two independent questions: the count waited for the link check to end.
    config.install(local_paths, {})
    counted = {
        "/api/tags": json_route(200, {"models": [{"name": "a"}, {"name": "b"}]}, delay=0.3),
        "/api/ps": json_route(200, {"models": [{"name": "a"}]}, delay=0.3),
    }
    servers = {
        "ollama": http_service(ollama_routes() | counted),
        "webui": http_service(webui_routes()),
        "mcp_proxy": http_service(mcpo_routes()),
    }
    answer = ps_answer(*(ps_row(name) for name in servers))

    def engine(argv: list[str]) -> str:
        if "exec" in argv:
            time.sleep(0.6)  # as long as counting takes
        return answer(argv)

    pow_calls.on_run = engine
    began = time.monotonic()
    report = lifecycle.status(make_runtime(local_paths, ports_of(servers)))
    assert time.monotonic() - began < 1.0  # 0.6 + 0.6 one after the other
    ollama = next(s for s in report.services if s.name == "ollama")
    assert (ollama.models, ollama.loaded_models) == (2, 1)
    assert report.healthy


def test_status_counts_no_models_on_a_port_our_container_does_not_hold(
    local_paths, http_service, pow_calls
):
    config.install(local_paths, {})
    counted = {"/api/tags": json_route(200, {"models": []}), "/api/ps": json_route(200, {})}
    someone_elses = http_service(ollama_routes() | counted)
    pow_calls.on_run = ps_answer(ps_row("ollama", "exited"))
    report = lifecycle.status(make_runtime(local_paths, {"ollama": someone_elses.port}))
    ollama = next(s for s in report.services if s.name == "ollama")
    assert (ollama.health, ollama.models, ollama.loaded_models) == ("unknown", None, None)


def test_status_trusts_probes_of_running_containers_only(local_paths, services, pow_calls):
    config.install(local_paths, {})
    pow_calls.on_run = ps_answer(ps_row("ollama"), ps_row("webui", "exited"))
    rt = make_runtime(local_paths, ports_of(services))
    report = lifecycle.status(rt)
    rows = {s.name: s for s in report.services}
    assert (rows["ollama"].state, rows["ollama"].health) == ("running", "healthy")
    assert (rows["webui"].state, rows["webui"].health) == ("exited", "unknown")
    assert (rows["mcp_proxy"].state, rows["mcp_proxy"].health) == ("absent", "unknown")
    assert rows["mcp_proxy"].image == Settings.validated().images["mcp_proxy"]
    # something healthy answers on webui's port, but it is not our container
    assert rows["webui"].detail == ""
    document = report.to_json()
    assert document["installed"] is True
    assert document["running"] is True
    assert document["healthy"] is False
    json.dumps(document)


def test_merged_config_hides_the_secrets(local_paths, services, pow_calls, fake_docker):
    config.install(local_paths, {})
    secrets = config.read_secrets(local_paths)
    pow_calls.on_run = lambda argv: (
        f"services:\n  webui:\n    environment:\n      WEBUI_SECRET_KEY: "
        f"{secrets['WEBUI_SECRET_KEY']}\n      MCPO: {secrets['MCPO_API_KEY']}\n"
    )
    rt = make_runtime(local_paths, ports_of(services))
    text = lifecycle.merged_config(rt)
    for value in secrets.values():
        assert value not in text
    assert "WEBUI_SECRET_KEY: ${WEBUI_SECRET_KEY}" in text
    assert "MCPO: ${MCPO_API_KEY}" in text
    first = text.splitlines()[1]
    assert first.startswith("#   docker compose --file ")
    assert first.endswith("--project-name ollama-stack up --detach")
    # names the env file `stack.start` will write, though none is written yet
    assert f"--env-file {local_paths.runtime_env_file} " in first
    assert str(fake_docker) not in first
    # read-only: compose got the values from a private temporary file, now gone
    config_argv = next(argv for argv, _ in pow_calls.calls if "config" in argv)
    env_file = config_argv[config_argv.index("--env-file") + 1]
    assert env_file != str(local_paths.runtime_env_file)
    assert not Path(env_file).exists()
    assert not local_paths.runtime_env_file.exists() and not local_paths.state_file.exists()


def test_merged_config_hides_the_mcp_servers_tokens(local_paths, services, pow_calls):
    config.install(local_paths, {})
    token = "tok-'$ecret"
    servers = {
        "gh": {"command": "gh-mcp", "env": {"GITHUB_TOKEN": token, "N": "1"}},
        "far": {"type": "sse", "url": "http://far:1/sse", "headers": {"X-Key": "hdr-secret"}},
    }
    rt = make_runtime(local_paths, ports_of(services), mcp_servers=servers)
    # compose prints the config content as it was given: what the env file holds
    config_json = rt.resolve().compose_env(config.read_secrets(local_paths))["MCPO_CONFIG"]
    pow_calls.on_run = lambda argv: f"configs:\n  c:\n    content: '{config_json}'\n"
    text = lifecycle.merged_config(rt)
    assert "tok-" not in text and "hdr-secret" not in text
    assert text.count("<redacted>") == 2
    assert '"N":"1"' in text  # short values are flags, not tokens


def test_merged_config_with_a_native_ollama_starts_only_the_docker_services(
    local_paths, services, pow_calls
):
    config.install(local_paths, {})
    pow_calls.on_run = lambda argv: "services: {}\n"
    rt = make_runtime(
        local_paths,
        ports_of(services),
        services={"ollama": {"type": "native-api", "url": services["ollama"].url}},
    )
    command = lifecycle.merged_config(rt).splitlines()[1]
    # Ollama's file is not in the command at all, so its plain `up` cannot start it.
    assert command.endswith("up --detach")
    assert "/webui.yml" in command and "/ollama.yml" not in command


# -- crash loops ----------------------------------------------------------------------------


def run(service: str, status: str = "running", restarts: int = 0, cid: str = "") -> ContainerRun:
    return ContainerRun(service, cid or f"id-{service}", status, 3, restarts, "")


@pytest.mark.parametrize(
    ("before", "now", "crashed"),
    [
        ({}, {"w": run("w")}, []),
        ({}, {"w": run("w", "exited")}, ["w"]),
        ({}, {"w": run("w", "dead")}, ["w"]),
        ({}, {"w": run("w", restarts=1)}, []),
        ({}, {"w": run("w", "restarting", restarts=2)}, ["w"]),
        # stopped by hand (or a signal), not crashed
        ({}, {"w": ContainerRun("w", "i", "exited", 0, 0)}, []),
        ({}, {"w": ContainerRun("w", "i", "exited", 143, 0)}, []),
        # restarts from before the wait do not count: a container restarted weeks ago
        ({"w": run("w", restarts=7)}, {"w": run("w", restarts=8)}, []),
        ({"w": run("w", restarts=7)}, {"w": run("w", "restarting", restarts=8)}, []),
        ({"w": run("w", restarts=7)}, {"w": run("w", restarts=9)}, ["w"]),
        # recreated by `up`: same name, new ID, counted from zero
        ({"w": run("w", restarts=7, cid="old")}, {"w": run("w", restarts=1)}, []),
        ({"w": run("w", restarts=7, cid="old")}, {"w": run("w", restarts=2)}, ["w"]),
    ],
)
def test_crash_looping(before, now, crashed):
    assert [r.service for r in lifecycle.crash_looping(before, now)] == crashed


def test_wait_fails_at_once_on_a_crash_loop_with_exit_code_and_logs(
    local_paths, services, closed_port, pow_calls
):
    rows = [ps_row(name) for name in services]
    counter = {"restarts": 0}

    def engine(argv: list[str]) -> str:
        if "inspect" in argv:
            counter["restarts"] += 1  # each look finds it restarted once more
            return "\n".join(
                f"{r['Service']}\t\tid-{r['Name']}\t"
                + ("restarting\t3\t" if r["Service"] == "mcp_proxy" else "running\t0\t")
                + f"{counter['restarts'] if r['Service'] == 'mcp_proxy' else 0}\t"
                for r in rows
            )
        return ps_answer(*rows)(argv)

    pow_calls.on_run = engine
    pow_calls.lines = [("stderr", b"mcp_proxy-1  | ValueError: No 'mcpServers' found\n")]
    rt = make_runtime(local_paths, ports_of(services) | {"mcp_proxy": closed_port})
    began = time.monotonic()
    with pytest.raises(ServiceCrashed) as info:
        lifecycle.wait_healthy(rt, 60)
    assert time.monotonic() - began < 5  # not the 60 s timeout
    err = info.value
    assert err.code == 15 and isinstance(err, HealthTimeout)  # an update rolls back on it
    assert err.message.startswith("not healthy: mcp_proxy keeps restarting (exit code 3, ")
    assert "last log: mcp_proxy-1  | ValueError: No 'mcpServers' found" in err.message
    assert "ollama" not in err.message and "webui" not in err.message
    assert "inv stack.logs -s mcp_proxy" in err.remedy


def test_a_loop_seen_only_while_up_still_reports_its_real_exit_code(
    local_paths, services, closed_port, pow_calls, monkeypatch
):
    monkeypatch.setattr(lifecycle, "POLL_SECONDS", 0.01)
    rows = [ps_row(name) for name in services]
    looks = {"n": 0}

    def engine(argv: list[str]) -> str:
        if "inspect" in argv:
            looks["n"] += 1
            # up again (exit code 0) with more restarts each look, until caught down
            status = "restarting\t3" if looks["n"] >= 4 else "running\t0"
            return "\n".join(
                f"{r['Service']}\t\tid-{r['Name']}\t"
                + (
                    f"{status}\t{looks['n']}\t"
                    if r["Service"] == "mcp_proxy"
                    else "running\t0\t0\t"
                )
                for r in rows
            )
        return ps_answer(*rows)(argv)

    pow_calls.on_run = engine
    rt = make_runtime(local_paths, ports_of(services) | {"mcp_proxy": closed_port})
    with pytest.raises(ServiceCrashed) as info:
        lifecycle.wait_healthy(rt, 60)
    assert "mcp_proxy keeps restarting (exit code 3, restarted" in info.value.message
