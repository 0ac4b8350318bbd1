"""Configuration: the settings model, invoke's config with our levels, and the
only code that reads or writes an installation's files.

- ``settings``: what each key may hold (pydantic), validated once.
- ``values``: what it accepted, as the rest of the code reads it (no pydantic).
- ``layers``: ``StackConfig``, invoke's ``Config`` with the installation's
  config.yaml, ``OLLAMA_STACK_*`` and task flags as levels.
- ``files``: paths, secrets, state and env files, written atomically.
- ``migrate``: the schema version config.yaml and the state file carry
  (``CONFIG_SCHEMA``), and the steps from each version to the next.
"""

from collections.abc import Mapping
from typing import Any

from .files import (
    HOME_ENV,
    VOLUMES_INSTALLATION_KEY,
    InstallPaths,
    InstallResult,
    add_secrets,
    backup_store,
    claims_project,
    env_file_line,
    home_of_env_file,
    host_slug,
    install,
    installation_documents,
    installation_id,
    installation_lock,
    private_env_file,
    read_config,
    read_memo,
    read_secrets,
    read_secrets_lenient,
    read_state,
    read_yaml,
    record_adoption,
    remove_installation,
    replace_secrets,
    stack_home,
    update_user_config,
    write_memo,
    write_runtime_env,
    write_state,
)
from .layers import (
    ENV_PREFIX,
    SECTION,
    StackConfig,
    env_layer,
    host_groups,
    load_settings,
    stack_config,
)
from .memo import Memo, canonical
from .migrate import CONFIG_SCHEMA, installed_schema
from .values import (
    SECRET_KEYS,
    Frozen,
    Platform,
    ServiceType,
    Settings,
    deep_merge,
    redact_url,
)


def validate(layers: list[tuple[str, Mapping[str, Any]]]) -> Settings:
    """The layers' settings merged and judged by the pydantic model (which is
    loaded here, on first use: a query reading recorded settings never is)."""
    from .settings import validate as judged

    return judged(layers)


def validate_merged(
    merged: Mapping[str, Any], layers: list[tuple[str, Mapping[str, Any]]]
) -> Settings:
    from .settings import validate_merged as judged

    return judged(merged, layers)


__all__ = [
    "CONFIG_SCHEMA",
    "ENV_PREFIX",
    "HOME_ENV",
    "SECRET_KEYS",
    "SECTION",
    "VOLUMES_INSTALLATION_KEY",
    "Frozen",
    "InstallPaths",
    "InstallResult",
    "Memo",
    "Platform",
    "ServiceType",
    "Settings",
    "StackConfig",
    "add_secrets",
    "backup_store",
    "canonical",
    "claims_project",
    "deep_merge",
    "env_file_line",
    "env_layer",
    "home_of_env_file",
    "host_groups",
    "host_slug",
    "install",
    "installation_documents",
    "installation_id",
    "installation_lock",
    "installed_schema",
    "load_settings",
    "private_env_file",
    "read_config",
    "read_memo",
    "read_secrets",
    "read_secrets_lenient",
    "read_state",
    "read_yaml",
    "record_adoption",
    "redact_url",
    "remove_installation",
    "replace_secrets",
    "stack_config",
    "stack_home",
    "update_user_config",
    "validate",
    "validate_merged",
    "write_memo",
    "write_runtime_env",
    "write_state",
]
