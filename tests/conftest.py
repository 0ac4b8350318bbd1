"""Fixtures for the whole suite: every test runs with a temporary home.

The tool, the docker CLI, ssh (through tests/support/bin/ssh) and Fabric all
read the user's files from $HOME, so pointing HOME and OLLAMA_STACK_HOME at
temp dirs keeps the real home untouched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIM_DIR = ROOT / "tests" / "support" / "bin"


def _compose_plugin() -> Path | None:
    """The Compose v2 binary to link into the temp home's docker config."""
    candidates = [
        Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
        / "cli-plugins"
        / "docker-compose",
        Path("/usr/libexec/docker/cli-plugins/docker-compose"),
        Path("/usr/lib/docker/cli-plugins/docker-compose"),
        ROOT / ".venv" / "bin" / "docker-compose",
    ]
    which = shutil.which("docker-compose")
    if which:
        candidates.append(Path(which))
    return next((c.resolve() for c in candidates if c.exists()), None)


_PLUGIN = _compose_plugin()  # resolved once, before any test changes HOME


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    plugins = home / ".docker" / "cli-plugins"
    plugins.mkdir(parents=True)
    if _PLUGIN:
        (plugins / "docker-compose").symlink_to(_PLUGIN)
    for var in list(os.environ):
        if var.startswith("OLLAMA_STACK_"):
            monkeypatch.delenv(var)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("OLLAMA_STACK_HOME", str(tmp_path / "stack-home"))
    monkeypatch.setenv("PATH", f"{SHIM_DIR}{os.pathsep}{os.environ['PATH']}")
    return home
