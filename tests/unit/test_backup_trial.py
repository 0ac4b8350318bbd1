"""backups/trial.py: what a test restore starts and which models it expects."""

from __future__ import annotations

from ollama_stack.backups import trial
from ollama_stack.backups.manifest import Entry, Manifest, VolumeRecord
from ollama_stack.stack import config
from ollama_stack.stack.hosts.target import Target
from ollama_stack.stack.runtime import Runtime

from .helpers import FakeShell


def runtime(local_paths, **settings) -> Runtime:
    merged = config.validate([("test", settings)])
    return Runtime(Target(None, _shell=FakeShell()), local_paths, merged)


def test_what_is_restored_starts_with_the_docker_services_it_calls(local_paths):
    rt = runtime(local_paths)
    assert trial._with_dependencies(rt, ["webui"]) == ["ollama", "webui"]
    assert trial._with_dependencies(rt, ["ollama"]) == ["ollama"]
    remote = runtime(
        local_paths, services={"ollama": {"type": "remote-api", "url": "http://gpu:11434"}}
    )
    assert trial._with_dependencies(remote, ["webui"]) == ["webui"]  # not run here


def entry(path: str, kind: str = "file") -> Entry:
    sha = "0" * 64 if kind == "file" else None
    return Entry(path=path, type=kind, mode=0o644, uid=0, gid=0, sha256=sha)  # type: ignore[arg-type]


def test_the_models_a_backup_holds_are_named_as_ollama_names_them():
    entries = [
        entry("models/manifests/registry.ollama.ai/library/llama3.2/latest"),
        entry("models/manifests/registry.ollama.ai/jmorgan/tiny/q4"),
        entry("models/manifests/hf.co/bartowski/gemma/Q8_0"),
        entry("models/manifests/registry.ollama.ai/library/llama3.2", "dir"),
        entry("models/blobs/sha256-" + "a" * 64),
        entry("models/manifests/registry.ollama.ai/library/x/y/z"),  # not a manifest's place
    ]
    volume = VolumeRecord(
        service="ollama", name="ollama_data", mount="/root/.ollama", entries=entries
    )
    other = VolumeRecord(service="webui", name="webui_data", mount="/d", entries=entries[:1])
    manifest = Manifest(id="20261203T000000Z-abcdef", created="now", volumes=[volume, other])
    assert list(trial._models_held(manifest, "ollama")) == [
        "llama3.2:latest",
        "jmorgan/tiny:q4",
        "hf.co/bartowski/gemma:Q8_0",
    ]
