"""Test-restoring a backup: the proof that it would restore, without touching
the installation.

The backup is checked whole, then written into throwaway volumes of a
throwaway compose project (`<project>-trial`) whose services publish on
loopback ports Docker picks. They are started and must become healthy (Open
WebUI's probe is `/health/db`, which opens the restored database), and the
model server must list every model the backup holds. Everything the trial
made is removed afterwards, on failure and on Ctrl-C too; a trial killed
outright is cleared by the next one, which uses the same project name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from ollama_stack.common.errors import ConfigError, StackError
from ollama_stack.stack import config
from ollama_stack.stack.events import Progress, emit
from ollama_stack.stack.health import get_json
from ollama_stack.stack.lifecycle import wait_healthy
from ollama_stack.stack.runtime import Runtime
from ollama_stack.stack.services import CATALOG

from . import check
from .manifest import Manifest, VolumeRecord
from .restore import chosen, mount_of, refuse_unsafe, write_tar
from .store import Store

DEFAULT_REGISTRY = "registry.ollama.ai"  # Ollama leaves it out of a model's name


@dataclass
class TrialReport:
    id: str
    project: str
    services: dict[str, str] = field(default_factory=dict)  # service → its health answer
    models: list[str] = field(default_factory=list)  # the backup's models, listed by the trial
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def test_restore(
    rt: Runtime,
    store: Store,
    snapshot_id: str,
    services: list[str],
    *,
    timeout: float | None = None,
    progress: Progress | None = None,
) -> TrialReport:
    with store.reading():  # a prune waits: the backup and its blobs stay until this ends
        return _trial(rt, store, snapshot_id, services, timeout, progress)


def _trial(
    rt: Runtime,
    store: Store,
    snapshot_id: str,
    services: list[str],
    timeout: float | None,
    progress: Progress | None,
) -> TrialReport:
    began = time.monotonic()
    manifest = store.manifest(snapshot_id)
    volumes = chosen(manifest, services)
    for volume in volumes:
        refuse_unsafe(volume)
    check.verify(store, snapshot_id, progress)
    started = _with_dependencies(rt, sorted({v.service for v in volumes}))
    report = TrialReport(manifest.id, f"{rt.settings.project}-trial")
    with config.installation_lock(rt.paths, "the test restore"):
        resolved = rt.resolve()
        with config.private_env_file(_trial_env(resolved, report.project, started)) as env_file:
            trial = resolved.throwaway(report.project, env_file, dict.fromkeys(started, 0))
            _refuse_foreign(trial)  # the trial's project name must be ours alone
            _clear(trial, progress)  # a trial killed outright left these
            try:
                trial = _run(trial, store, volumes, started, progress)
                report.services = _healthy(trial, started, timeout, progress)
                report.models = _models_listed(trial, manifest)
            except BaseException:
                _clear_after_failure(trial, progress)  # the failure is what must be said
                raise
            _clear(trial, progress)
    report.seconds = round(time.monotonic() - began, 1)
    return report


def _refuse_foreign(trial: Runtime) -> None:
    others = trial.compose.foreign_installations()
    if others:
        raise ConfigError(
            f"compose project {trial.compose.project!r} belongs to another installation "
            f"(id {', '.join(sorted(others))}): a test restore there would act on it; "
            "nothing was changed",
            "give this installation another project name, or remove that one",
        )


def _with_dependencies(rt: Runtime, names: list[str]) -> list[str]:
    """The services to start: those restored and the docker services they call."""
    wanted, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in wanted and rt.kind(name).in_compose:
            wanted.add(name)
            todo += CATALOG[name].depends_on
    return [name for name in CATALOG.names() if name in wanted]


def _trial_env(rt: Runtime, project: str, started: list[str]) -> dict[str, str]:
    """The installation's compose env for the trial project (no file is written
    for it: the env is computed, and the file it goes to is private)."""
    secrets = config.read_secrets(rt.paths)
    ports = dict.fromkeys(started, 0)  # Docker picks free ones, on the box that runs them
    return rt.throwaway(project, rt.paths.runtime_env_file, ports).compose_env(secrets)


def _run(
    trial: Runtime,
    store: Store,
    volumes: list[VolumeRecord],
    started: list[str],
    progress: Progress | None,
) -> Runtime:
    """Containers and empty volumes made, the backup written in, then started;
    the Runtime returned knows the ports Docker picked."""
    sink = _output(progress)
    emit(progress, "step", f"restoring into throwaway volumes of project {trial.compose.project}")
    trial.compose.create(started, sink)
    containers = {c.service: c.name for c in trial.compose.ps()}
    for volume in volumes:
        emit(progress, "step", f"writing {volume.service}'s {volume.name}")
        with trial.compose.copy_in(containers[volume.service], mount_of(volume)) as stream:
            write_tar(store, volume, stream)
    trial.compose.up(started, pull="never", no_deps=True, sink=sink)
    picked = {c.service: min(c.published_ports) for c in trial.compose.ps() if c.published_ports}
    return trial.throwaway(trial.compose.project, trial.compose.env_files[0], picked)


def _healthy(
    trial: Runtime, started: list[str], timeout: float | None, progress: Progress | None
) -> dict[str, str]:
    results = wait_healthy(trial, timeout or trial.settings.start_timeout, progress, started)
    return {name: result.detail for name, result in results.items()}


def _models_listed(trial: Runtime, manifest: Manifest) -> list[str]:
    """The backup's models, which the trial's model server must list, all of them."""
    spec = CATALOG.model_server()
    if spec is None or not trial.kind(spec.name).in_compose:
        return []
    held = sorted(set(_models_held(manifest, spec.name)))
    if not held:
        return []
    answer = get_json(trial.endpoint(spec.name), "/api/tags", trial.target.dial, timeout=5.0)
    listed = {m.get("name") for m in (answer or {}).get("models") or [] if isinstance(m, dict)}
    missing = [name for name in held if name not in listed]
    if missing:
        raise StackError(
            f"the test restore of backup {manifest.id} started, but {spec.title} does not "
            f"list {', '.join(missing)} from it",
            f"`inv backup.verify {manifest.id}`; if it passes, the model files are not "
            "what this Ollama reads",
        )
    return held


def _models_held(manifest: Manifest, service: str) -> Iterator[str]:
    """Model names, from the manifests a backup holds:
    models/manifests/<registry>/<namespace>/<model>/<tag>, named as Ollama does."""
    for volume in manifest.volumes:
        if volume.service != service:
            continue
        for entry in volume.entries:
            parts = entry.path.split("/")
            if entry.type == "file" and parts[:2] == ["models", "manifests"] and len(parts) == 6:
                registry, namespace, model, tag = parts[2:]
                if registry != DEFAULT_REGISTRY:
                    yield f"{registry}/{namespace}/{model}:{tag}"
                elif namespace == "library":
                    yield f"{model}:{tag}"
                else:
                    yield f"{namespace}/{model}:{tag}"


def _clear(trial: Runtime, progress: Progress | None) -> None:
    """Remove everything of the trial project, by label: containers, networks, volumes."""
    for kind in ("container", "network", "volume"):
        names = trial.compose.labelled(kind)  # type: ignore[arg-type]
        if names:
            emit(progress, "step", f"removing the trial's {kind}s {', '.join(names)}")
            trial.compose.remove(kind, names)  # type: ignore[arg-type]


def _clear_after_failure(trial: Runtime, progress: Progress | None) -> None:
    try:
        _clear(trial, progress)
    except StackError as failure:
        emit(
            progress,
            "warn",
            f"the trial's containers and volumes are left ({failure.message}); the next "
            f"`backup.test-restore` removes them, or `docker compose -p {trial.compose.project} "
            "down --volumes`",
        )


def _output(progress: Progress | None):
    return lambda line: emit(progress, "output", line)
