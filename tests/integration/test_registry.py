"""stack.registry against a real registry (distribution 2.8) and the live engine."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_stack.stack.update.registry import (
    ImageNotInRegistry,
    RegistryUnreachable,
    local_repo_digest,
    remote_digest,
)

from .conftest import _unavailable, docker
from .registry import REGISTRY_BIN, Registry, build_image, push, start_registry

pytestmark = pytest.mark.docker
BUSYBOX = Path("/bin/busybox")  # busybox-static: runs in a FROM scratch image


@pytest.fixture
def local_registry(engine: None, tmp_path: Path) -> Iterator[Registry]:
    if not REGISTRY_BIN.exists():
        _unavailable(f"{REGISTRY_BIN} missing (apt-get install docker-registry)")
    registry = start_registry(tmp_path / "registry")
    yield registry
    registry.stop()


@pytest.fixture
def images() -> Iterator[list[str]]:
    """IDs of the images a test builds; removed afterwards with every tag and
    repo digest on them (a pushed image keeps ``repo@digest`` after its tag
    moves on, so removing by name would leave it behind)."""
    made: list[str] = []
    yield made
    if made:
        docker("rmi", "-f", *made, check=False)


def build_busybox(context: Path, tag: str, marker: str) -> str:
    """Build a two-file image (static busybox + a marker) and return its ID."""
    if not BUSYBOX.exists():
        _unavailable(f"{BUSYBOX} missing (apt-get install busybox-static)")
    context.mkdir(parents=True)
    shutil.copy(BUSYBOX, context / "busybox")
    (context / "marker").write_text(marker)
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY marker /marker\n"
    )
    return build_image(tag, context)


def repo_digests(image: str) -> list[str]:
    return json.loads(docker("image", "inspect", "--format", "{{json .RepoDigests}}", image))


def test_remote_digest_follows_pushes_and_matches_repo_digests(
    local_registry: Registry, images: list[str], tmp_path: Path
) -> None:
    unique = uuid.uuid4().hex[:8]
    target = f"{local_registry.address}/ost/busybox:stable"
    pushed: list[str] = []
    for n in (1, 2):
        source = f"ost-registry-test/busybox:{unique}-{n}"
        images.append(build_busybox(tmp_path / f"ctx{n}", source, f"build {n} {unique}\n"))

        digest = push(local_registry, source, "ost/busybox", "stable")

        # what update.check will compare: the registry now vs the engine's record
        assert remote_digest(target, timeout=5) == digest
        assert local_repo_digest(repo_digests(target), target) == digest
        pushed.append(digest)

    assert pushed[0] != pushed[1]
    # The first build keeps the digest it was pushed with, so an outdated local
    # image is told apart from the tag's new content.
    first = f"ost-registry-test/busybox:{unique}-1"
    assert local_repo_digest(repo_digests(first), target) == pushed[0]
    # The old manifest stays addressable by digest after the tag moved on.
    pinned = f"{local_registry.address}/ost/busybox@{pushed[0]}"
    assert remote_digest(pinned, timeout=5) == pushed[0]


def test_unknown_tag_and_repository_are_not_in_registry(local_registry: Registry) -> None:
    for image in ("ost/never-pushed:v1", "library/busybox:nope"):
        with pytest.raises(ImageNotInRegistry, match=image.split("/")[-1]):
            remote_digest(f"{local_registry.address}/{image}", timeout=5)


def test_registry_stops_and_frees_its_port(tmp_path: Path) -> None:
    if not REGISTRY_BIN.exists():
        _unavailable(f"{REGISTRY_BIN} missing (apt-get install docker-registry)")
    registry = start_registry(tmp_path / "registry")
    assert registry.started_in < 20
    assert (tmp_path / "registry" / "registry.log").stat().st_size > 0
    registry.stop()
    assert registry.process.returncode is not None
    with pytest.raises(RegistryUnreachable, match="connection refused"):
        remote_digest(f"{registry.address}/ost/x:v1", timeout=2)
