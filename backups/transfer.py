"""Carrying a backup to another machine: one plain tar file, and taking one in.

    ollama-stack-export.json   first: the format version and the backup's id
    blobs/<sha256>             every blob the manifest names, as stored (zstd)
    manifest.json              last: an export cut short has none

Uncompressed (the blobs already are) and written as a stream, so it pipes
through `ssh` as well as it lands in a file. An import trusts nothing in it:
only those three kinds of name, only regular files, each blob exactly one
zstd frame whose content hashes to its name (checked as it streams in), the
manifest valid and every blob it names there. Blobs wait in the store's
tmp/ until all of that holds; only then are they renamed in and the
manifest written, last, as a backup commits. A refused import leaves the
store as it was.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import json
import os
import re
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import zstandard
from pydantic import ValidationError

from ollama_stack.common.errors import ConfigError, StackError
from ollama_stack.common.files import new_file, refuse_existing
from ollama_stack.stack.events import Progress, emit

from . import check
from .manifest import Manifest
from .store import CHUNK, HEX, SNAPSHOT_ID, BadBackup, Store, reads_store

HEADER = "ollama-stack-export.json"
MANIFEST = "manifest.json"
FORMAT = 1
BLOB = re.compile(r"blobs/([0-9a-f]{64})")
HEADER_LIMIT = 64 << 10
MANIFEST_LIMIT = 1 << 30  # a million entries take about 250 MB


@dataclass(frozen=True)
class Exported:
    id: str
    file: str
    size: int  # bytes of the export
    blobs: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Imported:
    id: str
    store: str
    created: str
    size: int  # bytes of content the backup describes
    blobs_received: int  # new in the store
    blobs_present: int  # already there: read past, not written again
    written: int  # bytes added to the store

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- export -----------------------------------------------------------------------------


@reads_store
def export_file(
    store: Store, snapshot_id: str, path: Path, progress: Progress | None = None
) -> Exported:
    """Verify the backup, then write it to a temporary name next to ``path``
    (0600: it holds secrets), fsync, and give it its name only when whole."""
    refuse_existing(path)  # before the long verify
    manifest = check.verify(store, snapshot_id, progress)
    with new_file(path, 0o600) as handle:
        size, blobs = _write(store, manifest, handle, progress)
    return Exported(manifest.id, str(path), size, blobs)


@reads_store
def export_stream(
    store: Store, snapshot_id: str, sink: IO[bytes], progress: Progress | None = None
) -> Exported:
    """The same export, written to a stream (stdout, for `| ssh box …`)."""
    manifest = check.verify(store, snapshot_id, progress)
    try:
        size, blobs = _write(store, manifest, sink, progress)
        sink.flush()
    except BrokenPipeError:
        raise StackError(
            "what read the export stopped before its end",
            "the copy it got is cut short (an import refuses it); run the export again",
        ) from None
    return Exported(manifest.id, "-", size, blobs)


class _Counting:
    """A write-only stream that counts what passes (the export's size)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink, self.count = sink, 0

    def write(self, data: bytes) -> int:
        self.sink.write(data)
        self.count += len(data)
        return len(data)


def _write(
    store: Store, manifest: Manifest, sink: IO[bytes], progress: Progress | None
) -> tuple[int, int]:
    counting = _Counting(sink)
    mtime = _epoch(manifest.created)
    digests = sorted(manifest.blobs())
    with tarfile.open(
        fileobj=counting,  # type: ignore[arg-type]
        mode="w|",
        format=tarfile.PAX_FORMAT,
        bufsize=CHUNK,  # tarfile re-slices its buffer per record: small ones cost time
        copybufsize=CHUNK,
    ) as tar:
        header = {"format": FORMAT, "id": manifest.id, "created": manifest.created}
        document = json.dumps(header).encode()
        _add(tar, HEADER, io.BytesIO(document), len(document), mtime)
        emit(progress, "step", f"writing {len(digests)} blobs of backup {manifest.id}")
        for digest in digests:
            try:
                handle = open(store.blob_path(digest), "rb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                raise BadBackup(
                    f"blob {digest[:12]}… of backup {manifest.id} went missing during the export",
                    "was a prune running? verify the backup and export it again",
                ) from None
            with handle:
                _add(tar, f"blobs/{digest}", handle, os.fstat(handle.fileno()).st_size, mtime)
        document = manifest.model_dump_json(indent=1).encode()  # as the store commits it
        _add(tar, MANIFEST, io.BytesIO(document), len(document), mtime)
    return counting.count, len(digests)


def _add(tar: tarfile.TarFile, name: str, content: IO[bytes], size: int, mtime: int) -> None:
    member = tarfile.TarInfo(name)
    member.size, member.mode, member.mtime = size, 0o600, mtime
    tar.addfile(member, content)


def _epoch(created: str) -> int:
    try:
        return calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return 0


# -- import -----------------------------------------------------------------------------


def import_stream(
    store: Store, source: IO[bytes], origin: str, progress: Progress | None = None
) -> Imported:
    """Take in an export read from ``source`` (a file or stdin, read once,
    front to back); ``origin`` names it in messages."""
    with store.locked():
        staged: dict[str, Path] = {}  # digest → its verified copy in tmp/
        try:
            received = _Receiver(store, origin, staged, progress)
            manifest = received.run(source)
            store.adopt(manifest, staged)
        finally:
            for tmp in staged.values():
                tmp.unlink(missing_ok=True)
    return Imported(
        manifest.id,
        str(store.root),
        manifest.created,
        manifest.size,
        len(staged),
        len(received.present),
        received.written,
    )


class _Receiver:
    def __init__(
        self, store: Store, origin: str, staged: dict[str, Path], progress: Progress | None
    ) -> None:
        self.store, self.origin, self.staged, self.progress = store, origin, staged, progress
        self.lengths: dict[str, int] = {}  # digest → bytes of content, for the arrived ones
        self.present: set[str] = set()  # already in the store
        self.written = 0

    def run(self, source: IO[bytes]) -> Manifest:
        try:
            with tarfile.open(fileobj=source, mode="r|", bufsize=CHUNK) as tar:
                manifest = self._members(tar)
        except (tarfile.TarError, EOFError) as exc:
            raise self._bad(f"is cut short or not a tar ({exc})") from None
        self._complete(manifest)
        return manifest

    def _bad(self, what: str, remedy: str = "") -> BadBackup:
        return BadBackup(
            f"{self.origin} {what}; nothing was imported",
            remedy or "it is damaged or not an ollama-stack export; export the backup again",
        )

    def _members(self, tar: tarfile.TarFile) -> Manifest:
        snapshot_id = self._header(tar, tar.next())
        emit(self.progress, "step", f"importing backup {snapshot_id} from {self.origin}")
        while (member := tar.next()) is not None:
            if member.name == MANIFEST:
                manifest = self._manifest(tar, member, snapshot_id)
                after = tar.next()
                if after is not None:
                    raise self._bad(f"holds {_shown(after.name)} after its manifest")
                return manifest
            match = BLOB.fullmatch(member.name)
            if not match:
                raise self._bad(f"holds {_shown(member.name)}, which no export has")
            self._blob(tar, member, match[1])
        raise self._bad("ends before its manifest (it is cut short)")

    def _open(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
        """Only plain files: never a link, a directory, a device or a sparse file."""
        content = None
        if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and member.sparse is None:
            content = tar.extractfile(member)
        if content is None:
            raise self._bad(f"holds {_shown(member.name)} as something other than a plain file")
        return content

    def _read(self, tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
        content = self._open(tar, member)
        if member.size > limit:
            raise self._bad(f"holds a {member.name} of {member.size} bytes (at most {limit})")
        return content.read()

    def _header(self, tar: tarfile.TarFile, member: tarfile.TarInfo | None) -> str:
        if member is None or member.name != HEADER:
            found = "nothing" if member is None else _shown(member.name)
            raise self._bad(f"starts with {found}, not {HEADER}")
        try:
            header = json.loads(self._read(tar, member, HEADER_LIMIT))
        except ValueError:
            raise self._bad(f"has a damaged {HEADER}") from None
        if not isinstance(header, dict) or not isinstance(header.get("format"), int):
            raise self._bad(f"has a damaged {HEADER}")
        if header["format"] > FORMAT:
            raise self._bad(
                f"is export format {header['format']}; this version reads format {FORMAT}",
                "import it with the newer ollama-stack that made it",
            )
        snapshot_id = header.get("id")
        if not isinstance(snapshot_id, str) or not SNAPSHOT_ID.fullmatch(snapshot_id):
            raise self._bad(f"names no backup id in {HEADER}")
        if self.store.snapshot_dir(snapshot_id).exists():
            raise ConfigError(
                f"backup {snapshot_id} is already in {self.store.root}; nothing was imported",
                "`inv backup.verify` it there, or import into another store with --to",
            )
        return snapshot_id

    def _blob(self, tar: tarfile.TarFile, member: tarfile.TarInfo, digest: str) -> None:
        content = self._open(tar, member)
        if digest in self.staged or digest in self.present:
            raise self._bad(f"holds blob {digest[:12]}… twice")
        if self.store.has_blob(digest):  # read past it: the stream goes on behind it
            while content.read(CHUNK):
                pass
            self.present.add(digest)
            return
        tmp = self.staged[digest] = self.store.staging()
        self.lengths[digest] = self._stage(content, tmp, digest)
        self.written += member.size

    def _stage(self, content: IO[bytes], tmp: Path, digest: str) -> int:
        """Copy the blob as it came into ``tmp`` while hashing its content;
        return how many bytes of content it holds."""
        hashed, length = hashlib.sha256(), 0
        with open(tmp, "xb") as raw:
            os.chmod(tmp, 0o600)
            tee = _Tee(content, raw)
            try:
                decompressor = zstandard.ZstdDecompressor()
                reader = decompressor.stream_reader(tee, read_size=CHUNK, closefd=False)
                while chunk := reader.read(CHUNK):  # never more than CHUNK in memory
                    hashed.update(chunk)
                    length += len(chunk)
            except zstandard.ZstdError as exc:
                raise self._bad(
                    f"holds blob {digest[:12]}… that is not zstd data ({exc})"
                ) from None
            while tee.read(CHUNK):  # whatever the reader left: kept, so checked below
                pass
            raw.flush()
            os.fsync(raw.fileno())
        if not one_frame(tmp):
            raise self._bad(f"holds blob {digest[:12]}… that is not exactly one zstd frame")
        if hashed.hexdigest() != digest:
            raise self._bad(f"holds blob {digest[:12]}… whose content does not hash to its name")
        return length

    def _manifest(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, snapshot_id: str
    ) -> Manifest:
        try:
            manifest = Manifest.model_validate_json(self._read(tar, member, MANIFEST_LIMIT))
        except (ValidationError, ValueError) as exc:
            raise self._bad(f"has a damaged manifest ({str(exc).splitlines()[0]})") from None
        if manifest.id != snapshot_id:
            raise self._bad(f"has the manifest of {_shown(manifest.id)} under {snapshot_id}")
        return manifest

    def _complete(self, manifest: Manifest) -> None:
        """Every blob the manifest names is here, of the size it says; no other came."""
        named = manifest.blobs()
        for digest in sorted(named):
            if not HEX.fullmatch(digest):
                raise self._bad(f"has a manifest naming {_shown(digest)}, not a content hash")
            if digest not in self.staged and not self.store.has_blob(digest):
                raise self._bad(f"lacks blob {digest[:12]}…, which its manifest names")
        extra = sorted(set(self.staged) - named)
        if extra:
            raise self._bad(f"holds blob {extra[0][:12]}…, which its manifest does not name")
        for where, digest, size in check._contents(manifest):
            if digest in self.lengths and self.lengths[digest] != size:
                raise self._bad(
                    f"holds {where} (blob {digest[:12]}…) of {self.lengths[digest]} bytes, "
                    f"the manifest says {size}"
                )


class _Tee:
    """Reads from ``source``, writing what passes to ``sink``."""

    def __init__(self, source: IO[bytes], sink: BinaryIO) -> None:
        self.source, self.sink = source, sink

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.sink.write(data)
        return data


def one_frame(path: Path) -> bool:
    """Is the file exactly one zstd frame with nothing after it? The store
    reads one frame; anything past it would be stored but never read, and
    what was hashed on the way in must be what the store reads back."""
    with open(path, "rb") as handle:
        head = handle.read(18)  # the magic number and the longest frame header
        if head[:4] != zstandard.FRAME_HEADER:
            return False
        try:
            handle.seek(zstandard.frame_header_size(head))
        except zstandard.ZstdError:
            return False
        last = 0
        while not last:
            block = handle.read(3)
            if len(block) < 3:
                return False
            value = int.from_bytes(block, "little")
            last, kind, length = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:  # reserved
                return False
            handle.seek(1 if kind == 1 else length, os.SEEK_CUR)  # RLE blocks hold one byte
        handle.seek(4 if head[4] & 0x04 else 0, os.SEEK_CUR)  # the content checksum
        return handle.tell() == os.fstat(handle.fileno()).st_size


def _shown(name: str) -> str:
    """A name from the file, safe on one line."""
    return repr(name[:80] + ("…" if len(name) > 80 else ""))
