"""Start, stop, restart, status, logs and config for one installation."""

from __future__ import annotations

import contextvars
import shlex
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ollama_stack.common.errors import (
    ConfigError,
    HealthTimeout,
    Interrupted,
    PortInUse,
    ServiceCrashed,
    StackError,
    interruption_code,
)
from ollama_stack.compose.client import (
    UNLABELLED,
    UNMANAGED,
    AdoptionMark,
    ContainerRun,
    ContainerState,
    Ownership,
    PullPolicy,
)

from . import config
from .events import Progress, emit
from .health import ProbeResult, ollama_models, probe_all
from .links import ask_links, with_links
from .runtime import Runtime
from .services import CATALOG
from .services.core import env_safe_json

if TYPE_CHECKING:
    from .hosts.hostcheck import Listener

POLL_SECONDS = 0.5


def check_service_names(names: list[str] | tuple[str, ...]) -> list[str]:
    return CATALOG.check_names(names)


# -- start --------------------------------------------------------------------


@dataclass
class StartResult:
    already_running: bool
    platform: str
    platform_reason: str
    health: dict[str, ProbeResult]
    urls: dict[str, str]
    seconds: float


def prepare(rt: Runtime, progress: Progress | None = None) -> Runtime:
    """Resolve the platform, then write the compose env file and the state it
    was made from; the resolved Runtime is the one to act with."""
    secrets = config.read_secrets(rt.paths)
    rt = rt.resolve()
    choice = rt.platform
    emit(progress, "step", f"platform {choice.name}: {choice.reason}")
    config.write_runtime_env(rt.paths, rt.compose_env(secrets))
    config.write_state(rt.paths, {"platform": choice.name, "platform_reason": choice.reason})
    return rt


def start(
    rt: Runtime,
    *,
    pull: PullPolicy = "missing",
    timeout: float | None = None,
    progress: Progress | None = None,
) -> StartResult:
    began = time.monotonic()
    rt = prepare(rt, progress)
    services = rt.docker_services()
    refuse_foreign(rt)
    ours = rt.compose.ps()
    running = {c.service for c in ours if c.state == "running"}
    if services and set(services) <= running and not stale(rt, ours, services):
        health = check_health(rt)
        if all(r.ok for r in health.values()):
            return start_result(rt, True, health, began)
    check_ports(rt, services, ours, progress)
    exposed = rt.settings.exposure(services)
    if exposed:
        emit(progress, "warn", exposed)
    emit(
        progress, "step", f"starting {', '.join(services) or 'no containers'} on {rt.target.label}"
    )
    try:
        if services:
            build_missing(rt, services, progress)
            rt.compose.up(services, pull=pull, sink=lambda line: emit(progress, "output", line))
        health = wait_healthy(rt, timeout or rt.settings.start_timeout, progress)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM during `up`
        raise Interrupted(
            f"start was stopped; {what_runs(rt, services)}",
            "`inv stack.start` again, or `inv stack.stop`",
            code=interruption_code(stop),
        ) from None
    except StackError as failure:
        # Containers are left as they are, never stopped behind the user's back:
        # say exactly which ones run.
        failure.message += f"; {what_runs(rt, services)}"
        raise
    return start_result(rt, False, health, began)


def build_missing(rt: Runtime, services: list[str], progress: Progress | None = None) -> None:
    """Images built here (an extension's own server) are built when the engine
    lacks them: on a new box, after a tag changed, or one removed by hand."""
    for name in services:
        build, image = CATALOG[name].build, rt.settings.images[name]
        if build is None or rt.compose.image_exists(image):
            continue
        emit(progress, "step", f"building {image} from {build.context} on {rt.target.label}")
        rt.compose.build_image(
            build.context,
            image,
            build.args(rt.settings),
            sink=lambda line: emit(progress, "output", line),
        )


def what_runs(rt: Runtime, services: list[str]) -> str:
    """One clause: which of the services run now, which do not."""
    try:
        running = {c.service for c in rt.compose.ps() if c.state == "running"}
    except StackError:
        return "cannot tell what runs now (Docker did not answer)"
    up = [s for s in services if s in running]
    down = [s for s in services if s not in running]
    if not up:
        return "nothing runs now"
    return f"running now: {', '.join(up)}" + (f"; not running: {', '.join(down)}" if down else "")


def start_result(
    rt: Runtime, already: bool, health: dict[str, ProbeResult], began: float
) -> StartResult:
    return StartResult(
        already_running=already,
        platform=rt.platform.name,
        platform_reason=rt.platform.reason,
        health=health,
        urls={name: config.redact_url(rt.url(name)) for name in CATALOG.names()},
        seconds=round(time.monotonic() - began, 2),
    )


def check_health(rt: Runtime, timeout: float = 2.0) -> dict[str, ProbeResult]:
    """Every service's endpoint, and whether Open WebUI reaches Ollama from inside
    (asked while the probes run, as status does: the question inside a container
    takes longer than all the probes)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        # In this host's context: a fleet's other hosts have other extensions.
        links = pool.submit(contextvars.copy_context().run, ask_links, rt)
        probed = probe_all(rt.endpoints(), rt.target.dial, timeout=timeout)
        return with_links(rt, probed, links.result())


def stale(rt: Runtime, ours: list[ContainerState], services: list[str]) -> bool:
    """Does any running container differ from what the settings now describe?

    Compose's own hash of each service (`config --hash`) against the one its
    container was made from: a new image, port, environment or mcpo config
    means `up` has work to do even though everything answers.
    """
    wanted = rt.compose.config_hashes()
    return any(c.config_hash != wanted.get(c.service) for c in ours if c.service in services)


def refuse_foreign_at_install(rt: Runtime) -> None:
    """An install whose project name another home's containers already use is
    refused before anything is written; an engine we cannot ask (offline, a
    box not reachable yet) leaves that to `stack.start`, which checks again.
    Containers started by hand from our files are no other installation's:
    installing is the first step of taking them over (`stack.adopt`)."""
    try:
        others = rt.compose.foreign_installations() - {UNMANAGED}
    except ConfigError:
        raise
    except StackError:
        return
    if others:
        raise _another_installations(
            rt,
            others,
            "give this one its own project (--project NAME); or, if that installation's home "
            "moved here, copy its config.yaml and secrets.env here and run `inv stack.adopt`",
        )


def refuse_foreign(rt: Runtime) -> Runtime:
    """Never start on top of another installation that uses the same project name.

    Returns ``rt`` marked as checked (``Runtime.owned``), for a caller whose
    backup comes next: restore's safety copy, an update's backup."""
    found = rt.compose.ownership()
    refuse_adopted_elsewhere(rt, found)
    others = found.others
    if others == {UNMANAGED}:
        raise ConfigError(
            f"{_project_on(rt)} was started without ollama-stack (from its compose files by hand)",
            "`inv stack.adopt` takes it over as this installation's (it asks first)",
        )
    if others:
        raise _another_installations(
            rt,
            others,
            "if that was this installation before its home moved, `inv stack.adopt` takes it "
            "over (it asks first); else give this one its own project: "
            "`inv stack.uninstall --remove-config`, then `inv stack.install --project NAME`",
        )
    return rt.owned_copy()


def refuse_adopted_elsewhere(rt: Runtime, found: Ownership | None = None) -> None:
    """Refuse when another installation adopted the project (`stack.adopt`).

    Its volumes keep this home's id, as a volume's labels cannot change, so
    without the mark this home would take them for its own: delete them
    (`uninstall --remove-volumes`), write a backup over them, or recreate the
    containers back. ``found``: the listings refuse_foreign has read already.
    """
    mark = found.mark if found is not None else rt.compose.adoption_mark()
    if mark is not None and adopted_elsewhere(rt, mark):
        raise ConfigError(
            f"{_project_on(rt)} was adopted by the installation at {mark.home} "
            f"(id {mark.installation}); its containers and volumes are that one's now",
            f"run this from the installation at {mark.home}; or take the project back here "
            "with `inv stack.adopt` (it asks first)",
        )


def adopted_elsewhere(rt: Runtime, mark: AdoptionMark | None) -> bool:
    """Does the mark name another installation than this one?"""
    return mark is not None and mark.installation != rt.compose.installation


def _project_on(rt: Runtime) -> str:
    return f"compose project {rt.settings.project!r} on {rt.target.label}"


def _another_installations(rt: Runtime, others: set[str], remedy: str) -> ConfigError:
    return ConfigError(
        f"{_project_on(rt)} belongs to another ollama-stack installation "
        f"(id {', '.join(sorted(others))})",
        remedy,
    )


def check_ports(
    rt: Runtime, services: list[str], ours: list[ContainerState], progress: Progress | None
) -> None:
    """Fail before `up` if another process or container holds one of our ports."""
    if not services:
        return
    from .hosts import hostcheck  # starts only: status and the reads never look at ports

    found = hostcheck.listeners(rt.target.shell())
    if found is None:
        emit(
            progress,
            "warn",
            "cannot list listening ports (no `ss`); compose will tell if one is taken",
        )
        return
    our_ports = set().union(*(c.published_ports for c in ours if c.state == "running"))
    for service in services:
        port = rt.settings.ports[service]
        if port in our_ports:
            continue
        taken = hostcheck.conflicts(rt.settings.bind, port, found)
        if taken:
            holder = _holder(rt, port, taken)
            raise PortInUse(
                f"port {port} for {service} is in use on {rt.target.label} by {holder}",
                f"stop that, or pick another port: OLLAMA_STACK_PORTS_{service.upper()}=<port> "
                f"or ports.{service} in {rt.paths.config_file}",
            )


def _holder(rt: Runtime, port: int, taken: list[Listener]) -> str:
    process = next((t.process for t in taken if t.process), "")
    if not process or process.startswith("docker-proxy"):
        names = rt.compose.containers_publishing(port)
        if names:
            return "container " + ", ".join(names)
    return process or "another process"


def wait_healthy(
    rt: Runtime,
    timeout: float,
    progress: Progress | None = None,
    services: list[str] | None = None,
) -> dict[str, ProbeResult]:
    """Poll every endpoint until all are healthy, reporting each change of state.

    A container that keeps exiting fails the wait at once (ServiceCrashed):
    no timeout is worth waiting out for a crash loop.
    """
    endpoints = rt.endpoints(services)
    watched = {e.service for e in endpoints if rt.kind(e.service).in_compose}
    baseline = rt.compose.container_runs() if watched else {}
    exits: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    began = time.monotonic()
    seen: dict[str, str] = {}
    try:
        while True:
            results = probe_all(endpoints, rt.target.dial, timeout=min(2.0, timeout))
            results = with_links(rt, results)
            for name, result in results.items():
                if seen.get(name) != result.health:
                    seen[name] = result.health
                    took = f" after {time.monotonic() - began:.1f} s" if result.ok else ""
                    emit(
                        progress,
                        "service",
                        f"{name} {result.health}{took}",
                        service=name,
                        state=result.health,
                    )
            if all(r.ok for r in results.values()):
                return results
            runs = rt.compose.container_runs() if watched else {}
            # A running container reports exit code 0: keep the last real one seen.
            exits |= {s: run.exit_code for s, run in runs.items() if run.status != "running"}
            crashed = [run for run in crash_looping(baseline, runs) if run.service in watched]
            if crashed:
                _catch_exit_codes(rt, crashed, exits)
                raise _crashed(rt, crashed, exits)
            if time.monotonic() >= deadline:
                raise _timeout(rt, results, timeout)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt as stop:
        raise Interrupted(
            "stopped waiting for health; the containers were left as compose started them",
            "see `inv stack.status`; `inv stack.stop` stops them",
            code=interruption_code(stop),
        ) from None


CRASH_RESTARTS = 2  # restarts seen during one wait that make a crash loop
STOPPED_CODES = (0, 137, 143)
EXIT_CODE_LOOKS = 8  # polls after a crash loop is found, to learn its exit code


def crash_looping(
    baseline: dict[str, ContainerRun], now: dict[str, ContainerRun]
) -> list[ContainerRun]:
    """Containers that exited for good, or restarted again and again, since the wait began.

    Only restarts during the wait count: a container that restarted weeks ago
    is not looping now. A container the wait has not seen before (recreated by
    `up`: same name, new ID) counts from zero.
    """
    crashed = []
    for service, run in sorted(now.items()):
        before = baseline.get(service)
        restarts = run.restart_count
        if before is not None and before.id == run.id:
            restarts -= before.restart_count
        # 0, 137 and 143 are a stop (by hand, or SIGKILL/SIGTERM), not a crash.
        exited = run.status == "dead" or (
            run.status == "exited" and run.exit_code not in STOPPED_CODES
        )
        if exited or restarts >= CRASH_RESTARTS:
            crashed.append(run)
    return crashed


def _catch_exit_codes(rt: Runtime, crashed: list[ContainerRun], exits: dict[str, int]) -> None:
    """Seen only while up again, a looping container shows exit code 0: look a
    few more times (it will be down again within seconds) for the real one."""
    missing = {run.service for run in crashed if run.service not in exits}
    for _ in range(EXIT_CODE_LOOKS):
        if not missing:
            return
        time.sleep(POLL_SECONDS)
        for service, run in rt.compose.container_runs().items():
            if service in missing and run.status != "running":
                exits[service] = run.exit_code
                missing.discard(service)


def _crashed(rt: Runtime, crashed: list[ContainerRun], exits: dict[str, int]) -> ServiceCrashed:
    parts = []
    for run in crashed:
        how = "exited" if run.status in ("exited", "dead") else "keeps restarting"
        code = exits.get(run.service, run.exit_code if run.status != "running" else None)
        exit_code = f"exit code {code}, " if code is not None else ""
        tail = rt.compose.last_log_lines(run.service, 3)
        logs = f"; last log: {' | '.join(tail)}" if tail else "; no log output"
        parts.append(f"{run.service} {how} ({exit_code}restarted {run.restart_count} times){logs}")
    names = ",".join(run.service for run in crashed)
    return ServiceCrashed(
        f"not healthy: {'; '.join(parts)}",
        f"see `inv stack.logs -s {names}`; a crashing container keeps restarting until "
        "`inv stack.stop`",
    )


def _timeout(rt: Runtime, results: dict[str, ProbeResult], timeout: float) -> HealthTimeout:
    bad = [r for r in results.values() if not r.ok]
    parts = []
    for result in bad:
        logs = ""
        if rt.kind(result.service).in_compose:
            tail = rt.compose.last_log_lines(result.service, 3)
            logs = f"; last log: {' | '.join(tail)}" if tail else "; no log output"
        parts.append(f"{result.service} ({result.detail}{logs})")
    return HealthTimeout(
        f"not healthy after {timeout:g} s: {'; '.join(parts)}",
        "see `inv stack.logs SERVICE`; raise start_timeout for slow first starts",
    )


# -- stop / restart -----------------------------------------------------------


def stop(rt: Runtime, progress: Progress | None = None) -> list[str]:
    """Stop containers; data volumes are never touched here."""
    refuse_foreign(rt)  # `compose stop` acts on the project name: another home's too
    running = [c for c in rt.compose.ps() if c.state == "running"]
    if running:
        names = [c.service for c in running]
        emit(progress, "step", f"stopping {', '.join(names)} on {rt.target.label}")
        rt.compose.stop(sink=lambda line: emit(progress, "output", line))
        # `compose stop` skips a service its files no longer hold (configured
        # native since it started): its container is still ours to stop.
        left = [c.name for c in running if c.service not in rt.docker_services()]
        rt.compose.stop_containers(left)
    return [c.service for c in running]


# -- status -------------------------------------------------------------------


@dataclass
class ServiceStatus:
    name: str
    type: str
    state: str
    health: str
    url: str
    image: str
    uptime: str
    detail: str = ""
    models: int | None = None  # ollama only: models available
    loaded_models: int | None = None  # ollama only: models in memory


@dataclass
class OtherContainers:
    """Who else holds the project: its containers that are not this
    installation's (never shown as ours), and the home whose `stack.adopt`
    took it over, as the adoption mark says."""

    containers: dict[str, str]  # container name → the installation id it carries
    adopted_by: str | None = None  # the adopter's home
    adopter: str | None = None  # the adopter's installation id

    def holders(self) -> list[tuple[HolderKind, str, list[str]]]:
        """(kind, installation id, container names), one per holder."""
        names: dict[str, list[str]] = {}
        for name, installation in sorted(self.containers.items()):
            names.setdefault(installation, []).append(name)
        return [(self._kind(installation), installation, n) for installation, n in names.items()]

    @property
    def blocks_start(self) -> bool:
        """Does `stack.start` refuse the project for them (as `refuse_foreign` does)?"""
        kinds = {kind for kind, _, _ in self.holders()}
        return bool(self.adopted_by) or bool(kinds - {"other-project"})

    def _kind(self, installation: str) -> HolderKind:
        if installation == self.adopter:
            return "adopter"
        if installation == UNMANAGED:
            return "by-hand"
        return "other-project" if installation == UNLABELLED else "installation"


HolderKind = Literal["adopter", "by-hand", "other-project", "installation"]


@dataclass
class StatusReport:
    target: str
    project: str
    installed: bool
    platform: str | None
    services: list[ServiceStatus] = field(default_factory=list)
    others: OtherContainers | None = None

    @property
    def running(self) -> bool:
        return any(s.state == "running" for s in self.services)

    @property
    def healthy(self) -> bool:
        return all(s.health == "healthy" for s in self.services) and bool(self.services)

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "project": self.project,
            "installed": self.installed,
            "platform": self.platform,
            "running": self.running,
            "healthy": self.healthy,
            "services": [s.__dict__ for s in self.services],
            "others": self.others.__dict__ if self.others else None,
        }


def status(rt: Runtime) -> StatusReport:
    platform = config.read_state(rt.paths).get("platform")
    # Probe every endpoint while `compose ps` runs; results for containers
    # that turn out not to be running are dropped below (their port may be
    # someone else's). Links between containers are asked at the same time
    # too: their answers count only where both ends run and answer. So are
    # the models counted: kept only where the service turns out healthy.
    with ThreadPoolExecutor(max_workers=3) as pool:
        listing = pool.submit(rt.compose.ps_with_others)
        # (in this context: a fleet's host sees its own extensions in the catalog)
        links = pool.submit(contextvars.copy_context().run, ask_links, rt)
        counting = pool.submit(contextvars.copy_context().run, _model_counts, rt)
        probed = probe_all(rt.endpoints(), rt.target.dial, timeout=1.5)
        ours, others = listing.result()
        containers = {c.service: c for c in ours}
        running = {name for name, c in containers.items() if c.state == "running"}
        probed = with_links(rt, probed, links.result(), running=running)
        health = {
            name: result
            for name, result in probed.items()
            if rt.kind(name).counts(result, containers.get(name))
        }
        models = {n: c for n, c in counting.result().items() if n in health and health[n].ok}
    report = StatusReport(rt.target.label, rt.settings.project, rt.paths.installed, platform)
    report.others = _other_containers(rt, ours, others)
    for spec in CATALOG:
        kind = rt.kind(spec.name)
        state_text, image, uptime = kind.status(rt, spec, containers.get(spec.name))
        probe = health.get(spec.name)
        counted = models.get(spec.name)
        report.services.append(
            ServiceStatus(
                name=spec.name,
                type=kind.name,
                state=state_text,
                health=probe.health if probe else kind.unprobed_health,
                url=config.redact_url(rt.url(spec.name)),
                image=image,
                uptime=uptime,
                detail=probe.detail if probe else "",
                models=counted[0] if counted else None,
                loaded_models=counted[1] if counted else None,
            )
        )
    return report


def _other_containers(
    rt: Runtime, ours: list[ContainerState], others: list[ContainerState]
) -> OtherContainers | None:
    """Name who else holds the project. The adoption mark is read only where it
    can tell something: another installation's containers, or none of ours (the
    adopter's removed). A stack of our own costs status no extra call."""
    found = OtherContainers({c.name: c.installation for c in others})
    if set(found.containers.values()) - {UNMANAGED, UNLABELLED} or not ours:
        try:
            mark = rt.compose.adoption_mark()
        except StackError:  # the listing answered a moment ago; the names say enough
            mark = None
        if mark is not None and adopted_elsewhere(rt, mark):
            found.adopted_by, found.adopter = mark.home, mark.installation
    return found if found.containers or found.adopted_by else None


def _model_counts(rt: Runtime) -> dict[str, tuple[int, int]]:
    """Models available and in memory, for each service that serves models and answers."""
    counts = {}
    for spec in CATALOG:
        if spec.serves_models:
            found = ollama_models(rt.endpoint(spec.name), rt.target.dial, timeout=1.5)
            if found:
                counts[spec.name] = found
    return counts


# -- logs / config ------------------------------------------------------------


def logs(
    rt: Runtime,
    services: list[str],
    *,
    follow: bool = False,
    tail: str | None = None,
    since: str | None = None,
    timestamps: bool = False,
) -> Iterator[str]:
    """The containers' log lines; services not run in Docker are left to `log_places`."""
    names = check_service_names(services) or CATALOG.names()
    ours = [n for n in names if rt.kind(n).in_compose]
    if not ours:
        return iter(())
    refuse_foreign(rt)  # `compose logs` would show another home's containers as ours
    # All of them named: compose then also shows containers of services it no
    # longer lists (an orphan), as it always did.
    wanted = [] if len(ours) == len(CATALOG.names()) else ours
    return rt.compose.logs(wanted, follow=follow, tail=tail, since=since, timestamps=timestamps)


def log_places(rt: Runtime, services: list[str]) -> list[str]:
    """Where the logs of services we do not run are, one line each."""
    places = []
    for name in check_service_names(services) or CATALOG.names():
        place = rt.kind(name).log_place(rt, CATALOG[name])
        if place:
            places.append(place)
    return places


def _mcp_server_secrets(rt: Runtime) -> set[str]:
    """Env and header values of the configured MCP servers (tokens, as a rule),
    raw and as they appear inside mcpo's JSON config."""
    found: set[str] = set()
    for server in rt.settings.mcp_servers.values():
        values = {**getattr(server, "env", {}), **getattr(server, "headers", {})}.values()
        for value in values:
            if len(value) >= 4:  # shorter ones are flags and numbers, not secrets
                found |= {value, env_safe_json(value)[1:-1]}
    return found


def merged_config(rt: Runtime) -> str:
    """The compose file we would run, with secrets shown as ${NAME} references.

    Read-only: the values go to compose through a private temporary env file,
    never into the installation's files.
    """
    secrets = config.read_secrets(rt.paths)
    rt = rt.resolve()  # on Apple Silicon, Ollama is native: not in the files at all
    with config.private_env_file(rt.compose_env(secrets)) as env_file:
        text = rt.compose.with_env_files([env_file]).config_yaml()
    for key, value in secrets.items():
        text = text.replace(value, "${" + key + "}")
    for value in _mcp_server_secrets(rt):
        text = text.replace(value, "<redacted>")
    for spec in CATALOG:  # a remote service's URL may carry a login
        container_url = rt.container_url(spec.name)
        text = text.replace(container_url, config.redact_url(container_url))
    # Only the docker services' files are in it, so a plain `up` starts just those.
    argv = rt.compose.command_for_users("up", "--detach")
    command = "docker " + shlex.join(argv[1:])
    return (
        "# run it without ollama-stack (`stack.start` writes the env file it names):\n"
        f"#   {command}\n" + text
    )
