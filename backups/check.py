"""Verifying a backup: every blob it names is there and hashes to its name."""

from __future__ import annotations

import hashlib

from ollama_stack.stack.events import Progress, emit

from .manifest import Manifest
from .store import CHUNK, BadBackup, Store


def verify(store: Store, snapshot_id: str, progress: Progress | None = None) -> Manifest:
    """Re-read and re-hash all the content; raise naming the first bad entry."""
    manifest = store.manifest(snapshot_id)
    checked: set[str] = set()
    for where, digest, size in _contents(manifest):
        if digest in checked:
            continue
        problem = _problem(store, digest, size)
        if problem:
            raise BadBackup(
                f"backup {snapshot_id} is damaged: {where} {problem}",
                "do not restore it; take a new backup (and check the disk it is on)",
            )
        checked.add(digest)
    emit(progress, "step", f"{len(checked)} blobs re-read and re-hashed")
    return manifest


def _contents(manifest: Manifest):
    for record in manifest.files:
        yield f"file {record.name}", record.sha256, record.size
    for volume in manifest.volumes:
        for entry in volume.entries:
            if entry.type == "file" and entry.sha256:
                yield f"{volume.service}:{volume.name}/{entry.path}", entry.sha256, entry.size


def _problem(store: Store, digest: str, size: int) -> str:
    if not store.has_blob(digest):
        return f"(blob {digest[:12]}…) is missing"
    hashed, length = hashlib.sha256(), 0
    try:
        with store.open_blob(digest) as content:
            while chunk := content.read(CHUNK):
                hashed.update(chunk)
                length += len(chunk)
    except Exception as exc:  # zstd reports a damaged frame in its own way
        return f"(blob {digest[:12]}…) cannot be read: {exc}"
    if hashed.hexdigest() != digest:
        return f"(blob {digest[:12]}…) does not hash to its name"
    if length != size:
        return f"(blob {digest[:12]}…) holds {length} bytes, the manifest says {size}"
    return ""
