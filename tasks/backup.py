"""`backup.*`: create, list, show, verify, restore."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke import Context

from ._base import (
    confirmer,
    display,
    guarded,
    positional,
    runtime,
    seconds,
    split_names,
    stack_task,
)

if TYPE_CHECKING:
    from ollama_stack.backups.store import Store
    from ollama_stack.stack.runtime import Runtime

TO_HELP = (
    "backup store directory (default: the backup.store setting, else $OLLAMA_STACK_HOME/backups)"
)
JSON_HELP = "print one JSON document on stdout"
MODELS = ("include", "manifests-only", "exclude")


def _store(rt: Runtime, to: str) -> Store:
    import os

    from ollama_stack.backups.store import open_store
    from ollama_stack.stack import config

    return open_store(config.backup_store(rt.settings.backup.store, to or None, os.environ))


@stack_task(
    iterable=["exclude"],
    help={
        "to": TO_HELP,
        "description": "a note kept with the backup",
        "include_cache": "also keep re-downloadable model caches (Open WebUI's cache/embedding, …)",
        "exclude": "leave out paths inside volumes matching this glob (repeatable)",
        "models": "include (default), manifests-only (not the model blobs) or exclude",
        "json": JSON_HELP,
    },
)
@guarded
def create(
    c: Context,
    to: str = "",
    description: str = "",
    include_cache: bool = False,
    exclude: list[str] | None = None,
    models: str = "include",
    json: bool = False,
) -> None:
    """Back up the stack's volumes, config and secrets, while it runs."""
    from ollama_stack.backups import snapshot
    from ollama_stack.common.errors import ConfigError

    if models not in MODELS:
        raise ConfigError(f"--models {models!r} is not one of {', '.join(MODELS)}")
    rt = runtime(c)
    out = display(json_mode=json)
    options = snapshot.Options(description, include_cache, tuple(exclude or ()), models)  # type: ignore[arg-type]
    store = _store(rt, to)
    manifest = snapshot.create(rt, store, options, out.progress)
    if json:
        out.json(_summary(manifest, store))
    else:
        out.backup_created(manifest, str(store.root))


def _summary(manifest, store) -> dict:
    return {
        "id": manifest.id,
        "store": str(store.root),
        "created": manifest.created,
        "size": manifest.size,
        "written": manifest.written,
        "description": manifest.description,
        "tool_version": manifest.tool_version,
        "config_schema": manifest.config_schema,
        "target": manifest.target,
        "project": manifest.project,
        "services": sorted({v.service for v in manifest.volumes}),
        "images": {s.name: {"image": s.image, "image_id": s.image_id} for s in manifest.services},
        "versions": {
            s.name: {"version": s.version, "schema_revision": s.schema_revision}
            for s in manifest.services
            if s.version or s.schema_revision
        },
        "volumes": [f"{v.service}:{v.name}" for v in manifest.volumes],
        "excluded": manifest.excluded,
        "not_covered": manifest.not_covered,
    }


@stack_task(name="list", help={"to": TO_HELP, "json": "print one JSON array, oldest first"})
@guarded
def list_(c: Context, to: str = "", json: bool = False) -> None:
    """List the backups in the store, incomplete and damaged ones too."""
    rt = runtime(c)
    found = _store(rt, to).list()
    out = display(json_mode=json)
    if json:
        out.json([info.to_json() for info in found])
    else:
        out.backup_list(found)


ID_HELP = "the backup's id (`backup.list` shows them)"


def _snapshot_id(given: str | None, task: str) -> str:
    return positional(given, task, "a backup id", "`inv backup.list` shows them")


@stack_task(positional=["id"], help={"id": ID_HELP, "to": TO_HELP, "json": JSON_HELP})
@guarded
def show(c: Context, id: str | None = None, to: str = "", json: bool = False) -> None:
    """Summarise one backup's manifest."""
    rt = runtime(c)
    store = _store(rt, to)
    manifest = store.manifest(_snapshot_id(id, "backup.show"))
    out = display(json_mode=json)
    if json:
        out.json(_summary(manifest, store))
    else:
        out.backup_manifest(manifest)


@stack_task(positional=["id"], help={"id": ID_HELP, "to": TO_HELP, "json": JSON_HELP})
@guarded
def verify(c: Context, id: str | None = None, to: str = "", json: bool = False) -> None:
    """Re-read and re-hash everything a backup holds; fail naming the first bad entry."""
    from ollama_stack.backups.check import verify as check

    rt = runtime(c)
    store = _store(rt, to)
    out = display(json_mode=json)
    manifest = check(store, _snapshot_id(id, "backup.verify"), out.progress)
    if json:
        out.json({"id": manifest.id, "ok": True, "size": manifest.size})
    else:
        out.success(f"backup {manifest.id} is whole: {manifest.size} bytes re-hashed")


RESTORE_TIMEOUT = seconds("--timeout", 0.0, zero_means="the start_timeout setting")


@stack_task(
    positional=["id"],
    help={
        "id": ID_HELP,
        "services": "only these services' volumes (default: every volume in the backup)",
        "to": TO_HELP,
        "yes": "do not ask before replacing data",
        "timeout": "seconds to wait for health after the restore (default: start_timeout)",
        "force": "restore data from a newer Open WebUI or a newer ollama-stack anyway",
        "secrets": "also put back the backup's secrets.env (moving to a new box: same keys)",
        "json": JSON_HELP,
    },
)
@guarded
def restore(
    c: Context,
    id: str | None = None,
    services: str = "",
    to: str = "",
    yes: bool = False,
    timeout: float = RESTORE_TIMEOUT,
    force: bool = False,
    secrets: bool = False,
    json: bool = False,
) -> None:
    """Replace the volumes with a backup's (verified first; a safety backup is taken)."""
    from ollama_stack.backups import restore as restorer

    rt = runtime(c)
    store = _store(rt, to)
    out = display(json_mode=json)
    done = restorer.restore(
        rt,
        store,
        _snapshot_id(id, "backup.restore"),
        split_names(services),
        confirm=confirmer(yes, out),
        timeout=timeout or None,
        force=force,
        secrets=secrets,
        progress=out.progress,
    )
    if json:
        out.json(done.to_json())
    else:
        out.success(
            f"restored {', '.join(done.volumes)} from backup {done.id}; "
            f"what was there before is backup {done.safety_backup}"
        )


@stack_task(
    name="test-restore",
    positional=["id"],
    help={
        "id": ID_HELP,
        "services": "only these services' volumes (default: every volume in the backup)",
        "to": TO_HELP,
        "timeout": "seconds to wait for the throwaway copy's health (default: start_timeout)",
        "json": JSON_HELP,
    },
)
@guarded
def test_restore(
    c: Context,
    id: str | None = None,
    services: str = "",
    to: str = "",
    timeout: float = RESTORE_TIMEOUT,
    json: bool = False,
) -> None:
    """Restore into throwaway volumes, start a throwaway copy on free ports, check it, remove it."""
    from ollama_stack.backups import trial

    rt = runtime(c)
    store = _store(rt, to)
    out = display(json_mode=json)
    report = trial.test_restore(
        rt,
        store,
        _snapshot_id(id, "backup.test-restore"),
        split_names(services),
        timeout=timeout or None,
        progress=out.progress,
    )
    if json:
        out.json(report.to_json())
    else:
        models = f"; {len(report.models)} models listed" if report.models else ""
        out.success(
            f"backup {report.id} restores: {', '.join(report.services)} healthy in a throwaway "
            f"copy{models} ({report.seconds} s); the copy is removed"
        )


def _count(flag: str, value: str | None) -> int | None:
    from ollama_stack.common.errors import ConfigError

    if value is None:
        return None
    if not value.isdigit():
        raise ConfigError(f"{flag} {value!r} is not a number of backups", "give 0 or more")
    return int(value)


@stack_task(
    help={
        "keep_last": "N: keep the newest N backups",
        "keep_daily": "N: keep the newest backup of each of the last N days that have one (UTC)",
        "keep_weekly": "N: likewise for each of the last N ISO weeks",
        "dry_run": "say what would be removed; change nothing",
        "to": TO_HELP,
        "json": JSON_HELP,
    },
)
@guarded
def prune(
    c: Context,
    keep_last: str | None = None,
    keep_daily: str | None = None,
    keep_weekly: str | None = None,
    dry_run: bool = False,
    to: str = "",
    json: bool = False,
) -> None:
    """Remove the backups no rule keeps (never the newest), then blobs no kept one names."""
    from ollama_stack.backups import prune as pruner

    rules = pruner.Rules(
        _count("--keep-last", keep_last),
        _count("--keep-daily", keep_daily),
        _count("--keep-weekly", keep_weekly),
    )
    rt = runtime(c)
    out = display(json_mode=json)
    report = pruner.prune(_store(rt, to), rules, dry_run, out.progress)
    if json:
        out.json(report.to_json())
    else:
        out.backup_pruned(report)


def _file(given: str | None, task: str) -> str:
    """The FILE after the id: `-` is stdout/stdin."""
    remedy = f"`inv --help {task}`"
    return positional(given, task, "a FILE (- for stdin/stdout)", remedy, where="there")


@stack_task(
    positional=["id", "file"],
    help={
        "id": ID_HELP,
        "file": "the file to write (never replaced), or - for stdout (`| ssh box …`)",
        "to": TO_HELP,
        "json": JSON_HELP,
    },
)
@guarded
def export(
    c: Context, id: str | None = None, file: str | None = None, to: str = "", json: bool = False
) -> None:
    """Verify a backup, then write it as one self-contained tar file (0600: it holds secrets)."""
    import sys
    from pathlib import Path

    from ollama_stack.backups import transfer
    from ollama_stack.common.errors import ConfigError

    snapshot_id = _snapshot_id(id, "backup.export")
    target = _file(file, "backup.export")
    rt = runtime(c)
    store = _store(rt, to)
    out = display(json_mode=json)
    if target != "-":
        done = transfer.export_file(store, snapshot_id, Path(target), out.progress)
    elif json or sys.stdout.isatty():
        why = "--json" if json else "a terminal"
        raise ConfigError(f"backup.export - writes a tar to stdout: not with {why}", "`> FILE`")
    else:
        done = transfer.export_stream(store, snapshot_id, sys.stdout.buffer, out.progress)
    if json:
        out.json(done.to_json())
    else:
        out.backup_exported(done)


@stack_task(
    name="import",
    positional=["file"],
    help={
        "file": "an export (`backup.export`), or - to read it from stdin",
        "to": TO_HELP,
        "json": JSON_HELP,
    },
)
@guarded
def import_(c: Context, file: str | None = None, to: str = "", json: bool = False) -> None:
    """Take in an exported backup; everything in it is checked before it is listed."""
    import sys

    from ollama_stack.backups import transfer
    from ollama_stack.common.errors import ConfigError

    source = _file(file, "backup.import")
    rt = runtime(c)
    store = _store(rt, to)
    out = display(json_mode=json)
    if source == "-":
        if sys.stdin.isatty():
            raise ConfigError("backup.import - reads a tar from stdin, not a terminal", "`< FILE`")
        done = transfer.import_stream(store, sys.stdin.buffer, "stdin", out.progress)
    else:
        with open(source, "rb") as handle:
            done = transfer.import_stream(store, handle, source, out.progress)
    if json:
        out.json(done.to_json())
    else:
        out.backup_imported(done)
