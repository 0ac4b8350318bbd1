"""compose/engine.py: the Engine API reader, at its boundary.

A real HTTP server on a unix socket in tmp_path answers as the engine does
(the requests it got are asserted exactly); the ssh:// transport is a real
child process whose stdin and stdout carry the HTTP, like
`ssh HOST docker system dial-stdio`.
"""

from __future__ import annotations

import hashlib
import json
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ollama_stack.common.errors import DockerUnavailable, SSHError
from ollama_stack.compose import client, engine
from ollama_stack.compose.client import AdoptionMark, ComposeProject, ProjectVolumes
from ollama_stack.compose.engine import Engine, EngineUnreachable, engine_at, locate

Answer = Callable[[str, Any], tuple[int, Any]]  # (path, JSON body) -> (status, JSON or raw bytes)
DROP = object()  # an answer that closes the connection without a word


class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str, Any]] = []
        self.closing: tuple[str, ...] = ()  # routes answered with `Connection: close`
        super().__init__(str(path), _EngineHandler)


class _EngineHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeEngine

    def do_GET(self) -> None:
        self._reply(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._reply(json.loads(self.rfile.read(length)) if length else None)

    def _reply(self, body: Any) -> None:
        self.server.requests.append((self.command, self.path, body))
        status, document = self.server.answer(self.path, body)
        if document is DROP:  # the link goes down: no answer at all
            self.close_connection = True
            return
        if isinstance(document, bytes):  # a hijacked stream: raw, then the end
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.docker.raw-stream")
            self.end_headers()
            self.wfile.write(document)
            self.close_connection = True
            return
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if urlsplit(self.path).path.endswith(self.server.closing):
            self.send_header("Connection", "close")  # as a socket proxy or Podman may
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def project_on(server: FakeEngine, tmp_path: Path) -> ComposeProject:
    """Installation inst1's project "p", asking the fake engine."""
    return ComposeProject(
        "p",
        [tmp_path / "base.yml"],
        docker_host=f"unix://{server.server_address}",
        installation="inst1",
    )


@pytest.fixture
def fake_engine(tmp_path: Path) -> Iterator[Callable[[Answer], FakeEngine]]:
    servers: list[FakeEngine] = []

    def start(answer: Answer) -> FakeEngine:
        server = FakeEngine(tmp_path / f"engine{len(servers)}.sock", answer)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def summary(name: str, service: str, state: str = "running", **extra: Any) -> dict[str, Any]:
    """A container as GET /containers/json lists it."""
    labels = {
        "com.docker.compose.project": "p",
        "com.docker.compose.service": service,
        "com.docker.compose.config-hash": "abc",
        "io.ollama-stack.installation": "inst1",
    }
    return {
        "Id": f"id-{name}",
        "Names": [f"/{name}"],
        "Image": f"img/{service}:1",
        "State": state,
        "Status": extra.pop("Status", "Up 2 minutes" if state == "running" else "Exited (0)"),
        "Labels": labels | extra.pop("Labels", {}),
        "Ports": extra.pop("Ports", []),
        **extra,
    }


def query_of(path: str) -> dict[str, Any]:
    query = {key: values[0] for key, values in parse_qs(urlsplit(path).query).items()}
    if "filters" in query:
        query["filters"] = json.loads(query["filters"])
    return query


# -- the containers of a project ------------------------------------------------


def test_project_volumes_asks_for_the_project_and_label_and_lists_by_name(fake_engine):
    volumes = [
        {"Name": "p_z", "Labels": {"io.ollama-stack.adopted-by": "b"}},
        {"Name": "p_a", "Labels": None},
        {"Name": "p_m", "Labels": {"io.ollama-stack.adopted-by": ""}},
    ]
    server = fake_engine(lambda path, body: (200, {"Volumes": volumes, "Warnings": None}))
    where = Engine(socket_path=server.server_address)

    listed = engine.project_volumes(where, "p", "io.ollama-stack.adopted-by")

    [(method, path, _body)] = server.requests
    assert method == "GET" and urlsplit(path).path == "/volumes"
    assert query_of(path) == {
        "filters": {"label": ["com.docker.compose.project=p", "io.ollama-stack.adopted-by"]}
    }
    assert [v["Name"] for v in listed] == ["p_a", "p_m", "p_z"]
    engine.project_volumes(where, "p")
    assert query_of(server.requests[-1][1]) == {
        "filters": {"label": ["com.docker.compose.project=p"]}
    }
    server.answer = lambda path, body: (200, {"Volumes": None})
    assert engine.project_volumes(where, "p", "x") == []


def test_the_projects_volumes_and_mark_are_read_over_the_engine_api(fake_engine):
    """No docker CLI where the engine answers (the wrapper would fail here: the
    unit tests' docker never runs)."""
    mark = {
        "com.docker.compose.project": "p",
        "io.ollama-stack.adopted-by": "n3w",
        "io.ollama-stack.adopted-home": "/the/new/home",
        "io.ollama-stack.adopted-volumes": "0ld",
    }
    volumes = [
        {"Name": "p_webui_data", "Labels": {"io.ollama-stack.installation": "0ld"}},
        {"Name": "p_ollama-stack-adoption", "Labels": mark},
        {"Name": "p_bare", "Labels": None},
    ]

    def answer(path: str, body: Any) -> tuple[int, Any]:
        having = "io.ollama-stack.adopted-by" in query_of(path)["filters"]["label"]
        return 200, {"Volumes": [v for v in volumes if not having or v["Labels"] == mark]}

    server = fake_engine(answer)
    compose = ComposeProject(project="p", files=(), docker_host=f"unix://{server.server_address}")

    expected = AdoptionMark("n3w", "/the/new/home", "0ld")
    assert compose.adoption_mark() == expected
    assert compose.volumes_and_mark() == ProjectVolumes(
        {"p_bare": "", "p_webui_data": "0ld"}, expected
    )
    asked = {urlsplit(path).path.rsplit("/", 1)[1] for _, path, _ in server.requests}
    assert asked == {"_ping", "volumes"}  # the version, then the two listings


def test_project_containers_asks_once_and_reads_rows_as_compose_prints_them(fake_engine, tmp_path):
    listed = [
        summary(
            "p-webui-1",
            "webui",
            Status="Up 5 minutes (health: starting)",
            Ports=[
                {"IP": "127.0.0.1", "PrivatePort": 8080, "PublicPort": 3000, "Type": "tcp"},
                {"PrivatePort": 22, "Type": "tcp"},
            ],
        ),
        summary(
            "p-ollama-1", "ollama", Status="Up 1 second (healthy)", Names=["/x/y", "/p-ollama-1"]
        ),
        summary("p-mcp_proxy-1", "mcp_proxy", "exited", Status="Exited (1) (unhealthy)"),
    ]
    server = fake_engine(lambda path, body: (200, listed))

    rows = engine.project_containers(Engine(socket_path=server.server_address), "p")

    [(method, path, _body)] = server.requests
    assert method == "GET" and urlsplit(path).path == "/containers/json"
    assert query_of(path) == {
        "all": "1",
        "filters": {"label": ["com.docker.compose.project=p", "com.docker.compose.config-hash"]},
    }
    assert [r["Name"] for r in rows] == ["p-mcp_proxy-1", "p-ollama-1", "p-webui-1"]
    mcp, ollama, webui = rows
    assert (webui["Health"], ollama["Health"], mcp["Health"]) == ("starting", "healthy", "")
    assert webui["Publishers"] == [
        {"URL": "", "TargetPort": 22, "PublishedPort": 0, "Protocol": "tcp"},
        {"URL": "127.0.0.1", "TargetPort": 8080, "PublishedPort": 3000, "Protocol": "tcp"},
    ]
    assert (webui["Service"], webui["State"], webui["Image"]) == ("webui", "running", "img/webui:1")
    assert "io.ollama-stack.installation=inst1" in webui["Labels"].split(",")


def test_ps_reads_the_engine_and_keeps_only_this_installation(fake_engine, tmp_path):
    listed = [
        summary(
            "p-webui-1", "webui", Ports=[{"IP": "::", "PrivatePort": 8080, "PublicPort": 3000}]
        ),
        summary("p-ollama-1", "ollama", Labels={"io.ollama-stack.installation": "other"}),
    ]
    server = fake_engine(lambda path, body: (200, listed))
    project = project_on(server, tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "locate", locate)  # the real one (conftest keeps it away)
        [row] = project.ps()
    assert (row.name, row.service, row.state, row.published_ports) == (
        "p-webui-1",
        "webui",
        "running",
        {3000},
    )
    assert row.installation == "inst1" and row.config_hash == "abc"


def test_an_engine_that_does_not_answer_leaves_ps_to_the_cli(pow_calls, tmp_path):
    project = ComposeProject("p", [tmp_path / "base.yml"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "locate", locate)  # DOCKER_HOST: a socket nobody listens on
        assert project.ps() == []
    assert pow_calls.argv[-4:] == ["ps", "--all", "--format", "json"]


def test_an_error_status_is_unreachable_too(fake_engine):
    server = fake_engine(lambda path, body: (500, {"message": "boom"}))
    with pytest.raises(EngineUnreachable, match="500: boom"):
        engine.project_containers(Engine(socket_path=server.server_address), "p")


# -- finding the engine as the docker CLI does -------------------------------------


def context_dir(tmp_path: Path, name: str, host: str, current: str | None = None) -> Path:
    config = tmp_path / "dockercfg"
    meta = config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps({"Name": name, "Endpoints": {"docker": {"Host": host}}})
    )
    if current:
        (config / "config.json").write_text(json.dumps({"currentContext": current}))
    return config


def test_docker_host_wins_over_every_context(tmp_path):
    config = context_dir(tmp_path, "far", "ssh://far", current="far")
    environ = {
        "DOCKER_HOST": "unix:///run/x.sock",
        "DOCKER_CONTEXT": "far",
        "DOCKER_CONFIG": str(config),
    }
    assert locate(None, environ) == Engine(socket_path="/run/x.sock")
    assert locate("ssh://box", environ).ssh_argv[-4:] == ("box", "docker", "system", "dial-stdio")


def test_the_context_comes_from_docker_context_then_config_json(tmp_path):
    config = context_dir(tmp_path, "far", "unix:///run/far.sock", current="far")
    assert locate(None, {"DOCKER_CONFIG": str(config)}) == Engine(socket_path="/run/far.sock")
    home = {"HOME": str(tmp_path / "nohome"), "DOCKER_CONTEXT": "far", "DOCKER_CONFIG": str(config)}
    assert locate(None, home) == Engine(socket_path="/run/far.sock")
    assert locate(None, {"HOME": str(tmp_path)}) == Engine(socket_path="/var/run/docker.sock")
    default = {"DOCKER_CONTEXT": "default", "DOCKER_CONFIG": str(config)}
    assert locate(None, default) == Engine(socket_path="/var/run/docker.sock")


def test_what_this_path_does_not_speak_is_left_to_the_cli(tmp_path):
    config = context_dir(tmp_path, "tls", "tcp://h:2376")
    (config / "contexts" / "tls" / hashlib.sha256(b"tls").hexdigest()).mkdir(parents=True)
    for environ in (
        {"DOCKER_HOST": "tcp://h:2375"},
        {"DOCKER_HOST": "npipe:////./pipe/docker_engine"},
        {"DOCKER_CONTEXT": "tls", "DOCKER_CONFIG": str(config)},
        {"DOCKER_CONTEXT": "missing", "DOCKER_CONFIG": str(config)},
    ):
        with pytest.raises(EngineUnreachable):
            locate(None, environ)


def test_ssh_engines_are_dialled_like_the_docker_cli_but_never_prompt():
    assert engine_at("ssh://GPU-Box").ssh_argv[-4:] == ("GPU-Box", "docker", "system", "dial-stdio")
    assert engine_at("ssh://[fe80::1]:22").ssh_argv[-6:-3] == ("22", "--", "fe80::1")
    assert engine_at("ssh://ops@box:2222").ssh_argv == (
        *("ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "-T"),
        *("-l", "ops", "-p", "2222", "--", "box", "docker", "system", "dial-stdio"),
    )


BRIDGE = """
import socket, sys, threading
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
def up():
    while data := sys.stdin.buffer.read1(65536):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536):
    sys.stdout.buffer.write(data); sys.stdout.buffer.flush()
"""


def test_a_dial_stdio_process_carries_the_http(fake_engine):
    server = fake_engine(lambda path, body: (200, [summary("p-ollama-1", "ollama")]))
    through_stdio = Engine(ssh_argv=(sys.executable, "-c", BRIDGE, server.server_address))
    [row] = engine.project_containers(through_stdio, "p")
    assert row["Name"] == "p-ollama-1"


def test_an_ssh_that_lingers_is_ended_by_the_execs_deadline(fake_engine):
    server = fake_engine(exec_engine(0, frames((1, b"done")), [summary("p-webui-1", "webui")]))
    lingering = BRIDGE + "\nimport time\ntime.sleep(30)\n"  # its session outlives the stream
    through_ssh = Engine(ssh_argv=(sys.executable, "-c", lingering, server.server_address))
    began = time.monotonic()
    assert engine.exec_in(through_ssh, "p", "webui", ["true"], 1.0) == (124, "no answer within 1 s")
    assert time.monotonic() - began < 1.5  # not 1 s and the 2 s ssh is given to end


def test_a_dial_stdio_process_that_fails_is_unreachable():
    with pytest.raises(EngineUnreachable):
        Engine(ssh_argv=(sys.executable, "-c", "raise SystemExit(255)")).get_json("/_ping")


# -- a question asked inside a container ------------------------------------------


def frames(*parts: tuple[int, bytes]) -> bytes:
    return b"".join(struct.pack(">BxxxL", kind, len(data)) + data for kind, data in parts)


def exec_engine(exit_code: int, output: bytes, running: list[dict[str, Any]]) -> Answer:
    def answer(path: str, body: Any) -> tuple[int, Any]:
        route = urlsplit(path).path
        if route == "/containers/json":
            return 200, running
        if route.endswith("/exec"):
            return 201, {"Id": "e1"}
        if route == "/exec/e1/start":
            return 200, output
        if route == "/exec/e1/json":
            return 200, {"Running": False, "ExitCode": exit_code}
        return 404, {"message": f"no route {route}"}

    return answer


def test_exec_in_runs_in_the_services_first_container_and_reads_both_streams(fake_engine):
    running = [
        summary("p-webui-2", "webui", Labels={"com.docker.compose.container-number": "2"}),
        summary("p-webui-1", "webui", Labels={"com.docker.compose.container-number": "1"}),
    ]
    output = frames((1, b'{"version":'), (2, b"warn\n"), (1, b'"1"}'))
    server = fake_engine(exec_engine(0, output, running))
    where = Engine(socket_path=server.server_address)

    assert engine.exec_in(where, "p", "webui", ["curl", "-sS", "http://ollama"], 5) == (
        0,
        '{"version":"1"}',
    )
    listing, create, start, inspect = server.requests
    assert query_of(listing[1])["filters"] == {
        "label": [
            "com.docker.compose.project=p",
            "com.docker.compose.service=webui",
            "com.docker.compose.oneoff=False",
        ],
        "status": ["running"],
    }
    assert create == (
        "POST",
        "/containers/id-p-webui-1/exec",
        {"AttachStdout": True, "AttachStderr": True, "Cmd": ["curl", "-sS", "http://ollama"]},
    )
    assert start == ("POST", "/exec/e1/start", {"Detach": False, "Tty": False})
    assert inspect[:2] == ("GET", "/exec/e1/json")


def test_exec_in_answers_a_failure_with_stderr_first(fake_engine):
    output = frames((1, b"partial"), (2, b"curl: (7) refused\n"))
    server = fake_engine(exec_engine(7, output, [summary("p-webui-1", "webui")]))
    code, text = engine.exec_in(
        Engine(socket_path=server.server_address), "p", "webui", ["curl"], 5
    )
    assert (code, text) == (7, "curl: (7) refused\npartial")


def test_exec_in_a_service_that_is_not_running(fake_engine):
    server = fake_engine(exec_engine(0, b"", []))
    assert engine.exec_in(Engine(socket_path=server.server_address), "p", "webui", ["true"], 5) == (
        1,
        'service "webui" is not running',
    )


def test_exec_in_a_container_that_stopped_meanwhile_is_the_engines_answer(fake_engine):
    def answer(path: str, body: Any) -> tuple[int, Any]:
        if urlsplit(path).path == "/containers/json":
            return 200, [summary("p-webui-1", "webui")]
        return 409, {"message": "Container id-p-webui-1 is not running"}

    server = fake_engine(answer)
    assert engine.exec_in(Engine(socket_path=server.server_address), "p", "webui", ["true"], 5) == (
        1,
        "Container id-p-webui-1 is not running",
    )


def test_compose_exec_in_falls_back_to_compose_exec(pow_calls, tmp_path):
    project = ComposeProject("p", [tmp_path / "base.yml"])
    pow_calls.stdout = "ok"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "locate", locate)
        assert project.exec_in("webui", ["true"], timeout=3) == (0, "ok")
    assert pow_calls.argv[-4:] == ["exec", "-T", "webui", "true"]


def compose_exec(pow_calls: Any, project: ComposeProject, where: Engine | None = None) -> Any:
    """``project.exec_in("webui", ["touch", "/x"])``, the engine found as given
    (by its docker_host when None); the CLI's answer is "by the cli"."""
    pow_calls.stdout = "by the cli"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "locate", (lambda host: where) if where else locate)
        return project.exec_in("webui", ["touch", "/x"], timeout=3)


def test_an_engine_that_refuses_the_connection_leaves_the_exec_to_the_cli(pow_calls, tmp_path):
    refusing = socket.socket(socket.AF_UNIX)
    refusing.bind(str(tmp_path / "docker.sock"))  # bound, never listening: ECONNREFUSED
    project = ComposeProject(
        "p", [tmp_path / "base.yml"], docker_host=f"unix://{tmp_path / 'docker.sock'}"
    )
    try:
        assert compose_exec(pow_calls, project) == (0, "by the cli")
    finally:
        refusing.close()
    argv = pow_calls.argv
    assert argv[1:3] == ["--host", f"unix://{tmp_path / 'docker.sock'}"]
    assert argv[3] == "compose" and argv[-5:] == ["exec", "-T", "webui", "touch", "/x"]


def lost_after(step: str) -> Answer:
    """An engine whose link drops at ``step`` ("start": before any output;
    "json": while the exit code is asked)."""
    ran = exec_engine(0, frames((1, b"done")), [summary("p-webui-1", "webui")])
    return lambda path, body: (200, DROP) if path.endswith(step) else ran(path, body)


@pytest.mark.parametrize("step", ["start", "json"])
def test_an_exec_whose_answer_is_lost_after_the_start_is_never_run_again(
    fake_engine, pow_calls, tmp_path, step
):
    server = fake_engine(lost_after(step))
    with pytest.raises(DockerUnavailable) as info:
        compose_exec(pow_calls, project_on(server, tmp_path))
    assert pow_calls.calls == []  # the CLI was not asked to run it again
    assert [path for _, path, _ in server.requests].count("/exec/e1/start") == 1
    assert "`touch /x` was started in webui's container" in info.value.message
    assert "it may have run; not run again" in info.value.message
    assert "stack.logs -s webui" in info.value.remedy and "docker info" in info.value.remedy


def test_a_lost_exec_on_a_box_is_an_ssh_error(fake_engine, pow_calls, tmp_path):
    server = fake_engine(lost_after("start"))
    through_ssh = Engine(ssh_argv=(sys.executable, "-c", BRIDGE, server.server_address))
    project = replace(project_on(server, tmp_path), target_label="gpu-box")
    with pytest.raises(SSHError) as info:
        compose_exec(pow_calls, project, through_ssh)
    assert "engine on gpu-box stopped answering" in info.value.message
    assert "not run again" in info.value.message and pow_calls.calls == []
    assert info.value.remedy.startswith("check `ssh gpu-box docker info`")


def test_one_deadline_covers_every_step_of_an_exec(fake_engine, pow_calls, tmp_path):
    """Each step answers well within the time-out, all of them together do not."""
    ran = exec_engine(0, frames((1, b"done")), [summary("p-webui-1", "webui")])

    def slow(path: str, body: Any) -> tuple[int, Any]:
        time.sleep(0.3)
        return ran(path, body)

    server = fake_engine(slow)
    began = time.monotonic()
    where = Engine(socket_path=server.server_address)
    assert engine.exec_in(where, "p", "webui", ["true"], 1.0) == (124, "no answer within 1 s")
    assert 1.0 <= time.monotonic() - began < 1.25
    assert len(server.requests) == 4  # the exit code was being asked when the time ran out
    assert pow_calls.calls == []


def test_time_spent_before_an_engine_fails_is_not_given_to_the_cli_again(pow_calls, tmp_path):
    class Slow(Engine):
        def connection(self, timeout: float = 10.0) -> Any:
            time.sleep(0.2)  # an ssh login that fails after a while
            raise EngineUnreachable("Permission denied (publickey)")

    project = ComposeProject("p", [tmp_path / "base.yml"])
    seen: list[float] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(client, "bounded_run", lambda argv, timeout: seen.append(timeout) or (0, ""))
        patch.setattr(engine, "locate", lambda host: Slow(socket_path="/nowhere"))
        assert project.exec_in("webui", ["true"], timeout=1.0) == (0, "")
        (left,) = seen
        assert 0.5 < left <= 0.8


# -- images -----------------------------------------------------------------------


def test_image_facts_come_from_image_inspect_and_a_missing_one_is_none(fake_engine, tmp_path):
    def answer(path: str, body: Any) -> tuple[int, Any]:
        if path == "/images/registry.local:5000/ns/webui:1/json":
            return 200, {"Id": "sha256:1", "RepoDigests": ["ns/webui@sha256:9"], "RepoTags": None}
        return 404, {"message": "No such image"}

    server = fake_engine(answer)
    project = ComposeProject(
        "p", [tmp_path / "b.yml"], docker_host=f"unix://{server.server_address}"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "locate", locate)
        info = project.image_info("registry.local:5000/ns/webui:1")
        assert (info.id, info.repo_digests, info.repo_tags) == (
            "sha256:1",
            ("ns/webui@sha256:9",),
            (),
        )
        assert project.image_info("nosuch:1") is None
        assert project.image_exists("registry.local:5000/ns/webui:1")
        assert not project.image_exists("nosuch:1")


def test_container_image_ids_are_read_from_one_listing(fake_engine, tmp_path):
    listed = [
        summary("p-webui-1", "webui", ImageID="sha256:w"),
        summary("p-ollama-1", "ollama", "exited", ImageID="sha256:o"),
        summary(
            "p-other-1", "other", ImageID="sha256:x", Labels={"io.ollama-stack.installation": "2"}
        ),
    ]
    server = fake_engine(lambda path, body: (200, listed))
    project = project_on(server, tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "locate", locate)
        assert project.container_image_ids() == {"webui": "sha256:w", "ollama": "sha256:o"}
    assert len(server.requests) == 1


def test_an_engine_that_closes_the_connection_is_never_dialled_anew(fake_engine, monkeypatch):
    server = fake_engine(lambda path, body: (200, []))
    monkeypatch.setattr(_EngineHandler, "protocol_version", "HTTP/1.0")  # closes after each answer
    dialled: list[Any] = []
    monkeypatch.setattr(
        "socket.create_connection", lambda *args, **kwargs: dialled.append(args) or 1 / 0
    )
    where = Engine(socket_path=server.server_address)
    assert engine.exec_in(where, "p", "webui", ["true"], 5) == (1, 'service "webui" is not running')
    with pytest.raises(EngineUnreachable, match="closed"), where.connection() as conn:
        engine._answer(conn, "GET", "/containers/json")
        engine._answer(conn, "GET", "/containers/json")
    assert dialled == []


@pytest.mark.parametrize("closing", ["/containers/json", "/exec"])
def test_an_engine_that_closes_before_the_start_leaves_the_exec_to_the_cli(
    fake_engine, pow_calls, tmp_path, closing
):
    server = fake_engine(exec_engine(0, frames((1, b"done")), [summary("p-webui-1", "webui")]))
    server.closing = (closing,)
    assert compose_exec(pow_calls, project_on(server, tmp_path)) == (0, "by the cli")
    assert "/exec/e1/start" not in [path for _, path, _ in server.requests]


def test_an_exit_code_asked_of_an_engine_that_closes_each_time_is_asked_anew(fake_engine):
    ran = exec_engine(3, frames((2, b"no")), [summary("p-webui-1", "webui")])
    asked: list[str] = []

    def answer(path: str, body: Any) -> tuple[int, Any]:
        if path == "/exec/e1/json" and not asked:
            asked.append(path)
            return 200, {"Running": True, "ExitCode": None}
        return ran(path, body)

    server = fake_engine(answer)
    server.closing = ("/exec/e1/json",)
    where = Engine(socket_path=server.server_address)
    assert engine.exec_in(where, "p", "webui", ["false"], 5) == (3, "no")
    assert [path for _, path, _ in server.requests][-2:] == ["/exec/e1/json"] * 2


def test_a_scoped_ipv6_box_is_left_to_the_cli():
    with pytest.raises(engine.EngineUnreachable):
        engine.engine_at("ssh://fe80::1%eth0")
