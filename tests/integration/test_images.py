"""images.* against live engines: the second host reaches no registry, so the
stack's images get there only with images.push (or a file)."""

from __future__ import annotations

import json

import pytest

from .conftest import Installation, docker


@pytest.mark.remote
def test_images_reach_a_box_with_no_registry_and_it_starts(
    make_installation, remote_host, standin_images, tmp_path
):
    # A tag no engine has yet: the box can only get it from us.
    tag = f"ollama-stack-standin/webui:push-{tmp_path.name[-8:].lower()}"
    docker("tag", standin_images["webui"], tag)
    here = make_installation(images={"webui": tag})
    there = Installation(
        here.project, here.ports, dict(here.env), remote_host.name, remote_host.docker_host
    )
    try:
        listed = {
            r["service"]: r for r in json.loads(here.ok("images.list", "--json").stdout)["images"]
        }
        assert listed["webui"]["image"] == tag and listed["webui"]["id"].startswith("sha256:")
        there.ok("stack.install")
        sent = json.loads(there.ok("images.push", "--json").stdout)
        assert tag in sent["images"]
        there.ok("stack.start", "--pull", "never")
        assert {s["health"] for s in there.status()["services"]} == {"healthy"}
        again = json.loads(there.ok("images.push", "--json").stdout)
        assert again["images"] == [] and tag in again["skipped"]  # nothing sent twice

        # Sneakernet: a file, the tag removed, the file loaded back.
        carried = tmp_path / "images.tar"
        here.ok("images.export", str(carried))
        docker("rmi", tag)
        here.ok("images.import", str(carried))
        assert json.loads(docker("image", "inspect", tag))[0]["Id"] == listed["webui"]["id"]
        damaged = tmp_path / "damaged.tar"
        damaged.write_bytes(carried.read_bytes()[: carried.stat().st_size // 2])
        assert here.cli("images.import", str(damaged)).returncode != 0
    finally:
        there.teardown()
        docker("rmi", tag, check=False)
        docker("rmi", tag, host=remote_host.docker_host, check=False)
