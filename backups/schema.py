"""Which schema version a service's data is at, and which an image can run.

Open WebUI migrates its SQLite database with Alembic when it starts, one way
only: an older Open WebUI exits on a newer database ("Can't locate
revision"). A backup records the revision its data is at and the version of
the image it ran; a restore compares that revision with the ones the image
it will run with ships, and refuses a newer one unless forced.

Everything comes through `docker cp` (nothing is needed in the image). Where
an image or a backup does not say, the answer is empty: unknown, not wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ollama_stack.common.errors import StackError
from ollama_stack.stack.runtime import Runtime
from ollama_stack.stack.services import ServiceSpec
from ollama_stack.stack.services.spec import DataSchema

from .manifest import VolumeRecord
from .store import Store

# Alembic writes `revision = "…"` (or `revision: str = "…"`) in each revision file.
REVISION = re.compile(r"""^revision(?:\s*:\s*str)?\s*=\s*["']([0-9A-Za-z_]+)["']""", re.M)
MAX_FILE = 1 << 20  # bytes read from one file of an image: these are small


@dataclass(frozen=True)
class ImageFacts:
    version: str = ""  # the software's own version ("" = the image does not say)
    revisions: frozenset[str] = frozenset()  # the schema revisions it knows (empty = unknown)


Opener = Callable[[str], contextlib.AbstractContextManager[IO[bytes]]]


def container_facts(rt: Runtime, spec: ServiceSpec, container: str) -> ImageFacts:
    """What the image a container was made from says about itself."""
    return _facts(spec, lambda path: rt.compose.copy_out(container, path, contents=False))


def image_facts(rt: Runtime, spec: ServiceSpec, image: str) -> ImageFacts:
    """What an image says about itself (read through a container never started)."""
    return _facts(spec, lambda path: rt.compose.copy_out_of_image(image, path))


def _facts(spec: ServiceSpec, opener: Opener) -> ImageFacts:
    schema = spec.data_schema
    if schema is None:
        return ImageFacts()
    return ImageFacts(_version(opener, schema), _revisions(opener, schema))


def _version(opener: Opener, schema: DataSchema) -> str:
    if not schema.version_file:
        return ""
    for text in _files(opener, schema.version_file):
        try:
            data = json.loads(text)
        except ValueError:
            return ""
        version = data.get("version") if isinstance(data, dict) else None
        return str(version) if isinstance(version, str | int | float) else ""
    return ""


def _revisions(opener: Opener, schema: DataSchema) -> frozenset[str]:
    found = set()
    for text in _files(opener, schema.migrations, suffix=".py"):
        match = REVISION.search(text)
        if match:
            found.add(match.group(1))
    return frozenset(found)


def _files(opener: Opener, path: str, suffix: str = "") -> Iterator[str]:
    """The text of each small regular file at ``path`` (one file, or a folder's)."""
    try:
        with opener(path) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                if member.isfile() and member.size <= MAX_FILE and member.name.endswith(suffix):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        yield handle.read().decode(errors="replace")
    except (StackError, tarfile.TarError):
        return  # not in this image: it does not say


def data_revision(store: Store, volume: VolumeRecord, schema: DataSchema) -> str:
    """The revision a backed-up database is at, read from a private scratch
    copy of it (and its write-ahead log, which may hold the latest commits)."""
    entries = {e.path: e for e in volume.entries if e.type == "file" and e.sha256}
    database = entries.get(schema.database)
    if database is None:
        return ""
    with _scratch(store) as copy:
        _unpack(store, database.sha256 or "", copy)
        log = entries.get(f"{schema.database}-wal")
        if log is not None:
            _unpack(store, log.sha256 or "", Path(f"{copy}-wal"))
        try:
            with contextlib.closing(sqlite3.connect(copy)) as db:
                row = db.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error:
            return ""  # not an Alembic database (or not SQLite): it does not say
    return str(row[0]) if row else ""


@contextlib.contextmanager
def _scratch(store: Store) -> Iterator[Path]:
    """A path in the store's private tmp/ (named as its other temporary files
    are, so a killed run's leftovers are cleared by the next writer)."""
    copy = store.root / "tmp" / f"{os.getpid()}-{secrets.token_hex(8)}.db"
    try:
        yield copy
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)


def _unpack(store: Store, digest: str, target: Path) -> None:
    with store.open_blob(digest) as content, open(target, "xb") as out:
        os.chmod(target, 0o600)
        shutil.copyfileobj(content, out, 1 << 20)
