"""The backup store: content-addressed blobs and one directory per snapshot.

    <store>/blobs/<2 hex>/<sha256>      a file's content, zstd-compressed (0600)
    <store>/snapshots/<id>/started.json written first: when, what for
    <store>/snapshots/<id>/manifest.json written last: the commit point
    <store>/tmp/                        blobs being written

A snapshot without a readable manifest is incomplete, whatever else its
directory holds: a backup killed at any moment (kill -9 too) leaves nothing
that looks complete, and the next one works. Blobs are written under a
temporary name, fsynced and renamed; the directories they landed in are
fsynced before the manifest is written, so a committed manifest never names
a blob a crash could lose.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, TypeVar

from pydantic import ValidationError

from ollama_stack.common.errors import ConfigError, ExitCode, StackError
from ollama_stack.common.files import fsync_dir, replace_atomically
from ollama_stack.common.locks import exclusive, shared

from .manifest import Manifest

T = TypeVar("T")
CHUNK = 1 << 20  # bytes read at a time: memory stays flat whatever the file size
# zstd level: model weights hardly shrink at any level and text shrinks almost
# as much at 1 as at 3; 1 keeps compressing off the critical path.
LEVEL = 1
DEPTH = 4  # chunks in flight between reading, hashing and compressing (memory: DEPTH MiB)
FLUSH_EVERY = 64 << 20  # bytes written between background flushes: the last fsync finds little
SNAPSHOT_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")
HEX = re.compile(r"[0-9a-f]{64}")


# One thread each, shared by every put: sha256 and zstd let go of the GIL on
# large buffers, so a chunk is hashed while it is compressed and the next is read.
_HASHING = ThreadPoolExecutor(1, "blob-sha256")
_COMPRESSING = ThreadPoolExecutor(1, "blob-zstd")
_FLUSHING = ThreadPoolExecutor(1, "blob-flush")


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int: ...


def _hash_and_compress(stream: Readable, raw: IO[bytes]) -> tuple[str, int]:
    """Read ``stream`` to its end into ``raw``, zstd-compressed; return its
    sha256 and size. Each chunk is hashed while it is compressed and the next
    one read, and the disk is kept writing in the background so the final
    fsync finds little left; memory is DEPTH chunks whatever the size."""
    import zstandard  # loaded by what writes or reads blobs: not by backup.list (~5 ms)

    digest, size, flushed = hashlib.sha256(), 0, 0
    writer = zstandard.ZstdCompressor(level=LEVEL).stream_writer(
        raw, closefd=False, write_size=CHUNK
    )
    buffers = [memoryview(bytearray(CHUNK)) for _ in range(DEPTH)]
    flight: deque[tuple[Future[Any], Future[Any]]] = deque()  # one per buffer in use
    flushing: list[Future[None]] = []
    try:
        for buffer in itertools.cycle(buffers):
            if len(flight) == DEPTH:  # the oldest chunk's buffer, free again
                _settled(flight.popleft())
            chunk = buffer[: stream.readinto(buffer)]
            if not chunk:
                break
            size += len(chunk)
            flight.append(
                (_HASHING.submit(digest.update, chunk), _COMPRESSING.submit(writer.write, chunk))
            )
            if size - flushed >= FLUSH_EVERY and all(f.done() for f in flushing):
                flushing, flushed = [_FLUSHING.submit(os.fdatasync, raw.fileno())], size
        while flight:
            _settled(flight.popleft())
        writer.flush(zstandard.FLUSH_FRAME)
        _settled(flushing)
    finally:  # after an error too: no thread may still be using a buffer or the file
        for future in [*itertools.chain.from_iterable(flight), *flushing]:
            with contextlib.suppress(Exception):
                future.result()
    return digest.hexdigest(), size


def _settled(futures: Iterable[Future[Any]]) -> None:
    for future in futures:
        future.result()


class BadBackup(StackError):
    """A backup that is incomplete, damaged or not there."""

    code = ExitCode.BAD_BACKUP


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    created: str
    complete: bool
    size: int
    description: str
    services: list[str]
    problem: str = ""  # why it is not complete

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "complete": self.complete,
            "size": self.size,
            "description": self.description,
            "services": self.services,
            **({"problem": self.problem} if self.problem else {}),
        }


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- layout ---------------------------------------------------------------

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest[:2] / digest

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def snapshot_dir(self, snapshot_id: str) -> Path:
        if not SNAPSHOT_ID.fullmatch(snapshot_id):
            raise BadBackup(
                f"{snapshot_id!r} is not a backup id",
                "`inv backup.list` shows the ids (like 20261203T141500Z-a1b2c3)",
                code=ExitCode.CONFIG,
            )
        return self.snapshots / snapshot_id

    # -- writing --------------------------------------------------------------

    def prepare(self) -> None:
        """Create the layout (private: it holds secrets) and clear dead writers' leftovers.

        A store directory that exists already (a NAS mount given with --to)
        keeps its mode: what is made inside it is private either way."""
        for directory in (self.root, self.blobs, self.snapshots, self.root / "tmp"):
            if not directory.is_dir():
                try:
                    directory.mkdir(parents=True)
                except FileExistsError:
                    continue  # another host of a fleet (a thread here) made it just now
                os.chmod(directory, 0o700)
        for leftover in (self.root / "tmp").iterdir():
            pid = leftover.name.split("-", 1)[0]
            if not pid.isdigit() or not _alive(int(pid)):
                leftover.unlink(missing_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time (create, prune, import)."""
        self.prepare()
        busy = StackError(
            f"another backup task is writing to {self.root}",
            "wait for it to finish, then try again",
        )
        with exclusive(self.root / "lock", busy):
            yield

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Backups are being read (verify, restore, export, test-restore): a
        prune must not remove them or their blobs meanwhile. Readers share."""
        if not self.snapshots.is_dir():
            yield  # no store: nothing to protect, and nothing is made
            return
        busy = StackError(
            f"a prune is removing backups from {self.root}", "wait for it to finish, then try again"
        )
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(shared(self.root / "readers.lock", busy))
            except OSError as exc:  # a store we cannot write to: no prune changes it either
                if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise
            yield

    @contextlib.contextmanager
    def without_readers(self) -> Iterator[None]:
        """For a prune: no backup is being read, and none will be until it ends."""
        busy = StackError(
            f"a backup in {self.root} is being read (verify, restore, export or test-restore)",
            "wait for it to finish, then prune again",
        )
        with exclusive(self.root / "readers.lock", busy):
            yield

    def new_snapshot(self, created: float, description: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created))
        snapshot_id = f"{stamp}-{secrets.token_hex(3)}"
        directory = self.snapshot_dir(snapshot_id)
        directory.mkdir(mode=0o700)
        started = {"id": snapshot_id, "created": _rfc3339(created), "description": description}
        replace_atomically(directory / "started.json", json.dumps(started).encode(), 0o600)
        return snapshot_id

    def put(self, stream: Readable, known: str | None = None) -> tuple[str, int, int]:
        """Store a file's content; return (sha256, size, bytes newly written).

        ``known``: the digest the content claims (Ollama names its blobs by
        it); a mismatch is refused, so a damaged model never enters the store.
        """
        tmp = self.root / "tmp" / f"{os.getpid()}-{secrets.token_hex(8)}"
        try:
            with open(tmp, "xb") as raw:
                os.chmod(tmp, 0o600)
                hexdigest, size = _hash_and_compress(stream, raw)
                raw.flush()
                os.fsync(raw.fileno())
            if known and known != hexdigest:
                raise BadBackup(
                    f"content named sha256:{known[:12]}… hashes to sha256:{hexdigest[:12]}…",
                    "the source file is damaged; pull that model again, then back up",
                )
            target = self.blob_path(hexdigest)
            if target.exists():
                return hexdigest, size, 0
            target.parent.mkdir(mode=0o700, exist_ok=True)
            written = tmp.stat().st_size
            os.replace(tmp, target)
            return hexdigest, size, written
        finally:
            tmp.unlink(missing_ok=True)

    def sync_blob_dirs(self) -> None:
        """Make every rename into blobs/ durable before a manifest names them."""
        for directory in [self.blobs, *self.blobs.iterdir()]:
            if directory.is_dir():
                fsync_dir(directory)

    def commit(self, manifest: Manifest) -> None:
        self.sync_blob_dirs()
        directory = self.snapshot_dir(manifest.id)
        document = manifest.model_dump_json(indent=1).encode()
        replace_atomically(directory / "manifest.json", document, 0o600)

    # -- reading --------------------------------------------------------------

    def open_blob(self, digest: str) -> BinaryIO:
        """The raw content of a blob, decompressed as it is read."""
        if not HEX.fullmatch(digest):
            raise BadBackup(f"{digest!r} is not a content hash", "the manifest is damaged")
        import zstandard

        handle = open(self.blob_path(digest), "rb")  # noqa: SIM115 (the reader closes it)
        return zstandard.ZstdDecompressor().stream_reader(handle, closefd=True)  # type: ignore[return-value]

    def manifest(self, snapshot_id: str) -> Manifest:
        path = self.snapshot_dir(snapshot_id) / "manifest.json"
        if not path.parent.is_dir():
            raise BadBackup(
                f"no backup {snapshot_id} in {self.root}",
                "`inv backup.list` shows the backups there",
                code=ExitCode.CONFIG,
            )
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise BadBackup(
                f"backup {snapshot_id} is incomplete (it has no manifest)",
                "it was stopped before it finished; take a new one",
            ) from None
        except (ValidationError, ValueError) as exc:
            raise BadBackup(
                f"backup {snapshot_id}'s manifest is damaged ({str(exc).splitlines()[0]})",
                "take a new backup; keep this one only for forensics",
            ) from None
        except OSError as exc:
            raise BadBackup(
                f"backup {snapshot_id}'s manifest cannot be read ({exc.strerror})",
                f"check the permissions of {path}",
            ) from None

    def list(self) -> list[SnapshotInfo]:
        """Every snapshot, oldest first; incomplete and damaged ones too."""
        if not self.snapshots.is_dir():
            return []
        found = []
        for directory in sorted(self.snapshots.iterdir()):
            if SNAPSHOT_ID.fullmatch(directory.name):
                found.append(self._info(directory))
        return found

    def _info(self, directory: Path) -> SnapshotInfo:
        try:
            manifest = self.manifest(directory.name)
        except BadBackup as exc:
            started = _read_json(directory / "started.json")
            return SnapshotInfo(
                directory.name,
                str(started.get("created", "")),
                False,
                0,
                str(started.get("description", "")),
                [],
                exc.message,
            )
        return SnapshotInfo(
            manifest.id,
            manifest.created,
            True,
            manifest.size,
            manifest.description,
            sorted({v.service for v in manifest.volumes}),  # what it holds, not what there was
        )

    # -- removing and adopting snapshots (prune, import) ------------------------

    def writer_running(self) -> bool:
        """Does a writer hold the lock now? (A dry run looks without taking it.)"""
        try:
            fd = os.open(self.root / "lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing gives the shared lock back
        return False

    def remove_snapshot(self, snapshot_id: str) -> None:
        """Un-commit first: the manifest goes and that is made durable, so a
        crash half-way leaves an incomplete snapshot, never a complete one
        whose blobs a prune went on to remove. Then the rest."""
        directory = self.snapshot_dir(snapshot_id)
        (directory / "manifest.json").unlink(missing_ok=True)
        fsync_dir(directory)
        shutil.rmtree(directory)
        fsync_dir(self.snapshots)

    def blob_files(self) -> dict[str, Path]:
        """Every blob in the store, by digest (names that are not one are left alone)."""
        found: dict[str, Path] = {}
        for directory in sorted(self.blobs.iterdir()) if self.blobs.is_dir() else []:
            for path in sorted(directory.iterdir()) if directory.is_dir() else []:
                if HEX.fullmatch(path.name) and path.name[:2] == directory.name:
                    found[path.name] = path
        return found

    def leftovers(self) -> list[Path]:
        """Temporary files in tmp/: under the lock, no writer owns any of them."""
        tmp = self.root / "tmp"
        return sorted(tmp.iterdir()) if tmp.is_dir() else []

    def staging(self) -> Path:
        """A fresh name in tmp/, led by our pid so a dead writer's is cleared."""
        return self.root / "tmp" / f"{os.getpid()}-{secrets.token_hex(8)}"

    def adopt(self, manifest: Manifest, staged: dict[str, Path]) -> None:
        """Commit a snapshot made elsewhere (import): its blobs, verified in
        tmp/, renamed in; then the manifest, last, through ``commit``."""
        directory = self.snapshot_dir(manifest.id)
        directory.mkdir(mode=0o700)
        started = {"id": manifest.id, "created": manifest.created, "imported": True}
        replace_atomically(directory / "started.json", json.dumps(started).encode(), 0o600)
        for digest, tmp in staged.items():
            target = self.blob_path(digest)
            target.parent.mkdir(mode=0o700, exist_ok=True)
            os.replace(tmp, target)
        self.commit(manifest)


def reads_store(func: Callable[..., T]) -> Callable[..., T]:
    """For a task that reads a backup (the store its first argument): a prune
    waits until it is done (see Store.reading)."""

    @functools.wraps(func)
    def reading(store: Store, *args: Any, **kwargs: Any) -> T:
        with store.reading():
            return func(store, *args, **kwargs)

    return reading


def open_store(path: Path) -> Store:
    if path.exists() and not path.is_dir():
        raise ConfigError(f"backup store {path} is not a directory", "pick a directory with --to")
    return Store(path)


def _rfc3339(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid: int) -> bool:
    """Is the writer that named a temporary file still running? (Ours cannot
    be: this process has not written yet, so the file is an earlier one's.)"""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
