"""Update an Ollama installed on the host itself (service type ``native-api``).

Native installs are common on macOS (Metal is not reachable from Docker), and
each one is updated the way it was installed: Homebrew, a distribution package,
a snap, or Ollama's install script. Everything runs through the target's shell
(an invoke ``Context`` here, a Fabric ``Connection`` over SSH), never through
subprocess, so a remote box is handled exactly like this one.

Nothing here may wait on a password prompt: root is checked with ``id -u`` and
``sudo -n``, every command gets ``in_stream=False``, and when sudo would ask for
a password the caller gets the exact command to run by hand instead.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..events import Progress, emit
from ..hosts.target import Shell, quiet_options, run_quiet

DOWNLOAD_PAGE = "https://ollama.com/download"
INSTALL_SCRIPT = "curl -fsSL https://ollama.com/install.sh | sh"
UPDATE_TIMEOUT = 900.0  # s; a package manager may download several hundred MB
RESTART_WAIT = 30.0  # s; the service restarts after the update
POLL_INTERVAL = 1.0  # s between version probes while it restarts

Outcome = Literal["updated", "unchanged", "needs-sudo", "manual", "failed"]
VersionProbe = Callable[[], str | None]


@dataclass(frozen=True)
class HostLayout:
    """Where installers put things on the host.

    A module constant (``LAYOUT``) rather than literals so the tests can point
    it at temporary directories instead of the real /usr and /etc.
    """

    # Ollama's install.sh puts the binary in one of these and writes a unit.
    script_dirs: tuple[str, ...] = ("/usr/local/bin", "/usr/bin")
    unit_file: str = "/etc/systemd/system/ollama.service"
    snap_root: str = "/snap/"
    # Searched when a tool is not on PATH: a Mac's non-interactive SSH shell
    # has a bare PATH without Homebrew.
    extra_dirs: tuple[str, ...] = (
        "/opt/homebrew/bin",
        "/usr/local/bin",
        "/home/linuxbrew/.linuxbrew/bin",
    )


LAYOUT = HostLayout()


@dataclass(frozen=True)
class InstallMethod:
    name: str  # homebrew | apt | dnf | yum | pacman | snap | install-script | unknown
    binary: str | None
    update_command: str | None  # without any sudo prefix
    needs_root: bool
    note: str


@dataclass
class NativeUpdate:
    method: InstallMethod
    before: str | None  # the running server's version before
    after: str | None  # the running server's version after (else the installed one)
    ran: str | None  # the exact command run, sudo prefix included; None if nothing ran
    outcome: Outcome
    message: str


# -- running commands ------------------------------------------------------------


def _run(shell: Shell, command: str, timeout: float | None = None) -> tuple[int, str, str]:
    """Like ``run_quiet``, but keeps stderr (where tools put their errors) and
    can time out. A timeout is reported as exit code 124, like timeout(1)."""
    from invoke.exceptions import CommandTimedOut

    try:
        result = shell.run(command, timeout=timeout, **quiet_options(shell))
    except CommandTimedOut as exc:
        tail = f"did not finish within {timeout:g} s"
        return 124, exc.result.stdout or "", f"{exc.result.stderr or ''}\n{tail}"
    return result.exited, result.stdout or "", getattr(result, "stderr", "") or ""


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _last_line(stdout: str, stderr: str) -> str:
    """The tool's final word: errors go to stderr, so that wins when present."""
    for text in (stderr, stdout):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "no output"


def _find(shell: Shell, name: str) -> tuple[str, str] | None:
    """(full path, how to call it) for ``name``: PATH first, then ``extra_dirs``."""
    code, out = run_quiet(shell, f"command -v {name}")
    path = _first_line(out)
    if code == 0 and path.startswith("/"):
        return path, name
    for directory in LAYOUT.extra_dirs:
        candidate = posixpath.join(directory, name)
        if run_quiet(shell, f"test -x {shlex.quote(candidate)}")[0] == 0:
            return candidate, shlex.quote(candidate)
    return None


def _as_root(command: str, prefix: str) -> str:
    """Put ``prefix`` on the stage that installs: the last one of a pipeline,
    so `curl … | sh` becomes `curl … | sudo -n sh`, not `sudo -n curl … | sh`."""
    head, bar, last = command.rpartition(" | ")
    return f"{head}{bar}{prefix}{last}"


# -- detection ---------------------------------------------------------------------


def _homebrew(shell: Shell, binary: str) -> InstallMethod | None:
    found = _find(shell, "brew")
    if found is None:
        return None
    code, out = run_quiet(shell, f"{found[1]} list --versions ollama")
    if code != 0 or not out.strip():
        return None
    command = f"{found[1]} upgrade ollama"
    return InstallMethod("homebrew", binary, command, False, f"Homebrew: {_first_line(out)}")


def _dpkg(shell: Shell, binary: str) -> InstallMethod | None:
    code, out = run_quiet(shell, f"dpkg -S {shlex.quote(binary)}")
    owners = [line for line in out.splitlines() if ": " in line and "diversion" not in line]
    if code != 0 or not owners:
        return None
    # "ollama: /usr/bin/ollama", "ollama:amd64: /usr/bin/ollama" or "a, b: /path"
    package = owners[0].rpartition(": ")[0].split(",")[0].strip()
    command = f"apt-get install --only-upgrade -y {package}"
    return InstallMethod("apt", binary, command, True, f"Debian package {package}")


def _rpm(shell: Shell, binary: str) -> InstallMethod | None:
    code, out = run_quiet(shell, f"rpm -qf --queryformat '%{{NAME}}\\n' {shlex.quote(binary)}")
    package = _first_line(out)
    if code != 0 or not package or " " in package:  # "file … is not owned by any package"
        return None
    if run_quiet(shell, "command -v dnf")[0] == 0:
        return InstallMethod("dnf", binary, f"dnf upgrade -y {package}", True, f"RPM {package}")
    return InstallMethod("yum", binary, f"yum update -y {package}", True, f"RPM {package}")


def _pacman(shell: Shell, binary: str) -> InstallMethod | None:
    code, out = run_quiet(shell, f"pacman -Qo {shlex.quote(binary)}")
    match = re.search(r"is owned by (\S+)", out)
    if code != 0 or match is None:
        return None
    package = match.group(1)
    command = f"pacman -S --noconfirm {package}"
    return InstallMethod("pacman", binary, command, True, f"Arch package {package}")


def _snap(shell: Shell, binary: str) -> InstallMethod | None:
    if not binary.startswith(LAYOUT.snap_root):
        return None
    return InstallMethod("snap", binary, "snap refresh ollama", True, "snap ollama")


def _install_script(shell: Shell, binary: str) -> InstallMethod | None:
    if posixpath.dirname(binary) not in LAYOUT.script_dirs:
        return None
    if run_quiet(shell, f"test -f {shlex.quote(LAYOUT.unit_file)}")[0] != 0:
        return None
    note = f"Ollama's install script (binary {binary}, unit {LAYOUT.unit_file})"
    return InstallMethod("install-script", binary, INSTALL_SCRIPT, True, note)


def _unknown(shell: Shell, binary: str) -> InstallMethod:
    # The Mac app links its CLI into /usr/local/bin and updates itself.
    target = _first_line(run_quiet(shell, f"readlink {shlex.quote(binary)}")[1])
    if ".app/" in binary or ".app/" in target:
        note = (
            f"{binary} belongs to Ollama.app, which updates itself: choose "
            f"'Restart to Update' in its menu-bar icon, or download it again from {DOWNLOAD_PAGE}"
        )
    else:
        note = (
            f"{binary} was not installed by a package manager we recognise: update it "
            f"the way it was installed (downloads: {DOWNLOAD_PAGE})"
        )
    return InstallMethod("unknown", binary, None, False, note)


DETECTORS = (_homebrew, _dpkg, _rpm, _pacman, _snap, _install_script)


def detect_install(shell: Shell) -> InstallMethod:
    """How the host's ``ollama`` was installed, and the command that updates it."""
    found = _find(shell, "ollama")
    if found is None:
        return InstallMethod("unknown", None, None, False, "ollama not found on PATH")
    binary = found[0]
    for detector in DETECTORS:
        method = detector(shell, binary)
        if method is not None:
            return method
    return _unknown(shell, binary)


def is_root_or_passwordless(shell: Shell) -> tuple[bool, str]:
    """(True, prefix to put before root commands) or (False, why not).

    Only ``sudo -n`` is ever run: it fails instead of prompting.
    """
    code, out = run_quiet(shell, "id -u")
    if code == 0 and out.strip() == "0":
        return True, ""
    code, out, err = _run(shell, "sudo -n true")
    if code == 0:
        return True, "sudo -n "
    if code == 127:
        return False, "not root and sudo is not installed"
    return False, _last_line(out, err)


# -- the update ----------------------------------------------------------------------

RESTART_HINTS = {
    "homebrew": "brew services restart ollama",
    "snap": "sudo snap restart ollama",
}
SYSTEMD_RESTART = "sudo systemctl restart ollama"
# These two install from lists that are only as new as the last refresh.
STALE_LISTS = {
    "apt": " (if one exists, refresh the lists first: `sudo apt-get update`)",
    "pacman": " (if one exists, upgrade the system first: `sudo pacman -Syu`)",
}


def _installed_version(shell: Shell, binary: str | None) -> str | None:
    """The version of the binary on disk, which may differ from the running server."""
    if binary is None:
        return None
    _, out = run_quiet(shell, f"{shlex.quote(binary)} --version")
    # With a server of another version running, the CLI prints both.
    match = re.search(r"client version is (\S+)", out) or re.search(r"version is (\S+)", out)
    return match.group(1) if match else None


def update_native(
    shell: Shell,
    version_probe: VersionProbe,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    timeout: float = UPDATE_TIMEOUT,
    restart_wait: float = RESTART_WAIT,
) -> NativeUpdate:
    """Update the host's Ollama the way it was installed, then re-check its version.

    ``version_probe`` returns the running server's version (GET /api/version)
    or None when it does not answer. With ``dry_run`` nothing is changed: the
    outcome is "manual" and the message holds the command that would run.
    """
    before = version_probe()
    emit(progress, "step", "finding out how Ollama was installed")
    method = detect_install(shell)
    if method.update_command is None:
        return NativeUpdate(method, before, before, None, "manual", method.note)
    prefix = ""
    if method.needs_root:
        allowed, prefix = is_root_or_passwordless(shell)
        if not allowed:
            return _needs_sudo(method, before, prefix)
    command = _as_root(method.update_command, prefix)
    if dry_run:
        message = f"dry run: would run `{command}` ({method.note})"
        return NativeUpdate(method, before, before, None, "manual", message)
    installed_before = _installed_version(shell, method.binary)
    emit(progress, "step", f"running `{command}`")
    code, out, err = _run(shell, command, timeout)
    if code != 0:
        return _failed(method, before, command, _last_line(out, err))
    emit(progress, "step", "checking the version Ollama answers with")
    return _recheck(shell, method, command, before, installed_before, version_probe, restart_wait)


def _needs_sudo(method: InstallMethod, before: str | None, reason: str) -> NativeUpdate:
    by_hand = _as_root(method.update_command or "", "sudo ")
    message = (
        f"updating the {method.name} install needs root, and sudo wants a password "
        f"({reason}): run `{by_hand}` on that host yourself"
    )
    return NativeUpdate(method, before, before, None, "needs-sudo", message)


def _failed(method: InstallMethod, before: str | None, command: str, last: str) -> NativeUpdate:
    # sudoers may allow `true` without a password but not the package manager.
    if "password is required" in last:
        return _needs_sudo(method, before, last)
    return NativeUpdate(method, before, before, command, "failed", f"`{command}` failed: {last}")


def _wait_for_version(
    version_probe: VersionProbe, before: str | None, settled: bool, wait: float
) -> str | None:
    """Poll while the service restarts; stop early on a new version, or when the
    package manager installed nothing (``settled``) and the answer is as before."""
    deadline = time.monotonic() + wait
    while True:
        running = version_probe()
        if running is not None and running != before:
            return running
        if settled and running == before:
            return running
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return running
        time.sleep(min(POLL_INTERVAL, remaining))


def _recheck(
    shell: Shell,
    method: InstallMethod,
    command: str,
    before: str | None,
    installed_before: str | None,
    version_probe: VersionProbe,
    wait: float,
) -> NativeUpdate:
    installed = _installed_version(shell, method.binary)
    settled = installed_before is not None and installed == installed_before
    running = _wait_for_version(version_probe, before, settled, wait)

    def done(outcome: Outcome, message: str) -> NativeUpdate:
        return NativeUpdate(method, before, running or installed, command, outcome, message)

    if running is not None and running != before:
        return done("updated", f"Ollama {before or '?'} → {running}")
    if running is None and before is not None:
        return done("failed", f"`{command}` ran, but Ollama stopped answering for {wait:g} s")
    if installed and installed != installed_before and installed != running:
        if running is None:  # not running before or after: the install is what counts
            return done("updated", f"installed Ollama {installed}; it is not running")
        hint = RESTART_HINTS.get(method.name, SYSTEMD_RESTART)
        return done(
            "manual",  # installed but not running yet: a hand is needed, not "up to date"
            f"installed {installed}, but the running server is still {running}: "
            f"restart it (`{hint}`)",
        )
    stale = STALE_LISTS.get(method.name, "")
    return done(
        "unchanged", f"Ollama is still {running or installed or '?'}: nothing newer came{stale}"
    )
