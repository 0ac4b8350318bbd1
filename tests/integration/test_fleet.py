"""--hosts on a real fleet: this machine (`local`) and the second host of
scripts/testhost.sh (its own network namespace, sshd and dockerd), in parallel."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ollama_stack.stack.config import InstallPaths

from .conftest import BROKEN_TAG, CLI, docker

pytestmark = [pytest.mark.docker, pytest.mark.remote]


@pytest.fixture
def fleet(make_installation, remote_host):
    """One home holding this machine's installation and the box's, with the
    same project, ports and images on both engines (as one user's would be)."""
    local = make_installation()
    box = make_installation(
        install=False, remote=remote_host.name, docker_host=remote_host.docker_host
    )
    box.env, box.project = local.env, local.project  # for the box's teardown by label
    local.ok("stack.install", "--remote", remote_host.name)
    return local, box, f"local,{remote_host.name}"


def hosts_document(result) -> dict:
    document = json.loads(result.stdout)  # exactly one document: nothing else on stdout
    assert list(document) == ["hosts"]
    return document["hosts"]


def test_start_status_stop_on_this_machine_and_the_box_at_once(fleet, remote_host) -> None:
    local, box, hosts = fleet
    began = time.monotonic()
    started = local.cli("stack.start", "--pull", "never", "--hosts", hosts)
    took = time.monotonic() - began
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"── {remote_host.name} ──" in started.stdout and "── local ──" in started.stdout
    assert started.stdout.count("stack healthy in") == 2
    print(f"fleet start on 2 hosts: {took:.1f} s")
    assert len(local.containers()) == 3 and len(box.containers()) == 3  # each on its own engine

    status = local.cli("stack.status", "--json", "--hosts", hosts)
    assert status.returncode == 0, status.stderr
    per_host = hosts_document(status)
    assert list(per_host) == ["local", remote_host.name]
    for host, entry in per_host.items():
        assert entry["ok"] is True and entry["exit_code"] == 0
        report = entry["result"]  # the task's own --json document, from that host
        assert report["target"] == host and report["project"] == local.project
        assert report["healthy"] is True, report["services"]
    alone = json.loads(local.ok("stack.status", "--json", "--remote", remote_host.name).stdout)
    assert set(alone) == set(per_host[remote_host.name]["result"])

    # Both back up into the one store of this home: the hosts take turns at its lock.
    backups = hosts_document(local.cli("backup.create", "--json", "--hosts", hosts))
    assert [entry["ok"] for entry in backups.values()] == [True, True], backups
    ids = {entry["result"]["id"] for entry in backups.values()}
    listed = json.loads(local.ok("backup.list", "--json").stdout)
    assert len(ids) == 2 and ids <= {b["id"] for b in listed}

    stopped = local.cli("stack.stop", "--hosts", hosts)
    assert stopped.returncode == 0, stopped.stderr
    after = hosts_document(local.cli("stack.status", "--json", "--hosts", hosts))
    for entry in after.values():
        assert {s["state"] for s in entry["result"]["services"]} == {"exited"}
    assert docker("ps", "-q", "--filter", f"label=com.docker.compose.project={local.project}") == ""


def test_a_broken_host_fails_alone_and_is_named(fleet, remote_host, isolated_home) -> None:
    local, _box, hosts = fleet
    with (isolated_home / ".ssh" / "config").open("a") as config:
        config.write("\nHost nowhere\n    HostName 127.0.0.1\n    Port 1\n    User root\n")
    result = local.cli("stack.status", "--json", "--hosts", f"{hosts},nowhere")
    assert result.returncode == 8, result.stderr  # the broken host's own code
    per_host = hosts_document(result)
    for host in ("local", remote_host.name):  # installed, not started: still an answer
        assert per_host[host]["ok"] is True and per_host[host]["result"]["target"] == host
        assert per_host[host]["result"]["running"] is False
    broken = per_host["nowhere"]
    assert (broken["ok"], broken["exit_code"]) == (False, 8) and "result" not in broken
    assert "nowhere" in broken["error"] and "\n" not in broken["error"]
    failure = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(failure) == 1 and "failed on nowhere (exit 8)" in failure[0]
    assert "Traceback" not in result.stderr

    table = local.cli("stack.status", "--hosts", f"nowhere,{hosts}")
    assert table.returncode == 8
    rows = {line.split("│")[1].strip(): line for line in table.stdout.splitlines() if "│" in line}
    assert "✗ failed (8)" in rows["nowhere"] and "✓ finished" in rows["local"]


def test_an_unknown_host_key_is_refused_for_that_host_only(fleet, remote_host, isolated_home):
    local, _box, hosts = fleet
    remote_host.trust(isolated_home, known=False)
    result = local.cli("stack.status", "--json", "--hosts", hosts)
    per_host = hosts_document(result)
    refused = per_host[remote_host.name]
    assert (refused["ok"], refused["exit_code"]) == (False, 8)
    assert "unknown SSH host key" in refused["error"] and "SHA256:" in refused["error"]
    assert per_host["local"]["ok"] is True
    assert result.returncode == 8
    assert "Traceback" not in result.stderr


def test_sigterm_stops_every_host_and_the_report_says_so(fleet, remote_host, standin_images):
    """Both hosts wait for an Ollama that never answers; SIGTERM stops both waits."""
    local, box, hosts = fleet
    broken = standin_images["ollama"].replace(":test", f":{BROKEN_TAG}")
    save = subprocess.Popen(["docker", "save", broken], stdout=subprocess.PIPE)
    docker_load = ["docker", "-H", remote_host.docker_host, "load"]
    assert subprocess.run(docker_load, stdin=save.stdout, capture_output=True).returncode == 0
    save.wait()
    env = local.env | {"OLLAMA_STACK_IMAGES_OLLAMA": broken, "PYTHONFAULTHANDLER": "1"}
    command = [str(CLI), "stack.start", "--pull", "never", "--timeout", "120", "--hosts", hosts]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 90
    while not (local.containers() and box.containers()) and time.monotonic() < deadline:
        time.sleep(0.5)  # both engines have begun
    time.sleep(2)  # and both hosts wait for health
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, stacks = proc.communicate(timeout=30)
        pytest.fail(f"still running 30 s after SIGTERM; its threads:\n{stacks}")
    finally:
        box.teardown()  # its containers first, then the image this test sent there
        docker("rmi", broken, host=remote_host.docker_host, check=False)
    assert proc.returncode == 143, out + err
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    for host in ("local", remote_host.name):
        assert "■ interrupted (143)" in rows[host] and "stopped" in rows[host], out
    failure = [line for line in err.splitlines() if line.startswith("error:")]
    assert failure == [
        f"error: stack.start interrupted on local (exit 143), {remote_host.name} (exit 143) "
        f"— again on those: ollama-stack stack.start --pull never --timeout 120 --hosts {hosts}"
    ]
    assert "Traceback" not in err


class Terminal:
    """The CLI on a pseudo-terminal of its own, as a user runs it (a prompt, live lines)."""

    ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\r")

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [str(CLI), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env | {"TERM": "xterm", "COLUMNS": "120"},
            cwd=Path(os.environ["HOME"]),
            start_new_session=True,  # the pty is its controlling terminal
        )
        os.close(slave)
        self.seen = ""
        self.matched = 0  # how much of it an ``expect`` has matched

    def expect(self, text: str, timeout: float = 30) -> str:
        """What it showed (escape sequences taken out) since the last ``expect``, up to ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.seen[self.matched :]:
            if not self._read(deadline):
                pytest.fail(f"no {text!r} in {timeout} s; the terminal showed:\n{self.seen}")
        since = self.matched
        self.matched = self.seen.index(text, since) + len(text)
        return self.seen[since : self.matched]

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def finish(self, timeout: float = 30) -> int:
        """Its exit code, once it has ended; what it showed until then is read."""
        deadline = time.monotonic() + timeout
        while self._read(deadline):
            pass
        code = self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        os.close(self.master)
        return code

    def _read(self, deadline: float) -> bool:
        """Some more of what it shows; False when it ended or the time is up."""
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.master], [], [], left)[0]:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # it ended: its side of the terminal is closed
            return False
        self.seen += self.ANSI.sub("", chunk.decode(errors="replace"))
        return bool(chunk)


def test_a_fleet_shows_each_hosts_plan_then_asks_once_per_question(fleet, remote_host) -> None:
    """stack.uninstall on both hosts at a terminal: each host's plan under its
    name and one question for both; then the backup offer, again once."""
    local, box, hosts = fleet
    local.ok("stack.start", "--pull", "never", "--hosts", hosts)  # volumes to offer a backup of
    assert local.volumes() and box.volumes()
    began = time.monotonic()
    args = ["stack.uninstall", "--remove-volumes", "--remove-config", "--hosts", hosts]
    term = Terminal(args, local.env)
    both = f"yes to each of these, on local and {remote_host.name}?"
    try:
        shown = term.expect(both)
        for host in ("local", remote_host.name):
            plan = shown.index(f"── {host} ──")
            remove = shown.index("remove volume", plan)
            assert remove < shown.index(f"remove the above from {host}?", plan)
        assert shown.count("remove config") == 2
        assert local.containers() and box.containers()  # nothing touched before the answer
        term.send("y\n")
        offer = term.expect(both)  # the second round
        lines = [line.strip() for line in offer.splitlines()]
        assert lines.count("take a backup of the volumes first?") == 2, offer  # under each host
        term.send("n\n")
        code = term.finish()
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    print(f"fleet uninstall, two questions, on 2 hosts: {time.monotonic() - began:.1f} s")
    assert code == 0, term.seen
    assert term.seen.count("uninstalled") == 2 and "Traceback" not in term.seen
    for inst in (local, box):
        assert inst.containers() == [] and inst.volumes() == []
    for host in (None, remote_host.name):
        assert not InstallPaths.for_target(host, local.env).installed
