"""stack/services/ollama_native.py through a real local shell (invoke ``Context``).

Native Ollama and the package managers cannot be installed here, so each test
puts small bash stand-ins on PATH (and nothing else: the host's own dpkg, sudo
or id must not leak in). Each stand-in appends its argv to a log and answers
like the real tool. This machine runs as root, so "not root" is a stand-in `id`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import invoke
import pytest

from ollama_stack.stack.events import Event
from ollama_stack.stack.services import ollama_native as native
from ollama_stack.stack.services.ollama_native import (
    HostLayout,
    detect_install,
    is_root_or_passwordless,
    update_native,
)

OLD, NEW = "0.5.1", "0.5.2"


@dataclass
class Host:
    """A temp directory of stand-in executables that is the whole of PATH."""

    root: Path
    bindir: Path
    log: Path
    version_file: Path  # what the stand-in `ollama --version` reports

    def tool(self, name: str, body: str = "exit 0", where: Path | None = None) -> Path:
        directory = where or self.bindir
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        path.write_text(f'#!/bin/bash\necho "{name} $*" >> "{self.log}"\n{body}\n')
        path.chmod(0o755)
        return path

    def ollama(self, where: Path | None = None) -> Path:
        return self.tool("ollama", f'echo "ollama version is $(<"{self.version_file}")"', where)

    def install(self, version: str) -> str:
        """Shell code a stand-in package manager runs to "install" a version."""
        return f'echo {version} > "{self.version_file}"'

    def user(self, uid: int, sudo: str | None = None) -> None:
        """`id -u` answers ``uid``; ``sudo`` is "passwordless", "password" or None (absent)."""
        self.tool("id", f'[ "$1" = -u ] && echo {uid}')
        if sudo == "passwordless":
            self.tool("sudo", '[ "$1" = -n ] || exit 99\nshift\n"$@"')
        elif sudo == "password":
            self.tool("sudo", 'echo "sudo: a password is required" >&2\nexit 1')

    def calls(self, name: str | None = None) -> list[str]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [line for line in lines if name is None or line.split(" ", 1)[0] == name]


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    bindir = tmp_path / "standins"
    bindir.mkdir()
    h = Host(tmp_path, bindir, tmp_path / "calls.log", tmp_path / "installed-version")
    h.version_file.write_text(f"{OLD}\n")
    monkeypatch.setenv("PATH", str(bindir))
    # Nothing under the real /usr, /etc or /snap may decide a test.
    layout = HostLayout(
        script_dirs=(),
        unit_file=str(tmp_path / "etc" / "ollama.service"),
        snap_root=f"{tmp_path / 'snap'}/",
        extra_dirs=(),
    )
    monkeypatch.setattr(native, "LAYOUT", layout)
    monkeypatch.setattr(native, "POLL_INTERVAL", 0.01)
    return h


@dataclass
class RecordingContext:
    """An invoke Context that remembers how it was asked to run each command."""

    ctx: invoke.Context = field(default_factory=invoke.Context)
    runs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def run(self, command: str, **kwargs: Any) -> Any:
        self.runs.append((command, kwargs))
        return self.ctx.run(command, **kwargs)


@pytest.fixture
def shell() -> RecordingContext:
    return RecordingContext()


class Probe:
    """version_probe: answers the given versions in turn, then the last forever."""

    def __init__(self, *versions: str | None) -> None:
        self._versions: Iterator[str | None] = iter(versions)
        self._last = versions[-1]
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        self._last = next(self._versions, self._last)
        return self._last


def homebrew(host: Host, upgrade: str = "") -> None:
    host.ollama()
    host.tool(
        "brew",
        f'case "$1" in\n'
        f"  list) [ \"$*\" = 'list --versions ollama' ] && echo 'ollama {OLD}' ;;\n"
        f"  upgrade) {upgrade or host.install(NEW)} ;;\n"
        f"  *) exit 1 ;;\n"
        f"esac",
    )


def debian(host: Host, upgrade: str = "") -> None:
    binary = host.ollama()
    host.tool("dpkg", f'[ "$1" = -S ] && [ "$2" = "{binary}" ] && echo "ollama: {binary}"')
    host.tool("apt-get", upgrade or host.install(NEW))


# -- detection ----------------------------------------------------------------------


def test_homebrew_is_detected(host: Host, shell: RecordingContext) -> None:
    homebrew(host)
    method = detect_install(shell)
    assert method.name == "homebrew"
    assert method.binary == str(host.bindir / "ollama")
    assert method.update_command == "brew upgrade ollama"
    assert not method.needs_root
    assert OLD in method.note
    assert host.calls("brew") == ["brew list --versions ollama"]


def test_homebrew_without_the_formula_falls_through(host: Host, shell: RecordingContext) -> None:
    host.ollama()
    host.tool("brew", "exit 1")  # `brew list --versions ollama`: not installed by brew
    assert detect_install(shell).name == "unknown"


def test_debian_package_is_detected(host: Host, shell: RecordingContext) -> None:
    debian(host)
    method = detect_install(shell)
    assert (method.name, method.update_command, method.needs_root) == (
        "apt",
        "apt-get install --only-upgrade -y ollama",
        True,
    )
    assert host.calls("dpkg") == [f"dpkg -S {host.bindir / 'ollama'}"]


def test_dpkg_architecture_qualified_owner(host: Host, shell: RecordingContext) -> None:
    binary = host.ollama()
    host.tool("dpkg", f'echo "ollama-cuda:amd64, other: {binary}"')
    assert detect_install(shell).update_command == (
        "apt-get install --only-upgrade -y ollama-cuda:amd64"
    )


def test_rpm_package_with_dnf(host: Host, shell: RecordingContext) -> None:
    binary = host.ollama()
    host.tool("dpkg", f'echo "dpkg-query: no path found matching pattern {binary}" >&2; exit 1')
    host.tool("rpm", '[ "$1" = -qf ] && echo ollama')
    host.tool("dnf")
    method = detect_install(shell)
    assert (method.name, method.update_command, method.needs_root) == (
        "dnf",
        "dnf upgrade -y ollama",
        True,
    )
    assert host.calls("rpm") == [f"rpm -qf --queryformat %{{NAME}}\\n {binary}"]


def test_rpm_package_with_yum_only(host: Host, shell: RecordingContext) -> None:
    host.ollama()
    host.tool("rpm", "echo ollama")
    method = detect_install(shell)
    assert (method.name, method.update_command) == ("yum", "yum update -y ollama")


def test_rpm_not_owned_falls_through(host: Host, shell: RecordingContext) -> None:
    binary = host.ollama()
    host.tool("rpm", f'echo "file {binary} is not owned by any package"; exit 1')
    assert detect_install(shell).name == "unknown"


def test_arch_package(host: Host, shell: RecordingContext) -> None:
    binary = host.ollama()
    host.tool("pacman", f'[ "$1" = -Qo ] && echo "{binary} is owned by ollama-cuda {OLD}-1"')
    method = detect_install(shell)
    assert (method.name, method.update_command, method.needs_root) == (
        "pacman",
        "pacman -S --noconfirm ollama-cuda",
        True,
    )


def test_snap(host: Host, shell: RecordingContext, monkeypatch: pytest.MonkeyPatch) -> None:
    snap_bin = host.root / "snap" / "bin"
    host.ollama(where=snap_bin)
    monkeypatch.setenv("PATH", f"{snap_bin}{os.pathsep}{host.bindir}")
    method = detect_install(shell)
    assert (method.name, method.update_command, method.needs_root) == (
        "snap",
        "snap refresh ollama",
        True,
    )
    assert method.binary == str(snap_bin / "ollama")


def test_install_script_needs_the_binary_dir_and_the_unit(
    host: Host, shell: RecordingContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.ollama()
    monkeypatch.setattr(
        native, "LAYOUT", HostLayout((str(host.bindir),), native.LAYOUT.unit_file, "/snap/", ())
    )
    assert detect_install(shell).name == "unknown"  # no systemd unit: not the script
    unit = Path(native.LAYOUT.unit_file)
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/usr/local/bin/ollama serve\n")
    method = detect_install(shell)
    assert (method.name, method.update_command, method.needs_root) == (
        "install-script",
        "curl -fsSL https://ollama.com/install.sh | sh",
        True,
    )


def test_unknown_says_how_to_update(host: Host, shell: RecordingContext) -> None:
    host.ollama()
    method = detect_install(shell)
    assert method.name == "unknown"
    assert method.update_command is None
    assert str(host.bindir / "ollama") in method.note
    assert "https://ollama.com/download" in method.note
    assert "the way it was installed" in method.note


def test_mac_app_cli_link_is_recognised(host: Host, shell: RecordingContext) -> None:
    app_cli = host.ollama(where=host.root / "Ollama.app" / "Contents" / "Resources")
    (host.bindir / "ollama").symlink_to(app_cli)
    host.tool("readlink", 'exec /usr/bin/readlink "$@"')
    method = detect_install(shell)
    assert method.name == "unknown"
    assert "Ollama.app" in method.note and "Restart to Update" in method.note


def test_no_ollama_at_all(host: Host, shell: RecordingContext) -> None:
    method = detect_install(shell)
    assert (method.name, method.binary, method.update_command) == ("unknown", None, None)
    assert method.note == "ollama not found on PATH"


def test_homebrew_off_path_is_found_where_it_installs(
    host: Host, shell: RecordingContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over SSH a Mac's non-interactive PATH lacks /opt/homebrew/bin."""
    brew_prefix = host.root / "opt homebrew" / "bin"  # a space, to check the quoting
    host.ollama(where=brew_prefix)
    host.tool("brew", f"echo 'ollama {OLD}'", where=brew_prefix)
    (host.bindir / "ollama").unlink(missing_ok=True)
    monkeypatch.setattr(
        native, "LAYOUT", HostLayout((), "/nonexistent", "/snap/", (str(brew_prefix),))
    )
    method = detect_install(shell)
    assert method.name == "homebrew"
    assert method.binary == str(brew_prefix / "ollama")
    assert method.update_command == f"'{brew_prefix / 'brew'}' upgrade ollama"


# -- root and sudo -------------------------------------------------------------------


def test_root_needs_no_sudo(host: Host, shell: RecordingContext) -> None:
    host.user(0, sudo="password")
    assert is_root_or_passwordless(shell) == (True, "")
    assert host.calls("sudo") == []


def test_passwordless_sudo(host: Host, shell: RecordingContext) -> None:
    host.user(1000, sudo="passwordless")
    assert is_root_or_passwordless(shell) == (True, "sudo -n ")
    assert host.calls("sudo") == ["sudo -n true"]


def test_sudo_wanting_a_password_never_prompts(host: Host, shell: RecordingContext) -> None:
    host.user(1000, sudo="password")
    assert is_root_or_passwordless(shell) == (False, "sudo: a password is required")
    assert all(kwargs["in_stream"] is False for _, kwargs in shell.runs)


def test_no_sudo_installed(host: Host, shell: RecordingContext) -> None:
    host.user(1000)
    allowed, why = is_root_or_passwordless(shell)
    assert not allowed and "sudo is not installed" in why


# -- updating ------------------------------------------------------------------------


def test_homebrew_update(host: Host, shell: RecordingContext) -> None:
    homebrew(host)
    events: list[Event] = []
    result = update_native(shell, Probe(OLD, NEW), progress=events.append)
    assert result.outcome == "updated"
    assert (result.before, result.after) == (OLD, NEW)
    assert result.ran == "brew upgrade ollama"
    assert "brew upgrade ollama" in host.calls("brew")
    assert host.calls("sudo") == [] and host.calls("id") == []  # Homebrew never wants root
    assert any("brew upgrade ollama" in e.message for e in events)
    assert {e.kind for e in events} == {"step"}
    assert all(kwargs["in_stream"] is False for _, kwargs in shell.runs)


def test_apt_with_passwordless_sudo(host: Host, shell: RecordingContext) -> None:
    debian(host)
    host.user(1000, sudo="passwordless")
    result = update_native(shell, Probe(OLD, NEW))
    assert result.outcome == "updated"
    assert result.ran == "sudo -n apt-get install --only-upgrade -y ollama"
    assert host.calls("sudo") == [
        "sudo -n true",
        "sudo -n apt-get install --only-upgrade -y ollama",
    ]
    assert host.calls("apt-get") == ["apt-get install --only-upgrade -y ollama"]


def test_apt_as_root_runs_without_sudo(host: Host, shell: RecordingContext) -> None:
    debian(host)
    host.user(0, sudo="passwordless")
    result = update_native(shell, Probe(OLD, NEW))
    assert result.outcome == "updated"
    assert result.ran == "apt-get install --only-upgrade -y ollama"
    assert host.calls("sudo") == []
    assert host.calls("apt-get") == ["apt-get install --only-upgrade -y ollama"]


def test_needs_sudo_runs_nothing_and_gives_the_command(host: Host, shell: RecordingContext) -> None:
    debian(host)
    host.user(1000, sudo="password")
    result = update_native(shell, Probe(OLD))
    assert result.outcome == "needs-sudo"
    assert result.ran is None
    assert (result.before, result.after) == (OLD, OLD)
    assert "`sudo apt-get install --only-upgrade -y ollama`" in result.message
    assert "a password is required" in result.message
    assert host.calls("apt-get") == []
    assert host.calls("sudo") == ["sudo -n true"]


def test_sudo_allowed_for_true_but_not_the_package_manager(
    host: Host, shell: RecordingContext
) -> None:
    debian(host)
    host.user(1000)
    host.tool("sudo", '[ "$2" = true ] && exit 0\necho "sudo: a password is required" >&2\nexit 1')
    result = update_native(shell, Probe(OLD))
    assert result.outcome == "needs-sudo"
    assert "`sudo apt-get install --only-upgrade -y ollama`" in result.message


def test_install_script_pipes_into_root_sh(
    host: Host, shell: RecordingContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.ollama()
    unit = host.root / "etc" / "ollama.service"
    unit.parent.mkdir()
    unit.write_text("[Service]\n")
    monkeypatch.setattr(native, "LAYOUT", HostLayout((str(host.bindir),), str(unit), "/snap/", ()))
    host.tool("curl", f"echo '{host.install(NEW)}'")
    host.tool("sh", "exec /bin/sh")  # runs the "script" curl printed
    host.user(1000, sudo="passwordless")
    result = update_native(shell, Probe(OLD, NEW))
    assert result.outcome == "updated"
    assert result.ran == "curl -fsSL https://ollama.com/install.sh | sudo -n sh"
    assert host.calls("sudo") == ["sudo -n true", "sudo -n sh"]
    assert host.calls("curl") == ["curl -fsSL https://ollama.com/install.sh"]

    host.user(1000, sudo="password")
    refused = update_native(shell, Probe(OLD))
    assert refused.outcome == "needs-sudo"
    assert "`curl -fsSL https://ollama.com/install.sh | sudo sh`" in refused.message


def test_snap_as_root(host: Host, shell: RecordingContext, monkeypatch: pytest.MonkeyPatch) -> None:
    snap_bin = host.root / "snap" / "bin"
    host.ollama(where=snap_bin)
    monkeypatch.setenv("PATH", f"{snap_bin}{os.pathsep}{host.bindir}")
    host.tool("snap", host.install(NEW))
    host.user(0)
    result = update_native(shell, Probe(OLD, NEW))
    assert (result.outcome, result.ran) == ("updated", "snap refresh ollama")


def test_unknown_is_manual(host: Host, shell: RecordingContext) -> None:
    host.ollama()
    result = update_native(shell, Probe(OLD))
    assert (result.outcome, result.ran) == ("manual", None)
    assert "https://ollama.com/download" in result.message
    assert result.before == OLD


def test_no_ollama_is_manual(host: Host, shell: RecordingContext) -> None:
    result = update_native(shell, Probe(None))
    assert result.outcome == "manual"
    assert result.message == "ollama not found on PATH"


def test_failure_reports_the_last_error_line(host: Host, shell: RecordingContext) -> None:
    homebrew(
        host,
        upgrade="echo '==> Upgrading 1 outdated package:'\n"
        "echo 'Error: Cannot write to /opt/homebrew/Cellar' >&2\nexit 1",
    )
    result = update_native(shell, Probe(OLD))
    assert result.outcome == "failed"
    assert result.ran == "brew upgrade ollama"
    assert (
        result.message
        == "`brew upgrade ollama` failed: Error: Cannot write to /opt/homebrew/Cellar"
    )
    assert (result.before, result.after) == (OLD, OLD)


def test_failure_with_stdout_only(host: Host, shell: RecordingContext) -> None:
    debian(
        host, upgrade="echo 'Reading package lists...'\necho 'E: dpkg was interrupted'\nexit 100"
    )
    host.user(0)
    result = update_native(shell, Probe(OLD))
    assert result.outcome == "failed"
    assert result.message.endswith("failed: E: dpkg was interrupted")


def test_timeout_is_a_failure(host: Host, shell: RecordingContext) -> None:
    homebrew(host, upgrade="exec /bin/sleep 5")
    started = time.monotonic()
    result = update_native(shell, Probe(OLD), timeout=0.5)
    assert time.monotonic() - started < 4
    assert result.outcome == "failed"
    assert result.message.endswith("failed: did not finish within 0.5 s")


def test_unchanged_when_nothing_newer(host: Host, shell: RecordingContext) -> None:
    homebrew(host, upgrade=f"echo 'Warning: ollama {OLD} already installed' >&2")
    probe = Probe(OLD)
    started = time.monotonic()
    result = update_native(shell, probe)
    # The binary on disk did not change either, so there is no restart to wait for.
    assert time.monotonic() - started < 5
    assert result.outcome == "unchanged"
    assert (result.before, result.after) == (OLD, OLD)
    assert f"still {OLD}" in result.message
    assert probe.calls == 2


def test_apt_unchanged_mentions_stale_lists(host: Host, shell: RecordingContext) -> None:
    debian(host, upgrade="echo 'ollama is already the newest version (0.5.1).'")
    host.user(0)
    result = update_native(shell, Probe(OLD))
    assert result.outcome == "unchanged"
    assert "sudo apt-get update" in result.message


def test_waits_while_the_service_restarts(host: Host, shell: RecordingContext) -> None:
    homebrew(host)
    probe = Probe(OLD, OLD, None, None, NEW)
    result = update_native(shell, probe, restart_wait=10)
    assert (result.outcome, result.after) == ("updated", NEW)
    assert probe.calls == 5


def test_installed_but_server_not_restarted(host: Host, shell: RecordingContext) -> None:
    homebrew(host)  # writes NEW to disk, but the server keeps answering OLD
    result = update_native(shell, Probe(OLD), restart_wait=0.2)
    assert result.outcome == "manual"  # a hand is needed: not "up to date"
    assert f"installed {NEW}" in result.message
    assert "`brew services restart ollama`" in result.message


def test_server_gone_after_the_update_is_a_failure(host: Host, shell: RecordingContext) -> None:
    homebrew(host)
    result = update_native(shell, Probe(OLD, None), restart_wait=0.2)
    assert result.outcome == "failed"
    assert "stopped answering" in result.message


def test_not_running_before_or_after_counts_the_install(
    host: Host, shell: RecordingContext
) -> None:
    homebrew(host)
    result = update_native(shell, Probe(None), restart_wait=0.1)
    assert result.outcome == "updated"
    assert (result.before, result.after) == (None, NEW)


def test_dry_run_changes_nothing(host: Host, shell: RecordingContext) -> None:
    debian(host)
    host.user(1000, sudo="passwordless")
    result = update_native(shell, Probe(OLD), dry_run=True)
    assert (result.outcome, result.ran) == ("manual", None)
    assert "would run `sudo -n apt-get install --only-upgrade -y ollama`" in result.message
    assert host.calls("apt-get") == []
    assert host.version_file.read_text().strip() == OLD


def test_not_running_and_nothing_installed_does_not_wait(
    host: Host, shell: RecordingContext
) -> None:
    homebrew(host, upgrade="true")
    started = time.monotonic()
    result = update_native(shell, Probe(None), restart_wait=10)
    assert time.monotonic() - started < 5
    assert result.outcome == "unchanged"
    assert (result.before, result.after) == (None, OLD)
