"""A native (Homebrew) Ollama updated end to end, version checked over real HTTP.

Ollama's /api/version is served by a real busybox httpd on 127.0.0.1; the
stand-in `brew upgrade ollama` rewrites the file it serves, as a real upgrade
plus service restart would change the answer.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import invoke
import pytest

from ollama_stack.stack.health import endpoint_for, get_json
from ollama_stack.stack.native import update_native

from .conftest import _unavailable, free_ports

BUSYBOX = "/bin/busybox"


@pytest.fixture
def ollama_api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(url, the file served as /api/version) from a busybox httpd we start and stop."""
    if not Path(BUSYBOX).exists():
        _unavailable("busybox is not installed")
    docroot = tmp_path / "www"
    (docroot / "api").mkdir(parents=True)
    version_file = docroot / "api" / "version"
    version_file.write_text('{"version":"0.5.1"}')
    port = free_ports(1)[0]
    httpd = subprocess.Popen(
        [BUSYBOX, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(docroot)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_listening(port, httpd)
        yield f"http://127.0.0.1:{port}", version_file
    finally:
        httpd.terminate()
        httpd.wait(timeout=10)


def _wait_listening(port: int, httpd: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if httpd.poll() is not None:
            pytest.fail(
                f"busybox httpd exited: {httpd.stderr.read().decode() if httpd.stderr else ''}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"busybox httpd did not listen on 127.0.0.1:{port}")


def _standin(path: Path, body: str, log: Path) -> None:
    path.write_text(f'#!/bin/bash\necho "{path.name} $*" >> "{log}"\n{body}\n')
    path.chmod(0o755)


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
