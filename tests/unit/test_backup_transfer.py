"""backups/transfer.py: an export carries a backup whole; an import trusts none of it.

Exports are made from a real store in tmp_path; crafted ones are a genuine
export taken apart and put together again with one thing changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import time
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from ollama_stack.backups import check, transfer
from ollama_stack.backups.manifest import Entry, FileRecord, Manifest, VolumeRecord
from ollama_stack.backups.store import BadBackup, Store
from ollama_stack.common.errors import ConfigError, ExitCode, StackError

from .test_tasks import run_program, stderr_lines


def new_store(path: Path) -> Store:
    store = Store(path)
    store.prepare()
    return store


@pytest.fixture
def here(tmp_path: Path) -> Store:
    return new_store(tmp_path / "here")


@pytest.fixture
def there(tmp_path: Path) -> Store:
    return new_store(tmp_path / "there")


def take(store: Store, *contents: bytes) -> str:
    """A committed snapshot holding these contents (the first also as secrets.env)."""
    snapshot_id = store.new_snapshot(time.time(), "carried")
    entries = [Entry(path=".", type="dir", mode=0o755, uid=0, gid=0)]
    stored = [store.put(io.BytesIO(content)) for content in contents]
    for number, (digest, size, _) in enumerate(stored):
        entries.append(
            Entry(
                path=f"f{number}", type="file", mode=0o600, uid=70, gid=70, size=size, sha256=digest
            )
        )
    volume = VolumeRecord(service="webui", name="webui_data", mount="/data", entries=entries)
    digest, size, _ = stored[0]
    secrets = FileRecord(name="secrets.env", sha256=digest, size=size, mode=0o600)
    manifest = Manifest(
        id=snapshot_id,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        description="carried",
        volumes=[volume],
        files=[secrets],
        size=sum(size for _, size, _ in stored),
    )
    store.commit(manifest)
    return snapshot_id


CONTENTS = (b"WEBUI_SECRET_KEY=s3cret\n", os.urandom(300_000), b"", b"chat " * 50_000)


def everything(store: Store) -> dict[str, bytes]:
    """What the store holds (the lock file aside), to show an import added nothing."""
    return {
        str(p.relative_to(store.root)): p.read_bytes()
        for p in sorted(store.root.rglob("*"))
        if p.is_file() and p.name != "lock"
    }


def test_an_export_imported_elsewhere_is_the_same_backup_and_verifies(here, there, tmp_path):
    snapshot_id = take(here, *CONTENTS)
    target = tmp_path / "carry.tar"
    exported = transfer.export_file(here, snapshot_id, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # it holds the secrets
    assert exported.size == target.stat().st_size and exported.blobs == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    with tarfile.open(target) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names[0] == "ollama-stack-export.json" and names[-1] == "manifest.json"
        digests = sorted(here.manifest(snapshot_id).blobs())
        assert names[1:-1] == [f"blobs/{d}" for d in digests]
        for digest in digests:  # as stored: compressed, byte for byte
            assert tar.extractfile(f"blobs/{digest}").read() == here.blob_path(digest).read_bytes()  # type: ignore[union-attr]
        assert json.loads(tar.extractfile(names[0]).read())["id"] == snapshot_id  # type: ignore[union-attr]

    with target.open("rb") as handle:
        imported = transfer.import_stream(there, handle, str(target))
    assert (imported.id, imported.blobs_received, imported.blobs_present) == (snapshot_id, 4, 0)
    assert there.manifest(snapshot_id) == here.manifest(snapshot_id)
    manifest = "snapshots/" + snapshot_id + "/manifest.json"
    assert everything(there)[manifest] == everything(here)[manifest]
    check.verify(there, snapshot_id)
    (info,) = there.list()
    assert info.complete and info.description == "carried"
    assert list((there.root / "tmp").iterdir()) == []


def test_an_export_streams_the_same_bytes_and_an_import_reads_them_from_a_stream(
    here, there, tmp_path
):
    snapshot_id = take(here, *CONTENTS)
    transfer.export_file(here, snapshot_id, tmp_path / "carry.tar")
    sink = io.BytesIO()
    assert transfer.export_stream(here, snapshot_id, sink).file == "-"
    assert sink.getvalue() == (tmp_path / "carry.tar").read_bytes()
    transfer.import_stream(there, io.BytesIO(sink.getvalue()), "stdin")
    check.verify(there, snapshot_id)


def test_a_blob_already_in_the_store_is_read_past_not_written_again(here, there):
    snapshot_id = take(here, b"model weights", b"chat")
    already = there.put(io.BytesIO(b"model weights"))[0]
    before = there.blob_path(already).stat()
    sink = io.BytesIO()
    transfer.export_stream(here, snapshot_id, sink)
    sink.seek(0)
    imported = transfer.import_stream(there, sink, "stdin")
    assert (imported.blobs_received, imported.blobs_present) == (1, 1)
    after = there.blob_path(already).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    check.verify(there, snapshot_id)


def test_an_export_never_replaces_a_file_and_never_carries_a_damaged_backup(here, tmp_path):
    snapshot_id = take(here, b"chat")
    existing = tmp_path / "carry.tar"
    existing.write_bytes(b"keep me")
    blob = here.blob_path(hashlib.sha256(b"chat").hexdigest())
    blob.write_bytes(zstandard.ZstdCompressor().compress(b"chaT"))
    with pytest.raises(ConfigError, match="already exists"):  # said before a long verify
        transfer.export_file(here, snapshot_id, existing)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(BadBackup, match="does not hash to its name"):
        transfer.export_file(here, snapshot_id, tmp_path / "new.tar")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["carry.tar"]


def test_a_reader_that_stops_early_is_one_line_not_a_traceback(here):
    class Closed(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    snapshot_id = take(here, b"chat")
    with pytest.raises(StackError, match="stopped before its end"):
        transfer.export_stream(here, snapshot_id, Closed())


def test_memory_stays_flat_whatever_the_blob_size(here, there, tmp_path):
    snapshot_id = take(here, os.urandom(48 << 20))
    tracemalloc.start()
    try:
        transfer.export_file(here, snapshot_id, tmp_path / "carry.tar")
        exported = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        with (tmp_path / "carry.tar").open("rb") as handle:
            transfer.import_stream(there, handle, "carry.tar")
        imported = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exported < 12 << 20 and imported < 12 << 20  # a few 1 MiB chunks, not 48 MiB


# -- crafted exports -------------------------------------------------------------------------

Member = tuple[tarfile.TarInfo, bytes]


def taken_apart(store: Store, snapshot_id: str) -> list[Member]:
    sink = io.BytesIO()
    transfer.export_stream(store, snapshot_id, sink)
    sink.seek(0)
    with tarfile.open(fileobj=sink) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def put_together(members: list[Member]) -> bytes:
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members:
            member.size = len(data) if member.isreg() else 0
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return sink.getvalue()


def plain(name: str, data: bytes) -> Member:
    member = tarfile.TarInfo(name)
    member.mode = 0o600
    return member, data


def special(name: str, kind: bytes, link: str = "") -> Member:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    return member, b""


def with_manifest(members: list[Member], **change) -> list[Member]:
    document = json.loads(members[-1][1])
    document.update(change)
    return [*members[:-1], plain("manifest.json", json.dumps(document).encode())]


def blob_members(members: list[Member]) -> list[Member]:
    return [m for m in members if m[0].name.startswith("blobs/")]


def frame(content: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(content)


OTHER = hashlib.sha256(b"other").hexdigest()


def craft(kind: str, members: list[Member]) -> bytes:
    """The genuine export with one thing wrong."""
    head, blobs, last = members[0], blob_members(members), members[-1]
    first_blob = blobs[0][0].name
    crafted: dict[str, list[Member]] = {
        "a name no export has": [head, *blobs, plain("notes.txt", b"hi"), last],
        "a blob name that is no hash": [head, plain("blobs/abc", frame(b"x")), *blobs, last],
        "../ in a name": [head, plain("../x", b"x"), *blobs, last],
        "./ before a name": [head, *blobs, plain("./manifest.json", last[1])],
        "an absolute name": [head, plain("/etc/cron.d/x", b"x"), *blobs, last],
        "a symlink member": [
            head,
            special(first_blob, tarfile.SYMTYPE, "/etc/shadow"),
            *blobs[1:],
            last,
        ],
        "a hard link member": [
            head,
            special(first_blob, tarfile.LNKTYPE, "/etc/shadow"),
            *blobs[1:],
            last,
        ],
        "a device member": [head, special(first_blob, tarfile.CHRTYPE), *blobs[1:], last],
        "a directory member": [head, special("blobs", tarfile.DIRTYPE), *blobs, last],
        "a fifo manifest": [head, *blobs, special("manifest.json", tarfile.FIFOTYPE)],
        "content under another hash": [head, plain(first_blob, frame(b"other")), *blobs[1:], last],
        "a blob that is not zstd": [head, plain(f"blobs/{OTHER}", b"other"), *blobs, last],
        "a second frame after a blob": [
            head,
            plain(first_blob, blobs[0][1] + frame(b"")),
            *blobs[1:],
            last,
        ],
        "garbage after a blob": [
            head,
            plain(first_blob, blobs[0][1] + b"\0" * 4),
            *blobs[1:],
            last,
        ],
        "a blob the manifest names left out": [head, *blobs[1:], last],
        "a blob no manifest names": [head, *blobs, plain(f"blobs/{OTHER}", frame(b"other")), last],
        "a blob twice": [head, blobs[0], *blobs, last],
        "no header first": [*blobs, head, last],
        "a header of a newer format": [
            plain(head[0].name, json.dumps({**json.loads(head[1]), "format": 2}).encode()),
            *blobs,
            last,
        ],
        "a header naming no id": [
            plain(head[0].name, b'{"format": 1, "id": "../x"}'),
            *blobs,
            last,
        ],
        "no manifest": [head, *blobs],
        "a member after the manifest": [
            head,
            *blobs,
            last,
            plain(f"blobs/{OTHER}", frame(b"other")),
        ],
        "a damaged manifest": [head, *blobs, plain("manifest.json", last[1][:-20])],
        "a manifest of another id": with_manifest(members, id="20250101T000000Z-abcdef"),
        "a manifest naming a path as a blob": with_manifest(
            members,
            files=[{"name": "x", "sha256": "../../../etc/passwd", "size": 1, "mode": 384}],
        ),
        "a manifest saying another size": with_manifest(
            members,
            files=[{**json.loads(last[1])["files"][0], "size": 999}],
        ),
    }
    return put_together(crafted[kind])


CRAFTED = [
    ("a name no export has", "'notes.txt', which no export has"),
    ("a blob name that is no hash", "'blobs/abc', which no export has"),
    ("../ in a name", "'../x', which no export has"),
    ("./ before a name", "'./manifest.json', which no export has"),
    ("an absolute name", "'/etc/cron.d/x', which no export has"),
    ("a symlink member", "as something other than a plain file"),
    ("a hard link member", "as something other than a plain file"),
    ("a device member", "as something other than a plain file"),
    ("a directory member", "'blobs', which no export has"),
    ("a fifo manifest", "as something other than a plain file"),
    ("content under another hash", "whose content does not hash to its name"),
    ("a blob that is not zstd", "that is not zstd"),
    ("a second frame after a blob", "not exactly one zstd frame"),
    ("garbage after a blob", "zstd"),
    ("a blob the manifest names left out", "which its manifest names"),
    ("a blob no manifest names", "which its manifest does not name"),
    ("a blob twice", "twice"),
    ("no header first", "not ollama-stack-export.json"),
    ("a header of a newer format", "is export format 2"),
    ("a header naming no id", "names no backup id"),
    ("no manifest", "ends before its manifest"),
    ("a member after the manifest", "after its manifest"),
    ("a damaged manifest", "has a damaged manifest"),
    ("a manifest of another id", "has the manifest of '20250101T000000Z-abcdef'"),
    ("a manifest naming a path as a blob", "'../../../etc/passwd', not a content hash"),
    ("a manifest saying another size", "the manifest says 999"),
]


@pytest.mark.parametrize(("kind", "why"), CRAFTED, ids=[kind for kind, _ in CRAFTED])
def test_a_crafted_export_is_refused_with_nothing_committed(here, there, kind, why):
    snapshot_id = take(here, b"WEBUI_SECRET_KEY=s3cret\n", b"chat " * 1000)
    data = craft(kind, taken_apart(here, snapshot_id))
    there.put(io.BytesIO(b"already there"))
    before = everything(there)
    with pytest.raises(BadBackup) as refused:
        transfer.import_stream(there, io.BytesIO(data), "carry.tar")
    assert refused.value.code == ExitCode.BAD_BACKUP
    assert why in refused.value.message and "\n" not in refused.value.message
    assert everything(there) == before  # no snapshot, no blob, no temporary file


def test_the_genuine_export_the_crafted_ones_start_from_is_accepted(here, there):
    """Without this, a crafting helper that broke every file would pass the test above."""
    snapshot_id = take(here, b"WEBUI_SECRET_KEY=s3cret\n", b"chat " * 1000)
    data = put_together(taken_apart(here, snapshot_id))
    transfer.import_stream(there, io.BytesIO(data), "carry.tar")
    check.verify(there, snapshot_id)


def cuts(data: bytes) -> dict[str, int]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        blob, manifest = tar.getmembers()[1], tar.getmembers()[-1]
    return {
        "empty": 0,
        "inside the first header": 100,
        "inside a blob": blob.offset_data + 1000,
        "before the manifest": manifest.offset,
        "inside the manifest's header": manifest.offset + 200,
        "inside the manifest": manifest.offset_data + manifest.size // 2,
    }


@pytest.mark.parametrize(
    "where",
    [
        "empty",
        "inside the first header",
        "inside a blob",
        "before the manifest",
        "inside the manifest's header",
        "inside the manifest",
    ],
)
def test_a_truncated_export_is_refused_with_nothing_committed(here, there, tmp_path, where):
    snapshot_id = take(here, os.urandom(200_000), b"chat")
    transfer.export_file(here, snapshot_id, tmp_path / "carry.tar")
    data = (tmp_path / "carry.tar").read_bytes()
    before = everything(there)
    with pytest.raises(BadBackup, match="cut short"):
        transfer.import_stream(there, io.BytesIO(data[: cuts(data)[where]]), "carry.tar")
    assert everything(there) == before


def test_an_id_already_in_the_store_is_refused_naming_it(here, there):
    snapshot_id = take(here, b"chat")
    sink = io.BytesIO()
    transfer.export_stream(here, snapshot_id, sink)
    transfer.import_stream(there, io.BytesIO(sink.getvalue()), "carry.tar")
    before = everything(there)
    with pytest.raises(ConfigError, match=f"backup {snapshot_id} is already in"):
        transfer.import_stream(there, io.BytesIO(sink.getvalue()), "carry.tar")
    with pytest.raises(ConfigError, match=f"backup {snapshot_id} is already in"):
        transfer.import_stream(here, io.BytesIO(sink.getvalue()), "carry.tar")
    assert everything(there) == before


def test_one_frame_is_exactly_what_the_store_writes(here, tmp_path):
    for content in (b"", b"x", os.urandom(1 << 20), b"\0" * (3 << 20)):
        digest = here.put(io.BytesIO(content))[0]
        assert transfer.one_frame(here.blob_path(digest))
    blob = tmp_path / "blob"
    for bad in (b"", b"\x28\xb5\x2f", frame(b"x")[:-1], frame(b"x") + frame(b"y")):
        blob.write_bytes(bad)
        assert not transfer.one_frame(blob)


# -- the tasks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backup.export", "--help", "x.tar"], "reads the word after it as a backup id"),
        (["backup.export", "20261203T000000Z-abcdef", "--help"], "reads the word there as a FILE"),
        (["backup.import", "--file", ""], "backup.import needs a FILE"),
        (
            ["backup.export", "--id", "20261203T000000Z-abcdef", "--file", "-", "--json"],
            "not with --json",
        ),
    ],
)
def test_the_tasks_refuse_bad_input_in_one_line(capsys, stack_home, argv, message):
    assert run_program(*argv) == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert lines[0].startswith("error: ") and message in lines[0] and len(lines) == 1


def test_the_tasks_carry_a_backup_between_stores(capsys, stack_home, tmp_path):
    here = new_store(stack_home / "backups")
    snapshot_id = take(here, b"chat")
    target = tmp_path / "carry.tar"
    assert run_program("backup.export", snapshot_id, str(target), "--json") == 0
    assert json.loads(capsys.readouterr().out)["file"] == str(target)
    assert run_program("backup.export", snapshot_id, str(target)) == 2  # never replaced
    assert "already exists" in capsys.readouterr().err
    other = tmp_path / "other"
    assert run_program("backup.import", str(target), "--to", str(other), "--json") == 0
    assert json.loads(capsys.readouterr().out)["id"] == snapshot_id
    check.verify(Store(other), snapshot_id)
