"""Taking a backup: every docker service's volumes, streamed into the store.

Each volume is read with `docker cp` as a tar stream (nothing needed in the
image, nothing staged on either side) and split into entries and content
blobs as it arrives. A service whose data must be consistent across files
(Open WebUI's SQLite database and its write-ahead log) is paused while its
volumes are copied and unpaused in a ``finally``; a stopped one stays stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import io
import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import IO, Literal

from ollama_stack.common.errors import ConfigError, StackError
from ollama_stack.compose.client import ContainerState
from ollama_stack.stack import config
from ollama_stack.stack.events import Progress, emit
from ollama_stack.stack.lifecycle import refuse_foreign
from ollama_stack.stack.runtime import Runtime
from ollama_stack.stack.services import CATALOG, ServiceSpec, Volume

from . import schema
from .manifest import (
    Entry,
    FileRecord,
    Manifest,
    ServiceRecord,
    VolumeRecord,
    link_leaves_volume,
)
from .store import CHUNK, HEX, Store

Models = Literal["include", "manifests-only", "exclude"]


@dataclass(frozen=True)
class Options:
    description: str = ""
    include_cache: bool = False
    exclude: tuple[str, ...] = ()  # globs on paths inside a volume
    models: Models = "include"
    services: tuple[str, ...] = ()  # only these services' volumes (default: all)

    def __post_init__(self) -> None:
        if any(ord(c) < 32 or ord(c) == 127 for c in self.description):
            raise ConfigError(
                "--description holds a control character", "give plain text on one line"
            )


@dataclass
class _Tally:
    size: int = 0
    written: int = 0


def create(
    rt: Runtime, store: Store, options: Options, progress: Progress | None = None
) -> Manifest:
    """Take a backup; the manifest, written last, is the commit point."""
    config.read_secrets(rt.paths)  # not installed: nothing to back up
    # Volumes of the project that another installation holds (its containers
    # writing them, unpaused by us) would be copied torn and filed as ours.
    if not rt.owned:  # a restore or an update has just asked
        refuse_foreign(rt)
    with config.installation_lock(rt.paths, "the backup"), store.locked():
        began = time.time()
        snapshot_id = store.new_snapshot(began, options.description)
        emit(progress, "step", f"backup {snapshot_id} of {rt.target.label} into {store.root}")
        containers = {c.service: c for c in rt.compose.ps()}
        tally, excluded, not_covered = _Tally(), list[str](), list[str]()
        volumes = []
        for spec in CATALOG:
            kind = rt.kind(spec.name)
            if options.services and spec.name not in options.services:
                continue
            if not kind.volumes(spec):
                if not kind.in_compose:
                    url = config.redact_url(rt.url(spec.name))
                    not_covered.append(f"{spec.name}: {kind.name} at {url}, not run by this stack")
                continue
            volumes += _service(
                rt,
                store,
                spec,
                containers.get(spec.name),
                options,
                tally,
                excluded,
                not_covered,
                progress,
            )
        for spec in CATALOG.dormant():  # disabled extensions: their data is still the user's
            if not options.services or spec.name in options.services:
                volumes += _without_container(
                    rt, store, spec, options, tally, excluded, not_covered, progress
                )
        files = _installation_files(rt, store, tally)
        facts = _data_facts(rt, store, containers, volumes)
        manifest = Manifest(
            id=snapshot_id,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(began)),
            description=options.description,
            tool_version=_version(),
            config_schema=config.installed_schema(rt.paths),  # as on disk (a migration's backup)
            target=rt.target.label,
            project=rt.settings.project,
            services=_service_records(rt, containers, facts),
            volumes=volumes,
            files=files,
            excluded=excluded,
            not_covered=not_covered,
            size=tally.size,
            written=tally.written,
        )
        store.commit(manifest)
        return manifest


def _service(
    rt: Runtime,
    store: Store,
    spec: ServiceSpec,
    container: ContainerState | None,
    options: Options,
    tally: _Tally,
    excluded: list[str],
    not_covered: list[str],
    progress: Progress | None,
) -> list[VolumeRecord]:
    if spec.serves_models and options.models == "exclude":
        excluded.append(f"{spec.name}: every volume (--models exclude)")
        return []
    if container is None:  # removed (uninstall kept the volumes): read them without it
        return _without_container(rt, store, spec, options, tally, excluded, not_covered, progress)
    if container.state == "paused":  # left so by a backup that was killed
        emit(progress, "warn", f"{container.name} was paused; unpausing it")
        rt.compose.unpause([container.name])
    records = []
    for volume in spec.volumes:
        skip = _left_out(spec, volume, options, excluded)
        quiet = volume.quiesce and container.state in ("running", "paused")
        try:
            if quiet:
                rt.compose.pause([container.name])
            emit(progress, "step", f"copying {spec.name}'s {volume.name} ({volume.mount})")
            records.append(
                _volume(rt, store, spec, volume, container.name, skip, tally, not_covered)
            )
        finally:
            if quiet:
                _unpause(rt, container.name, progress)
    return records


def _without_container(
    rt: Runtime,
    store: Store,
    spec: ServiceSpec,
    options: Options,
    tally: _Tally,
    excluded: list[str],
    not_covered: list[str],
    progress: Progress | None,
) -> list[VolumeRecord]:
    """The service's volumes that exist, read through a container made for it
    and never started: its own is gone (a disabled extension, or a stack
    uninstalled with its volumes kept)."""
    records = []
    image = None
    for volume in spec.volumes:
        name = f"{rt.settings.project}_{volume.name}"
        if not rt.compose.volume_exists(name):
            continue
        image = image or _reader_image(rt, spec)  # asked once per service, when needed
        if image is None:
            not_covered.append(f"{spec.name}:{volume.name}: no image on the engine to read it with")
            continue
        skip = _left_out(spec, volume, options, excluded)
        emit(progress, "step", f"copying {spec.name}'s {volume.name} (no container of its own)")
        with rt.compose.volume_reader(image, name, volume.mount) as container:
            records.append(_volume(rt, store, spec, volume, container, skip, tally, not_covered))
    return records


def _reader_image(rt: Runtime, spec: ServiceSpec) -> str | None:
    """Any image the engine has (nothing in it runs): the extension's, else the stack's."""
    candidates = [rt.settings.images.get(spec.name, spec.image), *rt.settings.images.values()]
    return next((image for image in candidates if rt.compose.image_exists(image)), None)


def _unpause(rt: Runtime, name: str, progress: Progress | None) -> None:
    """Put a paused service back; if that fails, say exactly how to do it by hand."""
    try:
        rt.compose.unpause([name])
    except StackError as failure:
        emit(
            progress, "warn", f"{name} is still paused ({failure.message}): `docker unpause {name}`"
        )


def _left_out(
    spec: ServiceSpec, volume: Volume, options: Options, excluded: list[str]
) -> list[str]:
    """What of the volume this backup leaves out, also noted in ``excluded``
    (a restore keeps those parts from its safety copy)."""
    skip = list(options.exclude)
    if not options.include_cache:
        skip += list(volume.cache)
    if spec.serves_models and options.models == "manifests-only" and volume.blobs:
        skip.append(volume.blobs)
    excluded += [f"{spec.name}:{pattern}" for pattern in skip]
    return skip


def _volume(
    rt: Runtime,
    store: Store,
    spec: ServiceSpec,
    volume: Volume,
    container: str,
    skip: list[str],
    tally: _Tally,
    not_covered: list[str],
) -> VolumeRecord:
    entries: list[Entry] = []
    kept: dict[str, Entry] = {}  # taken so far, for links that go through others
    try:
        with (
            rt.compose.copy_out(container, volume.mount) as stream,
            tarfile.open(fileobj=(pipe := _Forward(stream)), mode="r:") as archive,
        ):
            for member in archive:
                path = _relative(member.name)
                if path is None or matches(path, skip):
                    continue
                why = _not_restorable(member, path, kept)
                if why:
                    not_covered.append(f"{spec.name}:{volume.name}/{path!r}: {why}")
                    continue
                entry = _entry(store, pipe, member, path, volume, tally)
                if entry is not None:
                    entries.append(entry)
                    kept[path] = entry
    except tarfile.TarError as exc:
        raise StackError(
            f"the copy of {spec.name}'s {volume.name} ended early ({exc})",
            "a file may have changed while it was copied (a model download?); run it again",
        ) from None
    return VolumeRecord(service=spec.name, name=volume.name, mount=volume.mount, entries=entries)


def _not_restorable(member: tarfile.TarInfo, path: str, kept: dict[str, Entry]) -> str:
    """Why an entry could not be put back by a restore, which refuses it (so a
    backup never holds what its own restore would refuse)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8"
    if member.issym():
        target = member.linkname
        if not target or link_leaves_volume(path, target, kept):
            return f"a link out of the volume ({target})"
    if member.islnk() and _relative(member.linkname) not in kept:
        return "a hard link to a file this backup left out"
    return ""


def _entry(
    store: Store,
    pipe: _Forward,
    member: tarfile.TarInfo,
    path: str,
    volume: Volume,
    tally: _Tally,
) -> Entry | None:
    # docker cp's headers carry the file type in the mode too: keep the permission bits
    # (with setuid, setgid and sticky), as chmod takes them.
    mode = stat.S_IMODE(member.mode)
    common = {"path": path, "mode": mode, "uid": member.uid, "gid": member.gid}
    common["mtime"] = int(member.mtime)
    if member.isdir():
        return Entry(type="dir", **common)
    if member.issym():
        return Entry(type="symlink", link=member.linkname, **common)
    if member.islnk():
        return Entry(type="hardlink", link=_relative(member.linkname), **common)
    if not member.isreg():
        return None  # a device node or a FIFO has no place in a data volume
    tally.size += member.size
    known = _content_name(path, volume)
    if known and store.has_blob(known):
        return Entry(type="file", size=member.size, sha256=known, **common)  # not read again
    digest, size, written = store.put(pipe.content(member), known)
    tally.written += written
    return Entry(type="file", size=size, sha256=digest, **common)


class _Forward:
    """The docker cp pipe as the seekable file tarfile reads headers from,
    read strictly forward (a seek skips ahead). A file's content goes from
    the pipe straight into the store's buffers: tarfile's own stream mode
    copies every byte over and over, which cost a third of a backup's time."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe, self._at = pipe, 0
        # Linux pipes hold 64 KiB: a fraction of a millisecond of docker cp's
        # output, so docker stalls whenever our reader waits for a core. A
        # chunk's worth keeps it streaming (refused or elsewhere: as it was).
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)

    def read(self, size: int = -1) -> bytes:
        data = self._pipe.read(size)
        self._at += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        done = self._pipe.readinto(buffer)  # type: ignore[attr-defined]
        self._at += done
        return done

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset < self._at:
            raise io.UnsupportedOperation("a pipe is only read forward")
        scratch = memoryview(bytearray(min(CHUNK, offset - self._at)))
        while self._at < offset and self.readinto(scratch[: offset - self._at]):
            pass
        return self._at

    def content(self, member: tarfile.TarInfo) -> _Content:
        """The member's content, which must be what the pipe holds next."""
        if self._at != member.offset_data:
            raise tarfile.ReadError(f"{member.name}: its content is not next in the stream")
        return _Content(self, member.size)


class _Content:
    """Exactly ``size`` bytes of the pipe; a stream that ends sooner is an error."""

    def __init__(self, pipe: _Forward, size: int) -> None:
        self._pipe, self._left = pipe, size

    def readinto(self, buffer: memoryview) -> int:
        if not self._left:
            return 0
        done = self._pipe.readinto(buffer[: self._left])
        if not done:
            raise tarfile.ReadError("unexpected end of data")
        self._left -= done
        return done


def _content_name(path: str, volume: Volume) -> str | None:
    """The digest a model blob's name gives (models/blobs/sha256-<hex>)."""
    if not volume.blobs or not path.startswith(volume.blobs.rstrip("/") + "/"):
        return None
    name = path.rsplit("/", 1)[-1]
    if name.startswith("sha256-") and HEX.fullmatch(name[7:]):
        return name[7:]
    return None


def _relative(name: str) -> str | None:
    """A tar member's path inside the volume; "." for the volume's root."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return "/".join(parts) or "."


def matches(path: str, patterns: list[str]) -> bool:
    """Does ``path`` or a directory above it match one of the patterns?"""
    parents = list(_parents(path))
    return any(fnmatch.fnmatchcase(p, pattern) for pattern in patterns for p in parents)


def _parents(path: str) -> Iterator[str]:
    parts = path.split("/")
    for end in range(1, len(parts) + 1):
        yield "/".join(parts[:end])


def _installation_files(rt: Runtime, store: Store, tally: _Tally) -> list[FileRecord]:
    """config.yaml and secrets.env: a restore must bring logins back."""
    records = []
    for name, (data, mode) in config.installation_documents(rt.paths).items():
        digest, size, written = store.put(io.BytesIO(data))
        tally.written += written
        records.append(FileRecord(name=name, sha256=digest, size=size, mode=mode))
    return records


def _data_facts(
    rt: Runtime,
    store: Store,
    containers: dict[str, ContainerState],
    volumes: list[VolumeRecord],
) -> dict[str, dict[str, str]]:
    """service → its software version and its data's schema revision, where known,
    so a restore can refuse data newer than the image it will run."""
    facts = {}
    for record in volumes:
        if record.service not in CATALOG:
            continue  # a disabled extension's volume
        spec = CATALOG[record.service]
        if spec.data_schema is None or spec.data_schema.volume != record.name:
            continue
        container = containers.get(spec.name)
        version = schema.container_facts(rt, spec, container.name).version if container else ""
        revision = schema.data_revision(store, record, spec.data_schema)
        facts[spec.name] = {"version": version, "schema_revision": revision}
    return facts


def _service_records(
    rt: Runtime, containers: dict[str, ContainerState], facts: dict[str, dict[str, str]]
) -> list[ServiceRecord]:
    image_ids = rt.compose.container_image_ids() if containers else {}
    records = []
    for spec in CATALOG:
        kind = rt.kind(spec.name)
        container = containers.get(spec.name)
        records.append(
            ServiceRecord(
                name=spec.name,
                kind=kind.name,
                image=rt.settings.images[spec.name] if kind.in_compose else "",
                image_id=image_ids.get(spec.name, ""),
                state=container.state if container else ("absent" if kind.in_compose else ""),
                **facts.get(spec.name, {}),
            )
        )
    return records


def _version() -> str:
    try:
        return metadata.version("ollama-stack")
    except metadata.PackageNotFoundError:
        return "unknown"
