"""stack/hosts/hostcheck.py: parsing `ss`, port conflicts, host facts through a shell."""

from __future__ import annotations

import os
import platform
import shutil
import socket

import invoke
import pytest

from ollama_stack.stack.hosts import hostcheck
from ollama_stack.stack.hosts.hostcheck import Listener, conflicts, parse_ss

from .helpers import FakeShell

SS_OUTPUT = """\
LISTEN 0      4096   127.0.0.1:11434 0.0.0.0:* users:(("docker-proxy",pid=812,fd=4))
LISTEN 0      4096       [::]:8080      [::]:* users:(("docker-proxy",pid=813,fd=4))
LISTEN 0      511           *:80           *:*
LISTEN 0      128     0.0.0.0:22     0.0.0.0:* users:(("sshd",pid=1,fd=3),("sshd",pid=9,fd=3))
LISTEN 0      4096 127.0.0.53%lo:53  0.0.0.0:* users:(("systemd-resolve",pid=400,fd=14))
LISTEN 0      128   [fe80::1%eth0]:9000   [::]:*
LISTEN 0      128    [::1]:8200        [::]:*                                        \n
garbage that is not a listener
"""


def test_parse_ss_real_looking_output():
    assert parse_ss(SS_OUTPUT) == [
        Listener("127.0.0.1", 11434, "docker-proxy (pid 812)"),
        Listener("::", 8080, "docker-proxy (pid 813)"),
        Listener("*", 80, ""),
        Listener("0.0.0.0", 22, "sshd (pid 1)"),
        Listener("127.0.0.53", 53, "systemd-resolve (pid 400)"),
        Listener("fe80::1", 9000, ""),
        Listener("::1", 8200, ""),
    ]


def test_parse_ss_empty():
    assert parse_ss("") == []
    assert parse_ss("\n\n") == []


@pytest.mark.parametrize(
    ("bind", "port", "listener", "conflict"),
    [
        ("127.0.0.1", 8080, Listener("127.0.0.1", 8080, ""), True),  # same address
        ("127.0.0.1", 8080, Listener("0.0.0.0", 8080, ""), True),  # wildcard listener
        ("127.0.0.1", 8080, Listener("::", 8080, ""), True),
        ("127.0.0.1", 8080, Listener("*", 8080, ""), True),
        ("0.0.0.0", 8080, Listener("127.0.0.1", 8080, ""), True),  # wildcard bind
        ("::", 8080, Listener("192.168.1.5", 8080, ""), True),
        ("127.0.0.1", 8080, Listener("127.0.0.1", 8081, ""), False),  # other port
        ("0.0.0.0", 8080, Listener("0.0.0.0", 18080, ""), False),
        ("127.0.0.1", 8080, Listener("192.168.1.5", 8080, ""), False),  # other address
        ("::1", 8080, Listener("127.0.0.1", 8080, ""), False),
    ],
)
def test_conflicts(bind, port, listener, conflict):
    other = Listener("127.0.0.1", 1, "noise")
    assert conflicts(bind, port, [other, listener]) == ([listener] if conflict else [])


def test_conflicts_returns_every_holder():
    found = parse_ss(SS_OUTPUT)
    assert conflicts("0.0.0.0", 80, found) == [Listener("*", 80, "")]
    assert conflicts("127.0.0.1", 11434, found) == [
        Listener("127.0.0.1", 11434, "docker-proxy (pid 812)")
    ]
    assert conflicts("127.0.0.1", 9999, found) == []


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("Linux x86_64\n8\n", hostcheck.HostFacts("Linux", "x86_64", 8)),
        ("Darwin arm64\n10\n", hostcheck.HostFacts("Darwin", "arm64", 10)),
        ("Linux aarch64\n", hostcheck.HostFacts("Linux", "aarch64", 1)),  # no cpu count
        ("Linux x86_64\nnot-a-number\n", hostcheck.HostFacts("Linux", "x86_64", 1)),
        ("Linux x86_64\n0\n", hostcheck.HostFacts("Linux", "x86_64", 1)),
        (
            "Linux x86_64\n16\n5.15.167.4-microsoft-standard-WSL2\n",
            hostcheck.HostFacts("Linux", "x86_64", 16, "5.15.167.4-microsoft-standard-WSL2"),
        ),
    ],
)
def test_host_facts(stdout, expected):
    shell = FakeShell({"uname": (0, stdout)})
    assert hostcheck.host_facts(shell) == expected
    # host checks never echo, never raise on failure, never read stdin
    assert shell.kwargs[0]["hide"] is True
    assert shell.kwargs[0]["warn"] is True
    assert shell.kwargs[0]["in_stream"] is False
    assert shell.kwargs[0]["env"] == {"LC_ALL": "C"}


def test_host_facts_when_the_command_fails():
    shell = FakeShell({"uname": (1, "Linux x86_64\n64\n")})
    assert hostcheck.host_facts(shell) == hostcheck.HostFacts("unknown", "unknown", 1)


def test_listeners_through_a_shell():
    shell = FakeShell({"ss -H": (0, SS_OUTPUT)})
    assert hostcheck.listeners(shell) == parse_ss(SS_OUTPUT)
    assert hostcheck.listeners(FakeShell({"ss -H": (127, "")})) is None


@pytest.mark.parametrize(
    ("code", "stdout", "expected"),
    [
        (0, "/dev/sda1 102400 51200 40960 56% /var/lib/docker\n", 40960 * 1024),
        (0, "overlay 1 1 notanumber 1% /\n", None),
        (0, "", None),
        (1, "/dev/sda1 102400 51200 40960 56% /\n", None),
    ],
)
def test_free_disk_bytes(code, stdout, expected):
    shell = FakeShell({"df -Pk": (code, stdout)})
    assert hostcheck.free_disk_bytes(shell, "/var/lib/my docker") == expected
    assert "'/var/lib/my docker'" in shell.commands[0]  # quoted for the shell


def test_nvidia_gpu_present():
    assert hostcheck.nvidia_gpu_present(FakeShell({"nvidia": (0, "")}))
    assert not hostcheck.nvidia_gpu_present(FakeShell({"nvidia": (1, "")}))


def test_nvidia_cdi_present_needs_a_match():
    assert hostcheck.nvidia_cdi_present(FakeShell({"grep": (0, "/etc/cdi/nvidia.yaml\n")}))
    assert not hostcheck.nvidia_cdi_present(FakeShell({"grep": (0, "")}))
    assert not hostcheck.nvidia_cdi_present(FakeShell({"grep": (1, "")}))


# -- through a real local shell -------------------------------------------------------


def test_host_facts_on_this_machine():
    facts = hostcheck.host_facts(invoke.Context())
    assert facts.system == platform.system()
    assert facts.machine == platform.machine()
    assert facts.cpus == len(os.sched_getaffinity(0))


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs iproute2's ss")
def test_listeners_on_this_machine_include_a_socket_we_open():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        found = hostcheck.listeners(invoke.Context())
    assert found is not None
    assert [(x.address, x.port) for x in found if x.port == port] == [("127.0.0.1", port)]
    assert conflicts("127.0.0.1", port, found)
    assert conflicts("0.0.0.0", port, found)
    assert not conflicts("127.0.0.2", port, found)


def test_free_disk_bytes_on_this_machine(tmp_path):
    free = hostcheck.free_disk_bytes(invoke.Context(), str(tmp_path))
    stats = os.statvfs(tmp_path)
    assert free is not None
    assert abs(free - stats.f_bavail * stats.f_frsize) < 256 << 20  # within 256 MiB


def test_nvidia_cdi_spec_is_found_in_the_first_of_two_dirs(tmp_path):
    etc_cdi, run_cdi = tmp_path / "etc-cdi", tmp_path / "run-cdi"
    etc_cdi.mkdir()
    run_cdi.mkdir()
    (etc_cdi / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\n")
    assert hostcheck.nvidia_cdi_present(invoke.Context(), (str(etc_cdi), str(run_cdi)))


def test_nvidia_cdi_spec_is_found_with_a_single_dir(tmp_path):
    (tmp_path / "nvidia.yaml").write_text("kind: nvidia.com/gpu\n")
    assert hostcheck.nvidia_cdi_present(invoke.Context(), (str(tmp_path),))


def test_nvidia_cdi_absent_in_empty_dirs(tmp_path):
    assert not hostcheck.nvidia_cdi_present(invoke.Context(), (str(tmp_path),))


def test_host_facts_read_the_memory_linux_and_macos_say():
    linux = FakeShell({"uname -s -m": (0, "Linux x86_64\n8\n6.1.0\n16318256k\n")})
    assert hostcheck.host_facts(linux).memory == 16318256 * 1024
    mac = FakeShell({"uname -s -m": (0, "Darwin arm64\n10\n23.1.0\n17179869184\n")})
    assert hostcheck.host_facts(mac).memory == 17179869184
    silent = FakeShell({"uname -s -m": (0, "Linux x86_64\n2\n6.1.0\n")})
    assert hostcheck.host_facts(silent).memory == 0  # unknown, never a refusal
