"""A native (Homebrew) Ollama updated end to end, version checked over real HTTP.

Ollama's /api/version is served by a real busybox httpd on 127.0.0.1; the
stand-in `brew upgrade ollama` rewrites the file it serves, as a real upgrade
plus service restart would change the answer.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import invoke
import pytest

from ollama_stack.stack.health import endpoint_for, get_json
from ollama_stack.stack.services.ollama_native import update_native

from .conftest import standin as _standin


def test_homebrew_update_is_seen_through_the_api(
    ollama_api: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = ollama_api
    bindir, log = tmp_path / "bin", tmp_path / "calls.log"
    bindir.mkdir()
    installed = tmp_path / "installed-version"
    installed.write_text("0.5.1\n")
    _standin(bindir / "ollama", f'echo "ollama version is $(<"{installed}")"', log)
    _standin(
        bindir / "brew",
        'case "$1" in\n'
        "  list) echo 'ollama 0.5.1' ;;\n"
        f"  upgrade) echo 0.5.2 > '{installed}'; echo '{{\"version\":\"0.5.2\"}}' > '{served}' ;;\n"
        "  *) exit 1 ;;\n"
        "esac",
        log,
    )
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert shutil.which("brew") == str(bindir / "brew")

    endpoint = endpoint_for("ollama", url)

    def version() -> str | None:
        data = get_json(
            endpoint,
            "/api/version",
            lambda h, p, t: socket.create_connection((h, p), timeout=t),
        )
        return data.get("version") if isinstance(data, dict) else None

    result = update_native(invoke.Context(), version)

    assert result.outcome == "updated", result.message
    assert (result.before, result.after) == ("0.5.1", "0.5.2")
    assert result.method.name == "homebrew"
    assert result.ran == "brew upgrade ollama"
    brew_calls = [line for line in log.read_text().splitlines() if line.startswith("brew ")]
    assert brew_calls == ["brew list --versions ollama", "brew upgrade ollama"]
