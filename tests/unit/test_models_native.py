"""stack/models.py with a native Ollama (installed on the host, service type
native-api): export reads the models folder on this machine's disk that the
server's own listing vouches for; import and push go through Ollama's API
(HEAD/POST /api/blobs, then /api/create). The server is the Ollama stand-in,
a real process on loopback with its own models folder; no Docker."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_stack.common.errors import ConfigError, StackError
from ollama_stack.stack import config, models
from ollama_stack.stack.hosts.target import Target
from ollama_stack.stack.runtime import Runtime

from .helpers import linux_shell
from .test_ollama_standin import TEMPLATE, Standin, start, write_model, write_tiny

TINY = "registry.ollama.ai/library/tiny:latest"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Any]:
    """Stand-ins each with its own folder; killed by their handle at the end."""
    started: list[Standin] = []

    def make(label: str) -> Standin:
        (tmp_path / label).mkdir()
        started.append(start(tmp_path / label))
        return started[-1]

    yield make
    for standin in started:
        standin.process.kill()
        standin.process.wait(timeout=10)


def native(local_paths: config.InstallPaths, standin: Standin, host: str | None = None) -> Runtime:
    url = f"http://127.0.0.1:{standin.port}"
    settings = config.validate(
        [("t", {"platform": "cpu", "services": {"ollama": {"type": "native-api", "url": url}}})]
    )
    return Runtime(Target(host, _shell=linux_shell(2)), local_paths, settings)


def listed(standin: Standin) -> set[str]:
    return {m["name"] for m in standin.json("GET", "/api/tags")[1]["models"]}


def exported(rt: Runtime, name: str = "tiny") -> bytes:
    sink = io.BytesIO()
    models.export_model(rt, name, sink)
    return sink.getvalue()


def test_ollama_folders_are_looked_for_as_ollama_decides(tmp_path):
    assert models.ollama_folders({"OLLAMA_MODELS": "/data/m"}, tmp_path) == [
        Path("/data/m"),
        tmp_path / ".ollama" / "models",
        Path("/usr/share/ollama/.ollama/models"),
    ]
    assert models.ollama_folders({}, tmp_path)[0] == tmp_path / ".ollama" / "models"


def test_export_reads_the_folder_whose_manifest_the_server_lists(local_paths, servers, monkeypatch):
    here = servers("here")
    raw = write_tiny(here.models)
    monkeypatch.setenv("OLLAMA_MODELS", str(here.models))
    with tarfile.open(fileobj=io.BytesIO(exported(native(local_paths, here))), mode="r|") as tar:
        names = [m.name for m in tar]
    digests = {p["digest"][7:] for p in [json.loads(raw)["config"], *json.loads(raw)["layers"]]}
    assert names[0] == models.HEADER and names[-1] == models.MANIFEST
    assert {n.removeprefix("blobs/sha256-") for n in names[1:-1]} == digests


def test_a_folder_that_is_not_the_servers_is_refused(local_paths, servers, monkeypatch, tmp_path):
    here = servers("here")
    write_tiny(here.models)
    other = tmp_path / "other"
    write_model(other, "registry.ollama.ai/library/tiny/latest", [("template", b"x")], {})
    monkeypatch.setenv("OLLAMA_MODELS", str(other))
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    with pytest.raises(ConfigError, match=r"none of .* holds its manifest") as refused:
        exported(native(local_paths, here))
    assert "OLLAMA_MODELS" in (refused.value.remedy or "")


def test_a_native_server_on_another_box_cannot_be_exported(local_paths, servers):
    box = native(local_paths, servers("box"), host="gpu-box")
    with pytest.raises(ConfigError, match="cannot hand out a model's blobs") as refused:
        exported(box)
    assert "on the machine that runs Ollama" in (refused.value.remedy or "")


def test_import_sends_what_is_lacking_then_creates_the_model(local_paths, servers, monkeypatch):
    here, there = servers("here"), servers("there")
    write_tiny(here.models)
    monkeypatch.setenv("OLLAMA_MODELS", str(here.models))
    data = exported(native(local_paths, here))
    target = native(local_paths, there)

    done = models.import_model(target, io.BytesIO(data))
    assert (done.name, done.blobs, done.moved) == (TINY, 4, 4)  # weights, template, params, config
    assert listed(there) == {"tiny:latest"}
    shown = there.json("POST", "/api/show", {"model": "tiny"})[1]
    assert shown["template"] == TEMPLATE and shown["details"]["family"] == "llama"

    again = models.import_model(target, io.BytesIO(data))
    assert (again.moved, again.bytes) == (0, 0)


def test_a_flipped_byte_is_refused_and_nothing_is_created(local_paths, servers, monkeypatch):
    here, there = servers("here"), servers("there")
    write_tiny(here.models)
    monkeypatch.setenv("OLLAMA_MODELS", str(here.models))
    data = bytearray(exported(native(local_paths, here)))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(StackError, match="does not hash to its name"):
        models.import_model(native(local_paths, there), io.BytesIO(bytes(data)))
    assert listed(there) == set()


def test_push_to_a_native_box_goes_through_its_api(local_paths, servers, monkeypatch):
    here, there = servers("here"), servers("there")
    write_tiny(here.models)
    monkeypatch.setenv("OLLAMA_MODELS", str(here.models))
    source, target = native(local_paths, here), native(local_paths, there)
    done = models.push(source, target, "tiny")
    assert (done.blobs, done.moved) == (4, 4) and listed(there) == {"tiny:latest"}
    assert models.push(source, target, "tiny").moved == 0


def test_create_request_rebuilds_a_model_from_its_layers():
    layers = {
        "model": b"GGUF...",
        "projector": b"GGUF.p",
        "template": b"{{ .Prompt }}",
        "system": b"be brief",
        "license": b"MIT",
        "params": b'{"stop": ["</s>"]}',
        "messages": b'[{"role": "user", "content": "hi"}]',
    }
    blobs = {str(i): data for i, data in enumerate(layers.values())}
    manifest = {
        "layers": [
            {"mediaType": f"application/vnd.ollama.image.{kind}", "digest": f"sha256:{i}"}
            for i, kind in enumerate(layers)
        ]
    }
    assert models.create_request("me/m:q4", manifest, blobs.__getitem__) == {
        "model": "me/m:q4",
        "stream": False,
        "files": {"model-0.gguf": "sha256:0", "projector-1.gguf": "sha256:1"},
        "template": "{{ .Prompt }}",
        "system": "be brief",
        "license": ["MIT"],
        "parameters": {"stop": ["</s>"]},
        "messages": [{"role": "user", "content": "hi"}],
    }


@pytest.mark.parametrize(
    ("layers", "why"),
    [
        ([("application/vnd.ollama.image.embed", "sha256:0")], "a layer of type"),
        ([("application/vnd.ollama.image.template", "sha256:0")], "no model weights"),
        (
            [
                ("application/vnd.ollama.image.model", "sha256:1"),
                ("application/vnd.ollama.image.params", "sha256:0"),
            ],
            "params layer is not",
        ),
    ],
)
def test_what_create_cannot_rebuild_is_refused_before_anything_is_made(layers, why):
    manifest = {"layers": [{"mediaType": kind, "digest": digest} for kind, digest in layers]}
    with pytest.raises(ConfigError, match=why):
        models.create_request("m", manifest, lambda digest: b"not json")
