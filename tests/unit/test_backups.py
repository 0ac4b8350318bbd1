"""backups/: the store's blobs and commit point, verify, and the snapshot's path rules.

The live-engine tier (tests/integration/test_backup.py) takes real backups;
these check the pieces that must hold whatever the engine does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest

from ollama_stack.backups import check, snapshot
from ollama_stack.backups.manifest import Entry, FileRecord, Manifest, VolumeRecord
from ollama_stack.backups.store import BadBackup, Store
from ollama_stack.common.errors import ConfigError, ExitCode


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


class Pipe:
    """A non-seekable stream that hands out at most ``piece`` bytes a read, as a
    pipe does, and can break after ``fail_after`` bytes."""

    def __init__(self, data: bytes, piece: int = 300_000, fail_after: int | None = None) -> None:
        self.data, self.at, self.piece, self.fail_after = data, 0, piece, fail_after

    def readinto(self, buffer) -> int:
        if self.fail_after is not None and self.at >= self.fail_after:
            raise OSError("the copy broke")
        part = self.data[self.at : self.at + min(len(buffer), self.piece)]
        buffer[: len(part)] = part
        self.at += len(part)
        return len(part)

    def read(self, size: int = -1) -> bytes:
        buffer = bytearray(len(self.data) if size < 0 else size)
        done = 0
        while done < len(buffer) and (got := self.readinto(memoryview(buffer)[done:])):
            done += got
        return bytes(buffer[:done])


def test_put_keeps_every_chunk_in_order_through_its_threads(store):
    content = os.urandom(13 << 20 | 12345)  # many chunks, more than are ever in flight
    digest, size, _ = store.put(Pipe(content), known=hashlib.sha256(content).hexdigest())
    assert (digest, size) == (hashlib.sha256(content).hexdigest(), len(content))
    assert store.open_blob(digest).read() == content


def test_a_stream_that_breaks_half_way_leaves_nothing_behind(store):
    with pytest.raises(OSError, match="the copy broke"):
        store.put(Pipe(os.urandom(6 << 20), fail_after=3 << 20))
    assert list((store.root / "tmp").iterdir()) == []
    assert not any(store.blobs.iterdir())


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def read_all(content) -> bytes:
    out, buffer = bytearray(), memoryview(bytearray(1 << 20))
    while done := content.readinto(buffer):
        out += buffer[:done]
    return bytes(out)


def test_the_volume_reader_takes_contents_straight_from_the_pipe():
    def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        return info

    big, small = os.urandom((3 << 20) + 7), b"chat"
    archive = tar_of(
        (member(".", tarfile.DIRTYPE), None),
        (member("./" + "ü" * 150), big),  # a PAX header first: the long unicode name
        (member("./skipped"), os.urandom(70_000)),  # not read: the reader seeks past it
        (member("./hard", tarfile.LNKTYPE, "./skipped"), None),
        (member("./empty"), b""),
        (member("./small"), small),
    )
    pipe = snapshot._Forward(Pipe(archive))
    read = {}
    with tarfile.open(fileobj=pipe, mode="r:") as tar:
        for info in tar:
            if info.isreg() and info.name != "./skipped":
                read[info.name] = read_all(pipe.content(info))
            else:
                read[info.name] = info.type
    assert read == {
        ".": tarfile.DIRTYPE,
        "./" + "ü" * 150: big,
        "./skipped": tarfile.REGTYPE,
        "./hard": tarfile.LNKTYPE,
        "./empty": b"",
        "./small": small,
    }


def test_a_file_cut_short_in_the_pipe_is_an_error_not_a_short_file():
    archive = tar_of((tarfile.TarInfo("./model"), os.urandom(100_000)))
    pipe = snapshot._Forward(Pipe(archive[:60_000]))
    with tarfile.open(fileobj=pipe, mode="r:") as tar, pytest.raises(tarfile.ReadError):
        read_all(pipe.content(tar.next()))


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


def test_a_manifest_that_cannot_be_read_is_listed_not_fatal(store):
    snapshot_id = store.new_snapshot(time.time(), "")
    (store.snapshot_dir(snapshot_id) / "manifest.json").mkdir()  # read() fails with an OSError
    (info,) = store.list()
    assert info.complete is False and "cannot be read" in info.problem


def test_an_existing_store_directory_keeps_its_mode(tmp_path):
    shared = tmp_path / "nas"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    Store(shared).prepare()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755  # a mount point is not ours to change
    assert stat.S_IMODE((shared / "blobs").stat().st_mode) == 0o700
    fresh = tmp_path / "fresh" / "store"
    Store(fresh).prepare()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "field, value",
    [("mode", -1), ("mode", 0o10000), ("uid", -5), ("gid", 2**32), ("size", -1), ("mtime", 2**50)],
)
def test_a_manifest_entry_out_of_bounds_is_refused_when_read(field, value):
    fields = {"path": "f", "type": "file", "mode": 0o644, "uid": 0, "gid": 0, "sha256": "0" * 64}
    with pytest.raises(ValueError):
        Entry(**{**fields, field: value})
    assert Entry(**{**fields, "mtime": -86400}).mtime == -86400  # a file from 1969 is fine


def test_a_description_with_control_characters_is_refused():
    with pytest.raises(ConfigError, match="control character"):
        snapshot.Options(description="nightly\x1b]0;pwned\x07")
    assert snapshot.Options(description="nightly: ü").description == "nightly: ü"


@pytest.mark.parametrize(
    "bad", ["../etc", "latest", "20261203T000000Z-zzzzzz", "", "20261203T000000Z-abcdef\n"]
)
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
    assert snapshot.matches("cache/embedding/model.bin", patterns)
    assert snapshot.matches("cache/embedding", patterns)
    assert snapshot.matches("x/scratch.tmp", patterns)
    assert not snapshot.matches("cache/tool/output.png", patterns)


def test_only_model_blobs_named_by_their_hash_are_content_addressed():
    from ollama_stack.stack.services import CATALOG

    (volume,) = CATALOG["ollama"].volumes
    digest = "a" * 64
    assert snapshot._content_name(f"models/blobs/sha256-{digest}", volume) == digest
    assert snapshot._content_name(f"models/blobs/sha256-{digest}-partial", volume) is None
    assert snapshot._content_name(f"elsewhere/sha256-{digest}", volume) is None


# -- restore's checks and tar ------------------------------------------------------------


def entry(path: str, kind: str = "file", link: str | None = None) -> Entry:
    digest = "a" * 64 if kind == "file" else None
    return Entry(path=path, type=kind, mode=0o644, uid=0, gid=0, sha256=digest, link=link)  # type: ignore[arg-type]


def volume_of(*entries: Entry, service: str = "webui", name: str = "webui_data") -> VolumeRecord:
    return VolumeRecord(service=service, name=name, mount="/anywhere", entries=list(entries))


ROOT_DIR = entry(".", "dir")


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([ROOT_DIR, entry("../x")], "leaves the volume"),
        ([ROOT_DIR, entry("/etc/passwd")], "leaves the volume"),
        ([ROOT_DIR, entry("a/./b")], "leaves the volume"),
        ([ROOT_DIR, entry("d/f")], "not a directory listed before it"),
        ([ROOT_DIR, entry("l", "symlink", "."), entry("l/f")], "not a directory"),
        ([ROOT_DIR, entry("l", "symlink", "../../etc")], "points outside"),
        ([ROOT_DIR, entry("l", "symlink", "/etc/hostname")], "points outside"),
        ([ROOT_DIR, entry("h", "hardlink", "missing")], "hard link to a file not listed"),
        ([ROOT_DIR, entry("f"), entry("f")], "listed twice"),
        ([entry(".", "file")], "root must be a directory"),
        ([ROOT_DIR, entry("f"), entry("f\x00")], "control character"),
        ([ROOT_DIR, entry("l", "symlink", "..\x00")], "control character"),
        ([ROOT_DIR, entry("x" * 256)], "overlong name"),
        (
            [
                ROOT_DIR,
                entry("d", "dir"),
                entry("d/l", "symlink", ".."),
                entry("s", "symlink", "d/l/.."),
            ],
            "points outside",
        ),
    ],
)
def test_restore_refuses_entries_that_could_write_outside_the_volume(entries, why):
    from ollama_stack.backups.restore import refuse_unsafe

    with pytest.raises(BadBackup, match=why):
        refuse_unsafe(volume_of(*entries))


def test_restore_refuses_a_volume_this_installation_does_not_have():
    from ollama_stack.backups.restore import refuse_unsafe

    with pytest.raises(BadBackup, match="does not have"):
        refuse_unsafe(volume_of(ROOT_DIR, service="webui", name="someone_elses"))
    with pytest.raises(BadBackup, match="does not have"):
        refuse_unsafe(volume_of(ROOT_DIR, service="postgres", name="webui_data"))


def test_restore_accepts_links_that_stay_inside():
    from ollama_stack.backups.restore import refuse_unsafe

    refuse_unsafe(
        volume_of(
            ROOT_DIR,
            entry("d", "dir"),
            entry("d/f"),
            entry("d/up", "symlink", "../d/f"),
            entry("h", "hardlink", "d/f"),
        )
    )


def test_the_tar_written_for_a_restore_holds_each_entry_as_recorded(store):
    import tarfile

    from ollama_stack.backups.restore import write_tar

    digest, size, _ = store.put(io.BytesIO(b"secret chat"))
    entries = [
        Entry(path=".", type="dir", mode=0o755, uid=0, gid=0),
        Entry(path="ü", type="dir", mode=0o700, uid=70, gid=70),
        Entry(path="ü/f", type="file", mode=0o600, uid=70, gid=70, size=size, sha256=digest),
        Entry(path="ü/h", type="hardlink", mode=0o600, uid=70, gid=70, link="ü/f"),
        Entry(path="l", type="symlink", mode=0o777, uid=0, gid=0, link="ü/f"),
    ]
    sink = io.BytesIO()
    write_tar(store, volume_of(*entries), sink)
    sink.seek(0)
    with tarfile.open(fileobj=sink) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members) == [".", "./ü", "./ü/f", "./ü/h", "./l"]
        assert (members["./ü/f"].mode, members["./ü/f"].uid) == (0o600, 70)
        assert tar.extractfile("./ü/f").read() == b"secret chat"  # type: ignore[union-attr]
        assert members["./ü/h"].islnk() and members["./ü/h"].linkname == "./ü/f"
        assert members["./l"].issym() and members["./l"].linkname == "ü/f"


def test_the_restore_tar_is_the_one_tarfile_writes_whatever_the_sizes(store):
    from ollama_stack.backups.restore import write_tar

    def stored(path: str, content: bytes) -> Entry:
        digest, size, _ = store.put(io.BytesIO(content))
        return Entry(path=path, type="file", mode=0o640, uid=70, gid=7, size=size, sha256=digest)

    entries = [
        Entry(path=".", type="dir", mode=0o755, uid=0, gid=0, mtime=1_700_000_000),
        stored("ü" * 120, os.urandom((2 << 20) + 1)),  # a PAX name; content past one chunk
        stored("empty", b""),
        stored("n" * 200, b"q" * 512),
    ]
    ours = io.BytesIO()
    write_tar(store, volume_of(*entries), ours)
    theirs = io.BytesIO()  # what tarfile's own stream writer made of the same entries
    with tarfile.open(fileobj=theirs, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo("." if e.path == "." else f"./{e.path}")
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, e.mtime
            info.type = tarfile.DIRTYPE if e.type == "dir" else tarfile.REGTYPE
            info.size = e.size
            tar.addfile(info, store.open_blob(e.sha256) if e.sha256 else None)
    assert ours.getvalue() == theirs.getvalue()


def test_a_blob_shorter_than_its_entry_stops_the_restore_tar(store):
    from ollama_stack.backups.restore import write_tar

    digest, size, _ = store.put(io.BytesIO(b"short"))
    entry = Entry(path="f", type="file", mode=0o600, uid=0, gid=0, size=size + 1, sha256=digest)
    with pytest.raises(BadBackup, match="shorter than the manifest says"):
        write_tar(
            store,
            volume_of(Entry(path=".", type="dir", mode=0o755, uid=0, gid=0), entry),
            io.BytesIO(),
        )


def test_a_restore_keeps_what_the_backup_left_out_from_the_safety_copy():
    from ollama_stack.backups.restore import with_left_out

    def made(*entries: Entry, excluded: list[str]) -> Manifest:
        volume = volume_of(ROOT_DIR, *entries)
        return Manifest(id="x", created="", volumes=[volume], excluded=excluded)

    backup = made(entry("chats.txt"), excluded=["webui:cache/embedding", "ollama:*.tmp"])
    safety = made(
        entry("cache", "dir"),
        entry("cache/embedding", "dir"),
        entry("cache/embedding/model.bin"),
        entry("cache/tool.png"),
        entry("chats.txt"),
        excluded=[],
    )
    whole = with_left_out(backup.volumes[0], backup, safety)
    assert [e.path for e in whole.entries] == [
        ".",
        "chats.txt",
        "cache",
        "cache/embedding",
        "cache/embedding/model.bin",
    ]  # the tool output was in the backup's scope: the backup's answer (none) stands


def test_one_backup_or_restore_at_a_time_per_installation(local_paths):
    import subprocess
    import sys

    from ollama_stack.common.errors import ConfigError
    from ollama_stack.stack import config

    with (
        config.installation_lock(local_paths, "the backup"),
        config.installation_lock(local_paths, "its safety copy"),  # nests in one process
    ):
        pass
    lock = local_paths.state_file.parent / ".data.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with (
            pytest.raises(ConfigError, match="another backup or restore"),
            config.installation_lock(local_paths, "the restore"),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with config.installation_lock(local_paths, "the backup"):  # free again
        pass


def test_a_backup_leaves_out_a_link_chain_its_restore_would_refuse():
    import tarfile

    def link(name: str, target: str) -> tarfile.TarInfo:
        member = tarfile.TarInfo(name)
        member.type, member.linkname = tarfile.SYMTYPE, target
        return member

    kept = {".": ROOT_DIR, "d": entry("d", "dir"), "d/l": entry("d/l", "symlink", "..")}
    assert snapshot._not_restorable(link("./d/l", ".."), "d/l", {".": ROOT_DIR}) == ""
    # each link alone stays inside; followed one through the other, they leave
    why = snapshot._not_restorable(link("./s", "d/l/.."), "s", kept)
    assert why == "a link out of the volume (d/l/..)"


def test_a_backup_from_a_newer_config_schema_needs_force():
    from ollama_stack.backups import restore
    from ollama_stack.stack import config

    newer = Manifest(id="20261203T000000Z-abcdef", created="now", config_schema=99)
    with pytest.raises(ConfigError, match="config schema 99") as refused:
        restore._refuse_newer_config(newer)
    assert "--force" in (refused.value.remedy or "")
    restore._refuse_newer_config(newer.model_copy(update={"config_schema": config.CONFIG_SCHEMA}))


def test_a_read_only_store_is_still_read(store, monkeypatch):
    """A store on a read-only mount cannot hold the readers' lock, and cannot
    be pruned either: verify goes on without the lock."""
    import errno

    from ollama_stack.backups import store as store_module

    def read_only(path, busy):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(store_module, "shared", read_only)
    snapshot_id, _ = committed(store, b"kept")
    assert check.verify(store, snapshot_id).id == snapshot_id
