"""What a backup holds: the manifest, written last as the commit point.

Entries keep what a restore needs to put each path back exactly (type, mode,
numeric owner, size, link target, content hash); file contents live in the
store's content-addressed blobs, named by the sha256 of their raw bytes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT = 1
EntryType = Literal["file", "dir", "symlink", "hardlink"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Entry(_Record):
    path: str  # relative to the volume's mount, "/"-separated, never absolute or with ".."
    type: EntryType
    # Bounded as a restore's tar and chmod take them: a crafted manifest is
    # refused when read, not half-way through writing a volume.
    mode: int = Field(ge=0, le=0o7777)
    uid: int = Field(ge=0, lt=2**32)
    gid: int = Field(ge=0, lt=2**32)
    mtime: int = Field(default=0, gt=-(2**40), lt=2**40)
    size: int = Field(default=0, ge=0)
    sha256: str | None = None  # files: the blob holding the content
    link: str | None = None  # symlinks: the target as stored; hard links: the path linked to


class VolumeRecord(_Record):
    service: str
    name: str  # the volume's name in the compose file (e.g. ollama_data)
    mount: str
    entries: list[Entry] = Field(default_factory=list)


class ServiceRecord(_Record):
    name: str
    kind: str
    image: str = ""
    image_id: str = ""
    state: str = ""  # running, exited, absent: as found when the backup began
    version: str = ""  # the software's version, where its image says (Open WebUI's)
    schema_revision: str = ""  # where its data's schema is at (Open WebUI's Alembic revision)


class FileRecord(_Record):
    """A file of the installation itself: config.yaml, secrets.env."""

    name: str
    sha256: str
    size: int = Field(ge=0)
    mode: int = Field(ge=0, le=0o7777)


class Manifest(_Record):
    format: int = FORMAT
    id: str
    created: str  # RFC 3339, UTC
    description: str = ""
    tool_version: str = ""
    config_schema: int = 1
    target: str = "local"
    project: str = ""
    services: list[ServiceRecord] = Field(default_factory=list)
    volumes: list[VolumeRecord] = Field(default_factory=list)
    files: list[FileRecord] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)  # what was left out on purpose
    not_covered: list[str] = Field(default_factory=list)  # what this backup could not take
    size: int = 0  # bytes of content it describes
    written: int = 0  # bytes of new blobs this backup added to the store (compressed)

    def blobs(self) -> set[str]:
        found = {f.sha256 for f in self.files}
        for volume in self.volumes:
            found |= {e.sha256 for e in volume.entries if e.sha256}
        return found


def link_leaves_volume(path: str, target: str, seen: Mapping[str, Entry]) -> bool:
    """Does a link at ``path`` to ``target`` lead out of the volume, following
    the links already in ``seen`` on the way (a chain of links counts too)?

    One rule for both sides: a restore refuses such a link, so a backup
    never takes one."""
    if target.startswith("/"):
        return True
    stack = [p for p in posixpath.dirname(path).split("/") if p] + target.split("/")
    resolved: list[str] = []
    hops = 0
    while stack:
        part = stack.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return True
            resolved.pop()
            continue
        resolved.append(part)
        link = seen.get("/".join(resolved))
        if link is not None and link.type == "symlink":
            hops += 1
            if hops > 40 or (link.link or "").startswith("/"):
                return True
            resolved.pop()
            stack = (link.link or "").split("/") + stack
    return False
