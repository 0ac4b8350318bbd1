"""Schema versions of an installation's files, and the steps between them.

config.yaml and state/state.json carry a top-level ``schema`` number; a file
without one was written before versions existed: schema 1. Every reader goes
through ``current``: a newer file is refused (this release would misread it),
and so is an older one, unless the caller migrates or only removes
(``older_ok``), which then reads it as the steps upgrade it, in memory.

Each list holds one step per version: the function that turns a document at
version N into N+1, says what it changed, and sets ``schema`` itself. A
future 2→3 is one more function at the end of each list.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ollama_stack.common.errors import ConfigError, backed_up_first

from ..events import Progress, emit

if TYPE_CHECKING:
    from .files import InstallPaths

CONFIG_SCHEMA = 2  # what this release writes and understands; backups record it
SCHEMA_KEY = "schema"
FIRST_SCHEMA = 1  # a file without the key

# Edits a document at version N in place into N+1; returns what it changed.
Step = Callable[[dict[str, Any]], list[str]]


def _config_1_to_2(document: dict[str, Any]) -> list[str]:
    """Versions begin. No setting was renamed or reshaped before them (every
    key a first-release config.yaml holds reads the same today), so this step
    only records the version."""
    document[SCHEMA_KEY] = 2
    return ["add schema: 2"]


def _state_1_to_2(document: dict[str, Any]) -> list[str]:
    """The platform record and the update history keep their shape."""
    document[SCHEMA_KEY] = 2
    return ["add schema: 2"]


CONFIG_STEPS: tuple[Step, ...] = (_config_1_to_2,)
STATE_STEPS: tuple[Step, ...] = (_state_1_to_2,)
assert len(CONFIG_STEPS) == len(STATE_STEPS) == CONFIG_SCHEMA - FIRST_SCHEMA


def schema_of(path: Path, document: Mapping[str, Any]) -> int:
    """The version a document says it is at (1 without the key)."""
    value = document.get(SCHEMA_KEY, FIRST_SCHEMA)
    if isinstance(value, bool) or not isinstance(value, int) or value < FIRST_SCHEMA:
        raise ConfigError(
            f"{path}: schema {value!r} is not a version number",
            f"ollama-stack writes it: put back the number it had ({CONFIG_SCHEMA} in this release)",
        )
    return value


def upgrade(document: Mapping[str, Any], steps: tuple[Step, ...]) -> tuple[dict, list[str]]:
    """The document at CONFIG_SCHEMA, and what each step changed. Never newer."""
    upgraded = copy.deepcopy(dict(document))
    version = schema_of(Path("(document)"), upgraded)
    notes: list[str] = []
    for step in steps[version - FIRST_SCHEMA :]:
        notes += step(upgraded)
        if upgraded.get(SCHEMA_KEY) != version + 1:  # a step that forgot: a bug, not the user's
            raise RuntimeError(f"{step.__name__} did not set schema {version + 1}")
        version += 1
    return upgraded, notes


def migrate_hint(path: Path) -> str:
    """The command that migrates the installation ``path`` belongs to."""
    remote = re.search(r"/remotes/[^/]+-[0-9a-f]{8}(/|$)", str(path.parent)) is not None
    return "run `inv stack.migrate" + (" --remote HOST`" if remote else "`")


def current(
    path: Path, document: Mapping[str, Any], steps: tuple[Step, ...], *, older_ok: bool = False
) -> dict[str, Any]:
    """The document as this release reads it, or one line saying why not."""
    version = schema_of(path, document)
    if version > CONFIG_SCHEMA:
        raise ConfigError(
            f"{path} has schema {version}, newer than this ollama-stack understands "
            f"(schema {CONFIG_SCHEMA})",
            f"upgrade ollama-stack to a release that knows schema {version}",
        )
    if version < CONFIG_SCHEMA and not older_ok:
        raise ConfigError(
            f"{path} has schema {version}, older than this ollama-stack's (schema {CONFIG_SCHEMA})",
            f"{migrate_hint(path)} (add --dry-run to see the changes first)",
        )
    return upgrade(document, steps)[0] if version < CONFIG_SCHEMA else dict(document)


# -- migrating an installation's files ------------------------------------------------


@dataclass(frozen=True)
class FileMigration:
    path: Path
    schema: int  # as on disk
    changes: list[str]
    before: bytes = field(repr=False)
    after: str = field(repr=False)  # never shown: config.yaml may hold MCP tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "from": self.schema,
            "to": CONFIG_SCHEMA,
            "changes": self.changes,
        }


@dataclass(frozen=True)
class Migration:
    root: Path
    files: list[FileMigration]
    backup: str = ""  # the backup taken first, or why there is none

    @property
    def needed(self) -> bool:
        return bool(self.files)

    @property
    def schema(self) -> int:
        return CONFIG_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "schema": CONFIG_SCHEMA,
            "files": [f.to_json() for f in self.files],
            "backup": self.backup,
        }


def plan(paths: InstallPaths) -> Migration:
    """What migrating this installation would write; reads only.

    A newer file is refused here too: nothing can take it down a version.
    """
    from . import files  # files.py reads through this module's checks

    found = []
    if paths.config_file.is_file():
        before = paths.config_file.read_bytes()
        document = files.read_yaml(paths.config_file)
        found.append(_file(paths.config_file, before, document, CONFIG_STEPS, _config_text))
    if paths.state_file.is_file():
        before = paths.state_file.read_bytes()
        document = files.read_state_document(paths)
        found.append(_file(paths.state_file, before, document, STATE_STEPS, _state_text))
    return Migration(paths.root, [f for f in found if f is not None])


def _file(
    path: Path,
    before: bytes,
    document: dict[str, Any],
    steps: tuple[Step, ...],
    render: Callable[[bytes, dict[str, Any], dict[str, Any]], str],
) -> FileMigration | None:
    current(path, document, steps, older_ok=True)  # refuses a newer one
    version = schema_of(path, document)
    if version == CONFIG_SCHEMA:
        return None
    upgraded, notes = upgrade(document, steps)
    return FileMigration(path, version, notes, before, render(before, document, upgraded))


def _config_text(before: bytes, old: dict[str, Any], new: dict[str, Any]) -> str:
    """config.yaml at the new schema: the user's own text (and comments) with the
    version line added where the steps changed nothing else, else written anew."""
    from .files import CONFIG_HEADER

    def settings(document: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in document.items() if k != SCHEMA_KEY}

    version_line = f"{SCHEMA_KEY}: {new[SCHEMA_KEY]}\n"
    if settings(old) == settings(new):
        text = re.sub(rf"(?m)^{SCHEMA_KEY}:.*\n?", "", before.decode())
        comments = re.match(r"(?:[ \t]*(?:#.*)?\n)*", text)
        head = comments.group(0) if comments else ""
        kept = head + version_line + text[len(head) :]
        try:
            if yaml.safe_load(kept) == new:
                return kept
        except yaml.YAMLError:
            pass  # a flow mapping ({}) or a document marker: written anew below
    ordered = {SCHEMA_KEY: new[SCHEMA_KEY], **settings(new)}
    return CONFIG_HEADER + yaml.safe_dump(ordered, sort_keys=False)


def _state_text(before: bytes, old: dict[str, Any], new: dict[str, Any]) -> str:
    from .files import state_text

    return state_text(new)


# A backup of the installation, taken before anything is written; returns its
# id. The task layer provides it (the backup engine sits above this package).
Backup = Callable[[], str]


def apply(
    paths: InstallPaths,
    migration: Migration,
    *,
    backup: Backup | None,
    progress: Progress | None = None,
) -> Migration:
    """Back up, then write each file whole (atomically, keeping its mode).

    A failed backup stops the migration with nothing written; so does a file
    that changed since ``plan`` read it.
    """
    from . import files

    with files.installation_lock(paths, "the migration"):
        for change in migration.files:
            now = change.path.read_bytes() if change.path.is_file() else b""
            if now != change.before:
                raise ConfigError(
                    f"{change.path} changed while the migration was being planned",
                    "run `inv stack.migrate` again",
                )
        taken = _back_up_first(paths, backup, progress)
        for change in migration.files:
            emit(progress, "step", f"writing {change.path} at schema {CONFIG_SCHEMA}")
            files.write_document(change.path, change.after)
    return Migration(migration.root, migration.files, taken)


def _back_up_first(paths: InstallPaths, backup: Backup | None, progress: Progress | None) -> str:
    if backup is None:
        return "skipped (--no-backup)"
    if not paths.installed:
        return "none: not installed, so no volumes or secrets to keep"
    emit(progress, "step", "backing up before the migration")
    return backed_up_first(backup, "the migration", "changed")


def installed_schema(paths: InstallPaths) -> int:
    """The schema of config.yaml as it is on disk (what a backup of it holds)."""
    from .files import read_yaml

    if not paths.config_file.is_file():
        return CONFIG_SCHEMA
    return schema_of(paths.config_file, read_yaml(paths.config_file))
