"""The settings model: what each key may hold, validated once by pydantic.

Keys per service (``images``, ``ports``, ``services``, ``limits``) take the
service catalog's names and defaults. ``validate_merged`` turns the first
error into one line naming the key, the value and the layer that set it, and
gives what it accepted as a ``values.Settings`` document: the rest of the
code never holds a pydantic object, so a query that reads settings recorded
earlier (``memo``) never loads pydantic at all.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

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

from ollama_stack.common.errors import ConfigError

from ..services import CATALOG
from ..services.core import BUILTIN_MCP_SERVER
from ..services.spec import URL_KINDS
from .values import LOCAL_HOST, Platform, ServiceType, Settings, deep_merge, redact_url


def _not_a_bool(value: Any) -> Any:
    """YAML's `true` is not port 1, nor a count of anything."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got true/false")
    return value


def _image_reference(value: str) -> str:
    """Docker's reference grammar; an empty or option-like value never reaches the CLI."""
    from ollama_stack.common.errors import StackError

    from ..update.reference import parse_reference

    try:
        parse_reference(value)
    except StackError as exc:
        raise ValueError(exc.message.replace(f" {value!r}", "")) from None
    return value


Port = Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=65535)]
ImageRef = Annotated[str, AfterValidator(_image_reference)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


# An extension's name is its folder's, its compose service's, its config key
# and the proxy's /<name>/ path: nothing that could reach a shell or a path.
EXTENSION_NAME = r"^[a-z][a-z0-9_]{0,30}$"


class ExtensionSettings(_Strict):
    enabled: list[Annotated[str, Field(pattern=EXTENSION_NAME)]] = Field(default_factory=list)
    # More folders holding extensions (each a folder with extension.yaml).
    paths: list[str] = Field(default_factory=list)


class BackupSettings(_Strict):
    # Where backups go (a NAS mount, say); default: $OLLAMA_STACK_HOME/backups,
    # one store for every host, so blobs two hosts share are stored once.
    store: str | None = None


GROUP_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def _host_entry(value: str) -> str:
    """A group's member: `local`, another group (`@name`), or a host as
    --remote takes it (the one place that judges those)."""
    from ..hosts.target import check_host_spec

    if value == LOCAL_HOST or (value.startswith("@") and re.fullmatch(GROUP_NAME, value[1:])):
        return value
    try:
        return check_host_spec(value, what="host")
    except ConfigError as exc:
        raise ValueError(f"{exc.message}; {exc.remedy}") from None


HostEntry = Annotated[str, AfterValidator(_host_entry)]


def _groups_resolve(groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every @name a group gives is another group, and none leads back to itself."""

    def walk(name: str, path: tuple[str, ...]) -> None:
        for entry in groups[name]:
            if not entry.startswith("@"):
                continue
            other = entry[1:]
            if other in path:
                loop = " → ".join(f"@{n}" for n in (*path, other))
                raise ValueError(f"group {path[0]} names itself ({loop})")
            if other not in groups:
                raise ValueError(f"group {name} names @{other}, which is no group")
            walk(other, (*path, other))

    for name in groups:
        walk(name, (name,))
    return groups


HostGroups = Annotated[
    dict[Annotated[str, Field(pattern=GROUP_NAME)], list[HostEntry]],
    AfterValidator(_groups_resolve),
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
    unknown = [name for name in value if not CATALOG.may_name(name)]
    if unknown:
        raise PydanticCustomError(
            "unknown_service",
            "unknown service {name}",
            {"name": unknown[0], "known": ", ".join(CATALOG.names())},
        )
    return value


ServiceKeyed = AfterValidator(_known_services)


class SettingsModel(_Strict):
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
    backup: BackupSettings = Field(default_factory=BackupSettings)
    extensions: ExtensionSettings = Field(default_factory=ExtensionSettings)
    # Named groups of hosts for --hosts @name (read from this machine's settings only).
    hosts: HostGroups = Field(default_factory=dict)
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
    def _one_service_per_port(self) -> SettingsModel:
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


# -- layering ---------------------------------------------------------------


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


class _HostGroupsOnly(BaseModel):
    """The ``hosts`` key alone: what --hosts reads, without judging the rest."""

    hosts: HostGroups = Field(default_factory=dict)


def validate_host_groups(
    merged: Mapping[str, Any], layers: list[tuple[str, Mapping[str, Any]]]
) -> dict[str, list[str]]:
    """The named host groups of merged settings; an error names the layer."""
    only = {"hosts": merged.get("hosts") or {}}
    return _validated(_HostGroupsOnly, only, layers).hosts


def validate_merged(
    merged: Mapping[str, Any], layers: list[tuple[str, Mapping[str, Any]]]
) -> Settings:
    """Validate merged settings once; ``layers`` only say which one to blame."""
    model = _validated(SettingsModel, merged, layers)
    document = model.model_dump(mode="json", exclude={"mcp_servers"})
    # The user's MCP servers as given (no default filled in): mcpo's config gets these.
    servers = model.mcp_servers.items()
    document["mcp_servers"] = {
        name: s.model_dump(mode="json", exclude_defaults=True) for name, s in servers
    }
    return Settings(document)


Model = TypeVar("Model", bound=BaseModel)


def _validated(
    model: type[Model], merged: Mapping[str, Any], layers: list[tuple[str, Mapping[str, Any]]]
) -> Model:
    try:
        return model.model_validate(merged)
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
