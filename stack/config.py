"""Settings, secrets and state: the only module that reads or writes those files.

Layers, lowest first: the model's defaults < the ``ollama_stack:`` section of
invoke.yaml (handed in by the task layer from ``c.config``) < ``config.yaml``
in the installation directory < ``OLLAMA_STACK_*`` environment variables <
task flags. ``OLLAMA_STACK_HOME`` picks the directory; every remote host gets
its own installation directory below it, since its secrets live here on the
controller (python-on-whales reads compose and env files locally).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import secrets as _secrets
import shlex
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from invoke.config import AmbiguousMergeError, Config, merge_dicts, obliterate
from invoke.env import Environment
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ollama_stack.common.errors import AlreadyInstalled, ConfigError, NotInstalled

from .services import CATALOG
from .services.core import BUILTIN_MCP_SERVER
from .services.spec import URL_KINDS

ENV_PREFIX = "OLLAMA_STACK_"
HOME_ENV = "OLLAMA_STACK_HOME"
ServiceType = Literal["docker", "native-api", "remote-api"]
Platform = Literal["auto", "cpu", "nvidia", "apple"]


def _not_a_bool(value: Any) -> Any:
    """YAML's `true` is not port 1, nor a count of anything."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got true/false")
    return value


def _image_reference(value: str) -> str:
    """Docker's reference grammar; an empty or option-like value never reaches the CLI."""
    from ollama_stack.common.errors import StackError

    from .update.registry import parse_reference

    try:
        parse_reference(value)
    except StackError as exc:
        raise ValueError(exc.message.replace(f" {value!r}", "")) from None
    return value


Port = Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=65535)]
ImageRef = Annotated[str, AfterValidator(_image_reference)]
SECRET_KEYS = ("WEBUI_SECRET_KEY", "MCPO_API_KEY")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def redact_url(url: str) -> str:
    """The URL as it may be shown: credentials in it become ***."""
    try:
        parts = urlsplit(url)
    except ValueError:  # malformed (an unclosed [v6 bracket): hide what looks like userinfo
        return re.sub(r"//[^/@]*@", "//***@", url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def _checked_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must look like http://host:port (http or https)")
    parts.port  # noqa: B018 (raises ValueError for a port out of range)
    return value


def _http_url(value: str | None) -> str | None:
    """A service's base URL: paths are added to it, so a trailing / goes."""
    return None if value is None else _checked_url(value).rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]
# An endpoint used as given (an MCP server's /mcp/ may need its slash).
EndpointUrl = Annotated[str, AfterValidator(_checked_url)]


class ServiceSettings(_Strict):
    type: ServiceType = "docker"
    url: HttpUrl | None = None
    # How the containers reach this service, where that differs from `url`
    # (for Ollama: the OLLAMA_BASE_URL Open WebUI is given).
    container_url: HttpUrl | None = None


class WebuiSettings(_Strict):
    """Open WebUI's outbound behaviour: a private stack stays private by default."""

    openai_api: bool = False  # ENABLE_OPENAI_API (saved by Open WebUI at first start)
    offline: bool = True  # OFFLINE_MODE: no Hugging Face downloads, no update check


MCP_SERVER_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class StdioMcpServer(_Strict):
    """An MCP server mcpo runs inside its own container (the command must be in the image)."""

    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)


class RemoteMcpServer(_Strict):
    """An MCP server mcpo reaches over HTTP."""

    type: Literal["sse", "streamable-http"]
    url: EndpointUrl
    headers: dict[str, str] = Field(default_factory=dict)


def _mcp_server_kind(value: Any) -> str:
    if isinstance(value, RemoteMcpServer) or (isinstance(value, Mapping) and "type" in value):
        return "remote server"
    return "stdio server"


# Tags hold a space, so no config key can look like one (see _loc_keys).
McpServer = Annotated[
    Annotated[StdioMcpServer, Tag("stdio server")]
    | Annotated[RemoteMcpServer, Tag("remote server")],
    Discriminator(_mcp_server_kind),
]


class Limits(_Strict):
    """Upper bounds; the compose layer clamps them to what the host has."""

    cpus: float | None = Field(default=None, gt=0)


# Settings keyed by service take the catalog's names, and its defaults.


def _catalog_defaults(what: str) -> dict[str, Any]:
    return {spec.name: getattr(spec, what) for spec in CATALOG}


def _default_services() -> dict[str, ServiceSettings]:
    return {spec.name: ServiceSettings() for spec in CATALOG}


def _known_services(value: dict[str, Any]) -> dict[str, Any]:
    unknown = [name for name in value if name not in CATALOG]
    if unknown:
        raise PydanticCustomError(
            "unknown_service",
            "unknown service {name}",
            {"name": unknown[0], "known": ", ".join(CATALOG.names())},
        )
    return value


ServiceKeyed = AfterValidator(_known_services)


class Settings(_Strict):
    # Compose's rule, narrowed to what Docker accepts inside an image name
    # (rollback tags use it): no trailing "_" or "-", no "_-" runs.
    project: str = Field(default="ollama-stack", pattern=r"^[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*$")
    images: Annotated[dict[str, ImageRef], ServiceKeyed] = Field(
        default_factory=lambda: _catalog_defaults("image")
    )
    ports: Annotated[dict[str, Port], ServiceKeyed] = Field(
        default_factory=lambda: _catalog_defaults("port")
    )
    bind: str = "127.0.0.1"
    platform: Platform = "auto"
    services: Annotated[dict[str, ServiceSettings], ServiceKeyed] = Field(
        default_factory=_default_services
    )
    limits: Annotated[dict[str, Limits], ServiceKeyed] = Field(default_factory=dict)
    start_timeout: float = Field(default=300.0, gt=0)
    webui: WebuiSettings = Field(default_factory=WebuiSettings)
    # More MCP servers behind the proxy, each served under /<name>/.
    mcp_servers: dict[Annotated[str, Field(pattern=MCP_SERVER_NAME)], McpServer] = Field(
        default_factory=dict
    )

    @field_validator("bind")
    @classmethod
    def _bind_is_an_address(cls, value: str) -> str:
        ipaddress.ip_address(value)  # raises ValueError with a clear message
        return value

    @field_validator("images", "ports", mode="after")
    @classmethod
    def _every_service_has_one(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        return _catalog_defaults("image" if info.field_name == "images" else "port") | value

    @field_validator("services", mode="after")
    @classmethod
    def _every_service_present(
        cls, value: dict[str, ServiceSettings]
    ) -> dict[str, ServiceSettings]:
        merged = _default_services() | value
        for name, svc in merged.items():
            if svc.type not in CATALOG[name].kinds:
                raise ValueError(
                    f"services.{name}.type {svc.type!r} is not one {name} can be "
                    f"(expected {', '.join(CATALOG[name].kinds)})"
                )
            if svc.type in URL_KINDS and not svc.url:
                raise ValueError(f"services.{name}.url is required when type is {svc.type}")
        return merged

    @model_validator(mode="after")
    def _one_service_per_port(self) -> Settings:
        seen: dict[int, str] = {}
        for name, port in self.ports.items():
            if port in seen:
                raise ValueError(f"{seen[port]} and {name} both want port {port}")
            seen[port] = name
        return self

    @field_validator("mcp_servers")
    @classmethod
    def _builtin_name_is_ours(cls, value: dict[str, Any]) -> dict[str, Any]:
        if BUILTIN_MCP_SERVER in value:
            raise ValueError(f"{BUILTIN_MCP_SERVER!r} is the built-in server's name; pick another")
        return value

    def exposure(self, published: list[str]) -> str | None:
        """What binding to every interface publishes, or None when it does not."""
        if self.bind not in ("0.0.0.0", "::"):
            return None
        return (
            f"bind {self.bind} publishes {', '.join(published)} on every network this host is on; "
            "Ollama's API has no authentication"
        )

    def service_type(self, name: str) -> ServiceType:
        return self.services[name].type  # type: ignore[index]


# -- layering ---------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _settable_keys() -> dict[str, Any]:
    """Every key a variable may set, as a tree: what invoke's env loader crawls.

    Per-service keys come from the catalog, so a registered service is
    settable as ``OLLAMA_STACK_PORTS_<NAME>`` with no edit here.
    """
    tree = Settings().model_dump(exclude={"mcp_servers"})
    tree["limits"] = {name: dict.fromkeys(Limits.model_fields) for name in CATALOG.names()}
    return tree


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


class _StrictLoader(yaml.SafeLoader):
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


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader)
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


def _loc_keys(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The config keys in a pydantic error location, without its own markers."""
    return tuple(p for p in loc if p != "[key]" and " " not in str(p))


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in _loc_keys(error["loc"])) or "(top level)"
    value = _shown(error.get("input"))
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        return f"unknown setting {key!s}"
    if error["type"] == "unknown_service":
        ctx = error["ctx"]
        return f"unknown setting {key}.{ctx['name']} (services: {ctx['known']})"
    if error["type"] == "literal_error":
        allowed = error.get("ctx", {}).get("expected", "")
        return f"{key}={value!r} is not allowed; expected {allowed}"
    return f"{key}={value!r}: {msg}"


def _shown(value: Any) -> Any:
    """A bad value as the error shows it, with any URL's credentials hidden."""
    if isinstance(value, str):
        return redact_url(value) if "://" in value else value
    if isinstance(value, Mapping):
        return {k: _shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


def validate(layers: list[tuple[str, Mapping[str, Any]]]) -> Settings:
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = deep_merge(merged, layer)
    return validate_merged(merged, layers)


def validate_merged(
    merged: Mapping[str, Any], layers: list[tuple[str, Mapping[str, Any]]]
) -> Settings:
    """Validate merged settings once; ``layers`` only say which one to blame."""
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        source = _source_of(first["loc"], layers)
        raise ConfigError(
            f"bad config: {_describe(first)} (from {source})",
            "fix that value; `inv health.doctor` lists the checks",
        ) from None


def _source_of(loc: tuple[Any, ...], layers: list[tuple[str, Mapping[str, Any]]]) -> str:
    """Name the highest layer that set the offending key, so the user knows where to look.

    A missing key is blamed on the layer that set the deepest part of its path
    (the mapping it is missing from).
    """
    loc = _loc_keys(loc)
    best, best_depth = "defaults", 0
    for name, layer in reversed(layers):
        node: Any = layer
        depth = 0
        for part in loc:
            if not isinstance(node, Mapping) or str(part) not in node:
                break
            node = node[str(part)]
            depth += 1
        if depth == len(loc):
            return name
        if depth > best_depth:
            best, best_depth = name, depth
    return best


# -- where things live ------------------------------------------------------


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
    def installed(self) -> bool:
        return self.secrets_file.exists()


# -- loading ----------------------------------------------------------------


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
        return (config or Config()).clone(into=cls)  # type: ignore[return-value]

    def load_installation(self, paths: InstallPaths) -> None:
        path = paths.config_file
        data = read_yaml(path) if path.exists() else {}
        self._set(_installation=data, _installation_path=path)
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
            section = self._config.get(SECTION) or {}
            if not isinstance(section, Mapping):
                raise ConfigError(
                    f"invoke.yaml: {SECTION} must be a mapping of settings, not {section!r}"
                )
            self._set(_invoke_section=dict(section))
            for level in (self._installation, self._stack_env, self._flags):
                merge_dicts(self._config, {SECTION: level})
        except AmbiguousMergeError as exc:
            raise ConfigError(
                f"bad config: a setting is a mapping in one place and a value in another ({exc})",
                "give it the same shape in invoke.yaml, config.yaml and the environment",
            ) from None
        merge_dicts(self._config, self._overrides)
        merge_dicts(self._config, self._modifications)
        obliterate(self._config, self._deletions)

    def settings(self) -> Settings:
        """The ollama_stack section, validated; an error names the layer that set it."""
        layers: list[tuple[str, Mapping[str, Any]]] = [
            ("invoke.yaml", self._invoke_section),
            (str(self._installation_path or "config.yaml"), self._installation),
            ("environment", self._stack_env),
            ("flags", self._flags),
        ]
        return validate_merged(_plain(self._config.get(SECTION) or {}), layers)


def _plain(value: Any) -> Any:
    """invoke's nested config → plain dicts and lists, for pydantic."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def stack_config(
    paths: InstallPaths,
    base: Config | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> StackConfig:
    """invoke's configuration with this installation's levels loaded."""
    stack = StackConfig.of(base)
    stack.load_installation(paths)
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


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
    old = read_secrets_lenient(paths)
    values = {k: old.get(k) or _secrets.token_urlsafe(32) for k in SECRET_KEYS}
    current = read_yaml(paths.config_file) if paths.config_file.exists() else {}
    document = deep_merge(current, {k: v for k, v in (chosen or {}).items() if v is not None})
    old_project = current.get("project", "ollama-stack")
    if paths.installed and document.get("project", "ollama-stack") != old_project:
        raise ConfigError(
            f"this installation's project is {old_project!r}; changing it would hide its "
            "containers and volumes",
            "`inv stack.uninstall` it first, or use another OLLAMA_STACK_HOME for a second one",
        )
    validate([(str(paths.config_file), document)])
    header = "# ollama-stack settings chosen for this installation (README: Configuration)\n"
    paths.root.mkdir(parents=True, exist_ok=True)
    _write_atomic(
        paths.config_file,
        header + (yaml.safe_dump(document, sort_keys=False) if document else "{}\n"),
    )
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


def installation_id(paths: InstallPaths) -> str:
    """Labels this installation's containers and volumes.

    Derived from the installation directory, so a second OLLAMA_STACK_HOME
    using the same project name never mistakes them for its own, while
    uninstalling with --remove-config and installing again in the same place
    finds its kept volumes again.
    """
    return hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:16]


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


def update_user_config(paths: InstallPaths, changes: Mapping[str, Any]) -> Path:
    """Merge ``changes`` into config.yaml (creating it), validating the result."""
    current = read_yaml(paths.config_file) if paths.config_file.exists() else {}
    merged = deep_merge(current, changes)
    validate([(str(paths.config_file), merged)])
    paths.root.mkdir(parents=True, exist_ok=True)
    _write_atomic(paths.config_file, yaml.safe_dump(merged, sort_keys=False))
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
    for path in (paths.state_file, paths.runtime_env_file):
        if path.is_file():
            path.unlink()
            removed.append(path)
    for directory in (state_dir, paths.root):
        with contextlib.suppress(OSError):  # not empty (or gone): leave it
            directory.rmdir()
    return removed


def read_state(paths: InstallPaths) -> dict[str, Any]:
    """What the last start decided (platform, …) and the update history; empty
    before the first start. A damaged file is refused, never silently reset:
    it holds the rollback records."""
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
    merged = read_state(paths) | dict(changes)
    _write_atomic(paths.state_file, json.dumps(merged, indent=2, sort_keys=True))
