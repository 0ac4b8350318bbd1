"""stack.adopt on the live engine: a home that was copied elsewhere, and
containers started by hand from our compose files, taken over with their data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, Installation, docker

pytestmark = pytest.mark.docker

LABEL = '{{.Label "io.ollama-stack.installation"}}'
MARKER = "/app/backend/data/adopt-marker.txt"


def labels(inst: Installation) -> dict[str, set[str]]:
    """The installation ids the project's containers, volumes and network carry."""
    project = f"label=com.docker.compose.project={inst.project}"
    found = {}
    for kind, listing in (
        ("containers", ["ps", "-a"]),
        ("volumes", ["volume", "ls"]),
        ("networks", ["network", "ls"]),
    ):
        out = docker(*listing, "--filter", project, "--format", LABEL, host=inst.docker_host)
        found[kind] = set(out.split())
    return found


def webui(inst: Installation) -> str:
    return next(c for c in inst.containers() if "-webui-" in c)


def write_marker(inst: Installation, text: str) -> None:
    docker("exec", webui(inst), "sh", "-c", f"echo {text} > {MARKER}", host=inst.docker_host)


def read_marker(inst: Installation) -> str:
    return docker("exec", webui(inst), "cat", MARKER, host=inst.docker_host).strip()


def moved_copy(inst: Installation) -> tuple[Path, Installation]:
    """The installation's home copied elsewhere (the old one still there)."""
    home = Path(inst.env["OLLAMA_STACK_HOME"])
    copy = home.with_name(f"{home.name}-moved")
    shutil.copytree(home, copy)
    env = {**inst.env, "OLLAMA_STACK_HOME": str(copy)}
    return home, Installation(inst.project, inst.ports, env, inst.remote, inst.docker_host)


def test_a_copied_home_adopts_its_project_and_keeps_the_data(make_installation) -> None:
    first = make_installation()
    first.ok("stack.start", "--pull", "never")
    write_marker(first, "before-the-move")
    old = labels(first)
    assert len(old["containers"]) == 1 and old["volumes"] == old["containers"]
    home_a, moved = moved_copy(first)  # a copy: the old home still claims the project

    refused = moved.cli("stack.start", "--pull", "never")
    assert refused.returncode == 2, refused.stderr
    assert "belongs to another ollama-stack installation" in refused.stderr
    assert "stack.adopt" in refused.stderr
    asked = moved.cli("stack.adopt")  # no terminal and no --yes: refused
    assert asked.returncode == 2 and "add --yes" in asked.stderr, asked.stderr
    assert str(home_a) in asked.stdout and "recreate container" in asked.stdout
    assert labels(first) == old  # nothing was changed

    done = moved.ok("stack.adopt", "--yes", "--pull", "never")
    assert "stack healthy" in done.stdout, done.stdout
    assert f"{home_a} still holds an installation" in done.stdout + done.stderr
    # compose asks whether to recreate (empty) a volume whose labels differ from
    # its file: the volumes' own id is given to it, so it never has to.
    assert "doesn't match" not in done.stdout + done.stderr
    now = labels(first)
    assert now["containers"] == now["networks"] and now["containers"] != old["containers"]
    assert now["volumes"] == old["volumes"]  # a volume's labels never change
    assert read_marker(moved) == "before-the-move"
    assert {s["health"] for s in moved.status()["services"]} == {"healthy"}

    # From now on the project is this home's, and no longer the old home's.
    assert "already running" in moved.ok("stack.start", "--pull", "never").stdout
    assert first.cli("stack.start", "--pull", "never").returncode == 2
    assert "nothing to adopt" in moved.ok("stack.adopt", "--yes").stdout
    (old_id,) = old["volumes"]
    assert mark_of(first) == {"by": moved_id(moved), "home": str(home_of(moved)), "volumes": old_id}


def mark_of(inst: Installation) -> dict[str, str]:
    """The adoption mark's labels ({} without one), read with the plain docker CLI."""
    name = f"{inst.project}_ollama-stack-adoption"
    if name not in inst.volumes():
        return {}
    fields = "\t".join(
        f'{{{{index .Labels "io.ollama-stack.adopted-{key}"}}}}'
        for key in ("by", "home", "volumes")
    )
    out = docker("volume", "inspect", "--format", fields, name, host=inst.docker_host)
    return dict(zip(("by", "home", "volumes"), out.rstrip("\n").split("\t"), strict=True))


def home_of(inst: Installation) -> Path:
    return Path(inst.env["OLLAMA_STACK_HOME"])


def moved_id(inst: Installation) -> str:
    (found,) = labels(inst)["containers"]
    return found


def test_the_old_home_of_a_copy_is_refused_until_it_takes_the_project_back(
    make_installation,
) -> None:
    first = make_installation()
    first.ok("stack.start", "--pull", "never")
    write_marker(first, "kept-by-the-old-home")
    (old_id,) = labels(first)["volumes"]
    home_a, moved = moved_copy(first)
    moved.ok("stack.adopt", "--yes", "--pull", "never")
    new_id = moved_id(moved)
    assert mark_of(first) == {"by": new_id, "home": str(home_of(moved)), "volumes": old_id}
    # While the adopter's containers run, the old home's status names their home.
    seen = json.loads(first.ok("stack.status", "--json").stdout)
    assert seen["running"] is False and set(seen["others"]["containers"].values()) == {new_id}
    assert seen["others"]["adopted_by"] == str(home_of(moved))
    # The adopter's containers gone (removed by hand): the volumes carry the old
    # home's own id again, and only the mark tells they are not its own.
    docker("rm", "--force", *first.containers(), host=first.docker_host)
    seen = json.loads(first.ok("stack.status", "--json").stdout)["others"]
    assert seen == {"containers": {}, "adopted_by": str(home_of(moved)), "adopter": new_id}
    volumes = first.volumes()
    for args in (
        ("stack.start", "--pull", "never"),
        ("stack.stop",),
        ("backup.create",),
        ("stack.uninstall", "--yes", "--remove-volumes", "--no-backup"),
        ("update.apply", "--yes", "--no-backup"),
        ("models.pull", "tiny"),
        ("models.rm", "tiny", "--yes"),
    ):
        refused = first.cli(*args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert (
            f"was adopted by the installation at {home_of(moved)} (id {new_id})" in refused.stderr
        )
        assert "stack.adopt` (it asks first)" in refused.stderr
    assert first.volumes() == volumes and not first.containers()  # nothing was touched
    kept = first.ok("stack.uninstall", "--yes")  # this home's files and nothing else
    assert f"the installation at {home_of(moved)} adopted them" in kept.stdout, kept.stdout
    assert "--remove-images" not in kept.stdout  # refused here: not offered
    assert first.volumes() == volumes

    back = first.ok("stack.adopt", "--yes", "--pull", "never")
    assert "rewrite  adoption mark" in back.stdout and "stack healthy" in back.stdout
    assert mark_of(first) == {"by": old_id, "home": str(home_a), "volumes": old_id}
    assert labels(first)["containers"] == {old_id}
    assert read_marker(first) == "kept-by-the-old-home"
    refused = moved.cli("stack.start", "--pull", "never")  # now the copy is refused
    assert refused.returncode == 2 and f"adopted by the installation at {home_a}" in refused.stderr
    # The owner's `--remove-volumes` takes the mark along with its volumes.
    first.ok("stack.uninstall", "--yes", "--remove-volumes", "--no-backup")
    assert first.volumes() == [] and mark_of(first) == {}


def test_containers_started_by_hand_from_our_files_are_adopted(make_installation) -> None:
    inst = make_installation(install=False)
    files = ROOT / "compose" / "files"
    env = {
        **os.environ,
        "OLLAMA_IMAGE": inst.env["OLLAMA_STACK_IMAGES_OLLAMA"],
        "WEBUI_IMAGE": inst.env["OLLAMA_STACK_IMAGES_WEBUI"],
        "OLLAMA_PORT": str(inst.ports["ollama"]),
        "WEBUI_PORT": str(inst.ports["webui"]),
    }
    by_hand = subprocess.run(
        ["docker", "compose", "-p", inst.project]
        + [
            arg
            for name in ("base", "ollama", "webui")
            for arg in ("-f", str(files / f"{name}.yml"))
        ]
        + ["up", "--detach", "--pull", "never"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert by_hand.returncode == 0, by_hand.stderr
    assert labels(inst) == {k: {"unmanaged"} for k in ("containers", "volumes", "networks")}
    write_marker(inst, "made-by-hand")

    inst.ok("stack.install")  # not another installation's: installing is allowed
    refused = inst.cli("stack.start", "--pull", "never")
    assert refused.returncode == 2 and "started without ollama-stack" in refused.stderr

    done = inst.ok("stack.adopt", "--yes", "--pull", "never")
    assert "started by hand" in done.stdout and "stack healthy" in done.stdout, done.stdout
    now = labels(inst)
    assert now["volumes"] == {"unmanaged"} and "unmanaged" not in now["containers"]
    assert now["networks"] == now["containers"]
    assert read_marker(inst) == "made-by-hand"
    assert {s["health"] for s in inst.status()["services"]} == {"healthy"}


def test_a_remote_box_is_adopted_by_a_copied_home(make_installation, remote_host) -> None:
    first = make_installation(remote=remote_host.name, docker_host=remote_host.docker_host)
    first.ok("stack.start", "--pull", "never")
    write_marker(first, "on-the-box")
    old = labels(first)
    home_a, moved = moved_copy(first)  # refused at start as the local copy is (above)
    done = moved.ok("stack.adopt", "--yes", "--pull", "never")
    assert f"home {home_a}/remotes/" in done.stdout and "stack healthy" in done.stdout
    assert read_marker(moved) == "on-the-box"
    report = moved.status()
    assert report["target"] == remote_host.name
    assert {s["health"] for s in report["services"]} == {"healthy"}
    now = labels(first)
    assert now["containers"] == now["networks"] != old["containers"]
    assert now["volumes"] == old["volumes"]
