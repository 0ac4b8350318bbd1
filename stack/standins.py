"""Offline images: the real mcpo, and stand-ins that answer like the real services.

Used where no registry is reachable (these machines, air-gapped boxes):

- ``mcp_proxy`` is the real mcpo from PyPI (pinned in
  ``compose/standins/mcpo/requirements.txt``) on a Debian/Python base image
  made with debootstrap, with ``mcpo`` as its entrypoint like the upstream image.
- ``ollama`` is a small Python server on the same base image that answers the
  API the stack and Open WebUI read, with the real JSON content type.
- ``webui`` is a busybox server with the real health endpoints, data path and
  ``/ollama/api/version`` (its Ollama's version, or 500 when none answers).

The base image and the real mcpo layer are cached on the engine by name
(the mcpo one by the hash of its pins), so a second build takes seconds.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ollama_stack.common.errors import ConfigError, StackError
from ollama_stack.compose.client import STANDINS_DIR

from .events import Progress, emit
from .runtime import Runtime
from .services import CATALOG

REPOSITORY = "ollama-stack-standin"
BASE_IMAGE = "ollama-stack-base/debian-python:bookworm"
MCPO_LAYER_REPO = "ollama-stack-base/mcpo"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PYTHON_VERSION = "3.11"  # Debian bookworm's python3
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
# Trimmed from the debootstrap tree: caches and docs no service reads.
TRIM = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
)
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
MANYLINUX = ("manylinux2014", "manylinux_2_17", "manylinux_2_28")


def image_name(directory: str, version: str) -> str:
    return f"{REPOSITORY}/{directory}:{version}"


def find_static_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        # A dynamically linked busybox names its loader near the top of the
        # ELF file; it would not run in a FROM-scratch image.
        if path.is_file() and b"ld-linux" not in path.read_bytes()[:8192]:
            return path
    raise ConfigError(
        "no static busybox found on this machine",
        "install it (Debian: apt-get install busybox-static)",
    )


def build(
    rt: Runtime,
    version: str = "latest",
    progress: Progress | None = None,
    mirror: str = DEFAULT_MIRROR,
) -> dict[str, str]:
    """Build the stand-in image of every service that has one; return service → image."""
    from .update.reference import parse_reference

    parse_reference(image_name("standin", version))  # a tag Docker takes, before any work
    if not mirror.startswith(("http://", "https://")):
        raise ConfigError(
            f"--mirror {mirror!r} is not an http(s) URL", "e.g. http://deb.debian.org/debian"
        )
    arch = _check_arch(rt)
    busybox = find_static_busybox()
    ensure_base(rt, mirror, progress)
    mcpo_layer = ensure_mcpo_layer(rt, arch, progress)
    images = {}
    with tempfile.TemporaryDirectory(prefix="ollama-stack-standin-") as tmp:
        for spec in CATALOG:
            if not spec.standin:
                continue
            service, directory = spec.name, spec.standin
            context = Path(tmp) / service
            shutil.copytree(STANDINS_DIR / directory, context)
            _complete_context(context, busybox, mcpo_layer)
            tag = image_name(directory, version)
            emit(progress, "step", f"building {tag} on {rt.target.label}")
            rt.compose.build_image(context, tag, {"VERSION": version, "BASE": BASE_IMAGE})
            images[service] = tag
    return images


def _check_arch(rt: Runtime) -> str:
    """Wheels and debootstrap are made here, so the engine must share our CPU."""
    here = platform.machine()
    engine = rt.compose.engine_info().architecture or here
    if here not in DEBIAN_ARCH or engine != here:
        raise ConfigError(
            f"cannot build images for a {engine} engine on this {here} machine",
            f"build them on an {engine} machine, then `docker save | docker load` them",
        )
    return here


# -- the Debian/Python base image ------------------------------------------------


def ensure_base(rt: Runtime, mirror: str, progress: Progress | None) -> None:
    if rt.compose.image_exists(BASE_IMAGE):
        emit(progress, "step", f"base image {BASE_IMAGE} is already there")
        return
    if os.geteuid() != 0:
        raise ConfigError(
            f"building {BASE_IMAGE} runs debootstrap, which needs root",
            "run `inv dev.standins` as root, or `docker load` the image from a machine that has it",
        )
    if shutil.which("debootstrap") is None:
        raise ConfigError(
            "debootstrap is not installed", "install it (Debian: apt-get install debootstrap)"
        )
    emit(progress, "step", f"building {BASE_IMAGE} with debootstrap (about a minute, once)")
    with tempfile.TemporaryDirectory(prefix="ollama-stack-base-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run_host(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,ca-certificates",
                f"--arch={DEBIAN_ARCH[platform.machine()]}",
                "bookworm",
                str(rootfs),
                mirror,
            ],
            "debootstrap failed",
            f"check that Debian's mirror {mirror} answers (`--mirror URL` picks another)",
        )
        for part in TRIM:
            shutil.rmtree(rootfs / part, ignore_errors=True)
        tarball = Path(tmp) / "rootfs.tar"
        _run_host(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."],
            "packing the base image failed",
            "check free space under /var/tmp",
        )
        rt.compose.import_image(
            tarball,
            BASE_IMAGE,
            ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        )


def _run_host(argv: list[str], failure: str, remedy: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise StackError(f"{failure}: {last[0]}", remedy)


# -- the real mcpo ----------------------------------------------------------------


def mcpo_requirements() -> Path:
    return STANDINS_DIR / "mcpo" / "requirements.txt"


def mcpo_layer_tag() -> str:
    pins = hashlib.sha256(mcpo_requirements().read_bytes()).hexdigest()[:12]
    return f"{MCPO_LAYER_REPO}:{pins}"


def ensure_mcpo_layer(rt: Runtime, arch: str, progress: Progress | None) -> str:
    """The real mcpo image without a version stamp, built once per set of pins."""
    tag = mcpo_layer_tag()
    if rt.compose.image_exists(tag):
        return tag
    emit(progress, "step", f"installing mcpo and its pinned dependencies for {arch}")
    with tempfile.TemporaryDirectory(prefix="ollama-stack-mcpo-") as tmp:
        context = Path(tmp)
        shutil.copy2(STANDINS_DIR / "mcpo" / "Dockerfile", context / "Dockerfile")
        site = context / "site"
        _pip_install_target(site, arch)
        write_console_scripts(site, context / "console-scripts")
        emit(progress, "step", f"building {tag} (the real mcpo) on {rt.target.label}")
        rt.compose.build_image(context, tag, {"BASE": BASE_IMAGE})
    return tag


def _pip_install_target(site: Path, arch: str) -> None:
    platforms = [arg for tag in MANYLINUX for arg in ("--platform", f"{tag}_{arch}")]
    _run_host(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            PYTHON_VERSION,
            *platforms,
            "--target",
            str(site),
            "-r",
            str(mcpo_requirements()),
        ],
        "installing mcpo's wheels failed",
        "this needs PyPI (or a pip index set in pip.conf) and pip in this Python",
    )
    shutil.rmtree(site / "bin", ignore_errors=True)  # scripts for the host's Python


def write_console_scripts(site: Path, bin_dir: Path) -> list[str]:
    """One launcher per console_scripts entry point, for the image's python3."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for entry_points in sorted(site.glob("*.dist-info/entry_points.txt")):
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(entry_points)
        if not parser.has_section("console_scripts"):
            continue
        for name, target in parser.items("console_scripts"):
            module, _, attr = target.partition(":")
            head, _, rest = attr.strip().partition(".")
            call = f"{head}.{rest}" if rest else head
            script = bin_dir / name
            script.write_text(
                "#!/usr/bin/python3\nimport sys\n"
                f"from {module.strip()} import {head}\n"
                f"sys.exit({call}())\n"
            )
            script.chmod(0o755)
            names.append(name)
    return names


def _complete_context(context: Path, busybox: Path, mcpo_layer: str) -> None:
    """What a recipe needs besides its own files, read from the recipe itself."""
    if (context / "requirements.txt").is_file():  # pinned wheels: the cached mcpo layer
        _stamp_dockerfile(context, mcpo_layer)
    elif "COPY busybox " in (context / "Dockerfile").read_text():
        shutil.copy2(busybox, context / "busybox")


def _stamp_dockerfile(context: Path, layer: str) -> None:
    """Per-version image over the cached mcpo layer: only the version differs."""
    for child in context.iterdir():
        if child.is_file():
            child.unlink()
    (context / "Dockerfile").write_text(
        f"FROM {layer}\n"
        "ARG VERSION=0.0.20\n"
        "ARG BASE\n"
        "ENV STANDIN_VERSION=$VERSION\n"
        "LABEL org.opencontainers.image.version=$VERSION\n"
    )
