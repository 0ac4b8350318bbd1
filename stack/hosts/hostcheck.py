"""Facts about the machine the stack runs on, read through the target's shell.

The same functions serve this machine (invoke ``Context``) and a remote box
(Fabric ``Connection``): they only run ordinary commands (``uname``, ``ss``,
``df``, ``nproc``) and parse the output.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from .target import Shell, run_quiet

WILDCARDS = {"0.0.0.0", "::", "*", "[::]"}


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    process: str  # "docker-proxy (pid 812)", or "" when ss cannot tell


@dataclass(frozen=True)
class HostFacts:
    system: str  # Linux, Darwin
    machine: str  # x86_64, arm64
    cpus: int
    kernel: str = ""  # `uname -r`: "…-microsoft-standard-WSL2" under WSL2
    memory: int = 0  # bytes of RAM; 0 when the host did not say

    @property
    def wsl(self) -> bool:
        return self.system == "Linux" and "microsoft" in self.kernel.lower()


FACTS = (
    "uname -s -m; nproc 2>/dev/null || sysctl -n hw.ncpu; uname -r; "
    "awk '/^MemTotal:/ {print $2 \"k\"}' /proc/meminfo 2>/dev/null || sysctl -n hw.memsize"
)


def host_facts(shell: Shell) -> HostFacts:
    code, out = run_quiet(shell, FACTS)
    lines = out.split("\n") if code == 0 else []
    system, _, machine = (lines[0] if lines else "unknown unknown").partition(" ")
    cpus = _number(lines, 1) or 1
    kernel = lines[2].strip() if len(lines) > 2 else ""
    memory = lines[3].strip() if len(lines) > 3 else ""  # Linux: "<n>k"; macOS: bytes
    kib = memory.endswith("k")
    memory_bytes = _number([memory.removesuffix("k")], 0) * (1024 if kib else 1)
    return HostFacts(system.strip(), machine.strip(), max(cpus, 1), kernel, memory_bytes)


def _number(lines: list[str], index: int) -> int:
    """An integer line of the answer; 0 when it is missing or not a number (unknown)."""
    try:
        return int(lines[index].strip()) if len(lines) > index else 0
    except ValueError:
        return 0


_SS_LINE = re.compile(
    r"^\S+\s+\d+\s+\d+\s+(?P<local>\S+):(?P<port>\d+)\s+\S+(?:\s+(?P<users>.*))?$"
)
_SS_USER = re.compile(r'\("(?P<name>[^"]+)",pid=(?P<pid>\d+)')


def parse_ss(output: str) -> list[Listener]:
    """Parse ``ss -Hltnp``: ``LISTEN 0 4096 127.0.0.1:8080 0.0.0.0:* users:((…))``."""
    listeners = []
    for line in output.splitlines():
        match = _SS_LINE.match(line.strip())
        if not match:
            continue
        users = _SS_USER.search(match.group("users") or "")
        process = f"{users['name']} (pid {users['pid']})" if users else ""
        address = match.group("local").strip("[]").split("%")[0]
        listeners.append(Listener(address, int(match.group("port")), process))
    return listeners


def listeners(shell: Shell) -> list[Listener] | None:
    """TCP listeners on the host, or None when ``ss`` is not available there."""
    code, out = run_quiet(shell, "ss -Hltnp 2>/dev/null || ss -Hltn")
    return parse_ss(out) if code == 0 else None


def conflicts(bind: str, port: int, found: list[Listener]) -> list[Listener]:
    """Listeners that would make binding ``bind:port`` fail."""
    hits = []
    for listener in found:
        if listener.port != port:
            continue
        same_address = listener.address == bind or bind in WILDCARDS
        if same_address or listener.address in WILDCARDS:
            hits.append(listener)
    return hits


def free_disk_bytes(shell: Shell, path: str) -> int | None:
    code, out = run_quiet(shell, f"df -Pk {shlex.quote(path)} 2>/dev/null | tail -n 1")
    fields = out.split()
    if code != 0 or len(fields) < 4 or not fields[3].isdigit():
        return None
    return int(fields[3]) * 1024


def nvidia_gpu_present(shell: Shell) -> bool:
    code, _ = run_quiet(shell, "ls /dev/nvidia0 >/dev/null 2>&1 || nvidia-smi -L >/dev/null 2>&1")
    return code == 0


CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")


def nvidia_cdi_present(shell: Shell, spec_dirs: tuple[str, ...] = CDI_SPEC_DIRS) -> bool:
    """True when a CDI spec in any of the directories describes nvidia.com/gpu."""
    dirs = " ".join(shlex.quote(d) for d in spec_dirs)
    # -r over the directories: globs that match nothing would make grep fail.
    command = f"grep -rls --include='*.yaml' --include='*.json' nvidia.com/gpu {dirs} 2>/dev/null"
    _, out = run_quiet(shell, command)
    return bool(out.strip())
