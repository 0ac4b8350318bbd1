"""Which flavour of the stack fits the host: cpu, nvidia or apple."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ollama_stack.compose.client import EngineInfo

from ..config import Settings
from .target import Shell

if TYPE_CHECKING:
    from .hostcheck import HostFacts


@dataclass(frozen=True)
class PlatformChoice:
    name: str  # cpu | nvidia | apple
    reason: str


def detect(
    settings: Settings,
    shell: Shell,
    engine: EngineInfo | None,
    facts: HostFacts,
    override: str | None = None,
) -> PlatformChoice:
    choice = _detect(settings, shell, engine, facts, override)
    if facts.wsl and choice.name != "apple":
        where = _wsl_engine(engine)
        return PlatformChoice(choice.name, f"Windows (WSL2) with {where}; {choice.reason}")
    return choice


def _wsl_engine(engine: EngineInfo | None) -> str:
    """Docker Desktop's engine runs in its own VM and says so; a dockerd
    installed inside the WSL2 distribution names that distribution."""
    if engine is None:
        return "a Docker engine not asked"
    if engine.operating_system == "Docker Desktop":
        return "Docker Desktop's engine"
    return f"a native dockerd in the distribution ({engine.operating_system or 'unknown OS'})"


def _detect(
    settings: Settings,
    shell: Shell,
    engine: EngineInfo | None,
    facts: HostFacts,
    override: str | None,
) -> PlatformChoice:
    chosen = override or settings.platform
    if chosen != "auto":
        source = "--platform" if override else "the platform setting"
        return PlatformChoice(chosen, f"set by {source}")
    if facts.system == "Darwin" and facts.machine == "arm64":
        return PlatformChoice(
            "apple", "Apple Silicon: Ollama runs natively for Metal, the rest in Docker"
        )
    from . import hostcheck  # only a start detects: commands that read status never do

    if hostcheck.nvidia_gpu_present(shell):
        runtimes = engine.runtimes if engine else ()
        if "nvidia" in runtimes:
            return PlatformChoice("nvidia", "NVIDIA GPU with the nvidia runtime in Docker")
        if hostcheck.nvidia_cdi_present(shell):
            return PlatformChoice("nvidia", "NVIDIA GPU with CDI specs visible to Docker")
        return PlatformChoice(
            "cpu",
            "NVIDIA GPU found but the NVIDIA Container Toolkit is not set up for Docker; "
            "running on CPU (see `inv health.doctor`)",
        )
    return PlatformChoice("cpu", f"no GPU that Docker can use on {facts.system}/{facts.machine}")
