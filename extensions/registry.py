"""Finding extensions, and adding the enabled ones to the service catalog.

Extensions live in folders: the ones shipped in this package, and any the
user names in the ``extensions.paths`` setting. A folder that does not read
is reported, never fatal: a broken extension must not stop the core stack.
An enabled extension with its own container becomes a ``ServiceSpec`` in the
catalog like a core service, so status, health, update, uninstall and backup
cover it with no code of their own; every enabled extension becomes a tool
server behind the proxy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollama_stack.common.errors import ConfigError
from ollama_stack.stack.config import Frozen, Memo, Settings
from ollama_stack.stack.health import ProbeSpec
from ollama_stack.stack.services import CATALOG, ServiceSpec, Volume
from ollama_stack.stack.services.core import BUILTIN_MCP_SERVER, MCP_PROXY_NAME
from ollama_stack.stack.services.spec import EnvContext, ImageBuild, ToolServer

from .manifest import MANIFEST, NAME, Manifest, read_manifest

BUILTIN = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Extension:
    manifest: Manifest
    folder: Path

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def container(self) -> Frozen | None:
        """Its server's settings when it runs in a container of its own."""
        return self.manifest.server if self.manifest.in_container else None

    @property
    def fragment(self) -> Path | None:
        return self.folder / "compose.yml" if self.container else None

    def platform_fragments(self) -> dict[str, Path]:
        found = {p: self.folder / f"compose.{p}.yml" for p in ("cpu", "nvidia", "apple")}
        return {p: path for p, path in found.items() if path.is_file()}

    def tool_server(self) -> ToolServer:
        server = self.manifest.server
        if self.manifest.in_container:
            # mcpo reaches it by its compose service name on the stack's network.
            url = f"http://{self.name}:{server.port}{server.path}"
            entry: dict[str, Any] = {"type": server.transport, "url": url}
        else:
            entry = {"command": server.command, "args": list(server.args)}
            if server.env:
                entry["env"] = dict(server.env)
            secrets = tuple(self.manifest.requires.secrets)
            return ToolServer(self.name, self.manifest.description, entry, secrets)
        return ToolServer(self.name, self.manifest.description, entry)

    def service_spec(self) -> ServiceSpec | None:
        server = self.container
        if server is None:
            return None
        return ServiceSpec(
            name=self.name,
            title=f"extension {self.name}",
            env_prefix=self.name.upper(),
            image=server.image,
            port=server.host_port,
            container_port=server.port,
            probe=ProbeSpec(server.health, _answers_ok),
            fragment=self.folder / "compose.yml",
            volumes=tuple(Volume(v.name, v.mount, cache=tuple(v.cache)) for v in server.volumes),
            platform_fragments=self.platform_fragments(),
            depends_on=tuple(d for d in self.manifest.depends_on if _is_core(d)),
            env=_secrets_env(self.manifest.requires.secrets),
            extension=True,
            build=ImageBuild(self.folder, _on_the_proxy_image) if server.build else None,
        )


def _on_the_proxy_image(settings: Settings) -> dict[str, str]:
    """An extension's own server is built on the proxy's image: Python and the
    mcp SDK are in it, and the stack has it already (nothing to pull)."""
    return {"BASE": settings.images[MCP_PROXY_NAME]}


def _answers_ok(status: int, body: bytes) -> str | None:
    return None if status == 200 else f"answered {status}"


def _is_core(name: str) -> bool:
    return name in CATALOG and not CATALOG[name].extension


def _secrets_env(names: Sequence[str]):
    """Its tokens reach its container through the private compose env file."""

    def env(ctx: EnvContext) -> dict[str, str]:
        return {name: ctx.secrets.get(name, "") for name in names}

    return env


@dataclass(frozen=True)
class Found:
    extensions: dict[str, Extension] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # folder or name → one line


def discover(paths: Iterable[str | Path] = (), memo: Memo | None = None) -> Found:
    """Every extension folder, built-in first; a user's folder cannot replace a
    built-in one or another's with the same name. ``memo``: manifests judged
    before (see config.memo)."""
    extensions: dict[str, Extension] = {}
    problems: dict[str, str] = {}
    for root in [BUILTIN, *(Path(p).expanduser() for p in paths)]:
        if not root.is_dir():
            problems[str(root)] = f"{root}: not a folder (extensions.paths)"
            continue
        for folder in sorted(root.iterdir()):
            if not (folder / MANIFEST).is_file():
                continue
            if not re.fullmatch(NAME, folder.name):
                problems[str(folder)] = f"{folder}: not an extension name (a-z, 0-9, _)"
                continue
            try:
                manifest = read_manifest(folder, memo)
            except ConfigError as broken:
                problems[str(folder)] = broken.message
                continue
            if manifest.name in extensions or _reserved(manifest.name):
                problems[str(folder)] = f"{folder}: the name {manifest.name} is taken"
                continue
            extensions[manifest.name] = Extension(manifest, folder)
    return Found(extensions, problems)


def _reserved(name: str) -> bool:
    return name == BUILTIN_MCP_SERVER or _is_core(name)


def activate(found: Found, enabled: Sequence[str]) -> list[str]:
    """Put the enabled extensions in the catalog (replacing what an earlier call
    put there); return one line for each enabled name that cannot be."""
    problems = []
    specs, servers = [], []
    for name in enabled:
        extension = found.extensions.get(name)
        if extension is None:
            why = next((p for p in found.problems.values() if f"/{name}/" in p), "")
            problems.append(why or f"extension {name} is enabled but not found")
            continue
        spec = extension.service_spec()
        if spec is not None:
            specs.append(spec)
        servers.append(extension.tool_server())
    dormant = [
        spec
        for ext in found.extensions.values()
        if ext.name not in enabled and (spec := ext.service_spec()) is not None and spec.volumes
    ]
    CATALOG.set_extensions(specs, servers, frozenset(found.extensions), dormant)
    return problems


def activate_from_config(
    config: Mapping[str, Any], memo: Memo | None = None
) -> tuple[Found, list[str]]:
    """From the raw (not yet validated) configuration: which are enabled and
    where to look. Settings are validated after this, so images.<name> and
    ports.<name> of an enabled extension are known keys."""
    section = config.get("extensions") or {}
    enabled = section.get("enabled") or [] if isinstance(section, Mapping) else []
    paths = section.get("paths") or [] if isinstance(section, Mapping) else []
    found = discover([str(p) for p in paths if isinstance(p, str)], memo)
    names = [n for n in enabled if isinstance(n, str) and re.fullmatch(NAME, n)]
    return found, activate(found, names)
