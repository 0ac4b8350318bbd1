"""models.* against the live engine: the Ollama stand-in pulls from a model
source inside its container (what a registry is to the real one) and keeps
Ollama's on-disk layout; exports and imports go through its API and volume."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from ..unit.test_ollama_standin import tiny_model, write_model
from .conftest import CLI, Installation, docker

SOURCE = "/srv/model-source"


def models(inst: Installation) -> dict[str, dict]:
    return {m["name"]: m for m in json.loads(inst.ok("models.list", "--json").stdout)["models"]}


def seed_source(inst: Installation, tmp_path: Path, size: int = 6 << 20) -> dict:
    """A GGUF model of about ``size`` bytes as a registry would serve it."""
    root = tmp_path / "source"
    manifest = write_model(
        root,
        "registry.ollama.ai/library/tiny/latest",
        [("model", tiny_model(pad=1 << 20) + os.urandom(size)), ("template", b"{{ .Prompt }}")],
        {"model_format": "gguf", "model_family": "llama", "file_type": "Q4_K_M"},
    )
    container = f"{inst.project}-ollama-1"
    docker("exec", container, "mkdir", "-p", SOURCE)
    docker("cp", f"{root}/.", f"{container}:{SOURCE}")
    return json.loads(manifest)


def test_pull_show_export_remove_import(make_installation, tmp_path):
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    manifest = seed_source(inst, tmp_path)
    assert models(inst) == {}
    pulled = json.loads(inst.ok("models.pull", "tiny", "--json").stdout)
    assert pulled["layers"] == 3  # the model, the template and the config
    assert set(models(inst)) == {"tiny:latest"}

    shown = json.loads(inst.ok("models.show", "tiny", "--json").stdout)
    assert shown["details"]["family"] == "llama"
    layer_digests = {layer["digest"] for layer in shown["manifest"]["layers"]}
    assert layer_digests == {layer["digest"] for layer in manifest["layers"]}

    exported = tmp_path / "tiny.model"
    inst.ok("models.export", "tiny", str(exported))
    assert exported.stat().st_size > 6 << 20
    assert inst.cli("models.export", "tiny", str(exported)).returncode == 2  # never replaced

    inst.ok("models.rm", "tiny", "--yes")
    assert models(inst) == {}
    done = json.loads(inst.ok("models.import", str(exported), "--json").stdout)
    assert (done["name"], done["blobs"], done["moved"]) == (
        "registry.ollama.ai/library/tiny:latest",
        3,
        3,
    )
    assert set(models(inst)) == {"tiny:latest"}
    again = json.loads(inst.ok("models.import", str(exported), "--json").stdout)
    assert again["moved"] == 0  # every blob there already: nothing sent

    # A flipped byte: refused, the store as it was.
    damaged = tmp_path / "damaged.model"
    data = bytearray(exported.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    inst.ok("models.rm", "tiny", "--yes")
    refused = inst.cli("models.import", str(damaged))
    assert refused.returncode == 16 and "does not hash to its name" in refused.stderr
    assert models(inst) == {}

    # Through a pipe, as to another box: export - | import -.
    inst.ok("models.import", str(exported))
    exporter = subprocess.Popen(
        [str(CLI), "models.export", "tiny", "-"], stdout=subprocess.PIPE, env=inst.env
    )
    importer = subprocess.run(
        [str(CLI), "models.import", "-", "--json"],
        stdin=exporter.stdout,
        capture_output=True,
        text=True,
        env=inst.env,
        timeout=120,
    )
    assert exporter.wait(timeout=120) == 0 and importer.returncode == 0, importer.stderr
    assert json.loads(importer.stdout)["moved"] == 0


def test_refusals_are_one_line(make_installation):
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    unknown = inst.cli("models.pull", "nosuch")
    assert unknown.returncode != 0 and "could not pull nosuch" in unknown.stderr
    assert [line for line in unknown.stderr.splitlines() if not line.startswith("• ")] == [
        line for line in unknown.stderr.splitlines() if line.startswith("error: ")
    ]  # progress, then the one error line
    bad = inst.cli("models.show", "../etc")
    assert bad.returncode == 2 and "not a model name" in bad.stderr
    missing = inst.cli("models.rm", "nosuch", "--yes")
    assert missing.returncode == 2 and "no model nosuch" in missing.stderr


@pytest.mark.remote
def test_a_model_is_pushed_to_a_box_with_no_registry(make_installation, remote_host, tmp_path):
    """Only the blobs the box lacks travel, over SSH, and it lists the model."""
    here = make_installation()
    here.ok("stack.start", "--pull", "never")
    seed_source(here, tmp_path, size=300 << 20)
    here.ok("models.pull", "tiny")
    # The same installation settings on the box (its own engine, its own files).
    there = Installation(
        here.project, here.ports, dict(here.env), remote_host.name, remote_host.docker_host
    )
    try:
        there.ok("stack.install")
        there.ok("stack.start", "--pull", "never")
        began = time.monotonic()
        done = json.loads(there.ok("models.push", "tiny", "--json").stdout)
        took = time.monotonic() - began
        assert (done["blobs"], done["moved"]) == (3, 3) and done["bytes"] > 300 << 20
        assert "tiny:latest" in models(there)
        print(f"pushed {done['bytes'] >> 20} MiB in {took:.1f} s")
        again = json.loads(there.ok("models.push", "tiny", "--json").stdout)
        assert again["moved"] == 0 and again["bytes"] == 0  # nothing sent twice
        here_only = here.cli("models.push", "tiny")
        assert here_only.returncode == 2 and "--remote" in here_only.stderr
    finally:
        there.teardown()
