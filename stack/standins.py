"""Offline stand-in images: busybox servers that answer like the real services.

Used where no registry is reachable (these machines, air-gapped boxes): they
serve each service's real health endpoints and keep data in the real volume
paths, so every code path of the tool runs without the multi-GB images.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ollama_stack.compose.client import STANDINS_DIR

from .config import SERVICE_NAMES
from .errors import ConfigError
from .events import Progress, emit
from .runtime import Runtime

REPOSITORY = "ollama-stack-standin"
SOURCE_DIRS = {"ollama": "ollama", "webui": "webui", "mcp_proxy": "mcpo"}
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def image_name(service: str, version: str) -> str:
    return f"{REPOSITORY}/{SOURCE_DIRS[service]}:{version}"


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


def build(rt: Runtime, version: str = "latest", progress: Progress | None = None) -> dict[str, str]:
    """Build the three images on the target's engine; return service → image."""
    busybox = find_static_busybox()
    images = {}
    with tempfile.TemporaryDirectory(prefix="ollama-stack-standin-") as tmp:
        for service in SERVICE_NAMES:
            context = Path(tmp) / service
            shutil.copytree(STANDINS_DIR / SOURCE_DIRS[service], context)
            shutil.copy2(busybox, context / "busybox")
            tag = image_name(service, version)
            emit(progress, "step", f"building {tag} on {rt.target.label}")
            rt.compose.build_image(context, tag, {"VERSION": version})
            images[service] = tag
    return images
