"""compose/client.py: the exact argv handed to python-on-whales, and error translation.

Only python-on-whales' process runners are replaced (``python_on_whales.utils.run``
and ``python_on_whales.utils.stream_stdout_and_stderr``, imported inside the
methods); everything above them is the real code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from python_on_whales.exceptions import DockerException

from ollama_stack.common.errors import (
    DockerFailed,
    DockerUnavailable,
    ExitCode,
    ImageUnavailable,
    PortInUse,
    StackError,
)
from ollama_stack.compose import client as client_mod
from ollama_stack.compose.client import ComposeProject, parse_ps_output

BASE = client_mod.compose_file("base.yml")
NVIDIA = client_mod.compose_file("ollama.nvidia.yml")


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "compose.env"
    path.parent.mkdir()
    path.write_text("OLLAMA_PORT=11434\n")
    return path


@pytest.fixture
def project(env_file: Path, fake_docker: Path) -> ComposeProject:
    return ComposeProject(
        project="p",
        files=[BASE],
        env_files=[env_file],
        images={"ollama": "nope/img:1", "webui": "w/w:1", "mcp_proxy": "m/m:1"},
    )


@pytest.fixture
def prefix(fake_docker: Path, env_file: Path) -> list[str]:
    return [
        str(fake_docker),
        "compose",
        "--file",
        str(BASE),
        "--env-file",
        str(env_file),
        "--project-name",
        "p",
    ]


def docker_error(argv: list[str], stderr: str, code: int = 1) -> DockerException:
    return DockerException(argv, code, stdout=b"", stderr=stderr.encode())


# -- argv ---------------------------------------------------------------------------


def test_compose_argv_uses_the_docker_on_path(project, prefix):
    assert project.compose_argv("ps") == [*prefix, "ps"]


def test_compose_argv_with_several_files_and_no_env_file(fake_docker):
    project = ComposeProject(project="lab", files=[BASE, NVIDIA])
    assert project.compose_argv("config") == [
        str(fake_docker),
        "compose",
        "--file",
        str(BASE),
        "--file",
        str(NVIDIA),
        "--project-name",
        "lab",
        "config",
    ]


def test_remote_project_passes_the_ssh_host_before_compose(fake_docker, env_file):
    project = ComposeProject(
        project="p", files=[BASE], env_files=[env_file], docker_host="ssh://user@box:2222"
    )
    argv = project.compose_argv("ps")
    assert argv[:4] == [str(fake_docker), "--host", "ssh://user@box:2222", "compose"]
    assert argv[-3:] == ["--project-name", "p", "ps"]


def test_missing_docker_cli_is_docker_unavailable(monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    project = ComposeProject(project="p", files=[BASE])
    with pytest.raises(DockerUnavailable) as info:
        project.compose_argv("ps")
    assert info.value.code == ExitCode.DOCKER_UNAVAILABLE
    assert "not installed" in info.value.message


def test_up_streams_exact_argv_and_forwards_lines(project, prefix, pow_calls):
    pow_calls.lines = [
        ("stderr", b" Container p-ollama-1  Creating\n"),
        ("stderr", b"\n"),
        ("stderr", b" Container p-ollama-1  Started\r\n"),
        ("stdout", b"caf\xc3\xa9 \xff\n"),
    ]
    seen: list[str] = []
    project.up(["ollama", "webui"], pull="never", sink=seen.append)
    assert pow_calls.argv == [
        *prefix,
        "up",
        "--detach",
        "--pull",
        "never",
        "--remove-orphans",
        "ollama",
        "webui",
    ]
    assert seen[0] == "Container p-ollama-1  Creating"
    assert seen[1] == "Container p-ollama-1  Started"
    assert seen[2] == "café \ufffd"  # undecodable bytes never raise
    assert "" not in seen


def test_repeated_progress_lines_are_forwarded_once(project, pow_calls):
    pow_calls.lines = [
        ("stderr", b" Container p-ollama-1  Starting\n"),
        ("stderr", b" Container p-ollama-1  Starting\n"),
        ("stderr", b" Container p-ollama-1  Started\n"),
    ]
    seen: list[str] = []
    project.up(["ollama"], sink=seen.append)
    assert seen == ["Container p-ollama-1  Starting", "Container p-ollama-1  Started"]


def test_up_force_recreate_comes_before_the_services(project, prefix, pow_calls):
    project.up(["webui"], pull="always", force_recreate=True)
    assert pow_calls.argv == [
        *prefix,
        "up",
        "--detach",
        "--pull",
        "always",
        "--remove-orphans",
        "--force-recreate",
        "webui",
    ]


def test_up_default_pull_policy_is_missing(project, prefix, pow_calls):
    project.up(["ollama"])
    assert pow_calls.argv[len(prefix) :] == [
        "up",
        "--detach",
        "--pull",
        "missing",
        "--remove-orphans",
        "ollama",
    ]


def test_stop_argv(project, prefix, pow_calls):
    project.stop()
    project.stop(["webui"])
    assert [argv[len(prefix) :] for argv, _ in pow_calls.calls] == [
        ["stop"],
        ["stop", "webui"],
    ]
    assert all(argv[: len(prefix)] == prefix for argv, _ in pow_calls.calls)


def test_logs_argv_and_lines_verbatim(project, prefix, pow_calls):
    pow_calls.lines = [
        ("stdout", b"ollama-1  | [GIN] 200 [/x] [bold]\n"),
        ("stdout", b"webui-1   | indented  \n"),
    ]
    lines = list(
        project.logs(["ollama", "webui"], follow=True, tail="5", since="10m", timestamps=True)
    )
    assert pow_calls.argv == [
        *prefix,
        "logs",
        "--no-color",
        "--follow",
        "--tail",
        "5",
        "--since",
        "10m",
        "--timestamps",
        "ollama",
        "webui",
    ]
    assert lines == ["ollama-1  | [GIN] 200 [/x] [bold]", "webui-1   | indented  "]


def test_logs_defaults(project, prefix, pow_calls):
    list(project.logs())
    assert pow_calls.argv == [*prefix, "logs", "--no-color"]


def test_ps_argv_and_parsing(project, prefix, pow_calls):
    pow_calls.stdout = "\n".join(
        json.dumps(row)
        for row in [
            {
                "Name": "p-ollama-1",
                "Service": "ollama",
                "State": "running",
                "Health": "",
                "Image": "nope/img:1",
                "Status": "Up 2 minutes",
                "Publishers": [
                    {"URL": "127.0.0.1", "TargetPort": 11434, "PublishedPort": 11434},
                    {"URL": "::1", "TargetPort": 11434, "PublishedPort": 11434},
                ],
            },
            {
                "Name": "p-webui-1",
                "Service": "webui",
                "State": "exited",
                "Publishers": [{"URL": "", "TargetPort": 8080, "PublishedPort": 0}],
            },
        ]
    )
    rows = project.ps()
    assert pow_calls.argv == [*prefix, "ps", "--all", "--format", "json"]
    assert [(r.service, r.state) for r in rows] == [("ollama", "running"), ("webui", "exited")]
    assert rows[0].published_ports == {11434}
    assert rows[1].published_ports == set()
    assert rows[0].image == "nope/img:1"


def test_parse_ps_output_accepts_the_old_array_format_and_nothing():
    rows = parse_ps_output('[{"Name": "a", "Service": "ollama", "State": "running"}]\n')
    assert [(r.name, r.service, r.state) for r in rows] == [("a", "ollama", "running")]
    assert rows[0].published_ports == set()
    assert parse_ps_output("") == []
    assert parse_ps_output("\n  \n") == []


def test_containers_publishing(project, fake_docker, pow_calls):
    pow_calls.stdout = "other-webui-1\nthird\n"
    assert project.containers_publishing(8080) == ["other-webui-1", "third"]
    assert pow_calls.argv == [
        str(fake_docker),
        "ps",
        "--filter",
        "publish=8080",
        "--format",
        "{{.Names}}",
    ]


def test_config_yaml(project, prefix, pow_calls):
    pow_calls.stdout = "name: p\nservices: {}\n"
    assert project.config_yaml() == "name: p\nservices: {}\n"
    assert pow_calls.argv == [*prefix, "config"]


def test_build_image_uses_the_classic_builder(project, fake_docker, pow_calls, tmp_path):
    pow_calls.lines = [("stdout", b"sha256:abc\n")]
    seen: list[str] = []
    project.build_image(
        tmp_path / "ctx", "standin/ollama:t", {"VERSION": "t", "X": "a b"}, sink=seen.append
    )
    argv, kwargs = pow_calls.calls[0]
    assert argv == [
        str(fake_docker),
        "build",
        "--quiet",
        "--tag",
        "standin/ollama:t",
        "--build-arg",
        "VERSION=t",
        "--build-arg",
        "X=a b",
        str(tmp_path / "ctx"),
    ]
    assert kwargs["env"] == {"DOCKER_BUILDKIT": "0"}
    assert seen == ["sha256:abc"]


def test_engine_info(project, fake_docker, monkeypatch):
    # system.info() binds `run` at import time, so it is patched in that module
    import python_on_whales.components.system.cli_wrapper as system_cli

    calls: list[list[str]] = []
    info = {
        "ServerVersion": "27.3.1",
        "Runtimes": {"runc": {"path": "runc"}, "nvidia": {"path": "nvidia-container-runtime"}},
        "DockerRootDir": "/var/lib/docker",
        "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
        "NCPU": 4,
        "MemTotal": 8 << 30,
    }

    def fake_run(args, **kwargs):
        calls.append([str(a) for a in args])
        return json.dumps(info)

    monkeypatch.setattr(system_cli, "run", fake_run)
    engine = project.engine_info()
    assert calls == [[str(fake_docker), "system", "info", "--format", "{{json .}}"]]
    assert engine.server_version == "27.3.1"
    assert engine.runtimes == ("nvidia", "runc")
    assert engine.docker_root_dir == "/var/lib/docker"
    assert engine.ncpu == 4
    assert engine.mem_total == 8 << 30


# -- errors ----------------------------------------------------------------------------


def test_run_failure_becomes_docker_unavailable(project, prefix, pow_calls):
    pow_calls.error = docker_error(
        [*prefix, "ps"],
        "Cannot connect to the Docker daemon at unix:///nope.sock. Is the docker daemon running?",
    )
    with pytest.raises(DockerUnavailable) as info:
        project.ps()
    assert info.value.code == ExitCode.DOCKER_UNAVAILABLE == 3
    assert "unix:///nope.sock" in info.value.message
    assert info.value.__cause__ is None  # `from None`: no chained traceback


def test_stream_failure_becomes_port_in_use(project, prefix, pow_calls):
    pow_calls.lines = [("stderr", b" Container p-webui-1  Starting\n")]
    pow_calls.error_after_lines = True
    pow_calls.error = docker_error(
        [*prefix, "up"],
        "Error response from daemon: driver failed programming external connectivity on "
        "endpoint x: Bind for 127.0.0.1:8080 failed: port is already allocated",
    )
    seen: list[str] = []
    with pytest.raises(PortInUse) as info:
        project.up(["webui"], sink=seen.append)
    assert info.value.code == ExitCode.PORT_IN_USE == 5
    assert "port 8080" in info.value.message
    assert seen == ["Container p-webui-1  Starting"]  # output before the failure still arrives


def test_pull_failure_names_the_service(project, prefix, pow_calls):
    pow_calls.error = docker_error(
        [*prefix, "up", "--detach"],
        "Error response from daemon: pull access denied for nope/img, repository does not exist",
    )
    with pytest.raises(ImageUnavailable) as info:
        project.up(["ollama"])
    assert info.value.code == ExitCode.IMAGE_UNAVAILABLE == 6
    assert "ollama (nope/img:1)" in info.value.message


def test_remote_failures_name_the_target(env_file, fake_docker, pow_calls):
    project = ComposeProject(
        project="p",
        files=[BASE],
        env_files=[env_file],
        docker_host="ssh://user@box:2222",
        target_label="user@box:2222",
    )
    pow_calls.error = docker_error(["docker", "compose", "ps"], "something odd\nreally odd")
    with pytest.raises(DockerFailed) as info:
        project.ps()
    assert info.value.code == ExitCode.DOCKER_FAILED == 11
    assert info.value.message.endswith(" on user@box:2222: really odd")


def test_stdout_is_used_when_stderr_is_empty(project, pow_calls):
    pow_calls.error = DockerException(["docker", "ps"], 1, stdout=b"Host key verification failed.")
    with pytest.raises(StackError) as info:
        project.containers_publishing(80)
    assert info.value.code == ExitCode.SSH


def test_logs_failure_is_translated_while_iterating(project, prefix, pow_calls):
    pow_calls.error = docker_error([*prefix, "logs"], "no such service: nope")
    with pytest.raises(DockerFailed):
        list(project.logs(["nope"]))


def test_last_log_lines_keeps_the_tail_and_swallows_errors(project, prefix, pow_calls):
    pow_calls.lines = [("stdout", f"line {i}\n".encode()) for i in range(8)] + [
        ("stdout", b"   \n")
    ]
    assert project.last_log_lines("webui", 3) == ["line 5", "line 6", "line 7"]
    assert pow_calls.calls[0][0] == [*prefix, "logs", "--no-color", "--tail", "3", "webui"]

    pow_calls.lines = []
    pow_calls.error = docker_error([*prefix, "logs"], "Cannot connect to the Docker daemon")
    assert project.last_log_lines("webui") == []


# -- installations: ours, taken over, foreign ---------------------------------------------


@pytest.fixture
def adopted(env_file: Path, fake_docker: Path) -> ComposeProject:
    """Our containers carry "me"; our volumes still carry "old" (taken over from it)."""
    return ComposeProject(
        project="p",
        files=[BASE],
        env_files=[env_file],
        installation="me",
        volume_installation="old",
    )


def test_labelled_volumes_carry_the_id_they_were_made_with(adopted, fake_docker, pow_calls):
    adopted.labelled("volume")
    adopted.labelled("container")
    volumes, containers = (argv for argv, _ in pow_calls.calls)
    assert volumes == [
        str(fake_docker),
        *("volume", "ls", "--filter", "label=com.docker.compose.project=p"),
        *("--filter", "label=io.ollama-stack.installation=old", "--format", "{{.Name}}"),
    ]
    assert "label=io.ollama-stack.installation=me" in containers


def test_foreign_installations_leave_out_our_volumes_id_but_not_on_containers(
    adopted, project, pow_calls
):
    def engine(argv: list[str]) -> str:
        return "old\n" if argv[1] == "volume" else "me\nold\n"

    pow_calls.on_run = engine
    assert adopted.foreign_installations() == {"old"}  # a container of the old home's
    pow_calls.on_run = lambda argv: "old\n" if argv[1] == "volume" else "me\n"
    assert adopted.foreign_installations() == set()
    assert project.foreign_installations() == {"me", "old"}  # no installation of its own


def test_foreign_containers_carry_another_id_and_tell_their_env_file(adopted, pow_calls):
    def row(name: str, labels: str) -> str:
        return json.dumps({"Name": name, "Service": name, "State": "running", "Labels": labels})

    env = "com.docker.compose.project.environment_file=/old/home/state/compose.env"
    pow_calls.stdout = "\n".join(
        [
            row("mine", "io.ollama-stack.installation=me"),
            row("moved", f"io.ollama-stack.installation=old,{env}"),
            row("by-hand", "com.docker.compose.project=p,io.ollama-stack.installation=unmanaged"),
            row("not-from-our-files", "com.docker.compose.project=p"),
        ]
    )
    found = adopted.foreign_containers()
    assert [(c.name, c.installation) for c in found] == [("moved", "old"), ("by-hand", "unmanaged")]
    assert [c.environment_file for c in found] == ["/old/home/state/compose.env", ""]
    assert [c.name for c in adopted.ps()] == ["mine"]


MARK_FORMAT = (
    '{{.Label "io.ollama-stack.adopted-by"}}\t{{.Label "io.ollama-stack.adopted-home"}}'
    '\t{{.Label "io.ollama-stack.adopted-volumes"}}'
)


def test_project_volumes_argv_and_parsing(adopted, fake_docker, pow_calls):
    pow_calls.stdout = "p_ollama_data\told\t\t\t\np_webui_data\t\n\n"
    assert adopted.project_volumes() == {"p_ollama_data": "old", "p_webui_data": ""}
    assert pow_calls.argv == [
        str(fake_docker),
        *("volume", "ls", "--filter", "label=com.docker.compose.project=p"),
        *("--format", '{{.Name}}\t{{.Label "io.ollama-stack.installation"}}\t' + MARK_FORMAT),
    ]


def test_the_adoption_mark_is_read_from_the_volume_listing_and_not_a_volume_of_ours(
    adopted, pow_calls
):
    mark = "p_ollama-stack-adoption\t\tnew\t/new/home\told\n"
    pow_calls.stdout = "p_ollama_data\told\t\t\t\n" + mark
    listed = adopted.volumes_and_mark()
    assert listed.owners == {"p_ollama_data": "old"}
    assert listed.mark == client_mod.AdoptionMark("new", "/new/home", "old")

    pow_calls.calls.clear()
    pow_calls.on_run = lambda argv: (
        "old\t\t\t\n\tnew\t/new/home\told\n" if "volume" in argv else "me\n"
    )
    found = adopted.ownership()
    assert found.others == set() and found.mark == client_mod.AdoptionMark(
        "new", "/new/home", "old"
    )
    assert len(pow_calls.calls) == 2  # the same two listings as before: no extra call


def test_adoption_mark_alone_and_its_writing(adopted, fake_docker, pow_calls):
    pow_calls.stdout = "new\t/new/home\told\n"
    assert adopted.adoption_mark() == client_mod.AdoptionMark("new", "/new/home", "old")
    assert pow_calls.argv == [
        str(fake_docker),
        *("volume", "ls", "--filter", "label=com.docker.compose.project=p"),
        *("--filter", "label=io.ollama-stack.adopted-by", "--format", MARK_FORMAT),
    ]
    pow_calls.stdout = ""
    assert adopted.adoption_mark() is None

    pow_calls.calls.clear()
    adopted.mark_adoption("/my/home")
    remove, create = (argv[1:] for argv, _ in pow_calls.calls)
    assert remove == ["volume", "rm", "--force", "p_ollama-stack-adoption"]  # labels are fixed
    assert create == [
        *("volume", "create", "--label", "com.docker.compose.project=p"),
        *(
            "--label",
            "io.ollama-stack.adopted-by=me",
            "--label",
            "io.ollama-stack.adopted-home=/my/home",
        ),
        *("--label", "io.ollama-stack.adopted-volumes=old", "p_ollama-stack-adoption"),
    ]


def test_streamed_commands_never_see_our_stdin():
    """compose asks on a terminal whether to recreate (empty) a volume whose labels
    differ from its file: a streamed command gets no stdin at all, even when
    ours holds an answer."""
    import os
    import sys

    asks = "import sys; print('stdin:', repr(sys.stdin.read())); sys.stderr.write('asked\\n')"
    read_end, write_end = os.pipe()
    os.write(write_end, b"y\n")
    os.close(write_end)
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        lines = list(client_mod.stream_output([sys.executable, "-c", asks]))
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(read_end)
    assert sorted(lines) == [("stderr", b"asked\n"), ("stdout", b"stdin: ''\n")]

    fails = "import sys; sys.stderr.write('no such volume: x\\n'); sys.exit(3)"
    with pytest.raises(DockerException) as info:
        list(client_mod.stream_output([sys.executable, "-c", fails]))
    assert info.value.return_code == 3 and "no such volume" in info.value.stderr
