"""Uninstall one installation, found by its labels, keeping data unless asked.

Everything is listed before anything is removed. Volumes, images and the
config directory each need their own flag; backups never live in the config
directory, so `--remove-config` cannot take them along.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ollama_stack.common.errors import backed_up_first
from ollama_stack.compose.client import AdoptionMark, Ownership

from . import config
from .events import Progress, emit
from .lifecycle import adopted_elsewhere, refuse_adopted_elsewhere
from .runtime import Runtime
from .services import CATALOG
from .update.engine import rollback_repository


@dataclass
class Plan:
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    config_dir: str | None = None
    kept: list[str] = field(default_factory=list)
    backup: str | None = None  # the backup taken before removing, if one was

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def empty(self) -> bool:
        return not (
            self.containers or self.networks or self.volumes or self.images or self.config_dir
        )


def plan(rt: Runtime, *, remove_volumes: bool, remove_images: bool, remove_config: bool) -> Plan:
    compose = rt.compose
    # A test restore's throwaway copy (`<project>-trial`, this installation's
    # label) and never-started scratch containers go with the stack: a killed
    # run may have left them, and they are copies, not the user's data.
    trial = f"{rt.settings.project}-trial"
    result = Plan(
        containers=[
            *compose.labelled("container"),
            *compose.scratch_containers(),
            *compose.labelled("container", trial),
        ],
        networks=[*compose.labelled("network"), *compose.labelled("network", trial)],
    )
    result.volumes = compose.labelled("volume", trial)
    mark = compose.adoption_mark()
    if remove_volumes or remove_images:  # its data; its rollback tags, named by project
        refuse_adopted_elsewhere(rt, Ownership(set(), mark))
    volumes = _volumes(rt, mark, result.kept)
    # Adopted elsewhere, the images and rollback tags serve the adopter's
    # containers: --remove-images is refused here, so it is not offered.
    images = [] if adopted_elsewhere(rt, mark) else _images(rt)
    if remove_volumes:
        result.volumes += volumes + ([compose.adoption_volume] if mark is not None else [])
    elif volumes:
        result.kept.append(f"volumes {', '.join(volumes)} (add --remove-volumes to delete data)")
    if remove_images:
        result.images = images
    elif images:
        result.kept.append(f"{len(images)} images (--remove-images)")
    if remove_config and rt.paths.installed:
        result.config_dir = str(rt.paths.root)  # its config, secrets and state only
    elif rt.paths.installed:
        result.kept.append(f"config and secrets in {rt.paths.root} (--remove-config)")
    return result


def _volumes(rt: Runtime, mark: AdoptionMark | None, kept: list[str]) -> list[str]:
    """This installation's data volumes. Adopted by another installation, they
    are that one's: never deleted from here, and not listed as this one's."""
    if mark is not None and adopted_elsewhere(rt, mark):
        kept.append(f"volumes: the installation at {mark.home} adopted them (`stack.adopt`)")
        return []
    return rt.compose.labelled("volume")


def _images(rt: Runtime) -> list[str]:
    """Images pulled or built for this installation, and its rollback tags."""
    present = [image for spec in CATALOG for image in rt.kind(spec.name).images(rt, spec)]
    rollback = rt.compose.images_matching(f"{rollback_repository(rt.settings.project)}/*")
    return sorted(set(present) | set(rollback))


# Takes a backup of the installation and returns its id; the task layer
# provides it (the backup engine sits above this package).
Backup = Callable[[Runtime], str]


def execute(
    rt: Runtime, todo: Plan, progress: Progress | None = None, backup: Backup | None = None
) -> list[str]:
    """Remove what the plan lists; return what could not be removed, with why.

    With ``backup``, a backup is taken first (its id goes into ``todo.backup``);
    if it fails, nothing is removed.
    """
    if backup is not None:
        todo.backup = _back_up_first(rt, backup, progress)
    compose = rt.compose
    emit(progress, "step", f"removing {len(todo.containers)} containers on {rt.target.label}")
    compose.remove("container", todo.containers)
    compose.remove("network", todo.networks)
    compose.remove("volume", todo.volumes)
    left = []
    for image in todo.images:
        if not compose.remove_image(image):
            left.append(f"{image} (still used by another container)")
    if todo.config_dir:
        config.remove_installation(rt.paths)
    return left


def _back_up_first(rt: Runtime, backup: Backup, progress: Progress | None) -> str:
    emit(progress, "step", f"backing up {rt.target.label} before removing anything")
    return backed_up_first(lambda: backup(rt), "the uninstall", "removed")
