"""models.* against the live engine: the Ollama stand-in pulls from a model
source inside its container (what a registry is to the real one) and keeps
Ollama's on-disk layout; exports and imports go through its API and volume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ollama_stack.stack.config.files import host_slug

from ..unit.test_ollama_standin import tiny_model, write_model
from .conftest import CLI, Installation, docker, free_ports

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

    digest = models(inst)["tiny:latest"]["digest"]
    inst.ok("models.rm", "tiny", "--yes")
    assert models(inst) == {}
    done = json.loads(inst.ok("models.import", str(exported), "--json").stdout)
    assert (done["name"], done["blobs"], done["moved"]) == (
        "registry.ollama.ai/library/tiny:latest",
        3,
        3,
    )
    assert models(inst)["tiny:latest"]["digest"] == digest  # the manifest as it was
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
        digest = models(here)["tiny:latest"]["digest"]
        assert models(there)["tiny:latest"]["digest"] == digest  # the very manifest
        print(f"pushed {done['bytes'] >> 20} MiB in {took:.1f} s")
        again = json.loads(there.ok("models.push", "tiny", "--json").stdout)
        assert again["moved"] == 0 and again["bytes"] == 0  # nothing sent twice
        here_only = here.cli("models.push", "tiny")
        assert here_only.returncode == 2 and "--remote" in here_only.stderr
    finally:
        there.teardown()


# -- a native Ollama: installed on the host, reached only through its API -----------


@pytest.fixture
def native_ollama(standin_images: dict[str, str], tmp_path: Path) -> Iterator:
    """Start stand-in Ollamas as plain containers published on loopback, each
    serving a models folder of this machine's disk (as a native Ollama does),
    outside any compose project; removed by name at the end."""
    made: list[str] = []

    def start(label: str) -> tuple[str, Path]:
        folder = tmp_path / label
        folder.mkdir()
        name, port = f"ost-native-{uuid.uuid4().hex[:8]}", free_ports(1)[0]
        made.append(name)
        docker(
            "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:11434",
            "-v", f"{folder}:/root/.ollama/models", standin_images["ollama"],
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/api/version", timeout=1).close()
                return url, folder
            time.sleep(0.1)
        raise AssertionError(f"the native stand-in {name} did not answer")

    yield start
    if made:
        docker("rm", "-f", *made, check=False)


def write_tiny_gguf(models_folder: Path, pad: int) -> None:
    """A model of three blobs (the weights, a template, the config) in Ollama's layout."""
    write_model(
        models_folder,
        "registry.ollama.ai/library/tiny/latest",
        [("model", tiny_model(pad=pad)), ("template", b"{{ .Prompt }}")],
        {"model_format": "gguf", "model_family": "llama"},
    )


def test_a_native_ollama_exports_and_imports_through_its_api(
    make_installation, native_ollama, tmp_path
):
    here_url, here_models = native_ollama("here")
    write_tiny_gguf(here_models, pad=2 << 20)
    here = make_installation(services_ollama_type="native-api", services_ollama_url=here_url)
    here.env["OLLAMA_MODELS"] = str(here_models)  # the folder `ollama serve` would be given
    exported = tmp_path / "tiny.model"
    here.ok("models.export", "tiny", str(exported))

    there_url, there_models = native_ollama("there")
    there = make_installation(services_ollama_type="native-api", services_ollama_url=there_url)
    done = json.loads(there.ok("models.import", str(exported), "--json").stdout)
    assert (done["blobs"], done["moved"]) == (3, 3)  # the weights, the template, the config
    assert set(models(there)) == {"tiny:latest"}
    again = json.loads(there.ok("models.import", str(exported), "--json").stdout)
    assert (again["moved"], again["bytes"]) == (0, 0)

    # A flipped byte: refused, and no model is made (the manifests as they were).
    there.ok("models.rm", "tiny", "--yes")
    damaged = tmp_path / "damaged.model"
    data = bytearray(exported.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    refused = there.cli("models.import", str(damaged))
    assert refused.returncode == 16 and "does not hash to its name" in refused.stderr
    assert models(there) == {}
    assert [p for p in (there_models / "manifests").rglob("*") if p.is_file()] == []


# -- Ctrl-C during a pull ------------------------------------------------------------


def served(container: str, digest: str, wait: float = 20.0) -> list[str]:
    """The stand-in's log lines for what its model source served of a blob,
    once there is one (waited for)."""
    deadline = time.monotonic() + wait
    while True:
        logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
        lines = [line for line in logs.stderr.splitlines() if line.startswith(f"pull {digest}:")]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


@pytest.fixture
def throttled_ollama(standin_images: dict[str, str]) -> Iterator[str]:
    """The Ollama stand-in image with its pulls slowed to 2 MiB/s (an image
    made here with `docker commit`, nothing built or pulled); removed after."""
    tag = f"ollama-stack-test/ollama-throttled:{uuid.uuid4().hex[:8]}"
    made = docker("create", standin_images["ollama"]).strip()
    try:
        docker("commit", "--change", f"ENV STANDIN_PULL_BYTES_PER_SEC={2 << 20}", made, tag)
    finally:
        docker("rm", made)
    yield tag
    docker("rmi", tag, check=False)


def test_ctrl_c_during_a_pull_keeps_the_partial_and_the_next_pull_resumes(
    throttled_ollama, make_installation, tmp_path
):  # the image first: it is removed after the installation's containers are
    inst = make_installation(images={"ollama": throttled_ollama})
    inst.ok("stack.start", "--pull", "never")
    manifest = seed_source(inst, tmp_path, size=8 << 20)
    big = max(manifest["layers"], key=lambda layer: layer["size"])
    container = f"{inst.project}-ollama-1"
    partial = f"/root/.ollama/models/blobs/{big['digest'].replace(':', '-')}-partial"

    def partial_size() -> int:
        out = docker("exec", container, "stat", "-c", "%s", partial, check=False)
        return int(out) if out.strip() else 0

    pull = subprocess.Popen(
        [str(CLI), "models.pull", "tiny"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=inst.env,
        cwd=inst.env["HOME"],
    )
    try:
        deadline = time.monotonic() + 20
        while partial_size() < 2 << 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        pull.send_signal(signal.SIGINT)  # the process this test started, by its handle
        _, stderr = pull.communicate(timeout=20)
    finally:
        if pull.poll() is None:
            pull.kill()
    assert pull.returncode == 130, stderr  # ExitCode.INTERRUPTED
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: the pull of tiny was interrupted; Ollama keeps what it downloaded"
        " — `ollama-stack models.pull tiny` goes on from there"
    ], stderr
    # The stand-in stops copying when it next writes to the connection that is
    # gone; then it logs what its source served, and the partial is final.
    line = f"pull {big['digest']}: {{}} bytes from the source, from byte {{}} of {big['size']}"
    first = served(container, big["digest"])
    assert len(first) == 1, first
    kept = partial_size()
    assert first == [line.format(kept, 0)] and 2 << 20 <= kept < big["size"]

    inst.ok("models.pull", "tiny")
    assert served(container, big["digest"]) == [  # the next pull: only what it lacked
        line.format(kept, 0),
        line.format(big["size"] - kept, kept),
    ]
    assert "tiny:latest" in models(inst)


def native_at(installation: Path, url: str) -> None:
    """Make an installation's Ollama the native one at ``url`` (its config.yaml:
    this machine and the box each have their own)."""
    config = installation / "config.yaml"
    settings = yaml.safe_load(config.read_text())
    settings["services"] = {"ollama": {"type": "native-api", "url": url}}
    config.write_text(yaml.safe_dump(settings))


@pytest.mark.remote
def test_a_model_is_pushed_to_a_native_ollama_on_a_box(
    make_installation, native_ollama, remote_host, standin_images, tmp_path
):
    """A box whose Ollama is native-api: the blobs go through its API over SSH
    (`ssh -W`), the model is made by its /api/create, and a second push sends
    nothing."""
    here_url, here_models = native_ollama("here")
    write_tiny_gguf(here_models, pad=4 << 20)
    here = make_installation()
    here.env["OLLAMA_MODELS"] = str(here_models)
    home = Path(here.env["OLLAMA_STACK_HOME"])
    native_at(home, here_url)
    # The box's "native" Ollama: the stand-in as a plain container on the box's loopback.
    box_ollama, port = f"ost-native-{uuid.uuid4().hex[:8]}", free_ports(1)[0]
    docker(
        "run", "-d", "--name", box_ollama, "-p", f"127.0.0.1:{port}:11434",
        standin_images["ollama"], host=remote_host.docker_host,
    )  # fmt: skip
    there = Installation(
        here.project, here.ports, here.env, remote_host.name, remote_host.docker_host
    )
    try:
        there.ok("stack.install")
        native_at(home / "remotes" / host_slug(remote_host.name), f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 20
        while there.cli("models.list").returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        done = json.loads(there.ok("models.push", "tiny", "--json").stdout)
        assert (done["blobs"], done["moved"]) == (3, 3)
        assert set(models(there)) == {"tiny:latest"}
        again = json.loads(there.ok("models.push", "tiny", "--json").stdout)
        assert (again["moved"], again["bytes"]) == (0, 0)
    finally:
        docker("rm", "-f", box_ollama, host=remote_host.docker_host, check=False)
        there.teardown()
