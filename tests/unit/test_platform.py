"""stack/hosts/platform.py: detect() with fake shells and engine facts."""

from __future__ import annotations

import pytest

from ollama_stack.compose.client import EngineInfo
from ollama_stack.stack.config import Settings
from ollama_stack.stack.hosts.hostcheck import HostFacts
from ollama_stack.stack.hosts.platform import detect

from .helpers import FakeShell

LINUX = HostFacts("Linux", "x86_64", 8)
MAC_ARM = HostFacts("Darwin", "arm64", 10)
MAC_INTEL = HostFacts("Darwin", "x86_64", 4)

AUTO = Settings.validated()  # platform: auto
CPU = Settings.validated(platform="cpu")


def engine(*runtimes: str) -> EngineInfo:
    return EngineInfo("27.3.1", tuple(runtimes), "/var/lib/docker", "Debian", 8, 1 << 34)


GPU = ("nvidia0", (0, ""))
NO_GPU = ("nvidia0", (1, ""))
CDI = ("grep -rls", (0, "/etc/cdi/nvidia.yaml\n"))
NO_CDI = ("grep -rls", (1, ""))


def shell(*rules: tuple[str, tuple[int, str]]) -> FakeShell:
    return FakeShell(dict(rules))


@pytest.mark.parametrize("override", ["cpu", "nvidia", "apple"])
def test_override_wins_and_asks_nothing(override):
    sh = shell(GPU)
    choice = detect(CPU, sh, engine("nvidia"), MAC_ARM, override=override)
    assert choice.name == override
    assert choice.reason == "set by --platform"
    assert sh.commands == []


def test_platform_setting_wins_over_detection():
    sh = shell(GPU)
    choice = detect(CPU, sh, engine("nvidia"), LINUX)
    assert choice.name == "cpu"
    assert choice.reason == "set by the platform setting"
    assert sh.commands == []


def test_auto_override_means_detect():
    choice = detect(CPU, shell(NO_GPU), None, MAC_ARM, override="auto")
    assert choice.name == "apple"


def test_apple_silicon():
    sh = shell(GPU)
    choice = detect(AUTO, sh, None, MAC_ARM)
    assert choice.name == "apple"
    assert "Metal" in choice.reason
    assert sh.commands == []  # no GPU probing on a Mac


def test_intel_mac_is_cpu():
    choice = detect(AUTO, shell(NO_GPU), None, MAC_INTEL)
    assert choice.name == "cpu"
    assert "Darwin/x86_64" in choice.reason


def test_nvidia_gpu_with_the_runtime():
    sh = shell(GPU, NO_CDI)
    choice = detect(AUTO, sh, engine("runc", "nvidia"), LINUX)
    assert choice.name == "nvidia"
    assert "nvidia runtime" in choice.reason
    assert not any("grep" in c for c in sh.commands)  # the runtime is enough


def test_nvidia_gpu_with_cdi_specs_only():
    sh = shell(GPU, CDI)
    choice = detect(AUTO, sh, engine("runc"), LINUX)
    assert choice.name == "nvidia"
    assert "CDI" in choice.reason


def test_cdi_looks_in_both_standard_spec_dirs():
    sh = shell(GPU, NO_CDI)
    detect(AUTO, sh, engine("runc"), LINUX)
    grep = next(c for c in sh.commands if "grep" in c)
    assert "/etc/cdi" in grep and "/var/run/cdi" in grep


def test_gpu_without_the_toolkit_runs_on_cpu_and_says_why():
    choice = detect(AUTO, shell(GPU, NO_CDI), engine("runc"), LINUX)
    assert choice.name == "cpu"
    assert "NVIDIA Container Toolkit" in choice.reason
    assert "health.doctor" in choice.reason


def test_gpu_without_engine_facts_is_cpu():
    choice = detect(AUTO, shell(GPU, NO_CDI), None, LINUX)
    assert choice.name == "cpu"
    assert "Toolkit" in choice.reason


def test_no_gpu_is_cpu():
    sh = shell(NO_GPU)
    choice = detect(AUTO, sh, engine("runc", "nvidia"), LINUX)
    assert choice.name == "cpu"
    assert choice.reason == "no GPU that Docker can use on Linux/x86_64"
    assert len(sh.commands) == 1


# -- Windows: WSL2 ------------------------------------------------------------------------------

WSL = HostFacts("Linux", "x86_64", 8, "5.15.167.4-microsoft-standard-WSL2")


def wsl_engine(operating_system: str, *runtimes: str) -> EngineInfo:
    return EngineInfo("27.3.1", tuple(runtimes), "/var/lib/docker", operating_system, 8, 1 << 34)


def test_wsl2_is_told_from_its_kernel():
    assert WSL.wsl
    assert not LINUX.wsl
    assert not HostFacts("Darwin", "arm64", 8, "24.1.0").wsl


def test_wsl2_with_docker_desktop():
    choice = detect(AUTO, shell(NO_GPU), wsl_engine("Docker Desktop"), WSL)
    assert choice.name == "cpu"
    assert choice.reason.startswith("Windows (WSL2) with Docker Desktop's engine; no GPU")


def test_wsl2_with_a_native_dockerd():
    choice = detect(AUTO, shell(NO_GPU), wsl_engine("Ubuntu 24.04.1 LTS"), WSL)
    assert choice.name == "cpu"
    assert choice.reason.startswith(
        "Windows (WSL2) with a native dockerd in the distribution (Ubuntu 24.04.1 LTS); "
    )


def test_wsl2_with_a_gpu_docker_can_use():
    choice = detect(AUTO, shell(GPU), wsl_engine("Docker Desktop", "nvidia", "runc"), WSL)
    assert choice.name == "nvidia"
    assert "WSL2" in choice.reason and "nvidia runtime" in choice.reason


def test_wsl2_setting_still_wins_and_is_named():
    choice = detect(CPU, shell(GPU), wsl_engine("Docker Desktop"), WSL)
    assert choice.name == "cpu"
    assert (
        choice.reason == "Windows (WSL2) with Docker Desktop's engine; set by the platform setting"
    )
