"""Pruning the store: which backups to keep, by restic's `forget --prune`
rules, then removing the others and every blob no kept backup names.

``choose`` is the policy, a pure function of (id, created) pairs. ``prune``
applies it under the store's writer lock, so a snapshot with no manifest
found then is a dead writer's and goes too. A snapshot whose manifest cannot
be read is kept, and since what it names is unknown, no blob is removed in
that run: a guess must never cost data.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ollama_stack.common.errors import ConfigError, StackError
from ollama_stack.stack.events import Progress, emit

from .manifest import Manifest
from .store import SNAPSHOT_ID, BadBackup, Store


@dataclass(frozen=True)
class Rules:
    last: int | None = None  # the newest N
    daily: int | None = None  # the newest of each of the last N days that have one (UTC)
    weekly: int | None = None  # likewise per ISO week

    def given(self) -> bool:
        return any(n is not None for n in (self.last, self.daily, self.weekly))


def choose(backups: Iterable[tuple[str, datetime]], rules: Rules) -> dict[str, list[str]]:
    """The ids to keep, each with the rules that keep it. The newest backup is
    kept whatever the rules (``--keep-last 0`` too)."""
    newest_first = sorted(backups, key=lambda b: (_utc(b[1]), b[0]), reverse=True)
    buckets: list[tuple[str, int | None, Callable[[str, datetime], object]]] = [
        ("last", rules.last, lambda sid, when: sid),
        ("daily", rules.daily, lambda sid, when: when.date()),
        ("weekly", rules.weekly, lambda sid, when: when.isocalendar()[:2]),
    ]
    kept: dict[str, list[str]] = {}
    for rule, count, bucket in buckets:
        seen: list[object] = []
        for sid, when in newest_first:
            if len(seen) >= (count or 0):
                break
            key = bucket(sid, _utc(when))
            if key not in seen:  # the first one met is the newest of its bucket
                seen.append(key)
                kept.setdefault(sid, []).append(rule)
    if newest_first and newest_first[0][0] not in kept:
        kept[newest_first[0][0]] = ["newest"]
    return kept


@dataclass
class Report:
    store: str
    dry_run: bool
    kept: dict[str, list[str]] = field(default_factory=dict)  # id → why, oldest first
    removed: list[str] = field(default_factory=list)  # oldest first, incomplete ones too
    incomplete: list[str] = field(default_factory=list)  # of those, the dead writers'
    damaged: dict[str, str] = field(default_factory=dict)  # id → problem (kept)
    blobs_removed: int = 0
    bytes_freed: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "dry_run": self.dry_run,
            "kept": list(self.kept),
            "why": self.kept,
            "removed": self.removed,
            "incomplete": self.incomplete,
            "damaged": self.damaged,
            "blobs_removed": self.blobs_removed,
            "bytes_freed": self.bytes_freed,
            "warnings": self.warnings,
        }


def prune(
    store: Store, rules: Rules, dry_run: bool = False, progress: Progress | None = None
) -> Report:
    """Remove the backups the rules do not keep, then the blobs no kept one names."""
    if not rules.given():
        raise ConfigError(
            "backup.prune needs a rule saying what to keep",
            "give --keep-last N, --keep-daily N or --keep-weekly N",
        )
    report = Report(str(store.root), dry_run)
    if not store.snapshots.is_dir():
        return report  # no store yet: nothing to prune, and nothing made
    if dry_run:
        if store.writer_running():
            raise _busy(store)
        _prune(store, rules, report, progress)  # no lock taken: a dry run writes nothing
        return report
    with store.locked(), store.without_readers():
        _prune(store, rules, report, progress)
    return report


def _choose_per_installation(manifests: dict[str, Manifest], rules: Rules) -> dict[str, list[str]]:
    """One store holds the backups of every box (this machine and each
    --remote host): the rules apply to each installation's own backups, as
    restic groups by host, so one box's backups never push out another's."""
    groups: dict[tuple[str, str], list[str]] = {}
    for sid, manifest in manifests.items():
        groups.setdefault((manifest.target, manifest.project), []).append(sid)
    keep: dict[str, list[str]] = {}
    for ids in groups.values():
        keep |= choose(((sid, _created(sid, manifests[sid])) for sid in ids), rules)
    return keep


def _busy(store: Store) -> StackError:
    return StackError(
        f"another backup task is writing to {store.root}", "wait for it to finish, then try again"
    )


def _prune(store: Store, rules: Rules, report: Report, progress: Progress | None) -> None:
    manifests, incomplete = _read(store, report)
    keep = _choose_per_installation(manifests, rules)
    for sid in sorted([*manifests, *report.damaged]):
        if sid in keep or sid in report.damaged:
            report.kept[sid] = keep.get(sid, ["damaged"])
    report.removed = sorted([*(s for s in manifests if s not in keep), *incomplete])
    report.incomplete = incomplete
    for sid in report.removed:  # every un-commit is durable before any blob goes
        report.bytes_freed += _bytes_under(store.snapshot_dir(sid))
        if not report.dry_run:
            emit(progress, "step", f"removing backup {sid}")
            store.remove_snapshot(sid)
    if report.damaged:
        report.warnings.append(
            f"no blob removed: {len(report.damaged)} damaged backup(s) may name any of them "
            f"({', '.join(report.damaged)}); remove or repair them, then prune again"
        )
    else:
        named = set().union(*(manifests[sid].blobs() for sid in keep))
        unnamed = [path for digest, path in store.blob_files().items() if digest not in named]
        if unnamed and not report.dry_run:
            emit(progress, "step", f"removing {len(unnamed)} blobs no kept backup names")
        for path in unnamed:
            _remove(path, report)
        report.blobs_removed = len(unnamed)
    for leftover in store.leftovers():
        _remove(leftover, report)


def _read(store: Store, report: Report) -> tuple[dict[str, Manifest], list[str]]:
    """Each snapshot's manifest; those with none (incomplete) and those whose
    manifest cannot be read (damaged, noted in the report) apart."""
    manifests: dict[str, Manifest] = {}
    incomplete: list[str] = []
    for directory in sorted(store.snapshots.iterdir()):
        if not SNAPSHOT_ID.fullmatch(directory.name) or not directory.is_dir():
            continue  # not ours: left alone
        if not os.path.lexists(directory / "manifest.json"):
            incomplete.append(directory.name)
            continue
        try:
            manifests[directory.name] = store.manifest(directory.name)
        except (BadBackup, OSError) as exc:
            report.damaged[directory.name] = getattr(exc, "message", None) or str(exc)
    return manifests, incomplete


def _remove(path: Path, report: Report) -> None:
    report.bytes_freed += _bytes_under(path)
    if not report.dry_run:
        path.unlink(missing_ok=True)


def _created(snapshot_id: str, manifest: Manifest) -> datetime:
    """When the backup was taken; its id says it too, should the field not."""
    try:
        return datetime.fromisoformat(manifest.created)
    except ValueError:
        return datetime.strptime(snapshot_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def _utc(when: datetime) -> datetime:
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def _bytes_under(path: Path) -> int:
    if not path.is_dir():
        return path.lstat().st_size if os.path.lexists(path) else 0
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())
