"""Verifying a backup: every blob it names is there and hashes to its name."""

from __future__ import annotations

import hashlib

from ollama_stack.stack.events import Progress, emit

from .manifest import Manifest
from .store import CHUNK, BadBackup, Store, reads_store


@reads_store
def verify(store: Store, snapshot_id: str, progress: Progress | None = None) -> Manifest:
    """Re-read and re-hash all the content; raise naming the first bad entry."""
    manifest = store.manifest(snapshot_id)
    lengths: dict[str, int] = {}  # each blob is read once; every entry's size is checked
    for where, digest, size in _contents(manifest):
        problem = ""
        if digest not in lengths:
            problem, lengths[digest] = _problem(store, digest)
        if not problem and lengths[digest] != size:
            problem = (
                f"(blob {digest[:12]}…) holds {lengths[digest]} bytes, the manifest says {size}"
            )
        if problem:
            raise BadBackup(
                f"backup {snapshot_id} is damaged: {where} {problem}",
                "do not restore it; take a new backup (and check the disk it is on)",
            )
    emit(progress, "step", f"{len(lengths)} blobs re-read and re-hashed")
    return manifest


def _contents(manifest: Manifest):
    for record in manifest.files:
        yield f"file {record.name}", record.sha256, record.size
    for volume in manifest.volumes:
        for entry in volume.entries:
            if entry.type == "file" and entry.sha256:
                yield f"{volume.service}:{volume.name}/{entry.path}", entry.sha256, entry.size


def _problem(store: Store, digest: str) -> tuple[str, int]:
    """What is wrong with a blob ("" if nothing) and how many bytes it holds."""
    if not store.has_blob(digest):
        return f"(blob {digest[:12]}…) is missing", -1
    hashed, length = hashlib.sha256(), 0
    try:
        with store.open_blob(digest) as content:
            while chunk := content.read(CHUNK):
                hashed.update(chunk)
                length += len(chunk)
    except Exception as exc:  # zstd reports a damaged frame in its own way
        return f"(blob {digest[:12]}…) cannot be read: {exc}", -1
    if hashed.hexdigest() != digest:
        return f"(blob {digest[:12]}…) does not hash to its name", length
    return "", length
