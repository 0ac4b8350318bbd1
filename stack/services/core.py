"""The three core services, described once. Everything else reads these.

Extensions add services the same way: a ``ServiceSpec`` registered in the
catalog, with its own compose fragment.
"""

from __future__ import annotations

import hashlib
import json
from types import ModuleType
from typing import Any

from ollama_stack.compose.client import compose_file

from ..health import ProbeSpec, json_body
from .spec import CATALOG, DataSchema, EnvContext, NativeSupport, ServiceSpec, Volume

BUILTIN_MCP_SERVER = "stack"
MCP_PROXY_NAME = "mcp_proxy"  # the proxy's service (described below)
MCPO_STACK_TOOLS = "/app/ollama-stack/stack_tools.py"  # mcp_proxy.yml puts it there


# -- how each answers its health probe ---------------------------------------------


def check_ollama(status: int, body: bytes) -> str | None:
    data = json_body(body)
    # A string: Open WebUI answers {"version": false} for Ollama when its Ollama API is off.
    if status == 200 and isinstance(data, dict) and isinstance(data.get("version"), str):
        return None
    return f"answered {status} without a version"


def check_webui(status: int, body: bytes) -> str | None:
    data = json_body(body)
    if status == 200 and isinstance(data, dict) and data.get("status") is True:
        return None
    return f"answered {status}, not status=true"


def check_openapi(status: int, body: bytes) -> str | None:
    data = json_body(body)
    if status == 200 and isinstance(data, dict) and "openapi" in data:
        return None
    if status in (401, 403):
        return f"answered {status}: the proxy refused our API key (MCPO_API_KEY in secrets.env)"
    return f"answered {status} without an OpenAPI document"


# -- what each adds to the compose environment ---------------------------------------


def webui_env(ctx: EnvContext) -> dict[str, str]:
    return {
        "WEBUI_ENABLE_OPENAI_API": str(ctx.settings.webui.openai_api).lower(),
        "WEBUI_OFFLINE_MODE": str(ctx.settings.webui.offline).lower(),
        "WEBUI_TOOL_SERVER_CONNECTIONS": env_safe_json(tool_server_connections(ctx)),
    }


def tool_server_connections(ctx: EnvContext) -> list[dict[str, Any]]:
    """Open WebUI's TOOL_SERVER_CONNECTIONS: our servers behind the proxy, as
    an OpenAPI tool server at <proxy>/<name>/ with the proxy's API key. Open
    WebUI reads it once, to seed its saved setting, on a fresh data volume."""
    proxy = ctx.container_urls.get(MCP_PROXY_NAME, "")
    key = ctx.secrets.get("MCPO_API_KEY", "")
    return [
        tool_server_connection(name, description, proxy, key)
        for name, description in proxied_servers(ctx).items()
    ]


def tool_server_connection(name: str, description: str, proxy: str, key: str) -> dict[str, Any]:
    """One entry of Open WebUI's tool-server list: a server behind our proxy."""
    return {
        "type": "openapi",
        "url": f"{proxy.rstrip('/')}/{name}",
        "path": "openapi.json",
        "auth_type": "bearer",
        "key": key,
        "config": {"enable": True},
        "info": {"id": name, "name": name, "description": description},
    }


def proxied_servers(ctx: EnvContext) -> dict[str, str]:
    """name → description of the servers we put behind the proxy (built-in, extensions)."""
    # The user's own mcp_servers are theirs to offer: changing one must not
    # recreate Open WebUI for a variable it reads only once.
    served = {BUILTIN_MCP_SERVER: "ollama-stack: the models this stack's Ollama holds"}
    served |= {server.name: server.description for server in CATALOG.tool_servers()}
    return served


def mcpo_env(ctx: EnvContext) -> dict[str, str]:
    config = mcpo_config_json(ctx)
    # Compose leaves configs and secrets out of its change hash, and the
    # launcher and tools are inline in the fragment: a new config, key or
    # release of them must reach a running proxy too.
    fingerprint = f"{config}\n{ctx.secrets.get('MCPO_API_KEY', '')}\n{ctx.fragment_text}"
    return {
        "MCPO_CONFIG": config,
        "MCPO_CONFIG_HASH": hashlib.sha256(fingerprint.encode()).hexdigest()[:16],
    }


def _ollama_installer() -> ModuleType:
    """How a host-installed Ollama is found and updated (loaded for an update only)."""
    from . import ollama_native

    return ollama_native


def mcpo_config_json(ctx: EnvContext) -> str:
    """mcpo's --config: the built-in `stack` tools first, then the user's servers.

    It travels through the compose env file (see env_safe_json).
    """
    servers: dict[str, dict[str, Any]] = {
        BUILTIN_MCP_SERVER: {"command": "python3", "args": [MCPO_STACK_TOOLS]}
    }
    for server in CATALOG.tool_servers():  # enabled extensions
        entry = dict(server.proxy_entry)
        if server.secrets:  # its tokens: in the proxy's config, never in an argv
            given = {key: ctx.secrets.get(key, "") for key in server.secrets}
            entry["env"] = {**entry.get("env", {}), **given}
        servers[server.name] = entry
    for name, server in ctx.settings.mcp_servers.items():
        servers[name] = server.to_json()  # as the user gave it (see config.settings)
    return env_safe_json({"mcpServers": servers})


def env_safe_json(value: Any) -> str:
    """Compact ASCII JSON with ' and $ escaped, so it is a literal single-quoted
    value in a compose env file (no quote to end it, nothing to interpolate)."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("'", "\\u0027").replace("$", "\\u0024")


# -- the descriptions -------------------------------------------------------------------

OLLAMA = CATALOG.register(
    ServiceSpec(
        name="ollama",
        title="Ollama",
        env_prefix="OLLAMA",
        image="ollama/ollama:latest",
        port=11434,
        container_port=11434,
        probe=ProbeSpec("/api/version", check_ollama),
        fragment=compose_file("ollama.yml"),
        # Models are large but not re-creatable offline: never cache. Ollama
        # downloads a blob to sha256-<hex>-partial and renames it when whole:
        # only such an unfinished download is left out.
        volumes=(
            Volume(
                "ollama_data",
                "/root/.ollama",
                cache=("models/blobs/*-partial*",),
                blobs="models/blobs",
                quiesce=False,
            ),
        ),
        platform_fragments={"nvidia": compose_file("ollama.nvidia.yml")},
        url_env="OLLAMA_BASE_URL",
        native=NativeSupport(
            url="http://127.0.0.1:11434",
            log_places=(
                "on the host that runs it (Linux: `journalctl -u ollama`; macOS: "
                "~/.ollama/logs/server.log)"
            ),
            installer=_ollama_installer,
            listen_hint="OLLAMA_HOST=0.0.0.0, firewalled",
            install_hint="install Ollama.app for Metal",
            native_on=("apple",),
        ),
        serves_models=True,
        standin="ollama",
    )
)

WEBUI = CATALOG.register(
    ServiceSpec(
        name="webui",
        title="Open WebUI",
        env_prefix="WEBUI",
        image="ghcr.io/open-webui/open-webui:main",
        port=8080,
        container_port=8080,
        # Open WebUI's /health is a fixed answer; /health/db pings its database.
        probe=ProbeSpec("/health/db", check_webui, "/health", "/api/version"),
        fragment=compose_file("webui.yml"),
        # cache/ holds re-downloadable models (embedding, whisper, tiktoken)
        # beside tool outputs that chats link to: only the model folders are cache.
        volumes=(
            Volume(
                "webui_data",
                "/app/backend/data",
                cache=("cache/embedding", "cache/whisper", "cache/tiktoken"),
            ),
        ),
        depends_on=("ollama",),
        # Open WebUI asks its own OLLAMA_BASE_URL here, without a login: Ollama's
        # version when it reaches one, 500 when none answers.
        link_paths={"ollama": "/ollama/api/version"},
        env=webui_env,
        tool_server_api="/api/v1/configs/tool_servers",
        # Alembic migrates webui.db at start, one way: an older Open WebUI exits
        # on a newer database ("Can't locate revision").
        data_schema=DataSchema(
            volume="webui_data",
            database="webui.db",
            migrations="/app/backend/open_webui/migrations/versions",
            version_file="/app/package.json",
        ),
        standin="webui",
    )
)

MCP_PROXY = CATALOG.register(
    ServiceSpec(
        name=MCP_PROXY_NAME,
        title="the MCP proxy (mcpo)",
        env_prefix="MCPO",
        image="ghcr.io/open-webui/mcpo:main",
        port=8200,
        container_port=8000,
        probe=ProbeSpec("/openapi.json", check_openapi),
        fragment=compose_file("mcp_proxy.yml"),
        env=mcpo_env,
        # Our proxy runs with --strict-auth: even its OpenAPI document needs the key.
        auth_secret="MCPO_API_KEY",
        standin="mcpo",
    )
)
