"""Where an installation's files live, and the only code that reads or writes
them: config.yaml, secrets.env, state/compose.env and state/state.json.

``OLLAMA_STACK_HOME`` picks the directory; every remote host gets its own
installation directory below it, since its secrets live here on the
controller (python-on-whales reads compose and env files locally). Writes
are atomic; a damaged state file is refused, never reset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ollama_stack.common.errors import AlreadyInstalled, ConfigError, NotInstalled, StackError
from ollama_stack.common.files import replace_atomically
from ollama_stack.common.locks import exclusive

from .memo import Memo, memo_of
from .migrate import CONFIG_SCHEMA, CONFIG_STEPS, SCHEMA_KEY, STATE_STEPS, current
from .values import SECRET_KEYS, deep_merge

HOME_ENV = "OLLAMA_STACK_HOME"
CONFIG_HEADER = "# ollama-stack settings chosen for this installation (README: Configuration)\n"


# libyaml's parser where PyYAML has it: every command reads config.yaml and
# each extension's folder, and the pure-Python one takes ten times as long.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):
    """safe_load, but a key given twice is an error, not the last one silently."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    keys = [loader.construct_object(key, deep=True) for key, _ in node.value]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", node.value[index][0].start_mark
            )
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def read_yaml(path: Path, text: str | None = None) -> dict[str, Any]:
    """The settings a YAML file holds (``text``: its content, read already)."""
    try:
        data = yaml.load(path.read_text() if text is None else text, Loader=_StrictLoader)
    except RecursionError:
        raise ConfigError(
            f"{path}: nested too deeply to be a settings file", "fix the file or remove it"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{path}{where}: malformed YAML ({getattr(exc, 'problem', exc)})",
            "fix the file or remove it to use the defaults",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read {path}: {why}", "fix or remove the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def read_config(paths: InstallPaths, *, older_ok: bool = False) -> dict[str, Any]:
    """The settings config.yaml holds (its schema checked, then left out); none
    without the file. ``older_ok``: an older file as the migration would make it."""
    path = paths.config_file
    if not path.exists():
        return {}
    document = current(path, read_yaml(path), CONFIG_STEPS, older_ok=older_ok)
    document.pop(SCHEMA_KEY, None)
    return document


def _config_document(settings: Mapping[str, Any]) -> str:
    """config.yaml's text: the schema first, then the settings as given."""
    return yaml.safe_dump({SCHEMA_KEY: CONFIG_SCHEMA, **settings}, sort_keys=False)


def stack_home(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get(HOME_ENV):
        return Path(environ[HOME_ENV]).expanduser()
    import platformdirs  # deferred: only needed when no home is given

    return platformdirs.user_config_path("ollama-stack")


def host_slug(host: str) -> str:
    """A readable directory name that two different host strings never share."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", host)
    return f"{readable}-{hashlib.sha256(host.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class InstallPaths:
    """One installation's files: local, or one per remote host."""

    root: Path

    @classmethod
    def for_target(cls, host: str | None, environ: Mapping[str, str] = os.environ) -> InstallPaths:
        home = stack_home(environ)
        return cls(home if host is None else home / "remotes" / host_slug(host))

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.env"

    @property
    def runtime_env_file(self) -> Path:
        return self.root / "state" / "compose.env"

    @property
    def state_file(self) -> Path:
        return self.root / "state" / "state.json"

    @property
    def memo_file(self) -> Path:
        return self.root / "state" / "validated.json"

    @property
    def installed(self) -> bool:
        return self.secrets_file.exists()


# -- loading ----------------------------------------------------------------


def read_secrets(paths: InstallPaths) -> dict[str, str]:
    if not paths.installed:
        raise NotInstalled(
            f"no installation at {paths.root}",
            "run `inv stack.install` first (add --remote HOST for a remote box)",
        )
    values = {}
    try:
        text = paths.secrets_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read {paths.secrets_file}: {getattr(exc, 'strerror', None) or exc}",
            "it must be a readable KEY=value file; `inv stack.install --force` rewrites it",
        ) from None
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    missing = [k for k in SECRET_KEYS if not values.get(k)]
    if missing:
        raise ConfigError(
            f"{paths.secrets_file} lacks {', '.join(missing)}",
            "run `inv stack.install --force` to add the missing keys (existing ones are kept)",
        )
    return values


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace a file whole or not at all: a temporary file, fsync, rename, fsync
    the directory. A crash or a full disk leaves the old file, never half a new one.

    A file that exists keeps its mode (a user who made config.yaml 0600 for its
    tokens keeps that), and a link is written through, not replaced.
    """
    path = path.resolve() if path.is_symlink() else path
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode) & (mode | 0o600)  # never wider than asked
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, text.encode(), mode)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing it atomically."""
    _write_atomic(path, text, 0o600)


@dataclass(frozen=True)
class InstallResult:
    paths: InstallPaths
    secrets_created: list[str]
    secrets_kept: list[str]


def install(
    paths: InstallPaths, chosen: Mapping[str, Any] | None = None, *, force: bool = False
) -> InstallResult:
    """Write config.yaml and secrets.env; existing secrets survive ``force``.

    config.yaml gets only what the user chose at install (``chosen``, merged
    into any config.yaml already there): values from invoke.yaml or the
    environment stay in their own, lower or per-run, layers. Rotating
    WEBUI_SECRET_KEY would log every Open WebUI user out, so force rewrites the
    config but keeps keys already there.
    """
    if paths.installed and not force:
        raise AlreadyInstalled(
            f"already installed at {paths.root}",
            "use --force to rewrite the config (secrets are kept)",
        )
    import secrets as _secrets  # an install's: not loaded for every query

    old = read_secrets_lenient(paths)
    values = {k: old.get(k) or _secrets.token_urlsafe(32) for k in SECRET_KEYS}
    existing = read_config(paths)
    document = deep_merge(existing, {k: v for k, v in (chosen or {}).items() if v is not None})
    old_project = existing.get("project", "ollama-stack")
    if paths.installed and document.get("project", "ollama-stack") != old_project:
        raise ConfigError(
            f"this installation's project is {old_project!r}; changing it would hide its "
            "containers and volumes",
            "`inv stack.uninstall` it first, or use another OLLAMA_STACK_HOME for a second one",
        )
    _judged(paths, document)
    paths.root.mkdir(parents=True, exist_ok=True)
    _write_atomic(paths.config_file, CONFIG_HEADER + _config_document(document))
    _write_private(
        paths.secrets_file,
        "# generated by ollama-stack; keep private\n"
        + "".join(f"{k}={v}\n" for k, v in values.items()),
    )
    return InstallResult(
        paths,
        secrets_created=[k for k in SECRET_KEYS if not old.get(k)],
        secrets_kept=[k for k in SECRET_KEYS if old.get(k)],
    )


def add_secrets(paths: InstallPaths, values: Mapping[str, str]) -> None:
    """More secrets (an extension's token) into secrets.env, keeping what is
    there; private (0600) and replaced whole, as at install."""
    current = read_secrets(paths)
    for key, value in values.items():
        if (
            not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", key)
            or not value
            or "\n" in value
            or "\r" in value
        ):
            raise ConfigError(
                f"{key!r} cannot be kept in secrets.env", "give KEY=value on one line"
            )
    merged = {**current, **values}
    _write_private(
        paths.secrets_file,
        "# generated by ollama-stack; keep private\n"
        + "".join(f"{k}={v}\n" for k, v in merged.items()),
    )


def replace_secrets(paths: InstallPaths, document: bytes) -> None:
    """secrets.env as a backup holds it (a restore that moves the stack to a new
    box brings its keys along); refused unless it holds every key we need."""
    text = document.decode("utf-8", errors="replace")
    keys = {line.partition("=")[0].strip() for line in text.splitlines() if "=" in line}
    missing = [k for k in SECRET_KEYS if k not in keys]
    if missing:
        raise ConfigError(
            f"the backup's secrets.env lacks {', '.join(missing)}; nothing was changed",
            "restore without --secrets",
        )
    _write_private(paths.secrets_file, text)


def installation_id(paths: InstallPaths) -> str:
    """Labels this installation's containers and volumes.

    Derived from the installation directory, so a second OLLAMA_STACK_HOME
    using the same project name never mistakes them for its own, while
    uninstalling with --remove-config and installing again in the same place
    finds its kept volumes again.
    """
    return hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:16]


# In the state file: the installation id this installation's data volumes
# carry when `stack.adopt` took them over from another home.
VOLUMES_INSTALLATION_KEY = "volumes_installation"


def home_of_env_file(env_file: str) -> Path | None:
    """The installation directory whose compose env file this is (compose keeps
    the path on every container it makes), if it is one of ours at all."""
    path = Path(env_file)
    probe = InstallPaths(path.parent.parent)
    return probe.root if env_file and path == probe.runtime_env_file else None


def claims_project(root: Path, project: str) -> bool:
    """Does an installation still live in ``root`` that may use ``project``? Its
    config.yaml names it, or names none (the project then came from the
    environment or the default). A folder that is gone, or unreadable, claims nothing."""
    paths = InstallPaths(root)
    try:
        return paths.installed and read_config(paths).get("project", project) == project
    except (StackError, OSError):
        return False


def record_adoption(
    paths: InstallPaths, volumes_installation: str | None, taken: Mapping[str, Any]
) -> None:
    """Remember the id this installation's volumes carry (when they were taken
    over with another's), and what was taken over, beside the update history."""
    state = read_state(paths)
    changes: dict[str, Any] = {"adopted": [*state.get("adopted", []), dict(taken)]}
    if volumes_installation:
        changes[VOLUMES_INSTALLATION_KEY] = volumes_installation
    write_state(paths, changes)


def read_secrets_lenient(paths: InstallPaths) -> dict[str, str]:
    try:
        return read_secrets(paths)
    except (NotInstalled, ConfigError):
        if not paths.secrets_file.exists():
            return {}
        pairs = (
            line.partition("=")
            for line in paths.secrets_file.read_text().splitlines()
            if "=" in line
        )
        return {k.strip(): v.strip() for k, _, v in pairs if v.strip()}


def _judged(paths: InstallPaths, document: Mapping[str, Any]) -> None:
    """config.yaml's new document, judged before it is written (pydantic, loaded here)."""
    from .settings import validate

    validate([(str(paths.config_file), document)])


def update_user_config(paths: InstallPaths, changes: Mapping[str, Any]) -> Path:
    """Merge ``changes`` into config.yaml (creating it), validating the result."""
    merged = deep_merge(read_config(paths), changes)
    _judged(paths, merged)
    paths.root.mkdir(parents=True, exist_ok=True)
    _write_atomic(paths.config_file, _config_document(merged))
    return paths.config_file


_PLAIN_ENV_VALUE = re.compile(r"[A-Za-z0-9_./:@,+=%\[\]-]*")


def env_file_line(key: str, value: str) -> str:
    """``KEY=value`` as compose's env-file parser reads it back unchanged.

    Anything beyond plain characters is single-quoted, which compose takes
    literally (no ``$`` interpolation, no ``#`` comment); a value that holds a
    single quote or a line break has no literal form there and is refused.
    """
    if _PLAIN_ENV_VALUE.fullmatch(value):
        return f"{key}={value}\n"
    # Compose reads \' as an escaped quote even inside single quotes, so a
    # trailing backslash would swallow the closing one.
    if "'" in value or "\n" in value or "\r" in value or value.endswith("\\"):
        raise ConfigError(
            f"{key} cannot be written to the compose env file "
            "(it holds a quote, a line break or a trailing backslash)",
            "remove that character from the setting or secret",
        )
    return f"{key}='{value}'\n"


@contextlib.contextmanager
def private_env_file(values: Mapping[str, str]) -> Iterator[Path]:
    """The same env file in a private temporary directory, removed afterwards:
    for read-only tasks, which must not touch the installation's files."""
    import tempfile  # loaded by the tasks that need it, not by every query

    with tempfile.TemporaryDirectory(prefix="ollama-stack-env-") as directory:
        path = Path(directory) / "compose.env"
        _write_private(path, _env_text(values))
        yield path


def write_runtime_env(paths: InstallPaths, values: Mapping[str, str]) -> Path:
    """The interpolation values compose reads with --env-file (private: holds secrets)."""
    _write_private(paths.runtime_env_file, _env_text(values))
    return paths.runtime_env_file


def _env_text(values: Mapping[str, str]) -> str:
    return "".join(env_file_line(k, v) for k, v in values.items())


def remove_installation(paths: InstallPaths) -> list[Path]:
    """Delete this installation's config, secrets and state, and nothing else.

    The local installation's directory is also the parent of every remote
    installation (and may be any directory the user chose), so never remove
    the directory tree itself: only our files, then the directory if empty.
    """
    removed = []
    for path in (paths.config_file, paths.secrets_file):
        if path.is_file():
            path.unlink()
            removed.append(path)
    state_dir = paths.state_file.parent
    for path in (paths.state_file, paths.runtime_env_file, paths.memo_file):
        if path.is_file():
            path.unlink()
            removed.append(path)
    (state_dir / ".data.lock").unlink(missing_ok=True)  # a backup's lock: nothing of the user's
    for directory in (state_dir, paths.root):
        with contextlib.suppress(OSError):  # not empty (or gone): leave it
            directory.rmdir()
    return removed


def read_state(paths: InstallPaths, *, older_ok: bool = False) -> dict[str, Any]:
    """What the last start decided (platform, …) and the update history; empty
    before the first start. A damaged file is refused, never silently reset:
    it holds the rollback records. Its schema is checked (and left out) as
    config.yaml's is."""
    document = read_state_document(paths)
    if not document:
        return {}
    document = current(paths.state_file, document, STATE_STEPS, older_ok=older_ok)
    document.pop(SCHEMA_KEY, None)
    return document


def read_state_document(paths: InstallPaths) -> dict[str, Any]:
    """The state file as it is on disk, whatever its schema."""
    try:
        text = paths.state_file.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise _damaged_state(paths, getattr(exc, "strerror", None) or "not UTF-8 text") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _damaged_state(paths, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _damaged_state(paths, f"expected a JSON object, got {type(data).__name__}")
    return data


def _damaged_state(paths: InstallPaths, why: str) -> ConfigError:
    kept = paths.state_file.with_name(paths.state_file.name + ".damaged")
    return ConfigError(
        f"state file {paths.state_file} is damaged ({why})",
        f"keep it for its update history and start a fresh one: "
        f"mv {shlex.quote(str(paths.state_file))} {shlex.quote(str(kept))}",
    )


def write_state(paths: InstallPaths, changes: Mapping[str, Any]) -> None:
    merged = read_state(paths) | dict(changes) | {SCHEMA_KEY: CONFIG_SCHEMA}
    _write_atomic(paths.state_file, state_text(merged))


def state_text(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True)


def write_document(path: Path, text: str) -> None:
    """config.yaml or the state file, replaced whole, keeping its mode."""
    _write_atomic(path, text)


def read_memo(paths: InstallPaths) -> Memo:
    """The documents judged before (see config.memo); empty when there are none."""
    try:
        text = paths.memo_file.read_text()
    except (OSError, ValueError):  # not there, or not text: judged again
        text = None
    return memo_of(text)


def write_memo(paths: InstallPaths, memo: Memo) -> None:
    """Keep what this run judged for the next, when that changed (most runs
    judge nothing new), and only in an installation. Private: the settings
    hold what config.yaml holds (an MCP server's token, a URL's password).
    A memo that cannot be written (a full disk, a read-only home) is not
    kept: a cache never stops the task that records it."""
    if paths.installed and memo.changed:
        with contextlib.suppress(OSError):
            _write_private(paths.memo_file, memo.text())


def installation_documents(paths: InstallPaths) -> dict[str, tuple[bytes, int]]:
    """config.yaml and secrets.env as they are on disk, with their modes (for backups)."""
    found = {}
    for path in (paths.config_file, paths.secrets_file):
        if path.is_file():
            found[path.name] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return found


def backup_store(settings_store: str | None, given: str | None, environ: Mapping[str, str]) -> Path:
    """Where backups go: --to, else the backup.store setting, else the home's backups/."""
    chosen = given or settings_store
    return Path(chosen).expanduser() if chosen else stack_home(environ) / "backups"


_HELD: set[Path] = set()  # installation locks this process holds (they nest)


@contextlib.contextmanager
def installation_lock(paths: InstallPaths, what: str) -> Iterator[None]:
    """One data task at a time per installation (backup, restore): a backup
    taken during a restore, or two that pause and unpause the same service,
    would copy half-written data. Nested calls in one process share it."""
    lock = paths.state_file.parent / ".data.lock"
    if lock in _HELD:
        yield
        return
    busy = ConfigError(
        f"another backup or restore of {paths.root} is running; {what} did not start",
        "wait for it to finish, then try again",
    )
    with exclusive(lock, busy):
        _HELD.add(lock)
        try:
            yield
        finally:
            _HELD.discard(lock)
