"""update.* against a real registry on loopback, with stand-in v1, v2 and a broken v3."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import uuid

import pytest

from .conftest import BROKEN_TAG, CLI, SERVICES, docker, standin
from .registry import push, start_registry

pytestmark = pytest.mark.docker


def container_ids(inst) -> dict[str, str]:
    out = docker(
        "ps",
        "--filter",
        f"label=com.docker.compose.project={inst.project}",
        "--format",
        '{{.ID}} {{.Label "com.docker.compose.service"}}',
    )
    return {line.split()[1]: line.split()[0] for line in out.splitlines()}


def running_image(inst, service: str) -> str:
    container = next(c for c in inst.containers() if f"-{service}-" in c)
    return docker("inspect", "--format", "{{.Image}}", container).strip()


def image_id(reference: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", reference).strip()


@pytest.fixture
def published(registry, standin_images, make_installation):
    """An installation whose images come from the registry, at v1, running."""
    repo = f"u{uuid.uuid4().hex[:6]}"
    refs = {s: f"{registry.address}/{repo}/{s.replace('_', '-')}:stable" for s in SERVICES}
    for service in SERVICES:
        push(registry, standin_images[service], f"{repo}/{service.replace('_', '-')}", "stable")
        docker("rmi", refs[service])  # start must really pull it
    inst = make_installation(images=refs)
    inst.ok("stack.start", "--pull", "missing")
    yield inst, refs, repo
    inst.teardown()  # containers first, so the images below are free to go
    untag_pushed(registry, repo)


def untag_pushed(registry, repo: str) -> None:
    """Untag by name only: the same image IDs carry the session's stand-in tags."""
    listing = docker("images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}")
    for line in listing.splitlines():
        name, tag, digest = line.split()
        if name.startswith(f"{registry.address}/{repo}/"):
            docker("rmi", f"{name}:{tag}" if tag != "<none>" else f"{name}@{digest}", check=False)


def publish(registry, source: str, repository: str, local_ref: str) -> None:
    """Push a new release as if from elsewhere: this engine's tag stays where it was."""
    before = image_id(local_ref)
    push(registry, source, repository, "stable")
    docker("tag", before, local_ref)


def check(inst) -> dict[str, dict]:
    return {
        s["service"]: s for s in json.loads(inst.ok("update.check", "--json").stdout)["services"]
    }


def test_apply_updates_only_what_changed_and_rolls_back_a_broken_release(
    registry, standin_v2, standin_images, published
) -> None:
    inst, refs, repo = published
    assert {s["status"] for s in check(inst).values()} == {"up-to-date"}
    v1 = running_image(inst, "webui")
    webui = next(c for c in inst.containers() if "-webui-" in c)
    docker("exec", webui, "sh", "-c", "echo chats > /app/backend/data/keep.txt")

    publish(registry, standin_v2["webui"], f"{repo}/webui", refs["webui"])
    found = check(inst)
    assert found["webui"]["status"] == "update-available"
    assert found["ollama"]["status"] == "up-to-date"
    assert found["webui"]["registry_digest"] != found["webui"]["local_digest"]

    before = container_ids(inst)
    applied = inst.cli("update.apply", "--yes", "--json")  # with its backup first
    assert applied.returncode == 0, applied.stderr
    taken = json.loads(applied.stdout)["backup"]
    (listed,) = json.loads(inst.ok("backup.list", "--json").stdout)
    assert (listed["id"], listed["complete"]) == (taken, True)
    assert listed["description"] == "before update.apply"
    shown = json.loads(inst.ok("backup.show", taken, "--json").stdout)
    assert "webui:webui_data" in shown["volumes"]
    inst.ok("backup.verify", taken)
    outcomes = {o["service"]: o["outcome"] for o in json.loads(applied.stdout)["services"]}
    assert outcomes == {"webui": "updated", "ollama": "up-to-date", "mcp_proxy": "up-to-date"}
    after = container_ids(inst)
    assert after["ollama"] == before["ollama"] and after["mcp_proxy"] == before["mcp_proxy"]
    assert after["webui"] != before["webui"]
    v2 = running_image(inst, "webui")
    assert v2 != v1 and v2 == image_id(refs["webui"])
    assert {s["health"] for s in inst.status()["services"]} == {"healthy"}

    # v3 never becomes healthy: apply must put v2 back by itself.
    push(
        registry,
        standin_images["webui"].replace(":test", f":{BROKEN_TAG}"),
        f"{repo}/webui",
        "stable",
    )
    broken = inst.cli("update.apply", "--yes", "--no-backup", "--timeout", "5")
    assert broken.returncode == 12, broken.stderr
    assert "rolled-back" in broken.stdout
    assert running_image(inst, "webui") == v2
    assert {s["health"] for s in inst.status()["services"]} == {"healthy"}
    webui = next(c for c in inst.containers() if "-webui-" in c)
    assert docker("exec", webui, "cat", "/app/backend/data/keep.txt").strip() == "chats"

    # By hand: back to what the last applied update replaced (v1).
    inst.ok("update.rollback")
    assert running_image(inst, "webui") == v1
    assert {s["health"] for s in inst.status()["services"]} == {"healthy"}
    webui = next(c for c in inst.containers() if "-webui-" in c)
    assert docker("exec", webui, "cat", "/app/backend/data/keep.txt").strip() == "chats"


def test_running_stack_is_not_touched_without_yes(registry, standin_v2, published) -> None:
    inst, refs, repo = published
    publish(registry, standin_v2["ollama"], f"{repo}/ollama", refs["ollama"])
    before = container_ids(inst)
    local_before = image_id(refs["ollama"])
    refused = inst.cli("update.apply")  # stdin is not a terminal: must not hang or ask
    assert refused.returncode == 2, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, refused.stderr
    assert errors[0].startswith("error: not asking without a terminal: ")
    assert "ollama" in errors[0] and errors[0].endswith("— add --yes to proceed")
    assert container_ids(inst) == before
    assert image_id(refs["ollama"]) == local_before  # nothing was pulled either
    assert check(inst)["ollama"]["status"] == "update-available"


def test_unreachable_registry_stops_before_anything_changes(
    standin_images, make_installation, tmp_path
) -> None:
    # A registry of its own, pulled from, then gone: the images carry real repo digests.
    own = start_registry(tmp_path / "registry")
    refs = {s: f"{own.address}/gone/{s.replace('_', '-')}:stable" for s in SERVICES}
    inst = make_installation(images=refs)
    try:
        for service in SERVICES:
            push(own, standin_images[service], f"gone/{service.replace('_', '-')}", "stable")
            docker("rmi", refs[service])
        inst.ok("stack.start", "--pull", "missing")
        own.stop()
        before = container_ids(inst)
        result = inst.cli("update.apply", "--yes", "--no-backup")
        assert result.returncode == 14, result.stderr
        assert own.address in result.stderr and "Traceback" not in result.stderr
        assert container_ids(inst) == before
        assert {s["health"] for s in inst.status()["services"]} == {"healthy"}
        looked = check(inst)
        assert looked["webui"]["status"] == "unknown" and own.address in looked["webui"]["detail"]
    finally:
        own.stop()
        inst.teardown()
        untag_pushed(own, "gone")


def test_unknown_service_lists_the_valid_ones(make_installation) -> None:
    inst = make_installation()
    result = inst.cli("update.apply", "--services", "olama", "--yes")
    assert result.returncode == 2
    assert "olama" in result.stderr and "mcp_proxy" in result.stderr


def test_declined_on_a_terminal_changes_nothing(registry, standin_v2, published) -> None:
    inst, refs, repo = published
    publish(registry, standin_v2["webui"], f"{repo}/webui", refs["webui"])
    before = container_ids(inst)
    primary, secondary = pty.openpty()  # a real terminal, so the tool asks
    proc = subprocess.Popen(
        [str(CLI), "update.apply", "--no-backup"],
        env=inst.env,
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(secondary)
    os.write(primary, b"n\n")
    _, err = proc.communicate(timeout=120)
    os.close(primary)
    assert proc.returncode == 1, err
    assert "cancelled; nothing was changed" in err
    assert container_ids(inst) == before
    assert check(inst)["webui"]["status"] == "update-available"


def test_mixed_types_report_each_service_and_exit_partly_updated(
    registry, standin_images, standin_v2, make_installation, ollama_api, tmp_path
) -> None:
    url, _ = ollama_api
    repo = f"u{uuid.uuid4().hex[:6]}"
    refs = {
        s: f"{registry.address}/{repo}/{s.replace('_', '-')}:stable" for s in ("webui", "mcp_proxy")
    }
    for service, ref in refs.items():
        push(registry, standin_images[service], ref.split("/", 1)[1].rsplit(":", 1)[0], "stable")
    inst = make_installation(
        images=refs, services_ollama_type="native-api", services_ollama_url=url
    )
    try:
        inst.ok("stack.start", "--pull", "missing")
        publish(registry, standin_v2["webui"], f"{repo}/webui", refs["webui"])
        # The host's Ollama came from apt, and we are not root and sudo wants a password.
        bindir, log = tmp_path / "bin", tmp_path / "calls.log"
        bindir.mkdir()
        standin(bindir / "ollama", 'echo "ollama version is 0.5.1"', log)
        standin(bindir / "dpkg", f'echo "ollama: {bindir}/ollama"', log)
        standin(bindir / "apt-get", "exit 0", log)
        standin(bindir / "id", "echo 1000", log)
        standin(bindir / "sudo", 'echo "sudo: a password is required" >&2; exit 1', log)
        inst.env["PATH"] = f"{bindir}{os.pathsep}{inst.env['PATH']}"

        result = inst.cli("update.apply", "--yes", "--no-backup", "--json")
        assert result.returncode == 13, result.stderr
        outcomes = {o["service"]: o for o in json.loads(result.stdout)["services"]}
        assert outcomes["webui"]["outcome"] == "updated"
        assert outcomes["mcp_proxy"]["outcome"] == "up-to-date"
        assert outcomes["ollama"]["outcome"] == "needs-sudo"
        assert "sudo apt-get install --only-upgrade -y ollama" in outcomes["ollama"]["detail"]
        calls = log.read_text()
        assert "apt-get" not in calls.replace(f"{bindir}/ollama", "")  # never ran it
    finally:
        inst.teardown()
        untag_pushed(registry, repo)
