"""backups/prune.py: restic's keep rules, and a prune that never costs data.

The policy is checked on (id, created) pairs alone; the prune itself on a real
store in tmp_path, with manifests and blobs made directly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from calendar import timegm
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ollama_stack.backups import check
from ollama_stack.backups.manifest import Entry, Manifest, VolumeRecord
from ollama_stack.backups.prune import Rules, choose, prune
from ollama_stack.backups.store import Store
from ollama_stack.common.errors import ConfigError, StackError

from .test_tasks import run_program, stderr_lines

# -- the policy ----------------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def backups(*stamps: str) -> list[tuple[str, datetime]]:
    """Ids named after their times, so a test reads which ones are kept."""
    return [(stamp, at(stamp)) for stamp in stamps]


SPREAD = backups(
    "2026-11-02T08:00:00+00:00",  # Monday, ISO week 45
    "2026-11-20T08:00:00+00:00",  # Friday, week 47
    "2026-11-20T20:00:00+00:00",  # the same day, later
    "2026-11-25T08:00:00+00:00",  # Wednesday, week 48
    "2026-11-26T08:00:00+00:00",  # Thursday, week 48
    "2026-11-26T09:00:00+00:00",
    "2026-11-26T10:00:00+00:00",
)


@pytest.mark.parametrize(
    ("rules", "kept"),
    [
        (
            Rules(last=2),
            {"2026-11-26T10:00:00+00:00": ["last"], "2026-11-26T09:00:00+00:00": ["last"]},
        ),
        (
            Rules(daily=3),  # the newest of each of the last three days that have one
            {
                "2026-11-26T10:00:00+00:00": ["daily"],
                "2026-11-25T08:00:00+00:00": ["daily"],
                "2026-11-20T20:00:00+00:00": ["daily"],
            },
        ),
        (
            Rules(weekly=3),  # week 46 has none: weeks that have one are counted
            {
                "2026-11-26T10:00:00+00:00": ["weekly"],
                "2026-11-20T20:00:00+00:00": ["weekly"],
                "2026-11-02T08:00:00+00:00": ["weekly"],
            },
        ),
        (
            Rules(last=1, daily=2, weekly=2),  # kept by any rule is kept, each rule named
            {
                "2026-11-26T10:00:00+00:00": ["last", "daily", "weekly"],
                "2026-11-25T08:00:00+00:00": ["daily"],
                "2026-11-20T20:00:00+00:00": ["weekly"],
            },
        ),
        (Rules(last=0), {"2026-11-26T10:00:00+00:00": ["newest"]}),
        (Rules(daily=0, weekly=0), {"2026-11-26T10:00:00+00:00": ["newest"]}),
        (Rules(last=100), {stamp: ["last"] for stamp, _ in SPREAD}),
    ],
)
def test_the_keep_rules_are_restics(rules, kept):
    assert choose(reversed(SPREAD), rules) == kept  # the order given does not matter


def test_days_and_weeks_are_utc_and_iso():
    late = at("2026-12-03T23:30:00-02:00")  # 01:30 UTC on the 4th
    early = at("2026-12-04T00:30:00+00:00")
    assert choose([("late", late), ("early", early)], Rules(daily=2)) == {"late": ["daily"]}
    new_year = backups("2026-12-31T12:00:00+00:00", "2027-01-01T12:00:00+00:00")
    assert choose(new_year, Rules(weekly=2)) == {"2027-01-01T12:00:00+00:00": ["weekly"]}
    naive = datetime(2026, 12, 3, 23, 0)  # taken as UTC
    aware = datetime(2026, 12, 3, 23, 0, tzinfo=timezone(timedelta(hours=-3)))  # the 4th in UTC
    assert choose([("naive", naive), ("aware", aware)], Rules(daily=2)) == {
        "aware": ["daily"],
        "naive": ["daily"],
    }


def test_no_backups_keeps_nothing_and_equal_times_are_ordered_by_id():
    assert choose([], Rules(last=3)) == {}
    same = at("2026-12-03T00:00:00+00:00")
    assert choose([("b", same), ("a", same)], Rules(last=1)) == {"b": ["last"]}


# -- a store -------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    made = Store(tmp_path / "store")
    made.prepare()
    return made


def take(store: Store, when: str, *contents: bytes) -> str:
    """A committed snapshot taken at ``when`` holding these contents."""
    created = timegm(time.strptime(when, "%Y-%m-%dT%H:%M:%SZ"))
    snapshot_id = store.new_snapshot(created, "")
    entries = [Entry(path=".", type="dir", mode=0o755, uid=0, gid=0)]
    for number, content in enumerate(contents):
        digest, size, _ = store.put(io.BytesIO(content))
        entries.append(
            Entry(
                path=f"f{number}", type="file", mode=0o644, uid=0, gid=0, size=size, sha256=digest
            )
        )
    volume = VolumeRecord(service="webui", name="webui_data", mount="/data", entries=entries)
    store.commit(Manifest(id=snapshot_id, created=when, volumes=[volume]))
    return snapshot_id


def digest_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()  # not store.put: that would store it again


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime (directories too)."""
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def test_a_prune_removes_what_no_rule_keeps_and_only_the_blobs_no_kept_backup_names(store):
    old = take(store, "2026-11-01T00:00:00Z", b"old only", b"shared")
    mid = take(store, "2026-11-02T00:00:00Z", b"mid only", b"shared")
    new = take(store, "2026-11-03T00:00:00Z", b"new only", b"shared")
    gone = [store.blob_path(digest_of(c)) for c in (b"old only", b"mid only")]
    freed = sum(p.stat().st_size for p in gone) + sum(
        p.stat().st_size for sid in (old, mid) for p in store.snapshot_dir(sid).iterdir()
    )
    report = prune(store, Rules(last=1))
    assert report.kept == {new: ["last"]}
    assert report.removed == [old, mid] and report.incomplete == []
    assert (report.blobs_removed, report.bytes_freed) == (2, freed)
    assert [info.id for info in store.list()] == [new]
    assert not any(p.exists() for p in gone)
    assert store.has_blob(digest_of(b"shared"))  # the kept backup still names it
    check.verify(store, new)


def test_the_newest_complete_backup_is_never_removed(store):
    first = take(store, "2026-11-01T00:00:00Z", b"a")
    newest = take(store, "2026-11-02T00:00:00Z", b"b")
    dead = store.new_snapshot(timegm((2026, 11, 3, 0, 0, 0)), "")  # newer, but incomplete
    report = prune(store, Rules(last=0))
    assert report.kept == {newest: ["newest"]}
    assert report.removed == [first, dead] and report.incomplete == [dead]
    assert [info.id for info in store.list()] == [newest]
    check.verify(store, newest)


def test_a_damaged_manifest_is_kept_and_stops_every_blob_removal(store):
    old = take(store, "2026-11-01T00:00:00Z", b"old only")
    damaged = take(store, "2026-11-02T00:00:00Z", b"only the damaged one names it")
    new = take(store, "2026-11-03T00:00:00Z", b"new")
    (store.snapshot_dir(damaged) / "manifest.json").write_text('{"id": "cut sh')
    blobs = set(store.blob_files())
    report = prune(store, Rules(last=1))
    assert report.removed == [old]
    assert list(report.kept) == [damaged, new] and report.kept[damaged] == ["damaged"]
    assert "damaged" in report.damaged[damaged]
    assert report.blobs_removed == 0 and set(store.blob_files()) == blobs
    (warning,) = report.warnings
    assert "no blob removed" in warning and damaged in warning
    # Once it is dealt with, the next prune collects what no backup names.
    store.remove_snapshot(damaged)
    assert prune(store, Rules(last=1)).blobs_removed == 2


def test_a_dry_run_changes_nothing_and_says_what_a_prune_would_do(store):
    take(store, "2026-11-01T00:00:00Z", b"a", b"shared")
    take(store, "2026-11-02T00:00:00Z", b"b", b"shared")
    store.new_snapshot(time.time(), "")  # incomplete
    (store.root / "tmp" / "1-leftover").write_bytes(b"half a blob")  # pid 1 lives: kept by prepare
    before = tree(store.root)
    would = prune(store, Rules(last=1), dry_run=True)
    assert tree(store.root) == before
    assert would.dry_run and len(would.removed) == 2 and would.blobs_removed == 1
    did = prune(store, Rules(last=1))
    assert (did.kept, did.removed, did.incomplete) == (would.kept, would.removed, would.incomplete)
    assert (did.blobs_removed, did.bytes_freed) == (would.blobs_removed, would.bytes_freed)
    assert list((store.root / "tmp").iterdir()) == []  # the leftover went with the real prune


def test_a_snapshot_is_un_committed_before_anything_else_of_it_goes(store, monkeypatch):
    old = take(store, "2026-11-01T00:00:00Z", b"old")
    take(store, "2026-11-02T00:00:00Z", b"new")
    blobs = set(store.blob_files())

    def crash(path, *args, **kwargs):
        raise OSError("disk pulled")

    monkeypatch.setattr("ollama_stack.backups.store.shutil.rmtree", crash)
    with pytest.raises(OSError, match="disk pulled"):
        prune(store, Rules(last=1))
    (info, _) = store.list()
    assert info.id == old and info.complete is False  # never complete with blobs missing
    assert set(store.blob_files()) == blobs  # no blob goes before every un-commit is done


def test_a_prune_refuses_while_a_writer_holds_the_store(store):
    take(store, "2026-11-01T00:00:00Z", b"a")
    take(store, "2026-11-02T00:00:00Z", b"b")
    with store.locked():  # another open of the lock file: as another process would hold it
        for dry_run in (False, True):
            with pytest.raises(StackError, match="another backup task is writing"):
                prune(store, Rules(last=1), dry_run=dry_run)
    assert len(store.list()) == 2


def test_a_prune_needs_a_rule_and_leaves_a_missing_store_alone(tmp_path):
    with pytest.raises(ConfigError, match="needs a rule"):
        prune(Store(tmp_path / "store"), Rules())
    report = prune(Store(tmp_path / "store"), Rules(last=1))
    assert (report.kept, report.removed) == ({}, [])
    assert not (tmp_path / "store").exists()


def test_snapshots_with_odd_names_and_odd_times_are_handled(store):
    odd = take(store, "2026-11-01T00:00:00Z", b"a")
    manifest_path = store.snapshot_dir(odd) / "manifest.json"
    document = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**document, "created": "yesterday"}))
    new = take(store, "2026-11-02T00:00:00Z", b"b")
    (store.snapshots / "notes").mkdir()  # not a snapshot: left alone
    report = prune(store, Rules(daily=1))
    assert report.kept == {new: ["daily"]} and report.removed == [odd]  # its id says when
    assert (store.snapshots / "notes").is_dir()


# -- the task ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backup.prune"], "backup.prune needs a rule"),
        (["backup.prune", "--keep-last", "-1"], "--keep-last '-1' is not a number of backups"),
        (["backup.prune", "--keep-daily", "x"], "--keep-daily 'x' is not a number of backups"),
    ],
)
def test_the_task_refuses_without_a_usable_rule_in_one_line(capsys, stack_home, argv, message):
    assert run_program(*argv) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.startswith("error: ") and message in line


def test_the_task_reports_one_json_document(capsys, stack_home):
    store = Store(stack_home / "backups")
    store.prepare()
    old = take(store, "2026-11-01T00:00:00Z", b"a")
    new = take(store, "2026-11-02T00:00:00Z", b"b")
    assert run_program("backup.prune", "--keep-last", "1", "--dry-run", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["dry_run"] is True
    assert (document["kept"], document["removed"]) == ([new], [old])
    assert document["blobs_removed"] == 1 and document["bytes_freed"] > 0
    assert os.path.isdir(store.snapshot_dir(old))


def test_a_prune_waits_for_readers_and_readers_wait_for_a_prune(store):
    """A restore, export, verify or test-restore reads a backup and its blobs
    for a long time: a prune then must not remove them under it."""
    old = take(store, "2026-11-01T00:00:00Z", b"old only")
    take(store, "2026-11-02T00:00:00Z", b"new only")
    with store.reading():
        with pytest.raises(StackError, match="being read"):
            prune(store, Rules(last=1))
        check.verify(store, old)  # readers share
    assert old in {info.id for info in store.list()}  # nothing was removed
    with store.locked(), store.without_readers(), pytest.raises(StackError, match="a prune"):
        check.verify(store, old)
    prune(store, Rules(last=1))
    assert old not in {info.id for info in store.list()}


def test_the_rules_apply_to_each_installations_own_backups(store):
    """One store holds this machine's backups and a remote box's: --keep-last 1
    keeps the newest of each, never one box's only backup."""
    here = take(store, "2026-11-01T00:00:00Z", b"here")
    there = take(store, "2026-11-02T00:00:00Z", b"there")
    path = store.snapshot_dir(there) / "manifest.json"
    path.write_text(path.read_text().replace('"target": "local"', '"target": "gpu-box"'))
    newer_there = take(store, "2026-11-03T00:00:00Z", b"there again")
    path = store.snapshot_dir(newer_there) / "manifest.json"
    path.write_text(path.read_text().replace('"target": "local"', '"target": "gpu-box"'))
    report = prune(store, Rules(last=1))
    assert set(report.kept) == {here, newer_there} and report.removed == [there]
