"""Restoring a backup: checked whole first, a safety backup taken, then each
volume replaced (never merged) and the services started again.

The manifest is untrusted input until checked: every path must stay inside
its volume, no link may point out of it or be walked through, and only the
volumes the service catalog gives this installation can be written, at the
mount the catalog names. The tar written into each volume is built here from
checked entries and verified blobs, and extracted by `docker cp --archive`
into a container that is not running: nothing is needed in the image.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field

from ollama_stack.common.errors import ConfigError, ExitCode, StackError
from ollama_stack.stack.events import Progress, emit
from ollama_stack.stack.lifecycle import prepare, wait_healthy
from ollama_stack.stack.runtime import Runtime
from ollama_stack.stack.services import CATALOG

from . import check, snapshot
from .manifest import Entry, Manifest, VolumeRecord
from .store import CHUNK, BadBackup, Store


@dataclass
class Restored:
    id: str
    safety_backup: str
    volumes: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "safety_backup": self.safety_backup,
            "volumes": self.volumes,
            "started": self.started,
        }


def restore(
    rt: Runtime,
    store: Store,
    snapshot_id: str,
    services: list[str],
    *,
    confirm: Callable[[str], bool],
    timeout: float | None = None,
    progress: Progress | None = None,
) -> Restored:
    manifest = check.verify(store, snapshot_id, progress)  # whole, or nothing is touched
    volumes = _chosen(manifest, services)
    for volume in volumes:
        refuse_unsafe(volume)
    names = sorted({v.service for v in volumes})
    if not confirm(
        f"replace the data of {', '.join(names)} on {rt.target.label} with backup {snapshot_id}? "
        "(a safety backup of what is there now is taken first)"
    ):
        raise StackError("cancelled; nothing was changed", code=ExitCode.FAILED)
    rt = prepare(rt, progress)
    description = f"safety copy before restoring {snapshot_id}"
    safety = snapshot.create(rt, store, snapshot.Options(description=description), progress)
    running = {c.service for c in rt.compose.ps() if c.state == "running"}
    try:
        _replace(rt, store, volumes, names, progress)
        started = sorted(running & set(names))
        if started:
            sink = _output(progress)
            rt.compose.up(started, pull="never", no_deps=True, sink=sink)
            wait_healthy(rt, timeout or rt.settings.start_timeout, progress, services=started)
    except StackError as failure:
        failure.message += (
            f"; what was there before is in backup {safety.id} "
            f"(`inv backup.restore {safety.id} --yes` puts it back)"
        )
        raise
    return Restored(snapshot_id, safety.id, [f"{v.service}:{v.name}" for v in volumes], started)


def _chosen(manifest: Manifest, services: list[str]) -> list[VolumeRecord]:
    if services:
        CATALOG.check_names(services)
    volumes = [v for v in manifest.volumes if not services or v.service in services]
    if not volumes:
        what = ", ".join(services) if services else "any service"
        raise ConfigError(
            f"backup {manifest.id} holds no volume of {what}",
            f"`inv backup.show {manifest.id}` lists what it holds",
        )
    return volumes


def _replace(
    rt: Runtime,
    store: Store,
    volumes: list[VolumeRecord],
    names: list[str],
    progress: Progress | None,
) -> None:
    """Containers removed, volumes removed and made again empty, then filled."""
    emit(progress, "step", f"replacing the data of {', '.join(names)}")
    sink = _output(progress)
    rt.compose.remove_services(names, sink)
    ours = set(rt.compose.labelled("volume"))
    doomed = [_volume_name(rt, v) for v in volumes]
    rt.compose.remove("volume", [name for name in doomed if name in ours])
    rt.compose.create(names, sink)
    containers = {c.service: c.name for c in rt.compose.ps()}
    for volume in volumes:
        mount = _mount(volume)
        emit(progress, "step", f"writing {volume.service}'s {volume.name} ({mount})")
        with rt.compose.copy_in(containers[volume.service], mount) as stream:
            write_tar(store, volume, stream)


def _output(progress: Progress | None) -> Callable[[str], None]:
    return lambda line: emit(progress, "output", line)


def _volume_name(rt: Runtime, volume: VolumeRecord) -> str:
    return f"{rt.settings.project}_{volume.name}"  # compose's name for a project's volume


def _mount(volume: VolumeRecord) -> str:
    """Where the catalog mounts the volume (never where the manifest says)."""
    return next(v.mount for v in CATALOG[volume.service].volumes if v.name == volume.name)


def refuse_unsafe(volume: VolumeRecord) -> None:
    """A crafted manifest writes nothing: check every entry before extracting."""
    owned = (
        {v.name for v in CATALOG[volume.service].volumes} if volume.service in CATALOG else set()
    )
    if volume.name not in owned:
        raise BadBackup(
            f"the backup names volume {volume.service}:{volume.name}, "
            "which this installation does not have",
            "restore only what `inv backup.show` lists for services that exist here",
        )
    seen: dict[str, Entry] = {}
    for entry in volume.entries:
        problem = _unsafe(entry, seen)
        if problem:
            raise BadBackup(
                f"refusing {volume.service}:{volume.name}/{entry.path}: {problem}",
                "this backup was altered or made by another tool; nothing was written",
            )
        seen[entry.path] = entry


def _unsafe(entry: Entry, seen: dict[str, Entry]) -> str:
    path = entry.path
    if path == ".":
        return "" if entry.type == "dir" else "the volume's root must be a directory"
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return "the path leaves the volume"
    for end in range(1, len(parts)):
        parent = seen.get("/".join(parts[:end]))
        if parent is None or parent.type != "dir":
            return "its directory is not a directory listed before it"
    if path in seen:
        return "it is listed twice"
    if entry.type == "file" and not entry.sha256:
        return "a file without content"
    if entry.type == "symlink":
        target = entry.link or ""
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        if not target or target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            return f"the link points outside the volume ({target})"
    if entry.type == "hardlink":
        linked = seen.get(entry.link or "")
        if linked is None or linked.type != "file":
            return "a hard link to a file not listed before it"
    return ""


def write_tar(store: Store, volume: VolumeRecord, sink) -> None:
    """The volume's entries as one tar stream, contents read from the store."""
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
        for entry in volume.entries:
            info = tarfile.TarInfo("." if entry.path == "." else f"./{entry.path}")
            info.mode, info.uid, info.gid, info.mtime = (
                entry.mode,
                entry.uid,
                entry.gid,
                entry.mtime,
            )
            if entry.type == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.type == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.link or ""
                tar.addfile(info)
            elif entry.type == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, f"./{entry.link}"
                tar.addfile(info)
            else:
                info.size = entry.size
                with store.open_blob(entry.sha256 or "") as content:
                    tar.addfile(info, content)
