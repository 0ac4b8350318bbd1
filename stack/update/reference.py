"""Image references as Docker reads them: ``[registry/]repository[:tag][@digest]``.

Apart from the registry client (``registry``): the settings check every image
reference when they load, and every command loads them, while only an update
asks a registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ollama_stack.common.errors import ConfigError

DOCKER_HUB = "registry-1.docker.io"
# Names Docker itself rewrites to the Hub (`docker.io/busybox` is `busybox`).
HUB_ALIASES = frozenset({"docker.io", "index.docker.io", DOCKER_HUB})

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}")


@dataclass(frozen=True)
class Reference:
    """A fully qualified image reference, as Docker normalises it.

    ``tag`` is empty only for ``name@digest`` (Docker adds ``latest`` only to a
    bare name).
    """

    registry: str  # host[:port]
    repository: str
    tag: str
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def manifest(self) -> str:
        """What to ask the manifests endpoint for: a pinned digest wins over the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def parse_reference(image: str) -> Reference:
    """Split ``[registry/]repository[:tag][@digest]`` the way the docker CLI does."""
    name, at, digest = image.strip().partition("@")
    tag: str | None = None
    if name.rfind(":") > name.rfind("/"):  # a colon before the last slash is a port
        name, _, tag = name.rpartition(":")
    registry, repository = _split_registry(name)
    _validate(image, registry, repository, tag, digest if at else None)
    if tag is None:
        tag = "" if at else "latest"
    return Reference(registry, repository, tag, digest if at else None)


def _split_registry(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    # Docker's rule: the first component is a registry only if it cannot be a
    # repository component (has a dot, a port, capitals) or is "localhost".
    is_registry = "." in first or ":" in first or first == "localhost" or first != first.lower()
    registry, repository = (first, rest) if slash and is_registry else (DOCKER_HUB, name)
    if registry in HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"  # official images live under library/
    return registry, repository


def _validate(
    image: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    problems = [
        (not _REGISTRY.fullmatch(registry), "registry"),
        (not _REPOSITORY.fullmatch(repository) or len(repository) > 255, "repository"),
        (tag is not None and not _TAG.fullmatch(tag), "tag"),
        (digest is not None and not _DIGEST.fullmatch(digest), "digest"),
    ]
    bad = [part for failed, part in problems if failed]
    if bad:
        raise ConfigError(
            f"invalid image reference {image!r} (bad {', '.join(bad)})",
            "use [REGISTRY/]NAME[:TAG] or NAME@sha256:DIGEST, lower-case",
        )
