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

import tarfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ollama_stack.common.errors import ConfigError, ExitCode, StackError, interruption_code
from ollama_stack.stack import config
from ollama_stack.stack.events import Progress, emit
from ollama_stack.stack.lifecycle import prepare, refuse_foreign, wait_healthy
from ollama_stack.stack.runtime import Runtime
from ollama_stack.stack.services import CATALOG

from . import check, schema, snapshot
from .manifest import Entry, Manifest, VolumeRecord, link_leaves_volume
from .store import CHUNK, BadBackup, Store


@dataclass
class Restored:
    id: str
    safety_backup: str
    volumes: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def restore(
    rt: Runtime,
    store: Store,
    snapshot_id: str,
    services: list[str],
    *,
    confirm: Callable[[str], bool],
    timeout: float | None = None,
    force: bool = False,
    secrets: bool = False,
    progress: Progress | None = None,
) -> Restored:
    with store.reading():  # a prune waits: the backup and its blobs stay until this ends
        return _checked_restore(
            rt, store, snapshot_id, services, confirm, timeout, force, secrets, progress
        )


def _checked_restore(
    rt: Runtime,
    store: Store,
    snapshot_id: str,
    services: list[str],
    confirm: Callable[[str], bool],
    timeout: float | None,
    force: bool,
    secrets: bool,
    progress: Progress | None,
) -> Restored:
    manifest = store.manifest(snapshot_id)
    keys = _secrets_document(store, manifest) if secrets else None
    volumes = chosen(manifest, services)
    for volume in volumes:  # the structure first: cheap, and refuses before any reading
        refuse_unsafe(volume)
    names = sorted({v.service for v in volumes})
    _refuse_missing_images(rt, names)
    if not force:
        _refuse_newer_config(manifest)
        _refuse_newer_data(rt, manifest, names)
    check.verify(store, snapshot_id, progress)  # whole, or nothing is touched
    rt = refuse_foreign(rt)  # `compose rm` acts on the project name: another home's too
    _refuse_volumes_not_ours(rt, volumes)
    also = " and the installation's secrets" if keys else ""
    if not confirm(
        f"replace the data of {', '.join(names)}{also} on {rt.target.label} with backup "
        f"{snapshot_id}? (a safety backup of what is there now is taken first)"
    ):
        raise StackError("cancelled; nothing was changed", code=ExitCode.FAILED)
    with config.installation_lock(rt.paths, "the restore"):
        return _restore(rt, store, manifest, volumes, names, timeout, keys, progress)


def _restore(
    rt: Runtime,
    store: Store,
    manifest: Manifest,
    volumes: list[VolumeRecord],
    names: list[str],
    timeout: float | None,
    keys: bytes | None,
    progress: Progress | None,
) -> Restored:
    snapshot_id = manifest.id
    rt = prepare(rt, progress)
    _containers_for(rt, names, progress)
    safety = _safety_copy(rt, store, snapshot_id, volumes, names, progress)
    running = {c.service for c in rt.compose.ps() if c.state == "running"}
    again = (
        f"`inv backup.restore {safety.id} --yes --services {','.join(names)}"
        + (" --secrets" if keys else "")
        + (f" --to {store.root}`" if store.root != _default_store(rt) else "`")
    )
    try:
        if keys:  # the safety copy holds the ones there now
            emit(progress, "step", f"putting back secrets.env from backup {snapshot_id}")
            config.replace_secrets(rt.paths, keys)
            rt = prepare(rt, progress)  # the compose env carries them
        _replace(rt, store, manifest, safety, volumes, names, progress)
        # New keys reach every running service (the proxy's key, too).
        started = sorted(running if keys else running & set(names))
        if started:
            rt.compose.up(started, pull="never", no_deps=True, sink=_output(progress))
            wait_healthy(rt, timeout or rt.settings.start_timeout, progress, services=started)
    except StackError as failure:
        failure.message += (
            f"; what was there before is in backup {safety.id} ({again} puts it back)"
        )
        raise
    except BaseException as stop:  # Ctrl-C, a full disk: the old data's place must be said
        raise StackError(
            f"the restore stopped half-way ({type(stop).__name__}: {stop}); "
            f"what was there before is in backup {safety.id}",
            f"{again} puts it back",
            code=interruption_code(stop) if isinstance(stop, KeyboardInterrupt) else None,
        ) from None
    return Restored(snapshot_id, safety.id, [f"{v.service}:{v.name}" for v in volumes], started)


def _secrets_document(store: Store, manifest: Manifest) -> bytes:
    record = next((f for f in manifest.files if f.name == "secrets.env"), None)
    if record is None:
        raise ConfigError(f"backup {manifest.id} holds no secrets.env", "restore without --secrets")
    with store.open_blob(record.sha256) as content:
        return content.read(1 << 20)


def _default_store(rt: Runtime):
    import os

    return config.backup_store(rt.settings.backup.store, None, os.environ)


def _safety_copy(
    rt: Runtime,
    store: Store,
    snapshot_id: str,
    volumes: list[VolumeRecord],
    names: list[str],
    progress: Progress | None,
) -> Manifest:
    """Everything in the volumes about to be replaced, caches too; refused
    (nothing changed) unless it holds every one of them."""
    options = snapshot.Options(
        description=f"safety copy before restoring {snapshot_id}",
        include_cache=True,
        services=tuple(names),
    )
    safety = snapshot.create(rt, store, options, progress)
    copied = {(v.service, v.name) for v in safety.volumes}
    uncopied = [f"{v.service}:{v.name}" for v in volumes if (v.service, v.name) not in copied]
    if uncopied:
        raise StackError(
            f"could not take a safety copy of {', '.join(uncopied)} "
            f"({'; '.join(safety.not_covered) or 'not read'}); nothing was changed",
            "fix that first; the data there now is still in place",
        )
    for item in safety.not_covered:  # e.g. a link out of its volume, which no restore puts back
        emit(progress, "warn", f"the safety copy does not hold {item}")
    return safety


def _containers_for(rt: Runtime, names: list[str], progress: Progress | None) -> None:
    """A kept volume with no container yet (a fresh box, a removed container)
    gets one, made but not started, to be read and written through."""
    have = {c.service for c in rt.compose.ps()}
    missing = [name for name in names if name not in have]
    if missing:
        rt.compose.create(missing, _output(progress))


def _refuse_missing_images(rt: Runtime, names: list[str]) -> None:
    """The containers are removed and made again from the configured images
    without pulling: an image the engine lacks would stop it half-way."""
    missing = [
        rt.settings.images[n]
        for n in names
        if rt.kind(n).in_compose and not rt.compose.image_exists(rt.settings.images[n])
    ]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on the engine "
            f"of {rt.target.label}; nothing was changed",
            "`inv stack.start` pulls (or builds) what is missing; then restore",
        )


def _refuse_newer_config(manifest: Manifest) -> None:
    if manifest.config_schema > config.CONFIG_SCHEMA:
        raise ConfigError(
            f"backup {manifest.id} was taken with config schema {manifest.config_schema}, "
            f"newer than this ollama-stack's ({config.CONFIG_SCHEMA}; it was made by "
            f"ollama-stack {manifest.tool_version}); nothing was changed",
            "restore it with that ollama-stack or a newer one, or pass --force",
        )


def _refuse_newer_data(rt: Runtime, manifest: Manifest, names: list[str]) -> None:
    """Data migrated by a newer release (an Alembic revision the image here
    does not ship) would make the older software exit: refuse, offering the
    image the backup was taken with."""
    for record in manifest.services:
        if record.name not in names or not record.schema_revision or record.name not in CATALOG:
            continue
        spec = CATALOG[record.name]
        known = schema.image_facts(rt, spec, rt.settings.images[record.name])
        if not known.revisions or record.schema_revision in known.revisions:
            continue  # the image does not say, or knows it
        taken_with = f"{spec.title} {record.version}".strip()
        image = record.image + (f" (image id {record.image_id[:19]})" if record.image_id else "")
        raise ConfigError(
            f"backup {manifest.id} holds {spec.title} data at schema revision "
            f"{record.schema_revision} ({taken_with}), which "
            f"{rt.settings.images[record.name]}{_version_said(known)} does not know: "
            "the older release would exit on it; nothing was changed",
            f"run the image it was taken with — set images.{record.name}: {image} "
            "in config.yaml — and restore again, or pass --force",
        )


def _version_said(facts: schema.ImageFacts) -> str:
    return f" ({facts.version})" if facts.version else ""


def _refuse_volumes_not_ours(rt: Runtime, volumes: list[VolumeRecord]) -> None:
    """A volume with the compose name that is not this installation's would be
    reused by compose and the backup extracted on top of it: refuse."""
    ours = set(rt.compose.labelled("volume"))
    for volume in volumes:
        name = _volume_name(rt, volume)
        if name not in ours and rt.compose.volume_exists(name):
            raise ConfigError(
                f"volume {name} exists but is not this installation's; nothing was changed",
                f"look at it (`docker volume inspect {name}`) and remove it if it is not needed",
            )


def chosen(manifest: Manifest, services: list[str]) -> list[VolumeRecord]:
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
    manifest: Manifest,
    safety: Manifest,
    volumes: list[VolumeRecord],
    names: list[str],
    progress: Progress | None,
) -> None:
    """Containers removed, volumes removed and made again empty, then filled."""
    emit(progress, "step", f"replacing the data of {', '.join(names)}")
    sink = _output(progress)
    rt.compose.remove_services(names, sink)
    ours = set(rt.compose.labelled("volume"))
    rt.compose.remove("volume", [n for n in (_volume_name(rt, v) for v in volumes) if n in ours])
    rt.compose.create(names, sink)
    containers = {c.service: c.name for c in rt.compose.ps()}
    for volume in volumes:
        whole = with_left_out(volume, manifest, safety)
        mount = mount_of(volume)
        emit(progress, "step", f"writing {volume.service}'s {volume.name} ({mount})")
        with rt.compose.copy_in(containers[volume.service], mount) as stream:
            write_tar(store, whole, stream)


def with_left_out(volume: VolumeRecord, manifest: Manifest, safety: Manifest) -> VolumeRecord:
    """The backup's entries plus, from the safety copy, what the backup left out
    on purpose (model caches, --exclude, --models manifests-only): a restore
    replaces what the backup holds, and keeps what it never took."""
    prefix = f"{volume.service}:"
    patterns = [x[len(prefix) :] for x in manifest.excluded if x.startswith(prefix)]
    current = next(
        (v for v in safety.volumes if (v.service, v.name) == (volume.service, volume.name)), None
    )
    if not patterns or current is None:
        return volume
    entries = list(volume.entries)
    have = {e.path for e in entries}
    by_path = {e.path: e for e in current.entries}
    for entry in current.entries:
        if entry.path in have or not snapshot.matches(entry.path, patterns):
            continue
        parts = entry.path.split("/")
        for end in range(1, len(parts)):  # its directories, where the backup has none
            parent = "/".join(parts[:end])
            if parent not in have and parent in by_path:
                entries.append(by_path[parent])
                have.add(parent)
        if entry.type == "hardlink" and entry.link not in have:
            continue
        entries.append(entry)
        have.add(entry.path)
    merged = volume.model_copy(update={"entries": entries})
    refuse_unsafe(merged)
    return merged


def _output(progress: Progress | None) -> Callable[[str], None]:
    return lambda line: emit(progress, "output", line)


def _volume_name(rt: Runtime, volume: VolumeRecord) -> str:
    return f"{rt.settings.project}_{volume.name}"  # compose's name for a project's volume


def mount_of(volume: VolumeRecord) -> str:
    """Where the catalog mounts the volume (never where the manifest says)."""
    return next(v.mount for v in CATALOG[volume.service].volumes if v.name == volume.name)


def refuse_unsafe(volume: VolumeRecord) -> None:
    """A crafted manifest writes nothing: check every entry before extracting."""
    owned = (
        {v.name for v in CATALOG[volume.service].volumes} if volume.service in CATALOG else set()
    )
    disabled = {spec.name for spec in CATALOG.dormant()}
    if volume.service in disabled:
        raise ConfigError(
            f"the backup holds {volume.service}:{volume.name}, and extension {volume.service} "
            "is disabled here; nothing was changed",
            f"`inv ext.enable {volume.service}` first, or leave it out with --services",
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


MAX_NAME = 255  # bytes in one path component, as Linux allows


def _bad_text(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text) or any(
        len(part.encode()) > MAX_NAME for part in text.split("/")
    )


def _unsafe(entry: Entry, seen: dict[str, Entry]) -> str:
    path = entry.path
    if _bad_text(path) or _bad_text(entry.link or ""):
        return "a control character or an overlong name"
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
        if not target or link_leaves_volume(path, target, seen):
            return f"the link points outside the volume ({target})"
    if entry.type == "hardlink":
        linked = seen.get(entry.link or "")
        if linked is None or linked.type != "file":
            return "a hard link to a file not listed before it"
    return ""


def write_tar(store: Store, volume: VolumeRecord, sink) -> None:
    """The volume's entries as one tar stream, contents read from the store.

    tarfile makes each header (PAX, so any name fits); contents go to ``sink``
    through one reused buffer, since tarfile's stream writer joins its whole
    buffer again for every piece (a restore took twice docker cp's time)."""
    buffer, offset = memoryview(bytearray(CHUNK)), 0
    for entry in volume.entries:
        header = _tar_header(entry)
        sink.write(header)
        offset += len(header)
        if entry.type == "file":
            with store.open_blob(entry.sha256 or "") as content:
                _copy(content, sink, entry, buffer)
            padding = -entry.size % tarfile.BLOCKSIZE
            sink.write(bytes(padding))
            offset += entry.size + padding
    end = 2 * tarfile.BLOCKSIZE  # the end marker, padded to whole records as tarfile does
    sink.write(bytes(end + -(offset + end) % tarfile.RECORDSIZE))


def _tar_header(entry: Entry) -> bytes:
    info = tarfile.TarInfo("." if entry.path == "." else f"./{entry.path}")
    info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, entry.mtime
    if entry.type == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.type == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.link or ""
    elif entry.type == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, f"./{entry.link}"
    else:
        info.size = entry.size
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _copy(content, sink, entry: Entry, buffer: memoryview) -> None:
    """Exactly the entry's size of its content into ``sink``."""
    left = entry.size
    while left:
        done = content.readinto(buffer[: min(left, len(buffer))])
        if not done:
            raise BadBackup(
                f"{entry.path}: its content is shorter than the manifest says",
                "`inv backup.verify` names what is damaged",
            )
        sink.write(buffer[:done])
        left -= done
