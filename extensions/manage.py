"""Enabling, disabling and looking at extensions.

Enabling checks everything first (the name, what it depends on, the host's
platform and GPU, the tokens it needs) and changes nothing on a refusal. Then
the name joins ``extensions.enabled`` in config.yaml, a token given in the
environment goes into the private secrets file, and a running stack is
brought up to date: the proxy is recreated with the new server in its
config, the extension's own container (if it has one) is started, and Open
WebUI gets the tool server. Disabling takes the server out the same way and
keeps the extension's data volumes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ollama_stack.common.errors import ConfigError, StackError
from ollama_stack.stack import config
from ollama_stack.stack.events import Progress, emit
from ollama_stack.stack.health import get_json, send_json
from ollama_stack.stack.lifecycle import build_missing, prepare, start, wait_healthy
from ollama_stack.stack.runtime import Runtime
from ollama_stack.stack.services import CATALOG
from ollama_stack.stack.services.core import MCP_PROXY_NAME, tool_server_connection

from .registry import Extension, Found

Reopen = Callable[[], Runtime]  # the installation read again, with the new config
ADMIN_KEY = "WEBUI_ADMIN_API_KEY"  # an Open WebUI admin's API key, if the user keeps one


@dataclass
class Row:
    name: str
    description: str
    version: str
    kind: str
    enabled: bool
    running: bool
    supported: str  # "" when this host can run it, else why not
    folder: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Changed:
    changed: list[str] = field(default_factory=list)  # extensions enabled or disabled
    applied: bool = False  # the running stack was brought up to date
    notes: list[str] = field(default_factory=list)  # what the user should know or do

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def known(found: Found, name: str) -> Extension:
    extension = found.extensions.get(name)
    if extension is None:
        broken = next((p for where, p in found.problems.items() if where.endswith(f"/{name}")), "")
        if broken:
            raise ConfigError(broken, "fix the extension's folder")
        raise ConfigError(
            f"unknown extension {name!r}",
            f"available: {', '.join(sorted(found.extensions)) or 'none'}",
        )
    return extension


def rows(rt: Runtime, found: Found) -> list[Row]:
    """Every extension found: whether it is enabled, running, and able to run here."""
    enabled = set(rt.settings.extensions.enabled)
    running = _running(rt) if enabled else set()
    return [
        Row(
            name=ext.name,
            description=ext.manifest.description,
            version=ext.manifest.version,
            kind=ext.manifest.kind,
            enabled=ext.name in enabled,
            running=ext.name in running,
            supported=unsupported(rt, ext),
            folder=str(ext.folder),
        )
        for ext in found.extensions.values()
    ]


def _running(rt: Runtime) -> set[str]:
    """Enabled extensions that serve now: their container runs (one Docker query);
    a stdio one runs inside the proxy, so it runs when the proxy does."""
    states = {c.service: c.state for c in rt.compose.ps()}
    proxy_runs = states.get(MCP_PROXY_NAME) == "running"
    found = set()
    for name in rt.settings.extensions.enabled:
        has_container = name in CATALOG and CATALOG[name].extension
        if (states.get(name) == "running") if has_container else proxy_runs:
            found.add(name)
    return found


def unsupported(rt: Runtime, ext: Extension) -> str:
    """Why this host cannot run the extension ("" when it can): platform, GPU."""
    manifest = ext.manifest
    platform = rt.platform.name
    if platform in ("auto", "") or rt.platform.reason == "not detected yet":
        platform = rt.settings.platform if rt.settings.platform != "auto" else ""
    if platform and platform not in manifest.platforms:
        return f"it runs on {', '.join(manifest.platforms)}; this host is {platform}"
    if manifest.requires.gpu == "nvidia" and platform and platform != "nvidia":
        return f"it needs an NVIDIA GPU; this host is {platform}"
    memory = rt.facts.memory if rt.facts else 0  # known once the host was asked (enable)
    if memory and manifest.requires.memory_mb << 20 > memory:
        return f"it needs {manifest.requires.memory_mb} MiB of memory; this host has {memory >> 20}"
    return ""


def info(rt: Runtime, found: Found, name: str) -> dict[str, Any]:
    """The manifest, where it runs from, and its tools when it serves."""
    ext = known(found, name)
    (row,) = [r for r in rows(rt, found) if r.name == name]
    document: dict[str, Any] = {
        **row.to_json(),
        "manifest": ext.manifest.to_json(),
        "secrets_missing": _missing_secrets(rt, ext, {}),
        "tools": _tools(rt, name) if row.running else [],
    }
    server = ext.container
    if server is not None:
        document["port"] = rt.settings.ports.get(name, server.host_port) if row.enabled else None
        document["volumes"] = [f"{rt.settings.project}_{v.name}" for v in server.volumes]
    return document


def _tools(rt: Runtime, name: str) -> list[str]:
    """The operations the proxy serves for it (its OpenAPI document's paths)."""
    document = get_json(rt.endpoint(MCP_PROXY_NAME), f"/{name}/openapi.json", rt.target.dial)
    paths = document.get("paths") if isinstance(document, dict) else None
    return sorted(p.strip("/") for p in paths) if isinstance(paths, dict) else []


def _missing_secrets(rt: Runtime, ext: Extension, given: Mapping[str, str]) -> list[str]:
    have = config.read_secrets_lenient(rt.paths)
    return [s for s in ext.manifest.requires.secrets if not (have.get(s) or given.get(s))]


def enable(
    rt: Runtime,
    found: Found,
    name: str,
    *,
    with_deps: bool = False,
    tokens: Mapping[str, str] | None = None,
    reopen: Reopen,
    progress: Progress | None = None,
) -> Changed:
    """Check, then enable ``name`` (and with ``with_deps`` what it needs)."""
    config.read_secrets(rt.paths)  # installed
    tokens = dict(tokens or {})
    enabled = list(rt.settings.extensions.enabled)
    wanted = _with_dependencies(found, name, enabled)
    missing_deps = [n for n in wanted if n != name]
    if missing_deps and not with_deps:
        raise ConfigError(
            f"extension {name} needs {', '.join(missing_deps)}, which "
            f"{'is' if len(missing_deps) == 1 else 'are'} not enabled",
            f"`inv ext.enable {name} --with-deps`, or enable {', '.join(missing_deps)} first",
        )
    new = [n for n in wanted if n not in enabled]
    if not new:  # enabled before: bring the stack up to date again (a failed start, say)
        result = Changed(notes=[f"extension {name} is already enabled"])
        _applied(rt, reopen, result, progress, [found.extensions[name]], name)
        return result
    rt = rt.resolve() if not rt.resolved else rt  # the platform decides what can run
    secrets: dict[str, str] = {}
    for ext in (found.extensions[n] for n in new):
        _refuse_unrunnable(rt, ext, tokens)
        secrets |= {s: tokens[s] for s in ext.manifest.requires.secrets if tokens.get(s)}
    if secrets:
        config.add_secrets(rt.paths, secrets)
    config.update_user_config(rt.paths, {"extensions": {"enabled": enabled + new}})
    emit(progress, "step", f"enabled {', '.join(new)} in {rt.paths.config_file}")
    result = Changed(changed=new)
    _applied(rt, reopen, result, progress, [found.extensions[n] for n in new], name)
    return result


def _applied(
    rt: Runtime,
    reopen: Reopen,
    result: Changed,
    progress: Progress | None,
    added: list[Extension],
    name: str,
) -> None:
    """Apply; if that fails, the one line says the extension stays enabled."""
    try:
        _apply(rt, reopen, result, progress, added)
    except StackError as failure:
        failure.message += f" (extension {name} stays enabled: `inv ext.disable {name}` undoes it)"
        raise


def _with_dependencies(found: Found, name: str, enabled: list[str]) -> list[str]:
    """``name`` and the extensions it needs, needed ones first (core services
    are always there); a cycle or an unknown name is one line."""
    order: list[str] = []

    def visit(current: str, path: tuple[str, ...]) -> None:
        if current in path:
            raise ConfigError(
                f"extensions depend on each other in a circle: {' → '.join((*path, current))}",
                "fix depends_on in their extension.yaml",
            )
        ext = known(found, current)
        for dep in ext.manifest.depends_on:
            if dep in CATALOG and not CATALOG[dep].extension:
                continue  # a core service
            if dep not in enabled:
                visit(dep, (*path, current))
        if current not in order:
            order.append(current)

    visit(name, ())
    return [n for n in order if n == name or n not in enabled]


def _refuse_unrunnable(rt: Runtime, ext: Extension, tokens: Mapping[str, str]) -> None:
    why = unsupported(rt, ext)
    if why:
        raise ConfigError(f"extension {ext.name} cannot run here: {why}", "nothing was changed")
    missing = _missing_secrets(rt, ext, tokens)
    if missing:
        raise ConfigError(
            f"extension {ext.name} needs {', '.join(missing)}, which secrets.env does not hold",
            f"give it once in the environment: `{missing[0]}=… inv ext.enable {ext.name}` "
            "(it is kept in the private secrets file)",
        )


def disable(
    rt: Runtime,
    found: Found,
    name: str,
    *,
    force: bool = False,
    reopen: Reopen,
    progress: Progress | None = None,
) -> Changed:
    enabled = list(rt.settings.extensions.enabled)
    if name not in enabled:
        if name not in found.extensions:
            known(found, name)  # unknown: one line with the names
        return Changed(notes=[f"extension {name} is not enabled"])
    users = [
        n
        for n in enabled
        if n != name and n in found.extensions and name in found.extensions[n].manifest.depends_on
    ]
    if users and not force:
        raise ConfigError(
            f"{', '.join(users)} {'depends' if len(users) == 1 else 'depend'} on extension {name}",
            f"disable {', '.join(users)} first, or `inv ext.disable {name} --force`",
        )
    had_container = name in CATALOG and CATALOG[name].extension
    container = [c.name for c in rt.compose.ps() if c.service == name] if had_container else []
    remaining = [n for n in enabled if n != name]
    config.update_user_config(rt.paths, {"extensions": {"enabled": remaining}})
    emit(progress, "step", f"disabled {name} in {rt.paths.config_file}")
    result = Changed(changed=[name])
    if container:
        emit(progress, "step", f"removing {name}'s container (its volumes are kept)")
        rt.compose.stop_containers(container)
        rt.compose.remove("container", container)
    _apply(rt, reopen, result, progress, [])
    server = found.extensions[name].container if name in found.extensions else None
    if server is not None and server.volumes:
        kept = ", ".join(v.name for v in server.volumes)
        result.notes.append(
            f"kept its volumes {kept} (`stack.uninstall --remove-volumes` removes them)"
        )
    return result


def _apply(
    rt: Runtime,
    reopen: Reopen,
    result: Changed,
    progress: Progress | None,
    added: list[Extension],
) -> None:
    """Bring a running stack up to date; a stopped one picks it up at its next start."""
    states = {c.service: c.state for c in rt.compose.ps()}
    if states.get(MCP_PROXY_NAME) != "running":
        result.notes.append(
            "the stack is not running: `inv stack.start` starts it with this; an Open WebUI "
            "that has run before keeps its own tool-server list (`inv ext.enable` again, once "
            "the stack runs, offers it there)"
        )
        return
    fresh = reopen()
    start(fresh, pull="never", progress=progress)  # builds an image built here first
    result.applied = True
    result.notes.append(_offer_to_chat(fresh, found_servers(added), result.changed, progress))


def found_servers(added: list[Extension]) -> dict[str, str]:
    return {ext.name: ext.manifest.description for ext in added}


def _offer_to_chat(
    rt: Runtime, added: dict[str, str], changed: list[str], progress: Progress | None
) -> str:
    """Open WebUI reads TOOL_SERVER_CONNECTIONS only on a new data volume; after
    that its own saved list wins. With an admin's API key (WEBUI_ADMIN_API_KEY
    in secrets.env) ours are added to that list or taken out of it; the user's
    own entries are never changed. Without one, say what to do by hand."""
    chat = next((spec for spec in CATALOG if spec.tool_server_api), None)
    if chat is None or not rt.kind(chat.name).in_compose:
        return ""
    secrets = config.read_secrets_lenient(rt.paths)
    proxy = rt.container_url(MCP_PROXY_NAME)
    ours = [
        tool_server_connection(name, added.get(name, name), proxy, secrets.get("MCPO_API_KEY", ""))
        for name in changed
    ]
    urls = ", ".join(c["url"] for c in ours)
    by_hand = (
        f"in Admin Settings → External Tools (OpenAPI, auth Bearer, key MCPO_API_KEY from "
        f"secrets.env), or keep an admin's API key as {ADMIN_KEY} in secrets.env"
    )
    if not secrets.get(ADMIN_KEY):
        if added:
            return (
                f"{chat.title}: a new installation lists {urls}; one that has run before keeps "
                f"its own list: add it {by_hand}"
            )
        return f"{chat.title}: remove {urls} if it is listed, {by_hand}"
    emit(progress, "step", f"updating {chat.title}'s tool servers through its admin API")
    return _edit_saved_list(
        rt, chat.name, chat.tool_server_api or "", secrets[ADMIN_KEY], ours, bool(added)
    )


def _edit_saved_list(
    rt: Runtime, service: str, path: str, key: str, ours: list[dict[str, Any]], add: bool
) -> str:
    endpoint = replace(
        rt.endpoint(service, with_headers=False), headers={"Authorization": f"Bearer {key}"}
    )
    title = CATALOG[service].title
    status, answer = send_json(endpoint, "GET", path, None, rt.target.dial)
    saved = answer.get("TOOL_SERVER_CONNECTIONS") if isinstance(answer, dict) else None
    if status != 200 or not isinstance(saved, list):
        raise StackError(
            f"{title} did not give its tool servers (HTTP {status}); the extension is "
            f"{'enabled' if add else 'disabled'} but {title} was not changed",
            f"check {ADMIN_KEY} in secrets.env (an admin's API key)",
        )
    urls = {c["url"] for c in ours}
    listed = {c.get("url") for c in saved if isinstance(c, dict)}
    if add:  # an entry the user made for the same URL stays as they set it
        wanted = saved + [c for c in ours if c["url"] not in listed]
    else:
        wanted = [c for c in saved if not (isinstance(c, dict) and c.get("url") in urls)]
    if wanted == saved:
        return f"{title} already {'lists' if add else 'does not list'} {', '.join(sorted(urls))}"
    status, _ = send_json(
        endpoint, "POST", path, {"TOOL_SERVER_CONNECTIONS": wanted}, rt.target.dial
    )
    if status != 200:
        raise StackError(
            f"{title} refused the new tool-server list (HTTP {status})", f"check {ADMIN_KEY}"
        )
    return f"{title} now {'lists' if add else 'no longer lists'} {', '.join(sorted(urls))}"


def container_extension(rt: Runtime, found: Found, name: str, task: str) -> Extension:
    """Only an enabled extension with a container of its own can be started,
    stopped or have logs; its compose service has its name."""
    ext = known(found, name)
    if name not in rt.settings.extensions.enabled:
        raise ConfigError(f"extension {name} is not enabled", f"`inv ext.enable {name}` first")
    if ext.container is None:
        raise ConfigError(
            f"extension {name} runs inside the proxy (a stdio server): {task} has no "
            "container to act on",
            "`inv stack.restart` restarts the proxy; `inv stack.logs -s mcp_proxy` shows its logs",
        )
    return ext


def start_container(rt: Runtime, ext: Extension, progress: Progress | None = None) -> None:
    rt = prepare(rt, progress)
    build_missing(rt, [ext.name], progress)
    rt.compose.up([ext.name], pull="never", no_deps=True, sink=_output(progress))
    wait_healthy(rt, rt.settings.start_timeout, progress, [ext.name])


def stop_container(rt: Runtime, ext: Extension, progress: Progress | None = None) -> None:
    rt.compose.stop([ext.name], _output(progress))


def _output(progress: Progress | None) -> Callable[[str], None]:
    return lambda line: emit(progress, "output", line)
