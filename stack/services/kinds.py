"""What differs by service kind, one class per kind.

- ``docker``: a container of this stack. Compose runs it; its health is
  watched for crash loops; updates compare registry digests and roll back;
  uninstall removes its container, image and (when asked) volumes; backups
  take its volumes.
- ``native-api``: installed on the host itself (Ollama.app, a systemd unit).
  Probed at its URL; updated the way it was installed; never removed.
- ``remote-api``: someone else's endpoint. Probed and re-validated; nothing
  on it is ever changed from here.

Every other module asks ``kind_of(settings, name)`` and calls the kind;
none compares a kind's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit, urlunsplit

from ollama_stack.common.errors import StackError

from ..config import Settings, redact_url
from ..events import Progress
from ..health import ProbeResult, api_version, probe
from .spec import CATALOG, ServiceSpec, Volume

# The registry client and the update records are imported where an update
# needs them: every command describes its services through these kinds, and
# only updates ask a registry (~10 ms of imports for the others).
if TYPE_CHECKING:
    from ollama_stack.compose.client import ContainerState

    from ..runtime import Runtime
    from ..update.records import Outcome, ServiceCheck, ServiceOutcome

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class ServiceKind:
    name: ClassVar[str]
    in_compose: ClassVar[bool] = False  # run, watched, updated and removed by compose
    restarted_by_update: ClassVar[bool] = False  # its update restarts a running service
    on_host: ClassVar[bool] = False  # runs on the stack's host itself, outside Docker
    only_flag: ClassVar[str]  # the update flag that selects this kind alone
    # Its data is ours to change (pull or delete a model): false for a server
    # someone else runs, which the stack only reads.
    managed: ClassVar[bool] = True

    # -- where it is ----------------------------------------------------------

    def url(self, rt: Runtime, spec: ServiceSpec) -> str:
        return str(rt.settings.services[spec.name].url).rstrip("/")

    def container_url(self, rt: Runtime, spec: ServiceSpec) -> str:
        """How the stack's containers reach it: a loopback URL means the host's
        loopback, which containers reach as host.docker.internal."""
        svc = rt.settings.services[spec.name]
        if svc.container_url:
            return svc.container_url
        parts = urlsplit(str(svc.url))
        if parts.hostname in LOOPBACK_HOSTS:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            netloc = f"host.docker.internal:{port}"
            return urlunsplit(parts._replace(netloc=netloc)).rstrip("/")
        return str(svc.url).rstrip("/")

    def probe_headers(self, rt: Runtime, spec: ServiceSpec) -> dict[str, str]:
        return {}  # our secrets are for our own containers only

    # -- status and logs ------------------------------------------------------

    def status(
        self, rt: Runtime, spec: ServiceSpec, container: ContainerState | None
    ) -> tuple[str, str, str]:
        """State, image and uptime for the status table."""
        return "external", "", ""

    def counts(self, probe: ProbeResult | None, container: ContainerState | None) -> bool:
        """Whether its probe result stands (a stopped container's port may be someone else's)."""
        return True

    unprobed_health: ClassVar[str] = "unhealthy"

    def log_place(self, rt: Runtime, spec: ServiceSpec) -> str | None:
        """Where its logs are, when `compose logs` cannot show them."""
        url = redact_url(self.url(rt, spec))
        return (
            f"{spec.name} is not run by this stack ({self.name} at {url}): "
            "its logs are on the host that runs it"
        )

    # -- data and removal -----------------------------------------------------

    def volumes(self, spec: ServiceSpec) -> tuple[Volume, ...]:
        """The volumes of this stack that hold its data (backups take these)."""
        return ()

    def images(self, rt: Runtime, spec: ServiceSpec) -> list[str]:
        """Images on this stack's engine that uninstall may remove."""
        return []

    # -- updates --------------------------------------------------------------

    def check_update(
        self, rt: Runtime, spec: ServiceSpec, running_ids: dict[str, str], strict: bool
    ) -> ServiceCheck:
        from ..update.records import ServiceCheck  # updates only (see the imports)

        url = self.url(rt, spec)
        result = ServiceCheck(spec.name, self.name, image=redact_url(url))
        endpoint = rt.endpoint(spec.name, with_headers=False)
        found = probe(endpoint, rt.target.dial)
        if not found.ok:
            result.status, result.detail = "unreachable", found.detail
            return result
        result.status = "ok"
        result.version = found.version or api_version(endpoint, rt.target.dial)
        result.detail = self._update_note(rt, spec)
        return result

    def _update_note(self, rt: Runtime, spec: ServiceSpec) -> str:
        return "remote service: validated, never changed from here"

    def apply_update(
        self, rt: Runtime, spec: ServiceSpec, progress: Progress | None
    ) -> ServiceOutcome:
        from ..update.records import ServiceOutcome

        found = self.check_update(rt, spec, {}, strict=False)
        outcome: Outcome = "validated" if found.status == "ok" else "unreachable"
        return ServiceOutcome(spec.name, self.name, outcome, found.detail, current=found.version)


class DockerKind(ServiceKind):
    name = "docker"
    only_flag = "docker_only"
    in_compose = True
    unprobed_health = "unknown"

    def url(self, rt: Runtime, spec: ServiceSpec) -> str:
        return f"http://{rt.probe_host()}:{rt.settings.ports[spec.name]}"

    def container_url(self, rt: Runtime, spec: ServiceSpec) -> str:
        svc = rt.settings.services[spec.name]
        return svc.container_url or f"http://{spec.name}:{spec.container_port}"

    def probe_headers(self, rt: Runtime, spec: ServiceSpec) -> dict[str, str]:
        key = rt.secrets.get(spec.auth_secret) if spec.auth_secret else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def status(
        self, rt: Runtime, spec: ServiceSpec, container: ContainerState | None
    ) -> tuple[str, str, str]:
        if container is None:
            return "absent", rt.settings.images[spec.name], ""
        return container.state, container.image, container.status

    def counts(self, probe: ProbeResult | None, container: ContainerState | None) -> bool:
        return container is not None and container.state == "running"

    def log_place(self, rt: Runtime, spec: ServiceSpec) -> str | None:
        return None  # `compose logs` shows them

    def volumes(self, spec: ServiceSpec) -> tuple[Volume, ...]:
        return spec.volumes

    def images(self, rt: Runtime, spec: ServiceSpec) -> list[str]:
        image = rt.settings.images[spec.name]
        return [image] if rt.compose.image_exists(image) else []

    def check_update(
        self, rt: Runtime, spec: ServiceSpec, running_ids: dict[str, str], strict: bool
    ) -> ServiceCheck:
        from ..update import registry
        from ..update.records import ServiceCheck

        image = rt.settings.images[spec.name]
        result = ServiceCheck(spec.name, self.name, image=image)
        local = rt.compose.image_info(image)
        result.image_id = running_ids.get(spec.name) or (local.id if local else None)
        result.local_digest = (
            registry.local_repo_digest(list(local.repo_digests), image) if local else None
        )
        if local and not local.repo_digests:  # built here (stand-ins, air-gapped builds)
            result.status, result.detail = "local-build", "built on this engine; no registry to ask"
            return result
        try:
            result.registry_digest = _registry_digest(rt, image)
        except StackError as exc:
            if strict:
                raise
            result.detail = exc.message
            return result
        if local is None:
            result.status, result.detail = "not-pulled", "not on this engine yet"
        elif result.local_digest == result.registry_digest:
            stale = running_ids.get(spec.name) not in (None, local.id)
            result.status = "update-available" if stale else "up-to-date"
            result.detail = "pulled; container still runs the old image" if stale else ""
        else:
            result.status = "update-available"
        return result

    def apply_update(
        self, rt: Runtime, spec: ServiceSpec, progress: Progress | None
    ) -> ServiceOutcome:
        raise NotImplementedError("docker services update together (update.engine)")


def _registry_digest(rt: Runtime, image: str) -> str:
    """The registry's digest, asked from this machine.

    A loopback registry named by a remote box's config is that box's own:
    this machine's loopback would answer for a different registry, or not at all.
    """
    from ..update import registry

    where = registry.parse_reference(image).registry
    if rt.target.is_remote and registry.is_loopback(where):
        raise registry.RegistryUnreachable(
            f"{where} is on {rt.target.label}'s own loopback; it cannot be checked from here",
            "publish the registry on an address this machine reaches, or update on the box",
        )
    return registry.remote_digest(image)


class NativeApiKind(ServiceKind):
    name = "native-api"
    only_flag = "native_only"
    restarted_by_update = True
    on_host = True

    def log_place(self, rt: Runtime, spec: ServiceSpec) -> str | None:
        url = redact_url(self.url(rt, spec))
        where = spec.native.log_places if spec.native else "on the host that runs it"
        return f"{spec.name} is not run by this stack ({self.name} at {url}): its logs are {where}"

    def _update_note(self, rt: Runtime, spec: ServiceSpec) -> str:
        assert spec.native is not None  # the settings refuse native-api otherwise
        method = spec.native.installer().detect_install(rt.target.shell())
        return f"installed via {method.name}; update.apply asks it for a newer version"

    def apply_update(
        self, rt: Runtime, spec: ServiceSpec, progress: Progress | None
    ) -> ServiceOutcome:
        from ..update.records import ServiceOutcome

        assert spec.native is not None
        endpoint = rt.endpoint(spec.name, with_headers=False)
        result = spec.native.installer().update_native(
            rt.target.shell(), lambda: api_version(endpoint, rt.target.dial), progress=progress
        )
        outcome = result.outcome if result.outcome != "unchanged" else "up-to-date"
        return ServiceOutcome(
            spec.name, self.name, outcome, result.message, result.before, result.after
        )


class RemoteApiKind(ServiceKind):
    name = "remote-api"
    only_flag = "remote_only"
    managed = False


KINDS: dict[str, ServiceKind] = {
    k.name: k for k in (DockerKind(), NativeApiKind(), RemoteApiKind())
}


def kind_of(settings: Settings, name: str) -> ServiceKind:
    return KINDS[settings.services[name].type]


def natively_run(settings: Settings, platform: str) -> Settings:
    """On a platform where a service runs best on the host (Ollama on Apple
    Silicon, for Metal), a docker service becomes native-api at its native URL."""
    services = dict(settings.services)
    for spec in CATALOG:
        native = spec.native
        if native and platform in native.native_on and kind_of(settings, spec.name).in_compose:
            services[spec.name] = services[spec.name].replace(
                type=NativeApiKind.name, url=native.url
            )
    if services == settings.services:
        return settings
    return settings.replace(services=services)
