"""One installation on one target, wired together: settings, files, compose.

Built once per task invocation by the task layer; the library functions take
it instead of reaching for globals.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ollama_stack.compose.client import ComposeProject, compose_file

from . import config, hostcheck
from .config import SERVICE_NAMES, InstallPaths, Settings
from .health import Endpoint, endpoint_for, probe
from .platform import PlatformChoice, detect
from .target import Target

CONTAINER_PORTS = {"ollama": 11434, "webui": 8080, "mcp_proxy": 8000}
IMAGE_ENV = {"ollama": "OLLAMA_IMAGE", "webui": "WEBUI_IMAGE", "mcp_proxy": "MCPO_IMAGE"}
PORT_ENV = {"ollama": "OLLAMA_PORT", "webui": "WEBUI_PORT", "mcp_proxy": "MCPO_PORT"}
CPU_ENV = {"ollama": "OLLAMA_CPUS", "webui": "WEBUI_CPUS", "mcp_proxy": "MCPO_CPUS"}
NATIVE_OLLAMA_URL = "http://127.0.0.1:11434"
MCPO_STACK_TOOLS = "/app/ollama-stack/stack_tools.py"  # compose/files/base.yml puts it there


@dataclass
class Runtime:
    target: Target
    paths: InstallPaths
    settings: Settings
    platform_override: str | None = None
    _platform: PlatformChoice | None = field(default=None, init=False, repr=False)

    @classmethod
    def open(
        cls,
        remote: str | None = None,
        invoke_layer: Mapping[str, Any] | None = None,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> Runtime:
        flags = dict(flags or {})
        platform_override = flags.pop("platform", None)
        if platform_override is not None:
            config.validate([("--platform", {"platform": platform_override})])
        paths = InstallPaths.for_target(remote, environ)
        settings = config.load_settings(paths, invoke_layer, flags, environ)
        rt = cls(Target(remote), paths, settings, platform_override)
        # What the last start decided (e.g. apple: Ollama is native) holds for
        # status, health, update and uninstall too, until the next start.
        last = config.read_state(paths).get("platform")
        if last and not platform_override:
            rt.settings = rt.settings_for(last)
        return rt

    # -- platform and effective services -----------------------------------

    @cached_property
    def facts(self) -> hostcheck.HostFacts:
        return hostcheck.host_facts(self.target.shell())

    @property
    def platform(self) -> PlatformChoice:
        if self._platform is None:
            engine = None
            if (self.platform_override or self.settings.platform) == "auto":
                engine = self.compose.engine_info()
            choice = detect(
                self.settings, self.target.shell(), engine, self.facts, self.platform_override
            )
            if choice.name == "apple" and not self._native_ollama_answers():
                choice = PlatformChoice(
                    "cpu",
                    "Apple Silicon, but no native Ollama answers on :11434 "
                    "(install Ollama.app for Metal); running Ollama in Docker on CPU",
                )
            self._platform = choice
            self.settings = self.settings_for(choice.name)
        return self._platform

    def _native_ollama_answers(self) -> bool:
        endpoint = endpoint_for("ollama", NATIVE_OLLAMA_URL)
        return probe(endpoint, self.target.dial, timeout=1.0).ok

    def settings_for(self, platform: str) -> Settings:
        """On Apple Silicon Ollama is a native-api service unless configured otherwise."""
        if platform != "apple" or self.settings.service_type("ollama") != "docker":
            return self.settings
        services = dict(self.settings.services)
        services["ollama"] = services["ollama"].model_copy(
            update={"type": "native-api", "url": NATIVE_OLLAMA_URL}
        )
        return self.settings.model_copy(update={"services": services})

    def compose_files(self) -> list:
        files = [compose_file("base.yml")]
        name = self._platform.name if self._platform else self.settings.platform
        if name in ("nvidia", "apple"):
            files.append(compose_file(f"{name}.yml"))
        return files

    @cached_property
    def compose(self) -> ComposeProject:
        return ComposeProject(
            project=self.settings.project,
            files=[compose_file("base.yml")],
            env_files=[self.paths.runtime_env_file] if self.paths.runtime_env_file.exists() else [],
            docker_host=self.target.docker_host,
            target_label=self.target.label,
            images=self.settings.images.model_dump(),
            installation=config.installation_id(self.paths),
        )

    def refresh_compose(self, env_file: Path | None = None) -> ComposeProject:
        """Point the compose project at the platform's files and an env file
        (the installation's own unless another is given)."""
        self.compose.files = self.compose_files()
        self.compose.env_files = [env_file or self.paths.runtime_env_file]
        self.compose._client = None
        return self.compose

    # -- urls and endpoints ---------------------------------------------------

    def probe_host(self) -> str:
        bind = self.settings.bind
        if bind in ("0.0.0.0", "::"):
            return "127.0.0.1"
        return f"[{bind}]" if ":" in bind else bind

    def url(self, service: str) -> str:
        svc = self.settings.services[service]  # type: ignore[index]
        if svc.type != "docker":
            return str(svc.url).rstrip("/")
        port = getattr(self.settings.ports, service)
        return f"http://{self.probe_host()}:{port}"

    def endpoints(self, services: list[str] | None = None) -> list[Endpoint]:
        return [
            endpoint_for(name, self.url(name), self.probe_headers(name))
            for name in services or SERVICE_NAMES
        ]

    def probe_headers(self, service: str) -> dict[str, str]:
        """Our proxy runs with --strict-auth: even its OpenAPI document needs the key.

        Only ours: a remote-api proxy is someone else's, and our key is not theirs.
        """
        ours = service == "mcp_proxy" and self.settings.service_type(service) == "docker"
        key = self._secrets.get("MCPO_API_KEY") if ours else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    @cached_property
    def _secrets(self) -> dict[str, str]:
        return config.read_secrets_lenient(self.paths)

    def ollama_url_for_containers(self) -> str:
        svc = self.settings.services["ollama"]
        if svc.container_url:
            return svc.container_url
        if svc.type == "docker":
            return "http://ollama:11434"
        parts = urlsplit(str(svc.url))
        if parts.hostname in ("localhost", "127.0.0.1", "::1"):
            port = parts.port or (443 if parts.scheme == "https" else 80)
            netloc = f"host.docker.internal:{port}"
            return urlunsplit(parts._replace(netloc=netloc)).rstrip("/")
        return str(svc.url).rstrip("/")

    def compose_env(self, secrets: Mapping[str, str]) -> dict[str, str]:
        env = {
            "OLLAMA_STACK_PROJECT": self.settings.project,
            "OLLAMA_STACK_BIND": self.settings.bind,
            "OLLAMA_BASE_URL": self.ollama_url_for_containers(),
        }
        host_cpus = self.facts.cpus
        for name in SERVICE_NAMES:
            env[IMAGE_ENV[name]] = getattr(self.settings.images, name)
            env[PORT_ENV[name]] = str(getattr(self.settings.ports, name))
            wanted = self.settings.limits.get(name)  # type: ignore[call-overload]
            cpus = min(wanted.cpus, host_cpus) if wanted and wanted.cpus else host_cpus
            env[CPU_ENV[name]] = f"{cpus:g}"
        env.update({k: secrets[k] for k in config.SECRET_KEYS})
        env["OLLAMA_STACK_INSTALLATION"] = config.installation_id(self.paths)
        env["WEBUI_ENABLE_OPENAI_API"] = str(self.settings.webui.openai_api).lower()
        env["WEBUI_OFFLINE_MODE"] = str(self.settings.webui.offline).lower()
        mcpo_config = self.mcpo_config_json()
        env["MCPO_CONFIG"] = mcpo_config
        # The launcher and tools are inline in the compose file: a new release of
        # them must reach a running proxy too.
        base = compose_file("base.yml").read_text()
        fingerprint = f"{mcpo_config}\n{secrets['MCPO_API_KEY']}\n{base}".encode()
        env["MCPO_CONFIG_HASH"] = hashlib.sha256(fingerprint).hexdigest()[:16]
        return env

    def mcpo_config_json(self) -> str:
        """mcpo's --config: the built-in `stack` tools first, then the user's servers.

        It travels through the compose env file (see env_safe_json).
        """
        servers: dict[str, dict] = {
            config.BUILTIN_MCP_SERVER: {"command": "python3", "args": [MCPO_STACK_TOOLS]}
        }
        for name, server in self.settings.mcp_servers.items():
            servers[name] = server.model_dump(exclude_defaults=True)  # `type` has no default
        return env_safe_json({"mcpServers": servers})


def env_safe_json(value: Any) -> str:
    """Compact ASCII JSON with ' and $ escaped, so it is a literal single-quoted
    value in a compose env file (no quote to end it, nothing to interpolate)."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("'", "\\u0027").replace("$", "\\u0024")
