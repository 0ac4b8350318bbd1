"""One installation on one target: settings, platform, files and compose, resolved.

``Runtime.open`` reads the files (config, secrets, state) and runs nothing:
what the last start decided (the platform) holds for status, logs, health and
uninstall. ``resolve()`` is the one step that asks the host and the engine
(platform, CPUs, a native service's answer) and returns a new, complete
Runtime; `stack.start`, `stack.config` and updates call it once. A Runtime
never changes after it is made.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from invoke.config import Config as InvokeConfig

from ollama_stack.compose.client import ComposeProject, compose_file

from . import config
from .config import InstallPaths, Settings
from .health import Endpoint, endpoint_for, probe
from .hosts.platform import PlatformChoice, detect
from .hosts.target import Target
from .services import CATALOG, ServiceSpec
from .services.kinds import ServiceKind, kind_of, natively_run
from .services.spec import EnvContext

if TYPE_CHECKING:
    from .hosts.hostcheck import HostFacts

NOT_DETECTED = "not detected yet"
UNDETECTED = PlatformChoice("auto", NOT_DETECTED)


@dataclass(frozen=True)
class Runtime:
    target: Target
    paths: InstallPaths
    configured: Settings  # as the layers say, before the platform has its say
    platform_override: str | None = None
    # What `open` read from the last start, or what `resolve` found.
    platform: PlatformChoice = UNDETECTED
    facts: HostFacts | None = None  # set by resolve()
    compose: ComposeProject = field(default=None)  # type: ignore[assignment]
    # One line for each extension folder or enabled extension that could not
    # be read (reported, never fatal to the core stack).
    extension_problems: tuple[str, ...] = ()
    # The installation id our data volumes carry when they were taken over from
    # another home (`stack.adopt`, recorded in the state): None means our own.
    volumes_installation: str | None = None
    # Found this installation's alone by `lifecycle.refuse_foreign` (see
    # ``owned_copy``): a backup taken with it need not ask the engine again.
    owned: bool = False
    # In effect: a service the platform runs natively is native-api here.
    settings: Settings = field(init=False)

    def __post_init__(self) -> None:
        settings = natively_run(self.configured, self.platform.name)
        object.__setattr__(self, "settings", settings)
        if self.compose is None:
            object.__setattr__(self, "compose", self._new_compose())

    @classmethod
    def open(
        cls,
        remote: str | None = None,
        base: InvokeConfig | None = None,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] = os.environ,
        *,
        older_schema: bool = False,
        extend: Callable[[Mapping[str, Any], config.Memo], list[str]] | None = None,
        record: bool = False,
    ) -> Runtime:
        """Settings and the recorded platform, from files only.

        ``base`` is invoke's configuration (the task's ``c.config``): the
        installation's levels are added to it, its ``ollama_stack`` section
        becomes the settings, and host commands run with it. Files of another
        schema are refused; ``older_schema`` reads older ones as migrated (for
        the migration itself and for uninstall).

        ``extend`` adds services to the catalog from the merged, not yet
        validated, configuration (the enabled extensions) before the settings
        that name services are validated; it returns what it could not add.

        Settings and manifests judged before are read from the memo (see
        config.memo): a query never loads pydantic for what it has judged
        already. ``record``: keep this run's judgements there (tasks that
        change the installation; a read-only one writes nothing).
        """
        flags = dict(flags or {})
        platform_override = flags.pop("platform", None)
        if platform_override is not None:
            config.validate([("--platform", {"platform": platform_override})])
        paths = InstallPaths.for_target(remote, environ)
        layered = config.stack_config(paths, base, flags, environ, older_ok=older_schema)
        memo = config.read_memo(paths)
        problems: tuple[str, ...] = ()
        if extend:
            problems = tuple(extend(layered.raw(), memo))
            layered.load_stack_env(environ)  # OLLAMA_STACK_PORTS_<NAME> of the services added
        settings = layered.settings(memo)
        if record:
            config.write_memo(paths, memo)
        state = config.read_state(paths, older_ok=older_schema)
        platform = PlatformChoice(settings.platform, NOT_DETECTED)
        # What the last start decided (e.g. apple: Ollama is native) holds for
        # status, health, update and uninstall too, until the next start.
        if state.get("platform") and not platform_override:
            platform = PlatformChoice(state["platform"], state.get("platform_reason", ""))
        target = Target(remote, config=layered)
        return cls(
            target,
            paths,
            settings,
            platform_override,
            platform,
            extension_problems=problems,
            volumes_installation=state.get(config.VOLUMES_INSTALLATION_KEY),
        )

    # -- resolve: the one step that asks the host and the engine ---------------

    @property
    def resolved(self) -> bool:
        return self.facts is not None

    def resolve(self) -> Runtime:
        """Detect the platform and the host's CPUs; a new Runtime that knows them."""
        if self.resolved:
            return self
        from .hosts import hostcheck  # a status never resolves: not imported for one

        facts = hostcheck.host_facts(self.target.shell())
        choice = self._detect_platform(facts)
        return self._with(platform=choice, facts=facts)

    def _detect_platform(self, facts: HostFacts) -> PlatformChoice:
        engine = None
        if (self.platform_override or self.configured.platform) == "auto":
            engine = self.compose.engine_info()
        choice = detect(self.configured, self.target.shell(), engine, facts, self.platform_override)
        for spec in CATALOG:
            native = spec.native
            if not native or choice.name not in native.native_on:
                continue
            if not kind_of(self.configured, spec.name).in_compose:
                continue  # configured as native or remote already: not ours to probe
            if not self._native_answers(spec.name, native.url):
                return PlatformChoice(
                    "cpu",
                    f"{facts.system}/{facts.machine}, but no native {spec.title} answers on "
                    f"{native.url} ({native.install_hint}); running {spec.title} in Docker on CPU",
                )
        return choice

    def _native_answers(self, service: str, url: str) -> bool:
        """Does a service installed on the host answer at ``url``?

        After a fallback to Docker, our own container publishes that very port
        (Ollama's 11434): its answer is not a native install's.
        """
        if not probe(endpoint_for(service, url), self.target.dial, timeout=1.0).ok:
            return False
        port = urlsplit(url).port
        ours = self.compose.ps() if self.paths.installed else []
        return not any(c.service == service and port in c.published_ports for c in ours)

    def _with(self, **changes: Any) -> Runtime:
        """A copy with other values; the compose project follows the new files."""
        made = dataclasses.replace(self, compose=self.compose, **changes)
        compose = self.compose.with_files(made.compose_files())
        object.__setattr__(made, "compose", compose)
        return made

    def owned_copy(self) -> Runtime:
        """A copy that says its project was just found this installation's alone."""
        return dataclasses.replace(self, owned=True, compose=self.compose)

    def with_volumes_installation(self, installation: str | None) -> Runtime:
        """A copy whose data volumes carry ``installation`` (taken over from it)."""
        made = dataclasses.replace(
            self, volumes_installation=installation, owned=False, compose=self.compose
        )
        compose = dataclasses.replace(self.compose, volume_installation=installation)
        object.__setattr__(made, "compose", compose)
        return made

    def throwaway(self, project: str, env_file: Path, ports: Mapping[str, int]) -> Runtime:
        """A copy acting on another compose project, published on loopback only:
        a throwaway copy of the services (port 0: Docker picks a free one)."""
        settings = self.configured.replace(
            project=project, bind="127.0.0.1", ports={**self.configured.ports, **ports}
        )
        made = dataclasses.replace(self, configured=settings, owned=False, compose=self.compose)
        compose = dataclasses.replace(self.compose, project=project, env_files=(env_file,))
        object.__setattr__(made, "compose", compose)
        return made

    # -- the services ---------------------------------------------------------

    def kind(self, name: str) -> ServiceKind:
        return kind_of(self.settings, name)

    def docker_services(self) -> list[str]:
        return [spec.name for spec in CATALOG if self.kind(spec.name).in_compose]

    def compose_files(self) -> list[Path]:
        """base.yml, then each docker service's fragment and its platform's additions."""
        files = [compose_file("base.yml")]
        for spec in CATALOG:
            if self.kind(spec.name).in_compose:
                files.append(spec.fragment)
                extra = spec.platform_fragments.get(self.platform.name)
                if extra:
                    files.append(extra)
        return files

    def _new_compose(self) -> ComposeProject:
        return ComposeProject(
            project=self.settings.project,
            files=tuple(self.compose_files()),
            env_files=(self.paths.runtime_env_file,),
            docker_host=self.target.docker_host,
            target_label=self.target.label,
            images=dict(self.settings.images),
            installation=config.installation_id(self.paths),
            volume_installation=self.volumes_installation,
        )

    @cached_property
    def secrets(self) -> dict[str, str]:
        """The installation's secrets as far as they can be read (for probes)."""
        return config.read_secrets_lenient(self.paths)

    # -- urls and endpoints ---------------------------------------------------

    def probe_host(self) -> str:
        bind = self.settings.bind
        if bind in ("0.0.0.0", "::"):
            return "127.0.0.1"
        return f"[{bind}]" if ":" in bind else bind

    def url(self, service: str) -> str:
        return self.kind(service).url(self, CATALOG[service])

    def container_url(self, service: str) -> str:
        """How the stack's containers reach a service."""
        return self.kind(service).container_url(self, CATALOG[service])

    def endpoint(self, service: str, with_headers: bool = True) -> Endpoint:
        spec = CATALOG[service]
        headers = self.kind(service).probe_headers(self, spec) if with_headers else {}
        return endpoint_for(service, self.url(service), headers)

    def endpoints(self, services: list[str] | None = None) -> list[Endpoint]:
        return [self.endpoint(name) for name in services or CATALOG.names()]

    # -- the compose environment ---------------------------------------------

    def compose_env(self, secrets: Mapping[str, str]) -> dict[str, str]:
        """Every value the compose files interpolate. Needs resolve() (CPUs)."""
        if self.facts is None:
            raise RuntimeError("compose_env needs a resolved Runtime (call resolve() first)")
        env = {
            "OLLAMA_STACK_PROJECT": self.settings.project,
            "OLLAMA_STACK_BIND": self.settings.bind,
            "OLLAMA_STACK_INSTALLATION": config.installation_id(self.paths),
            # Volume labels must stay as the volumes were made (see ComposeProject).
            "OLLAMA_STACK_VOLUMES_INSTALLATION": (
                self.volumes_installation or config.installation_id(self.paths)
            ),
        }
        container_urls = {spec.name: self.container_url(spec.name) for spec in CATALOG}
        for spec in CATALOG:
            env.update(self._service_env(spec, container_urls[spec.name]))
        env.update({k: secrets[k] for k in config.SECRET_KEYS})
        for spec in CATALOG:
            if spec.env:
                context = EnvContext(
                    self.settings, secrets, container_urls, spec.fragment.read_text()
                )
                env.update(spec.env(context))
        return env

    def _service_env(self, spec: ServiceSpec, container_url: str) -> dict[str, str]:
        assert self.facts is not None
        wanted = self.settings.limits.get(spec.name)
        host_cpus = self.facts.cpus
        cpus = min(wanted.cpus, host_cpus) if wanted and wanted.cpus else host_cpus
        env = {
            f"{spec.env_prefix}_IMAGE": self.settings.images[spec.name],
            f"{spec.env_prefix}_PORT": str(self.settings.ports[spec.name]),
            f"{spec.env_prefix}_CPUS": f"{cpus:g}",
        }
        if spec.url_env:
            env[spec.url_env] = container_url
        return env
