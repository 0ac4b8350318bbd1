"""backups/: the store's blobs and commit point, verify, and the snapshot's path rules.

The live-engine tier (tests/integration/test_backup.py) takes real backups;
these check the pieces that must hold whatever the engine does.
"""

from __future__ import annotations

import io
import json
import os
import stat
import time
from pathlib import Path

import pytest

from ollama_stack.backups import check, snapshot
from ollama_stack.backups.manifest import Entry, FileRecord, Manifest, VolumeRecord
from ollama_stack.backups.store import BadBackup, Store
from ollama_stack.common.errors import ExitCode


@pytest.fixture
def store(tmp_path: Path) -> Store:
    made = Store(tmp_path / "store")
    made.prepare()
    return made


def test_put_stores_content_once_by_its_hash_privately(store):
    digest, size, written = store.put(io.BytesIO(b"hello" * 1000))
    assert size == 5000 and written > 0
    again = store.put(io.BytesIO(b"hello" * 1000))
    assert again == (digest, 5000, 0)  # already there: nothing new written
    blob = store.blob_path(digest)
    assert stat.S_IMODE(blob.stat().st_mode) == 0o600
    assert store.open_blob(digest).read() == b"hello" * 1000
    assert list((store.root / "tmp").iterdir()) == []


def test_put_refuses_content_that_does_not_match_its_name(store):
    with pytest.raises(BadBackup, match="hashes to"):
        store.put(io.BytesIO(b"damaged model"), known="0" * 64)
    assert not store.blob_path("0" * 64).exists()
    assert list((store.root / "tmp").iterdir()) == []


def test_a_dead_writers_half_blob_is_cleared_by_the_next_writer(store):
    dead = store.root / "tmp" / "999999999-abc"  # no such pid
    dead.write_bytes(b"half")
    store.prepare()
    assert not dead.exists()


def manifest(snapshot_id: str, digest: str, size: int) -> Manifest:
    entry = Entry(path="a/f", type="file", mode=0o600, uid=70, gid=70, size=size, sha256=digest)
    volume = VolumeRecord(service="svc", name="data", mount="/data", entries=[entry])
    return Manifest(
        id=snapshot_id,
        created="2026-12-03T00:00:00Z",
        volumes=[volume],
        files=[FileRecord(name="secrets.env", sha256=digest, size=size, mode=0o600)],
        size=size,
    )


def test_a_snapshot_is_complete_only_once_its_manifest_is_written(store):
    snapshot_id = store.new_snapshot(time.time(), "nightly")
    (info,) = store.list()
    assert (info.id, info.complete, info.description) == (snapshot_id, False, "nightly")
    assert "incomplete" in info.problem
    with pytest.raises(BadBackup) as failure:
        store.manifest(snapshot_id)
    assert failure.value.code == ExitCode.BAD_BACKUP
    digest, size, _ = store.put(io.BytesIO(b"data"))
    store.commit(manifest(snapshot_id, digest, size))
    (info,) = store.list()
    assert info.complete and info.size == 4
    assert json.loads((store.snapshot_dir(snapshot_id) / "manifest.json").read_text())["id"]


def test_a_damaged_manifest_is_listed_not_hidden(store):
    snapshot_id = store.new_snapshot(time.time(), "")
    (store.snapshot_dir(snapshot_id) / "manifest.json").write_text("{not json")
    (info,) = store.list()
    assert info.complete is False and "damaged" in info.problem


@pytest.mark.parametrize("bad", ["../etc", "latest", "20261203T000000Z-zzzzzz", ""])
def test_only_real_ids_name_a_snapshot_directory(store, bad):
    with pytest.raises(BadBackup) as failure:
        store.snapshot_dir(bad)
    assert failure.value.code == ExitCode.CONFIG


def committed(store: Store, content: bytes) -> tuple[str, str]:
    snapshot_id = store.new_snapshot(time.time(), "")
    digest, size, _ = store.put(io.BytesIO(content))
    store.commit(manifest(snapshot_id, digest, size))
    return snapshot_id, digest


def test_verify_passes_a_whole_backup(store):
    snapshot_id, _ = committed(store, os.urandom(3 << 20))
    assert check.verify(store, snapshot_id).id == snapshot_id


def test_verify_names_the_first_bad_entry(store):
    snapshot_id, digest = committed(store, b"x" * 100_000)
    blob = store.blob_path(digest)
    other = store.put(io.BytesIO(b"y" * 100_000))[0]
    blob.write_bytes(store.blob_path(other).read_bytes())  # a valid frame, other content
    with pytest.raises(BadBackup, match=r"file secrets\.env .* does not hash to its name"):
        check.verify(store, snapshot_id)
    blob.write_bytes(b"\x00garbage")
    with pytest.raises(BadBackup, match="cannot be read"):
        check.verify(store, snapshot_id)
    blob.unlink()
    with pytest.raises(BadBackup, match="is missing"):
        check.verify(store, snapshot_id)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("./", "."), ("./a/b/", "a/b"), ("a//b", "a/b"), ("./../x", None), ("a/../../x", None)],
)
def test_tar_names_become_paths_inside_the_volume(name, expected):
    assert snapshot._relative(name) == expected


def test_every_pattern_is_tried_against_every_parent():
    patterns = ["*.tmp", "cache/embedding"]  # a generator once let only the first one see them
    assert snapshot._matches("cache/embedding/model.bin", patterns)
    assert snapshot._matches("cache/embedding", patterns)
    assert snapshot._matches("x/scratch.tmp", patterns)
    assert not snapshot._matches("cache/tool/output.png", patterns)


def test_only_model_blobs_named_by_their_hash_are_content_addressed():
    from ollama_stack.stack.services import CATALOG

    (volume,) = CATALOG["ollama"].volumes
    digest = "a" * 64
    assert snapshot._content_name(f"models/blobs/sha256-{digest}", volume) == digest
    assert snapshot._content_name(f"models/blobs/sha256-{digest}-partial", volume) is None
    assert snapshot._content_name(f"elsewhere/sha256-{digest}", volume) is None
