"""The Engine API reader (compose/engine.py) against the live engines.

What it reads must be what `docker compose ps --all --format json` prints for
the same project, and a question asked inside a container must be answered
as `docker compose exec -T` answers it: on this machine (unix socket) and on
the second host (`ssh HOST docker system dial-stdio`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from ollama_stack.compose import engine
from ollama_stack.compose.client import (
    _MARK_LABELS,
    ADOPTED_BY_LABEL,
    ADOPTED_HOME_LABEL,
    ADOPTED_VOLUMES_LABEL,
    ADOPTION_VOLUME,
    AdoptionMark,
    ComposeProject,
    _mark_of,
    bounded_run,
)

from .conftest import docker

COMPARED = ("Name", "Service", "State", "Health", "Image", "Publishers")
QUESTION = ["sh", "-c", "echo out; echo err >&2; exit 3"]


def compose_rows(project: str, docker_host: str | None) -> list[dict[str, Any]]:
    out = docker("compose", "-p", project, "ps", "--all", "--format", "json", host=docker_host)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    kept = {key: row.get(key) for key in COMPARED}
    kept["Labels"] = sorted(row["Labels"].split(","))
    # "Up 3 seconds" may become "Up 4 seconds" between the two reads
    kept["Status"] = row["Status"].split()[0]
    return kept


def assert_same_as_compose(where: engine.Engine, project: str, docker_host: str | None) -> None:
    for _ in range(3):  # health may change between the two reads (starting -> healthy)
        ours = [comparable(r) for r in engine.project_containers(where, project)]
        theirs = [comparable(r) for r in compose_rows(project, docker_host)]
        if ours == theirs:
            break
        time.sleep(1)
    assert ours == theirs
    assert len(ours) >= 4  # three services and the one-off/orphan made below


def one_off(project: str, image: str, docker_host: str | None) -> None:
    """A stopped one-off container of the project, as `compose run` leaves one."""
    labels = {
        "com.docker.compose.project": project,
        "com.docker.compose.service": "ollama",
        "com.docker.compose.oneoff": "True",
        "com.docker.compose.config-hash": "0" * 64,
    }
    flags = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    docker("create", "--name", f"{project}-ollama-run-1", *flags, image, host=docker_host)


def assert_exec_answers_as_compose(where: engine.Engine, project: str, docker_host: str | None):
    ours = engine.exec_in(where, project, "webui", QUESTION, timeout=15)
    argv = ["docker", "compose", "-p", project, "exec", "-T", "webui", *QUESTION]
    if docker_host:
        argv[1:1] = ["--host", docker_host]
    assert ours == bounded_run(argv, timeout=15) == (3, "err\nout\n")
    assert engine.exec_in(where, project, "ollama", ["true"], timeout=15) == (
        1,
        'service "ollama" is not running',
    )


def assert_images_as_inspect(where: engine.Engine, image: str, docker_host: str | None) -> None:
    inspected = docker("image", "inspect", "--format", "{{.Id}}", image, host=docker_host)
    assert engine.image(where, image)["Id"] == inspected.strip()
    assert engine.image(where, "ollama-stack-no-such-image:0") is None


def assert_mark_as_listed(project: str, docker_host: str | None) -> None:
    """The adoption mark read over the Engine API is the one `volume ls` lists."""
    labels = {
        "com.docker.compose.project": project,
        ADOPTED_BY_LABEL: "n3wn3wn3wn3wn3w0",
        ADOPTED_HOME_LABEL: "/the/new/home",
        ADOPTED_VOLUMES_LABEL: "0ld0ld0ld0ld0ld0",
    }
    flags = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    name = f"{project}_{ADOPTION_VOLUME}"
    docker("volume", "create", *flags, name, host=docker_host)
    try:
        where = engine.locate(docker_host)
        listed = engine.project_volumes(where, project, ADOPTED_BY_LABEL)
        assert [volume["Labels"] for volume in listed] == [labels]
        compose = ComposeProject(project=project, files=(), docker_host=docker_host)
        expected = AdoptionMark("n3wn3wn3wn3wn3w0", "/the/new/home", "0ld0ld0ld0ld0ld0")
        assert compose.adoption_mark() == expected  # over the Engine API
        listed = compose._volume_rows_by_cli(*_MARK_LABELS, named=False, having=ADOPTED_BY_LABEL)
        assert [_mark_of(row) for row in listed] == [expected]  # as the CLI lists it
    finally:
        docker("volume", "rm", name, host=docker_host)


def test_engine_reads_match_compose_on_this_machine(make_installation, standin_images):
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    docker("stop", f"{inst.project}-ollama-1")
    one_off(inst.project, standin_images["ollama"], None)

    local = engine.locate(None)
    assert local.socket_path  # this machine's engine is asked over its socket
    assert_same_as_compose(local, inst.project, None)
    assert_exec_answers_as_compose(local, inst.project, None)
    assert_images_as_inspect(local, standin_images["ollama"], None)
    assert_mark_as_listed(inst.project, None)


def test_engine_reads_match_compose_on_the_second_host(
    make_installation, remote_host, standin_images
):
    inst = make_installation(remote=remote_host.name, docker_host=remote_host.docker_host)
    inst.ok("stack.start", "--pull", "never")
    docker("stop", f"{inst.project}-ollama-1", host=remote_host.docker_host)
    one_off(inst.project, standin_images["ollama"], remote_host.docker_host)

    through_ssh = engine.locate(f"ssh://{remote_host.name}")
    assert through_ssh.ssh_argv[-3:] == ("docker", "system", "dial-stdio")
    assert_same_as_compose(through_ssh, inst.project, remote_host.docker_host)
    assert_exec_answers_as_compose(through_ssh, inst.project, remote_host.docker_host)
    assert_images_as_inspect(through_ssh, standin_images["ollama"], remote_host.docker_host)
    assert_mark_as_listed(inst.project, remote_host.docker_host)
    status = inst.status()  # through dial-stdio: the stopped service is seen as stopped
    assert {s["name"]: s["state"] for s in status["services"]}["ollama"] != "running"
