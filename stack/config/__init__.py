"""Configuration: the settings model, invoke's config with our levels, and the
only code that reads or writes an installation's files.

- ``settings``: what each key may hold (pydantic), validated once.
- ``layers``: ``StackConfig``, invoke's ``Config`` with the installation's
  config.yaml, ``OLLAMA_STACK_*`` and task flags as levels.
- ``files``: paths, secrets, state and env files, written atomically.
- ``migrate``: the schema version config.yaml and the state file carry
  (``CONFIG_SCHEMA``), and the steps from each version to the next.
"""

from .files import (
    HOME_ENV,
    InstallPaths,
    InstallResult,
    add_secrets,
    backup_store,
    env_file_line,
    host_slug,
    install,
    installation_documents,
    installation_id,
    installation_lock,
    private_env_file,
    read_config,
    read_secrets,
    read_secrets_lenient,
    read_state,
    read_yaml,
    remove_installation,
    replace_secrets,
    stack_home,
    update_user_config,
    write_runtime_env,
    write_state,
)
from .layers import ENV_PREFIX, SECTION, StackConfig, env_layer, load_settings, stack_config
from .migrate import CONFIG_SCHEMA, installed_schema
from .settings import (
    SECRET_KEYS,
    Limits,
    McpServer,
    Platform,
    RemoteMcpServer,
    ServiceSettings,
    ServiceType,
    Settings,
    StdioMcpServer,
    WebuiSettings,
    deep_merge,
    redact_url,
    validate,
    validate_merged,
)

__all__ = [
    "CONFIG_SCHEMA",
    "ENV_PREFIX",
    "HOME_ENV",
    "SECRET_KEYS",
    "SECTION",
    "InstallPaths",
    "InstallResult",
    "Limits",
    "McpServer",
    "Platform",
    "RemoteMcpServer",
    "ServiceSettings",
    "ServiceType",
    "Settings",
    "StackConfig",
    "StdioMcpServer",
    "WebuiSettings",
    "add_secrets",
    "backup_store",
    "deep_merge",
    "env_file_line",
    "env_layer",
    "host_slug",
    "install",
    "installation_documents",
    "installation_id",
    "installation_lock",
    "installed_schema",
    "load_settings",
    "private_env_file",
    "read_config",
    "read_secrets",
    "read_secrets_lenient",
    "read_state",
    "read_yaml",
    "redact_url",
    "remove_installation",
    "replace_secrets",
    "stack_config",
    "stack_home",
    "update_user_config",
    "validate",
    "validate_merged",
    "write_runtime_env",
    "write_state",
]
