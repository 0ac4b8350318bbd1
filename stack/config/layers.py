"""One configuration system, invoke's, with ollama-stack's levels added.

Lowest first: the model's defaults < the ``ollama_stack:`` section of
invoke's files (invoke.yaml) < ``config.yaml`` in the installation
directory < ``OLLAMA_STACK_*`` environment variables < task flags.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from invoke.config import AmbiguousMergeError, Config, merge_dicts, obliterate
from invoke.env import Environment

from ollama_stack.common.errors import ConfigError

from ..services import CATALOG
from .files import InstallPaths, read_config
from .memo import Memo, canonical
from .values import Settings, deep_merge, settable_keys

ENV_PREFIX = "OLLAMA_STACK_"


def _settable_keys() -> dict[str, Any]:
    """Every key a variable may set, as a tree: what invoke's env loader crawls.

    Per-service keys come from the catalog, so a registered service is
    settable as ``OLLAMA_STACK_PORTS_<NAME>`` with no edit here.
    """
    return settable_keys(CATALOG.names())


class _SettingsEnvironment(Environment):
    """invoke's env loader over our keys, reading a given mapping. Values stay
    strings for pydantic to parse (invoke would read "false" as True)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(config=_settable_keys(), prefix=ENV_PREFIX)  # type: ignore[arg-type]
        self._environ = environ

    def load(self) -> dict[str, Any]:
        for var, key_path in self._crawl(key_path=[], env_vars={}).items():
            if ENV_PREFIX + var in self._environ:
                self._path_set(key_path, self._environ[ENV_PREFIX + var])
        return self.data

    def _cast(self, old: Any, new: str) -> str:
        return new


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings from ``OLLAMA_STACK_<KEY_PATH>``; unknown names are not ours to judge."""
    return _SettingsEnvironment(environ).load()


SECTION = "ollama_stack"  # our settings' key in invoke's configuration


class StackConfig(Config):
    """invoke's configuration with ollama-stack's levels added, as fabric adds its own.

    Lowest first: invoke's defaults, its system, user and project files (our
    settings sit under ``ollama_stack:``), invoke's env and runtime file; then
    ours: the installation's ``config.yaml``, ``OLLAMA_STACK_*`` variables and
    task flags; then invoke's overrides. The ``ollama_stack`` section is
    validated once, by the pydantic ``Settings`` model (``settings()``), and
    the same object configures the host commands (``run.*``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set before invoke's __init__, which merges once already.
        self._set(_invoke_section={}, _installation={}, _installation_path=None)
        self._set(_stack_env={}, _flags={})
        super().__init__(*args, **kwargs)

    @classmethod
    def of(cls, config: Config | None) -> StackConfig:
        """Ours as it is, or invoke's (from `inv`) cloned into ours."""
        if isinstance(config, cls):
            return config
        if config is None:  # a library caller: no ~/.invoke.yaml or /etc/invoke.yaml
            return cls(lazy=True)
        return config.clone(into=cls)  # type: ignore[return-value]

    def load_installation(self, paths: InstallPaths, *, older_ok: bool = False) -> None:
        """config.yaml's settings; a file of another schema is refused (see
        config.migrate), an older one read as migrated when ``older_ok``."""
        data = read_config(paths, older_ok=older_ok)
        self._set(_installation=data, _installation_path=paths.config_file)
        self.merge()

    def load_stack_env(self, environ: Mapping[str, str] = os.environ) -> None:
        self._set(_stack_env=env_layer(environ))
        self.merge()

    def load_flags(self, flags: Mapping[str, Any]) -> None:
        self._set(_flags={k: v for k, v in flags.items() if v is not None})
        self.merge()

    def merge(self) -> None:
        """invoke's order, with our three levels above its files and env."""
        self._set(_config={})
        try:
            merge_dicts(self._config, self._defaults)
            merge_dicts(self._config, self._collection)
            self._merge_file("system", "System-wide")
            self._merge_file("user", "Per-user")
            self._merge_file("project", "Per-project")
            merge_dicts(self._config, self._env)
            self._merge_file("runtime", "Runtime")
        except AmbiguousMergeError as exc:
            raise ConfigError(
                f"bad config: a setting is a mapping in one place and a value in another ({exc})",
                "give it the same shape in invoke.yaml, config.yaml and the environment",
            ) from None
        section = self._config.get(SECTION) or {}  # `ollama_stack:` with nothing under it
        if not isinstance(section, Mapping):
            raise ConfigError(
                f"invoke.yaml: {SECTION} must be a mapping of settings, not {section!r}"
            )
        self._set(_invoke_section=plain(section))
        # Our levels merge as they always did: a higher one replaces a value of
        # another shape (a null, a scalar) instead of refusing to merge.
        for level in (self._installation, self._stack_env, self._flags):
            section = deep_merge(section, level)
        self._config[SECTION] = plain(section)
        merge_dicts(self._config, self._overrides)
        merge_dicts(self._config, self._modifications)
        obliterate(self._config, self._deletions)

    def raw(self) -> dict[str, Any]:
        """The ollama_stack section as merged, not validated yet (what an
        extension hook reads to learn which services the settings will name)."""
        return plain(self._config.get(SECTION) or {})

    def settings(self, memo: Memo | None = None) -> Settings:
        """The ollama_stack section, validated; an error names the layer that set
        it. ``memo``: judged once for the same section and service catalog."""
        raw, layers = self.raw(), self._layers()

        def judged() -> Settings:
            from .settings import validate_merged

            return validate_merged(raw, layers)

        try:
            content = canonical({"settings": raw, "catalog": CATALOG.fingerprint()})
        except ValueError:  # a YAML date, a key that is not text: judged (and refused) now
            memo = None
        if memo is None:
            return judged()
        return Settings(memo.document("settings", content, lambda: judged().to_json()))

    def host_groups(self) -> dict[str, list[str]]:
        """The named host groups (``hosts:``) alone, validated the same way."""
        from .settings import validate_host_groups

        return validate_host_groups(self.raw(), self._layers())

    def _layers(self) -> list[tuple[str, Mapping[str, Any]]]:
        return [
            ("invoke.yaml", self._invoke_section),
            (str(self._installation_path or "config.yaml"), self._installation),
            ("environment", self._stack_env),
            ("flags", self._flags),
        ]


def plain(value: Any) -> Any:
    """invoke's nested config (dicts, or its DataProxy views of them) → plain dicts."""
    if isinstance(value, Mapping) or hasattr(value, "keys"):
        return {k: plain(value[k]) for k in value}
    return value


def stack_config(
    paths: InstallPaths,
    base: Config | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] = os.environ,
    *,
    older_ok: bool = False,
) -> StackConfig:
    """invoke's configuration with this installation's levels loaded."""
    stack = StackConfig.of(base)
    stack.load_installation(paths, older_ok=older_ok)
    stack.load_stack_env(environ)
    stack.load_flags(flags or {})
    return stack


def load_settings(
    paths: InstallPaths,
    invoke_layer: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """The settings of one installation; ``invoke_layer`` stands for invoke.yaml's section."""
    base = Config(overrides=None, lazy=True)
    base.load_collection({SECTION: dict(invoke_layer or {})})
    return stack_config(paths, base, flags, environ).settings()


def host_groups(
    base: Config | None, environ: Mapping[str, str] = os.environ
) -> dict[str, list[str]]:
    """This machine's named host groups (invoke.yaml, then its own config.yaml),
    for --hosts @name. A box's config.yaml is never read for them: the fleet
    is chosen here, before any box is reached."""
    local = stack_config(InstallPaths.for_target(None, environ), base, None, environ, older_ok=True)
    return local.host_groups()
