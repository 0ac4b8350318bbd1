"""Take over a compose project that another installation's containers hold.

An installation's id is derived from its directory, so a home that was moved
or copied finds its own containers and volumes labelled with another id and
`stack.start` refuses them as foreign; containers started by hand from our
compose files carry ``unmanaged``. `stack.adopt` makes them this
installation's, after a confirmation the task asks for:

- containers are recreated by our compose files (`up --force-recreate`), so
  they carry our id; compose recreates the project's network too when its
  label differs;
- volumes hold the data and stay as they are. Docker cannot change a
  volume's labels, and compose offers to recreate (empty) one whose labels
  differ from its file, so the id the volumes carry is recorded in the state
  and written into their labels from then on (``volumes_installation``);
- the project's adoption mark (a volume ``<project>_ollama-stack-adoption``,
  compose/client.py) names this installation from then on: a home that still
  holds the old installation (a copy) finds the volumes carry its own id, and
  the mark is what refuses it there (start, stop, logs, restore, update,
  rollback, `uninstall --remove-volumes` or `--remove-images`, a Docker
  Ollama's model pull, delete, import and push to it) until it takes the project back with
  `stack.adopt`.

Everything is read before anything changes, and the refusals (a port another
process holds, an image to build) come before `up`: a refusal leaves the
project as it was.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ollama_stack.common.errors import (
    ConfigError,
    Interrupted,
    NotInstalled,
    StackError,
    interruption_code,
)
from ollama_stack.compose.client import UNMANAGED, AdoptionMark, ContainerState, PullPolicy

from . import config
from .events import Progress, emit
from .lifecycle import (
    StartResult,
    adopted_elsewhere,
    build_missing,
    check_ports,
    prepare,
    start_result,
    wait_healthy,
    what_runs,
)
from .runtime import Runtime


@dataclass(frozen=True)
class Owner:
    """The installation whose resources are taken over."""

    installation: str
    home: str | None = None  # where it lived, when its containers tell (and it is ours)
    still_there: bool = False  # that home still holds an installation of this project

    @property
    def by_hand(self) -> bool:
        return self.installation == UNMANAGED


@dataclass(frozen=True)
class TakenContainer:
    name: str
    service: str
    state: str
    installation: str
    recreated: bool  # False: its service is not this installation's, so compose removes it


@dataclass
class Takeover:
    """What `stack.adopt` would take over, read before anything changes."""

    project: str
    target: str
    containers: list[TakenContainer] = field(default_factory=list)
    volumes: dict[str, str] = field(default_factory=dict)  # name → the id it keeps
    owners: list[Owner] = field(default_factory=list)
    # The id this installation's volumes carry from now on; None: as before.
    volumes_installation: str | None = None
    # The project's adoption mark when it names another installation.
    mark: AdoptionMark | None = None

    @property
    def empty(self) -> bool:
        return not (self.containers or self.volumes or self.mark)


def plan(rt: Runtime) -> Takeover:
    """The project's containers and volumes another installation holds (reads only)."""
    if not rt.paths.installed:
        raise NotInstalled(
            f"no installation at {rt.paths.root} to take compose project "
            f"{rt.settings.project!r} over for",
            f"run `inv stack.install --project {rt.settings.project}` first",
        )
    containers = rt.compose.foreign_containers()
    listed = rt.compose.volumes_and_mark()
    volumes_installation, volumes = _foreign_volumes(rt, listed.owners)
    mark = listed.mark if adopted_elsewhere(rt, listed.mark) else None
    ours = set(rt.docker_services())
    todo = Takeover(
        rt.settings.project,
        rt.target.label,
        containers=[
            TakenContainer(c.name, c.service, c.state, c.installation, c.service in ours)
            for c in containers
        ],
        volumes=volumes,
        volumes_installation=volumes_installation,
        mark=mark,
    )
    ids = {c.installation for c in todo.containers} | set(volumes.values())
    ids |= {mark.installation} if mark else set()
    todo.owners = [_owner(rt, installation, containers, mark) for installation in sorted(ids)]
    return todo


def _foreign_volumes(rt: Runtime, owners: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """(the id our volumes will carry if it changes, the volumes that carry another).

    One installation's volumes carry one id (compose writes it into every
    volume it makes): volumes of two installations cannot both be ours.
    """
    ours = rt.volumes_installation or config.installation_id(rt.paths)
    labelled = {name: owner for name, owner in owners.items() if owner}
    ids = set(labelled.values())
    if len(ids) > 1:
        found = "; ".join(
            f"{owner}: {', '.join(sorted(n for n, o in labelled.items() if o == owner))}"
            for owner in sorted(ids)
        )
        raise ConfigError(
            f"the volumes of compose project {rt.settings.project!r} on {rt.target.label} "
            f"belong to more than one installation ({found}); nothing was changed",
            "keep one installation's volumes: remove the others you do not need "
            "(`docker volume rm NAME`), then `inv stack.adopt` again",
        )
    foreign = {name: owner for name, owner in labelled.items() if owner != ours}
    return (next(iter(ids)) if foreign else None), foreign


def _owner(
    rt: Runtime, installation: str, containers: list[ContainerState], mark: AdoptionMark | None
) -> Owner:
    """Where the installation lived: compose keeps the env file it was given on
    each container, and ours is ``<home>/state/compose.env``; else the adoption
    mark names the adopter's home. A path whose id is not the one on the labels
    is someone else's, not that home."""
    homes = [
        config.home_of_env_file(c.environment_file)
        for c in containers
        if c.installation == installation
    ]
    if mark is not None and mark.installation == installation and mark.home:
        homes.append(Path(mark.home))
    for home in homes:
        if home is None or home == rt.paths.root:
            continue
        if config.installation_id(config.InstallPaths(home)) == installation:
            return Owner(installation, str(home), config.claims_project(home, rt.settings.project))
    return Owner(installation)


def execute(
    rt: Runtime,
    todo: Takeover,
    *,
    pull: PullPolicy = "missing",
    timeout: float | None = None,
    progress: Progress | None = None,
) -> StartResult:
    """Recreate the containers with our files and labels, keeping every volume,
    record the volumes' id, then wait for health as `stack.start` does."""
    began = time.monotonic()
    with config.installation_lock(rt.paths, "the adoption"):
        if todo.volumes_installation:
            rt = rt.with_volumes_installation(todo.volumes_installation)
        rt = prepare(rt, progress)
        services = rt.docker_services()
        # Until `up`, nothing of the project has changed.
        check_ports(rt, services, [*rt.compose.ps(), *rt.compose.foreign_containers()], progress)
        build_missing(rt, services, progress)
        _recreate(rt, services, progress, pull)
        _mark(rt, services)
        config.record_adoption(rt.paths, rt.volumes_installation, _record(todo))
        try:
            health = wait_healthy(rt, timeout or rt.settings.start_timeout, progress)
        except StackError as failure:
            now = what_runs(rt, services)
            failure.message += f"; the containers are this installation's now ({now})"
            raise
    return start_result(rt, False, health, began)


def _recreate(
    rt: Runtime, services: list[str], progress: Progress | None, pull: PullPolicy
) -> None:
    emit(progress, "step", f"recreating {', '.join(services)} on {rt.target.label} as ours")
    again = "`inv stack.adopt` again takes over what is left"
    try:
        rt.compose.up(
            services,
            pull=pull,
            force_recreate=True,
            sink=lambda line: emit(progress, "output", line),
        )
    except KeyboardInterrupt as stop:
        raise Interrupted(
            f"adoption was stopped; nothing was recorded; {what_runs(rt, services)}",
            again,
            code=interruption_code(stop),
        ) from None
    except StackError as failure:
        failure.message += f"; nothing was recorded; {what_runs(rt, services)}"
        failure.remedy = f"{failure.remedy}; then {again}" if failure.remedy else again
        raise


def _mark(rt: Runtime, services: list[str]) -> None:
    """The mark names this installation from now on (the old home is refused)."""
    try:
        rt.compose.mark_adoption(str(rt.paths.root))
    except StackError as failure:
        failure.message += (
            f"; the containers are this installation's now ({what_runs(rt, services)}) but "
            "the adoption mark was not written and nothing was recorded"
        )
        failure.remedy = "`inv stack.adopt` again finishes it"
        raise


def _record(todo: Takeover) -> Mapping[str, object]:
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "from": [asdict(owner) for owner in todo.owners],
        "containers": [c.name for c in todo.containers],
        "volumes": sorted(todo.volumes),
    }


def left_behind(todo: Takeover) -> list[str]:
    """Notes on the homes that still claim the project (the adoption mark
    refuses commands there from now on: its containers and volumes are ours)."""
    return [
        f"{owner.home} still holds an installation of project {todo.project!r}; the adoption "
        "mark refuses start, stop, logs, restores, updates, rollbacks, model changes, "
        "`--remove-volumes` and `--remove-images` there now. "
        "`inv stack.uninstall --remove-config` there removes its files (never the volumes); "
        "`inv stack.adopt` there would take the project back"
        for owner in todo.owners
        if owner.home and owner.still_there
    ]
