"""stack.uninstall: lists first, keeps data unless asked, never touches another installation."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from .conftest import docker

pytestmark = pytest.mark.docker


def write_marker(inst, text: str) -> None:
    ollama = next(c for c in inst.containers() if "-ollama-" in c)
    docker("exec", ollama, "sh", "-c", f"echo {text} > /root/.ollama/models/marker.txt")


def read_marker(inst) -> str:
    ollama = next(c for c in inst.containers() if "-ollama-" in c)
    return docker("exec", ollama, "cat", "/root/.ollama/models/marker.txt").strip()


def test_default_uninstall_keeps_data_and_install_start_brings_it_back(make_installation) -> None:
    inst = make_installation()
    other = make_installation()
    inst.ok("stack.start", "--pull", "never")
    other.ok("stack.start", "--pull", "never")
    write_marker(inst, "every-byte")
    other_before = other.containers()

    refused = inst.cli("stack.uninstall")  # no terminal, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(inst.containers()) == 3

    done = inst.ok("stack.uninstall", "--yes", "--remove-config")
    assert "remove container" in done.stdout and "keep   volumes" in done.stdout
    assert inst.containers() == []
    assert len(inst.volumes()) == 2
    assert not Path(inst.env["OLLAMA_STACK_HOME"], "secrets.env").exists()
    assert other.containers() == other_before

    inst.ok("stack.install")
    inst.ok("stack.start", "--pull", "never")
    assert read_marker(inst) == "every-byte"


def test_remove_volumes_removes_exactly_this_installations_volumes(make_installation) -> None:
    inst = make_installation()
    other = make_installation()
    inst.ok("stack.start", "--pull", "never")
    other.ok("stack.start", "--pull", "never")
    write_marker(other, "not-yours")
    other_volumes = other.volumes()

    done = inst.ok("stack.uninstall", "--yes", "--remove-volumes")  # a script: no terminal
    assert "warning: no backup of the volumes was taken first" in done.stderr
    assert inst.volumes() == [] and inst.containers() == []
    assert other.volumes() == other_volumes
    assert read_marker(other) == "not-yours"
    assert Path(inst.env["OLLAMA_STACK_HOME"], "secrets.env").exists()  # config kept by default


def test_remove_volumes_with_backup_leaves_a_backup_that_brings_the_data_back(
    make_installation,
) -> None:
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    write_marker(inst, "kept-in-the-backup")

    done = inst.ok("stack.uninstall", "--yes", "--remove-volumes", "--backup")
    assert inst.volumes() == [] and inst.containers() == []
    (backup,) = json.loads(inst.ok("backup.list", "--json").stdout)
    assert backup["complete"] and backup["description"] == "before stack.uninstall"
    assert f"backup {backup['id']} taken first" in done.stdout
    assert "no backup" not in done.stderr
    inst.ok("backup.verify", backup["id"])

    inst.ok("backup.restore", backup["id"], "--yes")
    inst.ok("stack.start", "--pull", "never")
    assert read_marker(inst) == "kept-in-the-backup"


def test_remove_images_keeps_images_another_container_uses(
    make_installation, standin_images
) -> None:
    # Private tags, so the session's stand-in tags are never at stake.
    private = {s: f"ost-uninstall/{s}:{uuid.uuid4().hex[:6]}" for s in standin_images}
    for service, ref in private.items():
        docker("tag", standin_images[service], ref)
    shared = dict(private, webui=standin_images["webui"])
    inst = make_installation(images=shared)
    other = make_installation(images={"webui": standin_images["webui"]})
    inst.ok("stack.start", "--pull", "never")
    other.ok("stack.start", "--pull", "never")  # same stand-in images
    result = inst.ok("stack.uninstall", "--yes", "--remove-images")
    assert f"{standin_images['webui']} (still used by another container)" in result.stdout
    assert {s["health"] for s in other.status()["services"]} == {"healthy"}
    tags = docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert standin_images["webui"] in tags  # the other installation's reference survives
    assert private["ollama"] not in tags and private["mcp_proxy"] not in tags  # ours are gone
    docker("rmi", private["webui"])  # never used by anyone


def test_a_second_home_with_the_same_project_never_touches_the_first(make_installation) -> None:
    first = make_installation()
    first.ok("stack.start", "--pull", "never")
    write_marker(first, "first-home")
    containers, volumes = first.containers(), first.volumes()

    second = make_installation()  # its own OLLAMA_STACK_HOME and secrets...
    second.env["OLLAMA_STACK_PROJECT"] = first.project  # ...but the same project name
    second.env["OLLAMA_STACK_PORTS_WEBUI"] = first.env["OLLAMA_STACK_PORTS_WEBUI"]
    second.project = first.project
    refused = second.cli("stack.start", "--pull", "never")
    assert refused.returncode == 2, refused.stderr
    assert "belongs to another ollama-stack installation" in refused.stderr

    done = second.ok("stack.uninstall", "--yes", "--remove-volumes")
    assert "remove volume" not in done.stdout
    assert first.containers() == containers and first.volumes() == volumes
    assert read_marker(first) == "first-home"


def test_a_second_home_cannot_install_over_a_running_project(make_installation) -> None:
    first = make_installation()
    first.ok("stack.start", "--pull", "never")
    second = make_installation(install=False)
    second.env["OLLAMA_STACK_PROJECT"] = first.project
    refused = second.cli("stack.install")
    assert refused.returncode == 2, refused.stderr
    assert "belongs to another ollama-stack installation" in refused.stderr
    assert not Path(second.env["OLLAMA_STACK_HOME"]).exists()  # nothing written
    for task in ("stack.stop", "stack.logs"):  # were it installed, it would not act
        assert second.cli(task).returncode in (2, 9)
    assert len([s for s in first.status()["services"] if s["state"] == "running"]) == 3
