"""What a service is: one description every namespace reads.

A ``ServiceSpec`` says everything about a service that does not depend on one
installation: its image and ports, how its health is probed, the volumes it
owns (and which parts of them are re-creatable cache), the compose fragment
that runs it, what it adds to the compose environment and which services it
reaches. The ``Catalog`` holds the registered descriptions; the core services
register themselves (``core.py``) and extensions will register theirs the
same way, so adding a service never means editing a list elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ollama_stack.common.errors import ConfigError

from ..health import ProbeSpec

if TYPE_CHECKING:
    from ..config import Settings

KIND_NAMES = ("docker", "native-api", "remote-api")
URL_KINDS = ("native-api", "remote-api")  # kinds that are reached at a configured URL


@dataclass(frozen=True)
class Volume:
    """A named volume the service owns, where it is mounted, and what in it is cache.

    ``cache`` lists sub-paths (relative to the mount) that can be downloaded
    again, so a backup may leave them out; anything else is the user's data.
    """

    name: str
    mount: str
    cache: tuple[str, ...] = ()
    # Content-addressed model files (Ollama's models/blobs/sha256-<hex>): stored
    # once, checked against their name, and not read again once in a store.
    blobs: str | None = None
    # Whether a backup pauses the service while it copies this volume. A volume
    # whose files are written once under a temporary name and renamed (Ollama's
    # models) reads consistently while the service runs.
    quiesce: bool = True


@dataclass(frozen=True)
class DataSchema:
    """A service whose data carries a one-way schema version (Open WebUI: an
    Alembic-migrated SQLite database). A backup records the version its data
    is at; a restore refuses data newer than the image it will run with.

    Everything is read with `docker cp` (nothing needed in the image).
    """

    volume: str  # the volume holding the database
    database: str  # the SQLite file, relative to the volume's mount
    migrations: str  # the folder in the image holding the revisions it knows (<rev>_*.py)
    version_file: str | None = None  # a JSON file in the image with {"version": …}


@dataclass(frozen=True)
class ImageBuild:
    """An image built here, from a folder, when it is not on the engine (an
    extension's own server): nothing to pull, no registry to ask."""

    context: Path
    args: Callable[[Settings], Mapping[str, str]]  # build args from the settings (its base)


@dataclass(frozen=True)
class EnvContext:
    """What a service's environment hook may read: resolved values, no commands."""

    settings: Settings
    secrets: Mapping[str, str]
    container_urls: Mapping[str, str]  # how containers reach each service
    fragment_text: str  # the service's own compose fragment, for change hashes


@dataclass(frozen=True)
class NativeSupport:
    """A service that may run on the host itself (native-api) instead of in Docker."""

    url: str  # where it listens when installed on the host
    log_places: str  # where its logs are, said to the user
    # Finds how it was installed and updates it that way: gives a module with
    # detect_install(shell) and update_native(shell, version, progress=),
    # loaded when asked (an update), not with the catalog (every query).
    installer: Callable[[], Any]
    listen_hint: str = "listen on all interfaces, firewalled"  # for containers to reach it
    install_hint: str = "install it on the host"  # when a platform wants it native
    # Platforms where it runs natively unless configured otherwise (Apple
    # Silicon: Docker cannot reach the Metal GPU).
    native_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # the compose service name and the config key
    title: str  # how people call it
    env_prefix: str  # OLLAMA → OLLAMA_IMAGE, OLLAMA_PORT, OLLAMA_CPUS in the compose env
    image: str  # default image reference
    port: int  # default published port on the host
    container_port: int
    probe: ProbeSpec
    fragment: Path  # the compose file that runs it
    volumes: tuple[Volume, ...] = ()
    # Compose files added on a platform (e.g. {"nvidia": GPU reservations}).
    platform_fragments: Mapping[str, Path] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()  # services it calls; their links are checked from inside
    # dependency → a path on this service's own URL where it asks that
    # dependency itself and passes on its answer (Open WebUI's
    # /ollama/api/version): the link is asked over HTTP, without an exec.
    link_paths: Mapping[str, str] = field(default_factory=dict)
    # The compose variable that carries how containers reach this service.
    url_env: str | None = None
    env: Callable[[EnvContext], dict[str, str]] | None = None  # more compose variables
    auth_secret: str | None = None  # secret sent as a bearer token to our own instance
    native: NativeSupport | None = None
    serves_models: bool = False  # status counts its models
    data_schema: DataSchema | None = None
    extension: bool = False  # added by an enabled extension, not one of the core services
    build: ImageBuild | None = None  # its image is built here when missing
    # Where an admin changes the tool servers it offers in chats (Open WebUI's
    # saved list, which wins over TOOL_SERVER_CONNECTIONS once it has started).
    tool_server_api: str | None = None
    # Stand-in image built by `dev.standins` (a directory under compose/standins).
    standin: str | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds this service may be configured as."""
        return tuple(k for k in KIND_NAMES if k != "native-api" or self.native)


@dataclass(frozen=True)
class ToolServer:
    """An MCP server an extension puts behind the proxy: served under /<name>/
    with the stack's API key, and offered to Open WebUI as a tool server."""

    name: str
    description: str
    proxy_entry: Mapping[str, Any]  # its entry in mcpo's mcpServers
    # Secrets (from secrets.env) a stdio server gets in its environment.
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Extensions:
    """What enabled extensions add to the catalog for one installation."""

    specs: Mapping[str, ServiceSpec] = field(default_factory=dict)
    tool_servers: Mapping[str, ToolServer] = field(default_factory=dict)
    # Every extension found, enabled or not: settings may name one that is
    # disabled now (images.notes), which must not break every command.
    names: frozenset[str] = frozenset()
    # Disabled extensions whose volumes may still hold data: backups take them.
    dormant: Mapping[str, ServiceSpec] = field(default_factory=dict)


class Catalog:
    """The registered services, in the order they were registered, and the
    tool servers enabled extensions add.

    The core services are the process's; what extensions add belongs to the
    installation being worked on, held in a context variable, so a fleet's
    hosts (one thread and context each) each see their own enabled ones. A
    thread started without a context of its own (a pool's) sees what was set
    last, as when this was one global.
    """

    def __init__(self) -> None:
        self._core: dict[str, ServiceSpec] = {}
        self._added: ContextVar[_Extensions | None] = ContextVar(
            f"catalog-extensions-{id(self)}", default=None
        )
        self._latest = _Extensions()

    def _extensions(self) -> _Extensions:
        return self._added.get() or self._latest

    @property
    def _specs(self) -> dict[str, ServiceSpec]:
        return {**self._core, **self._extensions().specs}

    def register(self, spec: ServiceSpec) -> ServiceSpec:
        if spec.name in self._specs:
            raise ValueError(f"service {spec.name!r} is registered twice")
        self._core[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        del self._core[name]

    def __iter__(self) -> Iterator[ServiceSpec]:
        return iter(list(self._specs.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> ServiceSpec:
        return self._specs[name]

    def names(self) -> list[str]:
        return list(self._specs)

    def check_names(self, names: list[str] | tuple[str, ...]) -> list[str]:
        """The names as given, or a one-line error naming the unknown ones."""
        known = self._specs
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                f"unknown service {', '.join(unknown)}",
                f"valid services: {', '.join(known)}",
            )
        return list(names)

    def model_server(self) -> ServiceSpec | None:
        return next((s for s in self if s.serves_models), None)

    def tool_servers(self) -> list[ToolServer]:
        return list(self._extensions().tool_servers.values())

    def may_name(self, name: str) -> bool:
        """May a setting keyed by service name this one (a service, or an extension)?"""
        return name in self._specs or name in self._extensions().names

    def fingerprint(self) -> dict[str, Any]:
        """What judging settings reads of the catalog: each service's name,
        kinds and defaults, and every extension's name (see config.memo)."""
        return {
            "services": [[s.name, list(s.kinds), s.image, s.port] for s in self],
            "extensions": sorted(self._extensions().names),
        }

    def dormant(self) -> list[ServiceSpec]:
        """Extensions found but not enabled that own volumes: not run, not
        shown, but their data is still the user's."""
        return list(self._extensions().dormant.values())

    def set_extensions(
        self,
        specs: list[ServiceSpec],
        tool_servers: list[ToolServer],
        found: frozenset[str] = frozenset(),
        dormant: list[ServiceSpec] | None = None,
    ) -> None:
        """Replace what extensions added (the enabled ones change between calls);
        ``found``: the names of every extension there is; ``dormant``: the
        disabled ones that own volumes."""
        added: dict[str, ServiceSpec] = {}
        for spec in specs:
            if spec.name in self._core or spec.name in added:
                raise ValueError(f"service {spec.name!r} is registered twice")
            added[spec.name] = spec
        self._latest = _Extensions(
            specs=added,
            tool_servers={server.name: server for server in tool_servers},
            names=found,
            dormant={spec.name: spec for spec in dormant or []},
        )
        self._added.set(self._latest)


CATALOG = Catalog()
