"""The stack's images, for boxes that reach no registry: listed, carried in
one file, or sent over SSH (`docker save` here, `docker load` there).

The images are the catalog's docker services' (core and enabled extensions),
as configured. `docker load` checks every layer against its digest, so a
damaged file or stream is refused by the engine itself.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from typing import IO, Any

from ollama_stack.common.errors import ConfigError
from ollama_stack.compose.client import ImageInfo

from .events import Progress, emit
from .runtime import Runtime
from .services import CATALOG

CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageRow:
    service: str
    image: str
    id: str  # "" when this engine does not have it
    origin: str  # "registry <digest>", "built here", or "missing"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Carried:
    images: list[str]  # sent or written
    skipped: list[str]  # the other side had them already (same image id)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _references(rt: Runtime) -> dict[str, str]:
    """service → image of every service this stack runs in Docker."""
    return {s.name: rt.settings.images[s.name] for s in CATALOG if rt.kind(s.name).in_compose}


def listing(rt: Runtime) -> list[ImageRow]:
    rows = []
    for service, image in _references(rt).items():
        info = rt.compose.image_info(image)
        if info is None:
            rows.append(ImageRow(service, image, "", "missing"))
            continue
        origin = f"registry {info.repo_digests[0]}" if info.repo_digests else "built here"
        rows.append(ImageRow(service, image, info.id, origin))
    return rows


def _present(rt: Runtime) -> list[str]:
    rows = listing(rt)
    missing = [row.image for row in rows if not row.id]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on this engine",
            "`inv stack.start` pulls (or builds) them first",
        )
    return sorted({row.image for row in rows})


def export_images(rt: Runtime, sink: IO[bytes], progress: Progress | None = None) -> Carried:
    images = _present(rt)
    emit(progress, "step", f"saving {len(images)} images")
    with rt.compose.save_images(images) as stream:
        shutil.copyfileobj(stream, sink, CHUNK)
    return Carried(images, [])


def import_images(rt: Runtime, source: IO[bytes], progress: Progress | None = None) -> Carried:
    emit(progress, "step", f"loading images into the engine of {rt.target.label}")
    with rt.compose.load_images() as sink:
        shutil.copyfileobj(source, sink, CHUNK)
    return Carried([row.image for row in listing(rt) if row.id], [])


def _same(ours: ImageInfo | None, theirs: ImageInfo | None) -> bool:
    return ours is not None and theirs is not None and ours.id == theirs.id


def push(source: Runtime, target: Runtime, progress: Progress | None = None) -> Carried:
    """The stack's images from this engine to a box's, skipping any the box has
    with the same image id; streamed (save here, load there), nothing staged."""
    images = _present(source)
    theirs = {image: target.compose.image_info(image) for image in images}
    ours = {image: source.compose.image_info(image) for image in images}
    send = [i for i in images if not _same(ours[i], theirs[i])]
    skipped = [i for i in images if i not in send]
    if send:
        emit(progress, "step", f"sending {', '.join(send)} to {target.target.label}")
        with source.compose.save_images(send) as out, target.compose.load_images() as into:
            shutil.copyfileobj(out, into, CHUNK)
    return Carried(send, skipped)
