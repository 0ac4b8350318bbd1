"""stack/hosts/target.py: local vs remote targets, SSH failures, host-key checking.

The SSH tests run a real paramiko server on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from ollama_stack.common.errors import ConfigError, ExitCode, SSHError
from ollama_stack.stack.hosts import target as target_mod
from ollama_stack.stack.hosts.target import (
    SSHIdentity,
    Target,
    fingerprint,
    parse_ssh_g,
    resolve_ssh,
    run_quiet,
    split_host_spec,
)

from .helpers import FakeShell


def test_local_target():
    t = Target()
    assert not t.is_remote
    assert t.label == "local"
    assert t.docker_host is None


def test_remote_target():
    t = Target("user@box:2222")
    assert t.is_remote
    assert t.label == "user@box:2222"
    assert t.docker_host == "ssh://user@box:2222"


def test_local_shell_is_an_invoke_context_and_runs_commands():
    code, out = run_quiet(Target().shell(), "echo $LC_ALL; exit 3")
    assert (code, out) == (3, "C\n")


def test_run_quiet_passes_the_quiet_options():
    shell = FakeShell({"true": (0, "ok")})
    assert run_quiet(shell, "true") == (0, "ok")
    assert shell.kwargs == [
        {
            "hide": True,
            "warn": True,
            "in_stream": False,
            "echo": False,
            "dry": False,
            "env": {"LC_ALL": "C"},
        }
    ]


def test_local_dial_connects(http_service):
    from .helpers import ollama_routes

    server = http_service(ollama_routes())
    sock = Target().dial("127.0.0.1", server.port, 1.0)
    try:
        assert sock.getpeername() == ("127.0.0.1", server.port)
    finally:
        sock.close()


FAKE_SSH = """#!{python}
# ssh -W HOST:PORT as OpenSSH does it, minus the crypto: logs its argv, then
# carries stdin/stdout to HOST:PORT.
import json, socket, sys, threading
args = sys.argv[1:]
open({log!r}, "a").write(json.dumps(args) + "\\n")
host, port = args[args.index("-W") + 1].rsplit(":", 1)
conn = socket.create_connection((host, int(port)))
def up():
    while data := sys.stdin.buffer.read1(65536):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := conn.recv(65536):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
"""


def test_bulk_data_to_a_box_goes_through_an_openssh_w_process(http_service, tmp_path, monkeypatch):
    import json
    import sys

    from ollama_stack.stack.health import endpoint_for, get_json

    from .helpers import ollama_routes

    log = tmp_path / "ssh.log"
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text(FAKE_SSH.format(python=sys.executable, log=str(log)))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    server = http_service(ollama_routes())
    endpoint = endpoint_for("ollama", f"http://127.0.0.1:{server.port}")

    answer = get_json(endpoint, "/api/version", Target("me@box:2222").dial_stream, timeout=10)
    assert answer == {"version": "0.5.7"}
    wanted = ["-o", "BatchMode=yes", "-W", f"127.0.0.1:{server.port}", "-l", "me", "-p", "2222"]
    assert [json.loads(line) for line in log.read_text().splitlines()] == [[*wanted, "--", "box"]]


def test_close_forgets_the_shell():
    shell = FakeShell()
    t = Target(None, _shell=shell)
    assert t.shell() is shell
    t.close()
    assert t._shell is None


def test_threads_that_need_the_shell_at_once_open_one_connection(monkeypatch):
    # Probes and update checks run in threads; each dial needs the SSH connection.
    opened: list[FakeShell] = []

    def open_slowly(self: Target) -> FakeShell:
        time.sleep(0.05)  # as long as an SSH handshake takes, for the others to arrive
        opened.append(FakeShell())
        return opened[-1]

    monkeypatch.setattr(Target, "_open_remote", open_slowly)
    t = Target("box")
    shells: list[object] = []
    threads = [threading.Thread(target=lambda: shells.append(t.shell())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) == 1 and shells == opened * 4


def test_fingerprint_format():
    key = paramiko.RSAKey.generate(1024)
    fp = fingerprint(key)
    assert fp.startswith("SHA256:")
    assert "=" not in fp
    assert len(fp) == len("SHA256:") + 43


@pytest.mark.parametrize(
    ("exc", "needle"),
    [
        (paramiko.AuthenticationException("Authentication failed."), "login to box was refused"),
        (socket.gaierror(-2, "Name or service not known"), "cannot resolve SSH host box"),
        (TimeoutError("timed out"), "SSH to box timed out"),
        (ConnectionRefusedError(111, "Connection refused"), "cannot reach SSH on box"),
        (paramiko.SSHException("Error reading SSH protocol banner"), "SSH to box failed"),
    ],
)
def test_ssh_failures_become_ssh_errors(exc, needle):
    err = target_mod._ssh_failure("box", exc)
    assert isinstance(err, SSHError)
    assert err.code == ExitCode.SSH == 8
    assert needle in err.message
    assert err.remedy


# -- a real SSH server ---------------------------------------------------------------------


class _NoLogin(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "publickey"


@pytest.fixture
def ssh_server() -> Iterator[tuple[int, paramiko.PKey]]:
    """An SSH server on 127.0.0.1 with a fresh host key; nobody can log in."""
    host_key = paramiko.RSAKey.generate(1024)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        transport = paramiko.Transport(conn)
        transports.append(transport)
        transport.add_server_key(host_key)
        try:
            transport.start_server(server=_NoLogin())
        except (paramiko.SSHException, EOFError, OSError):
            return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, host_key
    listener.close()
    for transport in transports:
        transport.close()
    thread.join(timeout=5)


@pytest.fixture
def no_agent(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def test_unknown_host_key_is_refused_with_its_fingerprint(ssh_server, no_agent):
    port, host_key = ssh_server
    with pytest.raises(SSHError) as info:
        Target(f"tester@127.0.0.1:{port}").shell()
    assert info.value.code == ExitCode.SSH
    assert "unknown SSH host key" in info.value.message
    assert fingerprint(host_key) in info.value.message
    assert "ssh-keyscan" in info.value.remedy


def test_known_host_key_gets_past_verification(ssh_server, no_agent):
    port, host_key = ssh_server
    ssh_dir = Path(os.environ["HOME"]) / ".ssh"
    ssh_dir.mkdir(exist_ok=True)
    (ssh_dir / "known_hosts").write_text(
        f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n"
    )
    with pytest.raises(SSHError) as info:
        Target(f"tester@127.0.0.1:{port}").shell()
    # the key was accepted; the login (no keys, no agent) is what failed
    assert "unknown SSH host key" not in info.value.message
    assert "No authentication methods available" in info.value.message
    assert info.value.code == ExitCode.SSH


def test_closed_ssh_port(closed_port, no_agent):
    with pytest.raises(SSHError) as info:
        Target(f"tester@127.0.0.1:{closed_port}").shell()
    assert info.value.code == ExitCode.SSH
    assert info.value.message.startswith(f"cannot reach SSH on tester@127.0.0.1:{closed_port}")


# -- one SSH identity, as OpenSSH resolves it ---------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "parts"),
    [
        ("box", ("", "box", None)),
        ("me@box", ("me", "box", None)),
        ("me@box:2222", ("me", "box", 2222)),
        ("10.0.0.5:22", ("", "10.0.0.5", 22)),
        ("me@[::1]", ("me", "::1", None)),
        ("[::1]:2222", ("", "::1", 2222)),
        ("fe80::1", ("", "fe80::1", None)),
        ("fe80::1%eth0", ("", "fe80::1%eth0", None)),
        ("CORP\\ops@box", ("CORP\\ops", "box", None)),
    ],
)
def test_split_host_spec(spec, parts):
    assert split_host_spec(spec) == parts


@pytest.mark.parametrize("spec", ["box:99999", "box:0", "box:ssh", "u@box:", "[::1]:x"])
def test_split_host_spec_refuses_a_bad_port(spec):
    with pytest.raises(ConfigError) as info:
        split_host_spec(spec)
    assert info.value.code == 2 and "bad SSH port" in info.value.message


def test_parse_ssh_g(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    identity = parse_ssh_g(
        "host gpu\nhostname 10.1.2.3\nuser ops\nport 2200\n"
        "identityfile ~/.ssh/id_ed25519\nidentityfile /keys/lab\n"
        "userknownhostsfile ~/.ssh/known_hosts /etc/lab_hosts\n"
        "proxyjump jump@bastion:22\nconnecttimeout 7\nidentitiesonly yes\n"
    )
    assert identity == SSHIdentity(
        hostname="10.1.2.3",
        user="ops",
        port=2200,
        identity_files=(f"{tmp_path}/.ssh/id_ed25519", "/keys/lab"),
        known_hosts_files=(f"{tmp_path}/.ssh/known_hosts", "/etc/lab_hosts"),
        proxy_jump="jump@bastion:22",
        connect_timeout=7,
        identities_only=True,
    )
    plain = parse_ssh_g("hostname h\nuser u\nport 22\nproxyjump none\nconnecttimeout none\n")
    assert (plain.proxy_jump, plain.connect_timeout, plain.identities_only) == ("", None, False)


@pytest.fixture
def openssh_with_home_config(tmp_path, monkeypatch):
    """The real OpenSSH client, reading $HOME/.ssh/config (it would read the passwd
    entry's home otherwise), as the tests' ssh shim does for docker."""
    real = shutil.which("ssh")
    if real is None:
        pytest.skip("no OpenSSH client")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "ssh"
    shim.write_text(f'#!/bin/sh\nexec {real} -F "$HOME/.ssh/config" "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    ssh_dir = Path(os.environ["HOME"]) / ".ssh"
    ssh_dir.mkdir(exist_ok=True)
    return ssh_dir


def test_resolve_follows_include_and_match_as_openssh_does(openssh_with_home_config):
    ssh_dir = openssh_with_home_config
    (ssh_dir / "conf.d").mkdir()
    (ssh_dir / "config").write_text(f"Include {ssh_dir}/conf.d/*.conf\n")
    (ssh_dir / "conf.d" / "lab.conf").write_text(
        "Host gpu\n  HostName 10.9.8.7\n  User ops\n  Port 2201\n"
        f"  IdentityFile {ssh_dir}/lab_key\n  ProxyJump bastion\n"
        "Match user ops\n  IdentitiesOnly yes\n"
    )
    identity = resolve_ssh("gpu")
    assert (identity.hostname, identity.user, identity.port) == ("10.9.8.7", "ops", 2201)
    assert f"{ssh_dir}/lab_key" in identity.identity_files
    assert identity.proxy_jump == "bastion"
    assert identity.identities_only is True
    # user@host:port on the command line wins, as with `ssh -l -p`
    other = resolve_ssh("root@gpu:2222")
    assert (other.user, other.port, other.hostname) == ("root", 2222, "10.9.8.7")


def test_resolve_refuses_an_option_for_a_host(openssh_with_home_config):
    (openssh_with_home_config / "config").write_text("")
    with pytest.raises(SSHError) as info:
        resolve_ssh("-oProxyCommand=touch /tmp/pwned")
    assert info.value.message.startswith("bad SSH host")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("@", "bad --remote '@'"),
        ("", "bad --remote ''"),
        ("ssh://127.0.0.1", "give the host without ssh://"),
        ("x;touch /tmp/pwned", "bad --remote"),
        ("-oProxyCommand=touch /tmp/p", "bad --remote"),
        ("box $(id)", "bad --remote"),
        ("user@127.0.0.1:99999", "bad SSH port"),
        ("me@", "bad --remote 'me@'"),
        ("me@:22", "no host"),
        ("box:22:33", "bad --remote 'box:22:33'"),
        ("[::1]x", "bad --remote '[::1]x'"),
    ],
)
def test_a_bad_remote_is_refused_before_anything_runs(spec, says):
    with pytest.raises(ConfigError) as info:
        Target(spec)
    assert info.value.code == 2 and says in info.value.message


@pytest.mark.parametrize(
    "spec", ["box", "me@box", "me@box:2222", "10.0.0.5", "me@[fe80::1%eth0]", "lab+gpu", "bür-o"]
)
def test_good_remotes_pass(spec):
    assert Target(spec).host == spec


def test_proxy_command_is_kept_with_its_tokens_filled(tmp_path):
    identity = parse_ssh_g(
        "hostname 10.0.0.9\nuser ops\nport 2222\n"
        "proxycommand ssh -W %h:%p -l %r bastion # 100%%\n"
        "userknownhostsfile /k1\nglobalknownhostsfile /etc/ssh/ssh_known_hosts\n"
    )
    assert identity.proxy_command == "ssh -W 10.0.0.9:2222 -l ops bastion # 100%"
    assert identity.known_hosts_files == ("/k1", "/etc/ssh/ssh_known_hosts")
    assert parse_ssh_g("hostname h\nproxycommand none\n").proxy_command == ""
