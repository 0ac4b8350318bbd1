"""Models: what the stack's model server holds, asked through its own API.

The model server is the catalog's (Ollama). Its API is reached the way the
health probes reach it (an SSH channel for a remote box), so the same code
serves this machine and `--remote`. A remote-api server is someone else's:
its models are listed, never pulled or deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import posixpath
import re
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from ollama_stack.common.errors import ConfigError, ExitCode, StackError, interruption_code

from .events import Progress, emit
from .health import Endpoint, get_json, json_body, send_json, send_stream, stream_json_lines
from .lifecycle import refuse_adopted_elsewhere
from .runtime import Runtime
from .services import CATALOG, ServiceSpec

DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
MAX_MANIFEST = 1 << 20  # a model's manifest is a few hundred bytes
# What a blob is read and sent in: tarfile's stream mode reads 10 KiB at a
# time by default, joining its buffer again for each (a third of a push).
STREAM_BUFFER = 1 << 20


@dataclass(frozen=True)
class Model:
    name: str
    size: int
    digest: str
    modified: str
    loaded: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Pulled:
    name: str
    layers: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _server(rt: Runtime) -> tuple[ServiceSpec, Endpoint]:
    spec = CATALOG.model_server()
    if spec is None:
        raise ConfigError("no service of this stack serves models", "see `inv stack.status`")
    return spec, rt.endpoint(spec.name)


def _managed(rt: Runtime, spec: ServiceSpec, what: str) -> None:
    kind = rt.kind(spec.name)
    if not kind.managed:
        raise ConfigError(
            f"{spec.title} is a {kind.name} service at {rt.url(spec.name)}: its models are "
            f"listed here, not {what}",
            f"{what.split()[0]} them on the machine that runs it",
        )
    if kind.in_compose:  # adopted elsewhere, the Ollama on its port is the adopter's
        refuse_adopted_elsewhere(rt)


def _unreachable(rt: Runtime, spec: ServiceSpec) -> StackError:
    return StackError(
        f"{spec.title} at {rt.url(spec.name)} did not answer",
        "`inv health.check` says why; `inv stack.start` starts it",
    )


def list_models(rt: Runtime) -> list[Model]:
    """Every model the server holds, and whether it is loaded in memory now."""
    spec, endpoint = _server(rt)
    tags = get_json(endpoint, "/api/tags", rt.target.dial, timeout=10.0)
    if not isinstance(tags, dict):
        raise _unreachable(rt, spec)
    running = get_json(endpoint, "/api/ps", rt.target.dial, timeout=10.0)
    loaded = {m.get("name") for m in (running or {}).get("models") or [] if isinstance(m, dict)}
    return [
        Model(
            name=str(m.get("name", "")),
            size=int(m.get("size") or 0),
            digest=str(m.get("digest", "")),
            modified=str(m.get("modified_at", "")),
            loaded=m.get("name") in loaded,
        )
        for m in tags.get("models") or []
        if isinstance(m, dict)
    ]


def canonical(name: str) -> str:
    """A model name as Ollama stores it: registry/namespace/model:tag."""
    if not name or any(c.isspace() for c in name) or ".." in name or name.startswith(("/", "-")):
        raise _bad_name(name)
    base, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "latest")
    parts = base.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_REGISTRY, DEFAULT_NAMESPACE, *parts]
    elif len(parts) == 2:
        parts = [DEFAULT_REGISTRY, *parts]
    if len(parts) != 3 or not all(parts) or not tag:
        raise _bad_name(name)
    return f"{'/'.join(parts)}:{tag}"


def _bad_name(name: str) -> ConfigError:
    return ConfigError(
        f"{name!r} is not a model name", "like llama3.2, me/tiny:q4 or host/ns/m:tag"
    )


def manifest_path(name: str) -> str:
    """Where Ollama keeps a model's manifest, under its models folder."""
    base, _, tag = canonical(name).rpartition(":")
    return posixpath.join("manifests", base, tag)


def show(rt: Runtime, name: str) -> dict[str, Any]:
    """What the server says of a model (family, parameters, quantization, template)."""
    spec, endpoint = _server(rt)
    canonical(name)
    status, answer = send_json(endpoint, "POST", "/api/show", {"model": name}, rt.target.dial)
    if status == 404:
        raise _no_model(spec, name)
    if status != 200 or not isinstance(answer, dict):
        raise _unreachable(rt, spec)
    manifest = _manifest(rt, spec, name)
    return {"name": name, **answer, **({"manifest": manifest} if manifest else {})}


def _manifest(rt: Runtime, spec: ServiceSpec, name: str) -> dict[str, Any] | None:
    """The model's manifest (its layers: media type, size, digest), read out of
    the container's volume with `docker cp`; None where the stack cannot read
    the server's disk (a native or remote server)."""
    volume = next((v for v in spec.volumes if v.blobs), None)
    if volume is None or not rt.kind(spec.name).in_compose:
        return None
    container = next((c.name for c in rt.compose.ps() if c.service == spec.name), None)
    if container is None:
        return None
    models = posixpath.join(volume.mount, posixpath.dirname(volume.blobs or ""))
    raw = _manifest_bytes(rt, container, models, name)
    return json_body(raw) if raw is not None else None


def _manifest_bytes(rt: Runtime, container: str, models: str, name: str) -> bytes | None:
    """The manifest file as it is (its sha256 is the digest Ollama lists), if
    it is a JSON object."""
    path = posixpath.join(models, manifest_path(name))
    try:
        with (
            rt.compose.copy_out(container, path, contents=False) as stream,
            tarfile.open(fileobj=stream, mode="r|") as archive,
        ):
            for member in archive:
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is not None and member.size <= MAX_MANIFEST:
                    raw = handle.read()
                    return raw if isinstance(json_body(raw), dict) else None
    except (StackError, tarfile.TarError):
        return None
    return None


def _no_model(spec: ServiceSpec, name: str) -> ConfigError:
    return ConfigError(f"{spec.title} has no model {name}", "`inv models.list` shows them")


def remove(rt: Runtime, name: str, confirm: Callable[[str], bool]) -> None:
    spec, endpoint = _server(rt)
    _managed(rt, spec, "deleted")
    canonical(name)
    if not confirm(f"delete model {name} from {spec.title} on {rt.target.label}?"):
        raise StackError("cancelled; nothing was deleted", code=ExitCode.FAILED)
    status, answer = send_json(endpoint, "DELETE", "/api/delete", {"model": name}, rt.target.dial)
    if status == 404:
        raise _no_model(spec, name)
    if status != 200:
        why = answer.get("error") if isinstance(answer, dict) else f"HTTP {status}"
        raise StackError(f"{spec.title} did not delete {name}: {why}", "see `inv stack.logs`")


def pull(rt: Runtime, name: str, progress: Progress | None = None) -> Pulled:
    """Pull through the server (it downloads and verifies), reporting each
    layer's bytes. Interrupted, Ollama keeps the partial download: the next
    pull of the same name goes on from there."""
    spec, endpoint = _server(rt)
    _managed(rt, spec, "pulled")
    canonical(name)
    sizes: dict[str, int] = {}
    try:
        for line in stream_json_lines(endpoint, "/api/pull", {"model": name}, rt.target.dial):
            _pull_line(spec, name, line, sizes, progress)
    except KeyboardInterrupt as stop:
        raise StackError(
            f"the pull of {name} was interrupted; {spec.title} keeps what it downloaded",
            f"`inv models.pull {name}` goes on from there",
            code=interruption_code(stop),
        ) from None
    except (OSError, TimeoutError):
        raise _unreachable(rt, spec) from None
    return Pulled(name, len(sizes), sum(sizes.values()))


def _pull_line(
    spec: ServiceSpec, name: str, line: Any, sizes: dict[str, int], progress: Progress | None
) -> None:
    if not isinstance(line, dict):
        return
    if line.get("error"):
        raise StackError(
            f"{spec.title} could not pull {name}: {line['error']}",
            "check the name (and that the box reaches its registry)",
        )
    digest, total = line.get("digest"), line.get("total")
    if digest and isinstance(total, int):
        sizes[str(digest)] = total
        done = int(line.get("completed") or 0)
        emit(progress, "transfer", str(digest)[7:19] or str(digest), total=total, done=done)
    elif line.get("status"):
        emit(progress, "step", str(line["status"]))


# -- one model in one file ------------------------------------------------------------

HEADER = "ollama-stack-model.json"
MANIFEST = "manifest.json"
FORMAT = 1
BLOB_NAME = re.compile(r"blobs/sha256-([0-9a-f]{64})")


@dataclass(frozen=True)
class Carried:
    name: str
    blobs: int  # blobs the model has
    moved: int  # blobs sent (an import: ones the server lacked)
    bytes: int  # bytes of blobs sent

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _digests(manifest: dict[str, Any]) -> list[tuple[str, int]]:
    """(hex, size) of the config and every layer a model manifest names."""
    parts = [manifest.get("config"), *(manifest.get("layers") or [])]
    found = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        digest = str(part.get("digest", ""))
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise ConfigError(
                f"the model's manifest names {digest!r}", "it is not a model manifest"
            )
        found.append((digest[7:], int(part.get("size") or 0)))
    return found


def _volume_access(rt: Runtime, spec: ServiceSpec, what: str) -> tuple[str, str]:
    """(container, models folder in it): a docker Ollama's volume, read and
    written with `docker cp`."""
    volume = next((v for v in spec.volumes if v.blobs), None)
    container = next((c.name for c in rt.compose.ps() if c.service == spec.name), None)
    if volume is None or not rt.kind(spec.name).in_compose or container is None:
        raise ConfigError(
            f"{what} reads the model's files from {spec.title}'s volume: it needs {spec.title} "
            "run by this stack in Docker (and its container made)",
            "`inv stack.start` first",
        )
    return container, posixpath.join(volume.mount, posixpath.dirname(volume.blobs or ""))


# -- where a model's files are read -------------------------------------------------

BlobReader = Callable[[str], contextlib.AbstractContextManager[tuple[IO[bytes], int]]]


@dataclass(frozen=True)
class ModelFiles:
    """A model's manifest (the file as it is, and read), and a way to read
    each blob it names (with its size)."""

    raw: bytes
    blob: BlobReader

    @property
    def manifest(self) -> dict[str, Any]:
        document: dict[str, Any] = json_body(self.raw)  # a JSON object: checked when read
        return document


def _model_files(rt: Runtime, spec: ServiceSpec, name: str, what: str) -> ModelFiles:
    """Where the server's files are read: its volume (docker), or its models
    folder on this machine (native). Ollama's API has no way to download a
    blob, so a native server on another box cannot be read from here."""
    canonical(name)
    kind = rt.kind(spec.name)
    if kind.in_compose:
        container, models = _volume_access(rt, spec, what)
        raw = _manifest_bytes(rt, container, models, name)
        if raw is None:
            raise _no_model(spec, name)
        return ModelFiles(raw, lambda digest: _blob(rt, container, models, spec, name, digest))
    if kind.on_host and not rt.target.is_remote:
        return _native_files(rt, spec, name)
    raise ConfigError(
        f"{what} reads the model's files from disk, and {spec.title} on {rt.target.label} runs "
        f"outside this stack's Docker ({kind.name} at {rt.url(spec.name)}): Ollama's API "
        "cannot hand out a model's blobs",
        f"run `inv {what} …` on the machine that runs {spec.title}",
    )


def ollama_folders(environ: Mapping[str, str], home: Path) -> list[Path]:
    """Where an Ollama on this machine may keep its models, as it decides:
    OLLAMA_MODELS, else ~/.ollama/models, and the Linux service's home (the
    `ollama` user install.sh makes)."""
    found = [Path(environ["OLLAMA_MODELS"])] if environ.get("OLLAMA_MODELS") else []
    return [*found, home / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]


class OllamaFolder:
    """A models folder in Ollama's layout on this machine's disk, read only."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def manifest_bytes(self, name: str) -> bytes | None:
        path = self.root / manifest_path(name)
        try:
            if path.stat().st_size > MAX_MANIFEST:
                return None
            return path.read_bytes()
        except OSError:
            return None

    @contextlib.contextmanager
    def blob(self, digest: str) -> Iterator[tuple[IO[bytes], int]]:
        path = self.root / "blobs" / f"sha256-{digest}"
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise StackError(
                f"the blob sha256:{digest[:12]}… is not readable in {self.root} ({exc.strerror})",
                "run this as a user that can read Ollama's models folder",
            ) from None
        with handle:
            yield handle, os.fstat(handle.fileno()).st_size


def _native_files(rt: Runtime, spec: ServiceSpec, name: str) -> ModelFiles:
    """The model's files in the folder a native Ollama on this machine serves.
    Which folder that is, only the server knows: the one whose manifest hashes
    to the digest the server lists for the model is it."""
    listed = {canonical(m.name): m.digest for m in list_models(rt)}
    wanted = listed.get(canonical(name))
    if wanted is None:
        raise _no_model(spec, name)
    folders = ollama_folders(os.environ, Path.home())
    for root in folders:
        folder = OllamaFolder(root)
        raw = folder.manifest_bytes(name) or b""
        if hashlib.sha256(raw).hexdigest() == wanted and isinstance(json_body(raw), dict):
            return ModelFiles(raw, folder.blob)
    looked = ", ".join(str(f) for f in folders)
    raise ConfigError(
        f"{spec.title} at {rt.url(spec.name)} lists {name}, but none of {looked} holds its "
        "manifest as the server has it",
        "set OLLAMA_MODELS to the models folder that Ollama uses",
    )


# -- where a model's files go ---------------------------------------------------------


@dataclass(frozen=True)
class _Destination:
    """The server a model is imported or pushed into: its volume (a docker
    Ollama, written with `docker cp`) or only its API (a native one)."""

    rt: Runtime
    spec: ServiceSpec
    endpoint: Endpoint
    volume: tuple[str, str] | None  # (container, models folder); None: through the API

    def has(self, digest: str) -> bool:
        return _has_blob(self.rt, self.endpoint, digest)

    def upload(self, content: IO[bytes], size: int, digest: str, whose: str) -> None:
        _upload(self.rt, self.endpoint, self.spec, content, size, digest, whose)

    def register(self, name: str, raw: bytes, text: Callable[[str], bytes]) -> None:
        """The model, once every blob is there: its manifest into the volume
        (unless the server lists this very manifest already), or `/api/create`
        from its layers (``text`` reads a small layer)."""
        if self.volume is not None:
            if self._listed().get(canonical(name)) != hashlib.sha256(raw).hexdigest():
                _write_manifest(self.rt, *self.volume, name, raw)
        else:
            _create(self, name, json_body(raw), text)
        if canonical(name) not in self._listed():
            where = f" on {self.rt.target.label}" if self.rt.target.is_remote else ""
            raise StackError(
                f"{self.spec.title}{where} does not list {name} after the copy",
                "see `inv stack.logs`",
            )

    def _listed(self) -> dict[str, str]:
        """Each model the server lists, and its manifest's digest."""
        return {canonical(m.name): m.digest for m in list_models(self.rt)}


def _destination(rt: Runtime, verb: str, task: str) -> _Destination:
    spec, endpoint = _server(rt)
    _managed(rt, spec, verb)
    volume = _volume_access(rt, spec, task) if rt.kind(spec.name).in_compose else None
    return _Destination(rt, spec, endpoint, volume)


# Each kind of layer Ollama's create takes back: its field, and how the layer's
# bytes become the field's value. The model's weights go by digest in "files".
TEXT_FIELDS: dict[str, tuple[str, Callable[[bytes], Any]]] = {
    "template": ("template", lambda data: data.decode()),
    "system": ("system", lambda data: data.decode()),
    "license": ("license", lambda data: data.decode()),
    "params": ("parameters", json.loads),
    "messages": ("messages", json.loads),
}
WEIGHTS = ("model", "projector")
MEDIA = "application/vnd.ollama.image."
MAX_TEXT_LAYER = 4 << 20  # a template, a license: kilobytes


def create_request(
    name: str, manifest: dict[str, Any], text: Callable[[str], bytes]
) -> dict[str, Any]:
    """Ollama's `/api/create` document that rebuilds a model from its layers:
    the weights by digest (uploaded first), the rest by content."""
    request: dict[str, Any] = {"model": name, "stream": False}
    files: dict[str, str] = {}
    for position, layer in enumerate(manifest.get("layers") or []):
        kind = str(layer.get("mediaType", "")).removeprefix(MEDIA)
        digest = str(layer.get("digest", ""))
        if kind in WEIGHTS:
            files[f"{kind}-{position}.gguf"] = digest
        elif kind == "adapter":
            request.setdefault("adapters", {})[f"adapter-{position}.gguf"] = digest
        elif kind in TEXT_FIELDS:
            field, value = TEXT_FIELDS[kind]
            try:
                parsed = value(text(digest[7:]))
            except ValueError:
                raise _unbuildable(name, f"its {kind} layer is not what Ollama writes") from None
            if field == "license":
                request.setdefault("license", []).append(parsed)
            else:
                request[field] = parsed
        else:
            raise _unbuildable(name, f"it has a layer of type {layer.get('mediaType')!r}")
    if not files:
        raise _unbuildable(name, "it has no model weights")
    return {**request, "files": files}


def _unbuildable(name: str, why: str) -> ConfigError:
    return ConfigError(
        f"Ollama's create API cannot rebuild {name}: {why}",
        "copy it into an Ollama this stack runs in Docker instead",
    )


def _create(
    dest: _Destination, name: str, manifest: dict[str, Any], text: Callable[[str], bytes]
) -> None:
    request = create_request(canonical(name), manifest, text)
    status, answer = send_json(
        dest.endpoint, "POST", "/api/create", request, dest.rt.target.dial, timeout=600.0
    )
    if status != 200 or not isinstance(answer, dict) or answer.get("error"):
        why = answer.get("error") if isinstance(answer, dict) else f"HTTP {status}"
        raise StackError(
            f"{dest.spec.title} did not create {name} from its blobs: {why}",
            f"see {dest.spec.title}'s logs",
        )


def export_model(
    rt: Runtime, name: str, sink: IO[bytes], progress: Progress | None = None
) -> Carried:
    """A header, every blob the model's manifest names (checked against its
    hash as it streams), then the manifest: an export cut short has none."""
    spec, _ = _server(rt)
    files = _model_files(rt, spec, name, "models.export")
    digests = _digests(files.manifest)
    sent = 0
    with tarfile.open(
        fileobj=sink,
        mode="w|",
        format=tarfile.PAX_FORMAT,
        bufsize=STREAM_BUFFER,  # a chunk at a time, as the blob is read
        copybufsize=STREAM_BUFFER,
    ) as tar:
        header = {"format": FORMAT, "name": canonical(name)}
        _add_bytes(tar, HEADER, json.dumps(header).encode())
        for digest, _size in digests:
            emit(progress, "step", f"blob sha256:{digest[:12]}…")
            with files.blob(digest) as (content, size), _ReadAhead(content) as ahead:
                checked = _Hashing(ahead, digest, f"{spec.title}'s blob sha256:{digest[:12]}…")
                info = tarfile.TarInfo(f"blobs/sha256-{digest}")
                info.size, info.mode, info.mtime = size, 0o644, int(time.time())
                tar.addfile(info, checked)
                checked.finish()
                sent += size
        _add_bytes(tar, MANIFEST, files.raw)  # as it is: the same digest wherever it goes
    return Carried(canonical(name), len(digests), len(digests), sent)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    tar.addfile(info, io.BytesIO(data))


class _ReadAhead:
    """Reads a source a few chunks ahead in a thread, so that the source (a
    `docker cp` pipe) and the sink (an ``ssh -W`` socket) both keep moving:
    read and sent in turn, each waited for the other through small buffers."""

    AHEAD = 4  # chunks

    def __init__(self, source: IO[bytes]) -> None:
        import queue
        import threading

        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(self.AHEAD)
        self._left = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(source,), daemon=True)
        self._thread.start()

    def _fill(self, source: IO[bytes]) -> None:
        try:
            while not self._stop.is_set():
                chunk = source.read(STREAM_BUFFER)
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as exc:  # handed to the reader, raised there
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        import queue

        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._chunks.put(item, timeout=0.2)
                return

    def read(self, size: int = -1) -> bytes:
        if not self._left:
            item = self._chunks.get()
            if isinstance(item, BaseException):
                raise item
            self._left = item
        cut = len(self._left) if size < 0 else size
        chunk, self._left = self._left[:cut], self._left[cut:]
        return chunk

    def __enter__(self) -> _ReadAhead:
        return self

    def __exit__(self, *_: object) -> None:
        """Stop reading (the source is the caller's to close, after this). A
        read that hangs (a stalled docker cp) is not waited for long: closing
        the source ends it, and the thread with it."""
        self._stop.set()
        self._thread.join(timeout=5)


class _Hashing:
    """A reader that hashes what passes; ``finish`` refuses content that does not
    hash to its name (checked by us, whatever the other side checks)."""

    def __init__(self, source: IO[bytes], digest: str, what: str) -> None:
        self.source, self.digest, self.what = source, digest, what
        self.hashed = hashlib.sha256()
        self.length = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self.hashed.update(chunk)
        self.length += len(chunk)
        return chunk

    def finish(self) -> None:
        if self.hashed.hexdigest() != self.digest:
            raise StackError(
                f"{self.what} does not hash to its name",
                "the model is damaged: pull it again (nothing was kept of this copy)",
                code=ExitCode.BAD_BACKUP,
            )


def import_model(rt: Runtime, source: IO[bytes], progress: Progress | None = None) -> Carried:
    """Take in a models.export file: each blob the server lacks is sent to it
    (it checks the hash, and so do we), blobs first, the model last (its
    manifest, or for a native server `/api/create`); then the server must
    list the model."""
    dest = _destination(rt, "imported", "models.import")
    name, raw, manifest, moved, sent = "", b"", None, 0, 0
    small: dict[str, bytes] = {}  # checked contents of the small blobs (template, params…)
    names: set[str] = set()
    try:
        with tarfile.open(fileobj=source, mode="r|", bufsize=STREAM_BUFFER) as tar:
            for position, member in enumerate(tar):
                if manifest is not None:
                    raise _bad_file(f"{member.name!r} after the manifest")
                if position == 0:
                    name = _header(tar, member)
                elif match := BLOB_NAME.fullmatch(member.name):
                    if not member.isfile():
                        raise _bad_file(f"{member.name!r} is not a plain file")
                    names.add(match.group(1))
                    emit(progress, "step", f"blob sha256:{match.group(1)[:12]}…")
                    size = _send_blob(dest, tar, member, match.group(1), small)
                    moved, sent = moved + bool(size), sent + size
                elif member.name == MANIFEST and member.isfile() and member.size <= MAX_MANIFEST:
                    raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                    manifest = json_body(raw)
                    if not isinstance(manifest, dict):
                        raise _bad_file("its manifest is not JSON")
                else:
                    raise _bad_file(f"it holds {member.name!r}")
    except tarfile.TarError as exc:
        raise _bad_file(f"it is not a whole tar ({exc})") from None
    if manifest is None:
        raise _bad_file("it ends before its manifest (cut short?)")
    digests = _digests(manifest)
    lacking = [d for d, _ in digests if d not in names and not dest.has(d)]
    if lacking:
        raise _bad_file(f"its manifest names sha256:{lacking[0][:12]}…, which it does not hold")

    def text(digest: str) -> bytes:
        if digest not in small:
            raise _bad_file(f"its layer sha256:{digest[:12]}… is not in it, or too big")
        return small[digest]

    dest.register(name, raw, text)
    return Carried(canonical(name), len(digests), moved, sent)


def _bad_file(why: str) -> StackError:
    return StackError(
        f"not a models.export file: {why}; the model was not added",
        "export it again (`inv models.export NAME FILE`)",
        code=ExitCode.BAD_BACKUP,
    )


def _header(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    if member.name != HEADER or not member.isfile() or member.size > MAX_MANIFEST:
        raise _bad_file(f"it begins with {member.name!r}, not {HEADER}")
    header = json_body(tar.extractfile(member).read())  # type: ignore[union-attr]
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad_file("its header is not one this release reads")
    name = str(header.get("name", ""))
    canonical(name)  # refused before it names a path
    return name


def _has_blob(rt: Runtime, endpoint: Endpoint, digest: str) -> bool:
    status, _ = send_json(endpoint, "HEAD", f"/api/blobs/sha256:{digest}", None, rt.target.dial)
    return status == 200


def _send_blob(
    dest: _Destination,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    digest: str,
    small: dict[str, bytes],
) -> int:
    """Bytes sent (0: the server has it: read past, not sent again). A small
    blob's checked contents are kept in ``small``: a native server's create
    takes a template or parameters as text, not by digest."""
    content = tar.extractfile(member)
    assert content is not None
    if member.size <= MAX_TEXT_LAYER:
        data = content.read()
        _drain(_Hashing(io.BytesIO(data), digest, f"the file's blob sha256:{digest[:12]}…"))
        small[digest], content = data, io.BytesIO(data)
    if dest.has(digest):
        return 0
    dest.upload(content, member.size, digest, "the file's")
    return member.size


def _upload(
    rt: Runtime,
    endpoint: Endpoint,
    spec: ServiceSpec,
    content: IO[bytes],
    size: int,
    digest: str,
    whose: str,
) -> None:
    """Stream a blob to the server; it checks the hash, and so do we. To a box
    the body goes through OpenSSH (``dial_stream``), as fast as `ssh` copies."""
    path = f"/api/blobs/sha256:{digest}"
    with _ReadAhead(content) as ahead:
        checked = _Hashing(ahead, digest, f"{whose} blob sha256:{digest[:12]}…")
        try:
            status, answer = send_stream(endpoint, path, checked, size, rt.target.dial_stream)
        except (OSError, http.client.HTTPException) as exc:
            raise StackError(
                f"{spec.title} at {rt.url(spec.name)} broke off while taking blob "
                f"sha256:{digest[:12]}… ({exc or type(exc).__name__})",
                "`inv health.check` says why; run it again to go on (blobs it has are kept)",
            ) from None
    checked.finish()
    if status not in (200, 201):
        why = answer.get("error") if isinstance(answer, dict) else f"HTTP {status}"
        raise StackError(
            f"{spec.title} refused blob sha256:{digest[:12]}…: {why}", "see `inv stack.logs`"
        )


def _write_manifest(rt: Runtime, container: str, models: str, name: str, data: bytes) -> None:
    """The manifest, last, into the models folder (docker cp, nothing in the image needed)."""
    relative = manifest_path(name)  # manifests/<registry>/<namespace>/<model>/<tag>
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        parts = relative.split("/")
        for end in range(1, len(parts)):
            info = tarfile.TarInfo("/".join(parts[:end]))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            tar.addfile(info)
        _add_bytes(tar, relative, data)
    with rt.compose.copy_in(container, models) as stream:
        stream.write(buffer.getvalue())


@contextlib.contextmanager
def _blob(
    rt: Runtime, container: str, models: str, spec: ServiceSpec, name: str, digest: str
) -> Iterator[tuple[IO[bytes], int]]:
    """One blob of a docker Ollama's volume as it streams out, and its size."""
    path = posixpath.join(models, "blobs", f"sha256-{digest}")
    with rt.compose.copy_out(container, path, contents=False) as stream:
        _widen(stream)
        with tarfile.open(fileobj=stream, mode="r|", bufsize=STREAM_BUFFER) as tar:
            member = next(iter(tar), None)
            content = tar.extractfile(member) if member is not None else None
            if member is None or content is None:
                raise _no_model(spec, name)
            yield content, member.size


def _widen(pipe: IO[bytes]) -> None:
    """A pipe from docker cp that holds a chunk, not Linux's 64 KiB: docker
    then keeps streaming while we wait for a core (as backups do)."""
    import fcntl

    with contextlib.suppress(AttributeError, OSError, ValueError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, STREAM_BUFFER)


def _drain(checked: _Hashing) -> None:
    while checked.read(1 << 20):
        pass
    checked.finish()


def push(source: Runtime, target: Runtime, name: str, progress: Progress | None = None) -> Carried:
    """A model from this stack's Ollama to a box's: only the blobs the box
    lacks travel, each streamed into the box's Ollama through its API (which
    keeps a blob only when it hashes to its name), the model last; then the
    box's Ollama must list it."""
    from concurrent.futures import ThreadPoolExecutor

    spec, _ = _server(source)
    with ThreadPoolExecutor(2) as both:  # each side waits on its engine: ask both at once
        asked = both.submit(_model_files, source, spec, name, "models.push")
        dest = _destination(target, "pushed to", "models.push")
        files = asked.result()
    digests = _digests(files.manifest)
    lacking = [d for d, _ in digests if not dest.has(d)]
    sent = 0
    if lacking:
        emit(progress, "step", f"sending {len(lacking)} blobs to {target.target.label}")
    for digest in lacking:
        with files.blob(digest) as (content, size):
            dest.upload(content, size, digest, "this machine's")
            sent += size
    dest.register(name, files.raw, lambda digest: _small_blob(files, name, digest))
    return Carried(canonical(name), len(digests), len(lacking), sent)


def _small_blob(files: ModelFiles, name: str, digest: str) -> bytes:
    """A template's or parameters' bytes, checked, for a native box's create."""
    with files.blob(digest) as (content, size):
        if size > MAX_TEXT_LAYER:
            raise _unbuildable(name, f"its layer sha256:{digest[:12]}… is {size} bytes")
        data = content.read()
    _drain(_Hashing(io.BytesIO(data), digest, f"this machine's blob sha256:{digest[:12]}…"))
    return data
