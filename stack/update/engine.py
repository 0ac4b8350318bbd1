"""Updates that can roll back, for every service type.

docker services: compare the local repo digest with the registry's (no layer
pull), pull what changed, recreate only those containers, wait for health; if
health does not come, put the previous images back under the same reference,
recreate again and report "rolled back". The previous image of each updated
service keeps a local tag until the next successful update, so neither a
rollback nor `update.rollback` ever needs the network.

native-api: the service's installer (services/ollama_native.py) finds how it was
installed and updates it that way.
remote-api: the endpoint and its version are re-validated; nothing remote changes.
"""

from __future__ import annotations

import contextlib
import contextvars
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ollama_stack.common.errors import (
    ConfigError,
    ExitCode,
    HealthTimeout,
    StackError,
    backed_up_first,
)

from .. import config
from ..events import Progress, emit
from ..lifecycle import (
    check_service_names,
    prepare,
    refuse_foreign,
    wait_healthy,
)
from ..runtime import Runtime
from ..services import CATALOG
from .records import Outcome, ServiceCheck, ServiceOutcome, Status, UpdateReport  # noqa: F401

ROLLBACK_REPO = "ollama-stack-rollback"
MAX_ASKED_AT_ONCE = 8  # registries and endpoints asked at the same time by a check


# -- selection ------------------------------------------------------------------


def select(
    rt: Runtime,
    services: list[str],
    *,
    docker_only: bool = False,
    native_only: bool = False,
    remote_only: bool = False,
    extensions: bool = False,
) -> list[str]:
    """The services an update touches, after name and type filters: named
    ones, or else the core services, and with ``extensions`` the enabled
    extensions' containers too."""
    if sum((docker_only, native_only, remote_only)) > 1:
        raise ConfigError(
            "--docker-only, --native-only and --remote-only exclude each other", "pick one"
        )
    everything = [spec.name for spec in CATALOG if extensions or not spec.extension]
    chosen = check_service_names(services) if services else everything
    only = {"docker_only": docker_only, "native_only": native_only, "remote_only": remote_only}
    if any(only.values()):
        chosen = [s for s in chosen if only[rt.kind(s).only_flag]]
    return chosen


# -- check ----------------------------------------------------------------------


def check(rt: Runtime, services: list[str], *, strict: bool = False) -> list[ServiceCheck]:
    """What each service runs and whether a newer one exists.

    ``strict`` turns an unreachable registry into an error (apply must not
    half-start); for `update.check` it is a status on that service.
    """
    running_ids = rt.compose.container_image_ids() if rt.paths.installed else {}
    if len(services) < 2:
        return [_check_one(rt, name, running_ids, strict) for name in services]
    # Each asks its own registry (a token round trip, then a HEAD) or probes
    # its endpoint: asked together, the check takes the slowest one's time,
    # not the sum. Each in a copy of this context: a fleet's hosts have their
    # own extensions in the catalog.
    with ThreadPoolExecutor(max_workers=min(len(services), MAX_ASKED_AT_ONCE)) as pool:
        asked = [
            pool.submit(contextvars.copy_context().run, _check_one, rt, name, running_ids, strict)
            for name in services
        ]
        return [future.result() for future in asked]  # in order; the first error is raised


def _check_one(rt: Runtime, name: str, running_ids: dict[str, str], strict: bool) -> ServiceCheck:
    return rt.kind(name).check_update(rt, CATALOG[name], running_ids, strict)


# -- apply ----------------------------------------------------------------------


Confirm = Callable[[str], bool]
# Takes a backup of the installation and returns its id. The task layer
# provides it (the backup engine sits above this package); None: --no-backup.
Backup = Callable[[Runtime], str]


def apply(
    rt: Runtime,
    services: list[str],
    *,
    confirm: Confirm,
    backup: Backup | None,
    timeout: float | None = None,
    progress: Progress | None = None,
) -> UpdateReport:
    report = UpdateReport()
    docker = [s for s in services if rt.kind(s).in_compose]
    if docker:
        config.read_secrets(rt.paths)  # not installed → stop before any network or engine work
    # One resolved Runtime for the whole update: the platform decides which
    # services run in Docker and which on the host.
    rt = rt.resolve()
    docker = [s for s in services if rt.kind(s).in_compose]
    # Another installation's containers (and rollback tags, named by project),
    # or its volumes for the backup taken first: refused before any question.
    if docker:
        rt = refuse_foreign(rt)
    running = {c.service for c in rt.compose.ps() if c.state == "running"} if docker else set()
    # Read-only first: an unreachable registry stops here, and nobody is asked
    # about a change that will not happen.
    checks = check(rt, docker, strict=True) if docker else []
    stale = [c for c in checks if c.status in ("update-available", "not-pulled")]
    # A native update restarts the host's Ollama: that touches a running stack too.
    touched = (running & {c.service for c in stale}) | {
        s for s in services if rt.kind(s).restarted_by_update
    }
    if touched and not confirm(
        f"update {', '.join(sorted(touched))} on {rt.target.label} while the stack runs?"
    ):
        raise StackError("cancelled; nothing was changed", code=ExitCode.FAILED)
    report.outcomes += [
        ServiceOutcome(c.service, c.type, "skipped", c.detail)
        if c.status == "local-build"
        else ServiceOutcome(c.service, c.type, "up-to-date", current=c.local_digest)
        for c in checks
        if c not in stale
    ]
    if stale:
        report.backup = _back_up_first(rt, backup, progress)
        report.outcomes += _apply_docker(rt, stale, timeout, progress)
    for name in services:
        kind = rt.kind(name)
        if not kind.in_compose:  # native and remote services update one by one
            report.outcomes.append(kind.apply_update(rt, CATALOG[name], progress))
    return report


def _back_up_first(rt: Runtime, backup: Backup | None, progress: Progress | None) -> str:
    """A backup before anything changes; if it fails, nothing changes."""
    if backup is None:
        return "skipped (--no-backup)"
    emit(progress, "step", "backing up before the update")
    return backed_up_first(lambda: backup(rt), "the update", "updated")


def rollback_repository(project: str) -> str:
    """A project name cannot contain "/", so no other project's tags match this."""
    return f"{ROLLBACK_REPO}/{project}"


def _rollback_tag(rt: Runtime, service: str, entry_id: str) -> str:
    return f"{rollback_repository(rt.settings.project)}/{service}:{entry_id}"


def _apply_docker(
    rt: Runtime, stale: list[ServiceCheck], timeout: float | None, progress: Progress | None
) -> list[ServiceOutcome]:
    running = {c.service for c in rt.compose.ps() if c.state == "running"}
    entry_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    for c in stale:
        if c.image_id:  # keep the old image reachable by name, whatever happens to its tag
            rt.compose.tag(c.image_id, _rollback_tag(rt, c.service, entry_id))
    _record(rt, entry_id, stale, "started")
    # An update does not start what the user stopped: those are only pulled.
    names = [c.service for c in stale if c.service in running]
    recreated = False
    try:
        # Every pull before any recreate: a failed pull leaves the old stack running.
        for c in stale:
            emit(progress, "step", f"pulling {c.image} for {c.service}", service=c.service)
            rt.compose.pull_image(
                c.image, sink=lambda line, s=c.service: emit(progress, "output", line, service=s)
            )
        if names:
            rt = prepare(rt, progress)
            emit(progress, "step", f"recreating {', '.join(names)}")
            recreated = True
            rt.compose.up(
                names, pull="never", no_deps=True, sink=lambda line: emit(progress, "output", line)
            )
            # Only the updated services decide: an unrelated service that is down
            # must not roll back a good update.
            wait_healthy(rt, timeout or rt.settings.start_timeout, progress, services=names)
    except HealthTimeout as failure:
        return _roll_back(rt, entry_id, stale, failure, timeout, progress)
    except BaseException:  # a failed pull or up, Ctrl-C: put the old images back
        _put_back(rt, stale, recreated, timeout, progress)
        _record(rt, entry_id, stale, "failed")
        raise
    current: dict[str, str] = {}
    with contextlib.suppress(StackError):  # the update itself is done and healthy
        current = rt.compose.container_image_ids()
    _record(rt, entry_id, stale, "applied", current)
    try:
        _release_older_rollback_tags(rt, entry_id)
    except StackError as exc:
        emit(progress, "warn", f"could not release older rollback tags: {exc.message}")
    return [
        ServiceOutcome(
            c.service,
            c.type,
            "updated",
            "" if c.service in names else "pulled; not started because it was stopped",
            previous=c.image_id,
            current=current.get(c.service),
        )
        for c in stale
    ]


def _put_back(
    rt: Runtime,
    stale: list[ServiceCheck],
    recreated: bool,
    timeout: float | None,
    progress: Progress | None,
) -> None:
    """After a failure mid-update: the references point at the old images again,
    and if containers were already being recreated, they are recreated on those."""
    images = {c.service: (c.image, c.image_id) for c in stale}
    if recreated:
        with contextlib.suppress(StackError):  # the original error is the one to report
            restore(rt, images, timeout, progress)
        return
    for reference, image_id in images.values():
        if image_id:
            with contextlib.suppress(StackError):
                rt.compose.tag(image_id, reference)


def _roll_back(
    rt: Runtime,
    entry_id: str,
    stale: list[ServiceCheck],
    failure: HealthTimeout,
    timeout: float | None,
    progress: Progress | None,
) -> list[ServiceOutcome]:
    emit(progress, "warn", f"update unhealthy ({failure.message}); rolling back")
    try:
        restore(rt, {c.service: (c.image, c.image_id) for c in stale}, timeout, progress)
    finally:
        _record(rt, entry_id, stale, "rolled-back")
    return [
        ServiceOutcome(c.service, c.type, "rolled-back", detail=failure.message, current=c.image_id)
        if c.image_id
        else ServiceOutcome(
            c.service,
            c.type,
            "failed",
            detail=f"{failure.message}; no earlier image to go back to",
        )
        for c in stale
    ]


def restore(
    rt: Runtime,
    images: dict[str, tuple[str, str | None]],
    timeout: float | None,
    progress: Progress | None,
) -> None:
    """Point each reference back at its previous image ID and recreate."""
    back = [s for s, (_, image_id) in images.items() if image_id]
    if not back:  # `up` without services would recreate the whole stack
        return
    for service in back:
        reference, image_id = images[service]
        rt.compose.tag(str(image_id), reference)
    emit(progress, "step", f"restoring previous images of {', '.join(back)}")
    rt.compose.up(
        back,
        pull="never",
        no_deps=True,
        force_recreate=True,
        sink=lambda line: emit(progress, "output", line),
    )
    try:
        wait_healthy(rt, timeout or rt.settings.start_timeout, progress, services=back)
    except HealthTimeout as again:
        raise HealthTimeout(
            f"rolled back, but still unhealthy: {again.message}",
            "see `inv stack.logs`; the previous images are tagged " + ROLLBACK_REPO + "/…",
            code=again.code,  # a crash loop stays exit 15
        ) from None


def _record(
    rt: Runtime,
    entry_id: str,
    stale: list[ServiceCheck],
    status: str,
    current: dict[str, str] | None = None,
) -> None:
    history = [e for e in config.read_state(rt.paths).get("updates", []) if e.get("id") != entry_id]
    history.append(
        {
            "id": entry_id,
            "status": status,
            "services": {
                c.service: {
                    "image": c.image,
                    "previous_id": c.image_id,
                    "new_id": (current or {}).get(c.service),
                }
                for c in stale
            },
        }
    )
    config.write_state(rt.paths, {"updates": history[-20:]})


def _release_older_rollback_tags(rt: Runtime, keep: str) -> None:
    """After a successful update only its own previous images stay tagged."""
    for tag in rt.compose.images_matching(f"{rollback_repository(rt.settings.project)}/*"):
        if not tag.endswith(f":{keep}"):
            rt.compose.remove_image(tag)


# -- rollback by hand -------------------------------------------------------------


def rollback(rt: Runtime, timeout: float | None = None, progress: Progress | None = None) -> dict:
    """Put back the images the last applied update replaced."""
    history = config.read_state(rt.paths).get("updates", [])
    # Failed and automatically rolled-back attempts never took effect; what
    # counts is the newest update that did (or was already undone by hand).
    settled = [e for e in history if e.get("status") not in ("failed", "rolled-back", "started")]
    if not settled or settled[-1].get("status") != "applied":
        raise StackError(
            "no applied update to roll back"
            + (f" (the last one is {settled[-1].get('status')})" if settled else ""),
            "`inv update.apply` records what it replaces; each update rolls back once",
            code=ExitCode.FAILED,
        )
    entry = settled[-1]
    images = {
        s: (v["image"], v["previous_id"]) for s, v in entry["services"].items() if v["previous_id"]
    }
    missing = [s for s, (_, image_id) in images.items() if not rt.compose.image_exists(image_id)]
    if not images or missing:
        raise StackError(
            f"nothing to roll back to for {', '.join(missing or entry['services'])}: "
            "the earlier image is not on this engine",
            "the update brought these services in; stop them or update again",
            code=ExitCode.FAILED,
        )
    config.read_secrets(rt.paths)
    refuse_foreign(rt)  # `up --force-recreate` would take another home's containers
    rt = prepare(rt, progress)
    restore(rt, images, timeout, progress)
    entry["status"] = "rolled-back-by-hand"
    entry["restored"] = sorted(images)
    config.write_state(rt.paths, {"updates": history})
    return entry
