"""Fleets (--hosts): which hosts, the parallel run, stopping it, the report,
and the task layer around it (stack/fleet.py, tasks/_base.py)."""

from __future__ import annotations

import _thread
import contextvars
import dataclasses
import json
import signal
import threading
import time

import invoke
import pytest
from invoke import Exit

from ollama_stack.common.errors import ConfigError, ExitCode
from ollama_stack.stack import config, fleet
from ollama_stack.stack.display import Display
from ollama_stack.stack.events import Event
from ollama_stack.stack.services import CATALOG
from ollama_stack.tasks import _base

from .test_tasks import run_program, stderr_lines

# -- which hosts -------------------------------------------------------------------


def test_hosts_expand_in_order_each_once_through_groups():
    groups = {"lab": ["gpu2", "@gpus"], "gpus": ["gpu3", "local"]}
    chosen = fleet.expand_hosts("local, gpu1,@lab,gpu1 root@box:2222", groups)
    assert chosen == ["local", "gpu1", "gpu2", "gpu3", "root@box:2222"]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("a,@nope", "unknown host group @nope"),
        ("a;b", "bad host in --hosts 'a;b'"),
        ("ssh://box", "bad host in --hosts 'ssh://box': give the host without ssh://"),
        ("-oProxyCommand=x", "bad host in --hosts"),
        ("box:99999", "bad SSH port in 'box:99999'"),
        (" , ", "--hosts names no host"),
    ],
)
def test_bad_hosts_are_one_config_error(value, needle):
    with pytest.raises(ConfigError) as info:
        fleet.expand_hosts(value, {"lab": ["gpu1"]})
    assert needle in info.value.message
    assert info.value.code == ExitCode.CONFIG


def test_an_unknown_group_names_the_known_ones():
    with pytest.raises(ConfigError) as info:
        fleet.expand_hosts("@gpu", {"lab": ["a"], "all": ["@lab"]})
    assert "groups: @lab, @all" in info.value.remedy


def test_a_hand_made_loop_of_groups_is_refused_not_followed():
    with pytest.raises(ConfigError, match="names itself"):
        fleet.expand_hosts("@a", {"a": ["@b"], "b": ["@a"]})


# -- groups in the settings --------------------------------------------------------


def test_groups_are_validated_with_the_settings(local_paths):
    groups = {"lab": ["gpu1", "user@gpu2:2222", "local"], "all": ["@lab", "laptop"]}
    settings = config.load_settings(local_paths, {"hosts": groups}, environ={})
    assert settings.hosts == groups


@pytest.mark.parametrize(
    ("groups", "needle"),
    [
        ({"lab": ["a;b"]}, "hosts.lab.0='a;b': Value error, bad host 'a;b'"),
        ({"lab": ["ssh://x"]}, "without ssh://"),
        ({"lab": ["@lab"]}, "group lab names itself (@lab → @lab)"),
        ({"a": ["@b"], "b": ["x", "@a"]}, "group a names itself (@a → @b → @a)"),
        ({"lab": ["@gpus"]}, "group lab names @gpus, which is no group"),
        ({"la b": ["x"]}, "hosts='la b': String should match pattern"),
        ({"lab": "gpu1"}, "hosts.lab='gpu1'"),
    ],
)
def test_bad_groups_are_one_line_naming_the_layer(local_paths, groups, needle):
    with pytest.raises(ConfigError) as info:
        config.load_settings(local_paths, {"hosts": groups}, environ={})
    assert needle in info.value.message
    assert "(from invoke.yaml)" in info.value.message


def test_groups_come_from_this_machine_never_from_a_box(stack_home):
    base = invoke.Config(lazy=True)
    base.load_collection({"ollama_stack": {"hosts": {"lab": ["gpu1"]}}})
    local = config.InstallPaths.for_target(None)
    box = config.InstallPaths.for_target("gpu1")
    box.root.mkdir(parents=True)
    box.config_file.write_text("hosts:\n  lab: [evil]\n  box: [evil]\n")
    environ = {config.HOME_ENV: str(stack_home)}
    assert config.host_groups(base, environ) == {"lab": ["gpu1"]}
    local.config_file.write_text("hosts:\n  all: ['@lab', local]\n")
    assert config.host_groups(base, environ) == {"lab": ["gpu1"], "all": ["@lab", "local"]}
    local.config_file.write_text("hosts:\n  all: ['@nope']\n")
    with pytest.raises(ConfigError, match=r"names @nope, which is no group \(from .*config.yaml\)"):
        config.host_groups(base, environ)


# -- the run -----------------------------------------------------------------------


def test_each_host_gives_its_outcome_and_the_first_failure_is_the_exit_code():
    gave = {
        "a": fleet.Finished(0, {"running": True}),
        "b": fleet.Finished(9, {"ok": False}, "not installed — inv stack.install"),
        "c": fleet.Finished(3, error="Docker is not reachable"),
    }
    report = fleet.run("stack.status", ["a", "b", "c"], gave.__getitem__)
    assert [o.host for o in report.outcomes] == ["a", "b", "c"]
    assert [o.state for o in report.outcomes] == ["finished", "failed", "failed"]
    assert report.exit_code == 9 and report.stopped_by is None
    assert report.to_json() == {
        "hosts": {
            "a": {"ok": True, "exit_code": 0, "result": {"running": True}},
            "b": {"ok": False, "exit_code": 9, "error": "not installed — inv stack.install"},
            "c": {"ok": False, "exit_code": 3, "error": "Docker is not reachable"},
        }
    }
    assert fleet.run("x", ["a"], gave.__getitem__).exit_code == 0


def test_hosts_run_at_the_same_time():
    both = threading.Barrier(3, timeout=10)  # two hosts and this test: only met in parallel

    def work(host: str) -> fleet.Finished:
        both.wait()
        return fleet.Finished(0)

    waiter = threading.Thread(target=both.wait)
    waiter.start()
    report = fleet.run("t", ["a", "b"], work)
    waiter.join()
    assert [o.state for o in report.outcomes] == ["finished", "finished"]


def test_each_host_has_its_own_context_and_extensions():
    mine: contextvars.ContextVar[str] = contextvars.ContextVar("mine", default="main")
    seen: dict[str, tuple[str, list[str]]] = {}
    both = threading.Barrier(2, timeout=10)

    def work(host: str) -> fleet.Finished:
        mine.set(host)
        extra = [dataclasses.replace(CATALOG["ollama"], name=f"ext{host}", extension=True)]
        CATALOG.set_extensions(extra if host == "a" else [], [], frozenset({f"ext{host}"}))
        both.wait()  # both have set theirs before either looks
        seen[host] = (mine.get(), [n for n in CATALOG.names() if n.startswith("ext")])
        return fleet.Finished(0)

    try:
        fleet.run("t", ["a", "b"], work)
    finally:
        CATALOG.set_extensions([], [])  # the catalog is the process's: leave it as found
    assert seen == {"a": ("a", ["exta"]), "b": ("b", [])}
    assert mine.get() == "main"


def test_a_bug_on_one_host_is_that_hosts_line():
    def work(host: str) -> fleet.Finished:
        if host == "b":
            raise RuntimeError("boom")
        return fleet.Finished(0)

    report = fleet.run("t", ["a", "b"], work)
    assert report.outcomes[0].ok
    assert report.outcomes[1].error == "internal error: RuntimeError: boom"
    assert report.exit_code == 1


def _stoppable(began: threading.Semaphore):
    """A host that finishes at once, one that works until it is stopped (and
    says so, as a guarded task does), and one that never gets a slot."""

    def work(host: str) -> fleet.Finished:
        if host == "quick":
            return fleet.Finished(0, {"done": True})
        began.release()
        try:
            while True:
                time.sleep(0.02)  # a Python loop, like waiting for health
        except KeyboardInterrupt as stop:
            code = 143 if isinstance(stop, _base.Terminated) else 130
            return fleet.Finished(code, error="stopped waiting for health")

    return work


def _interrupt_when(began: threading.Semaphore, signum: int, hosts: int) -> threading.Thread:
    """Ctrl-C (or SIGTERM) as the main thread would get it, once ``hosts`` are in their loops."""

    def later() -> None:
        for _ in range(hosts):
            began.acquire(timeout=10)
        time.sleep(0.05)
        _thread.interrupt_main(signum)

    thread = threading.Thread(target=later)
    thread.start()
    return thread


def test_ctrl_c_stops_every_host_and_says_what_each_did():
    began = threading.Semaphore(0)
    interrupter = _interrupt_when(began, signal.SIGINT, 2)
    report = fleet.run("t", ["slow", "slow2", "later"], _stoppable(began), parallel=2)
    interrupter.join()
    assert {(o.state, o.exit_code) for o in report.outcomes} == {("interrupted", 130)}
    # Two had a slot (which two is the threads' race) and said what they stopped; one never began.
    said = sorted(o.error for o in report.outcomes)
    assert said == ["not begun", "stopped waiting for health", "stopped waiting for health"]
    assert report.stopped_by == 130 and report.exit_code == 130


def test_sigterm_stops_every_host_as_sigterm():
    began = threading.Semaphore(0)
    with _base.sigterm_as_interrupt():
        interrupter = _interrupt_when(began, signal.SIGTERM, 1)
        report = fleet.run("t", ["slow", "quick"], _stoppable(began))
    interrupter.join()
    assert [o.state for o in report.outcomes] == ["interrupted", "finished"]
    assert report.outcomes[1].document == {"done": True}
    assert report.outcomes[0].exit_code == 143 and report.exit_code == 143


def test_a_second_ctrl_c_leaves_a_host_stuck_in_a_call(monkeypatch):
    monkeypatch.setattr(fleet, "GRACE_SECONDS", 0.2)
    stuck, began = threading.Event(), threading.Semaphore(0)

    def work(host: str) -> fleet.Finished:
        began.release()
        stuck.wait()  # a call that does not return for a signal (a lock, a read)
        return fleet.Finished(0)

    def twice() -> None:
        began.acquire(timeout=10)
        for _ in range(2):
            time.sleep(0.1)
            _thread.interrupt_main()

    interrupter = threading.Thread(target=twice)
    interrupter.start()
    try:
        report = fleet.run("t", ["stuck"], work)
    finally:
        stuck.set()  # let the thread go
    interrupter.join()
    (outcome,) = report.outcomes
    assert (outcome.state, outcome.exit_code) == ("interrupted", 130)
    assert outcome.error == "did not stop in time; left"


# -- the display ---------------------------------------------------------------------


def _report() -> fleet.FleetReport:
    return fleet.FleetReport(
        "stack.status",
        [
            fleet.HostOutcome("local", "finished", 0, 0.4, {"running": True}),
            fleet.HostOutcome("gpu1", "failed", 8, 10.0, None, "SSH to gpu1 timed out — check"),
            fleet.HostOutcome("gpu2", "interrupted", 130, 2.0, None, "interrupted"),
        ],
        stopped_by=130,
    )


def test_json_report_is_the_only_thing_on_stdout(capsys):
    Display(json_mode=True).fleet_report(_report(), {"local": ("table\n", "note\n")})
    captured = capsys.readouterr()
    assert json.loads(captured.out) == _report().to_json()
    lines = stderr_lines(captured.err)
    assert lines == [
        "error: stack.status failed on gpu1 (exit 8); interrupted on gpu2 (exit 130) "
        "— again on those: inv stack.status --hosts gpu1,gpu2"
    ]


def test_report_shows_each_hosts_output_then_a_row_per_host(capsys):
    Display().fleet_report(_report(), {"local": ("the local table\n", ""), "gpu1": ("", "")})
    captured = capsys.readouterr()
    assert captured.out.index("── local ──") < captured.out.index("the local table")
    assert "── gpu1 ──" not in captured.out  # it printed nothing: its row says why
    rows = [line for line in captured.out.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["local", "gpu1", "gpu2"]
    assert "✗ failed (8)" in rows[1] and "SSH to gpu1 timed out" in rows[1]
    assert "■ interrupted (130)" in rows[2] and "✓ finished" in rows[0]


def test_a_hosts_display_keeps_what_its_task_says():
    events: list[tuple[str, str]] = []
    out = Display().for_host("gpu1", lambda host, e: events.append((host, e.message)))
    out.info("stack healthy")
    out.note("extension skipped: x")
    out.json({"running": True})
    out.progress(Event("step", "starting ollama"))
    out.error("port 8080 is in use", "free it")
    assert out.captured() == ("stack healthy\n", "extension skipped: x\n")
    assert out.document == {"running": True}
    assert out.error_line == "port 8080 is in use — free it"
    assert events == [("gpu1", "starting ollama")]
    with pytest.raises(ConfigError, match="not asking one host of a fleet"):
        out.confirm("remove?")


def test_the_live_lines_follow_each_host(capsys):
    view = Display().fleet_view(["a", "b"])
    view.started("a")
    view.event("a", Event("transfer", "layer 1", total=200, done=50))
    view.ended(fleet.HostOutcome("b", "failed", 3, 1.0, None, "Docker is not reachable"))
    from rich.console import Console

    console = Console(width=80, file=None, force_terminal=False, record=True)
    console.print(view)
    text = console.export_text()
    assert "layer 1 25%" in text and "Docker is not reachable" in text and "1.0 s" in text


# -- the task layer ------------------------------------------------------------------


def test_install_on_a_fleet_gives_each_host_its_own_installation(capsys, stack_home):
    assert run_program("stack.install", "--hosts", "local,box1,user@box2:2222") == 0
    out = capsys.readouterr().out
    for host in (None, "box1", "user@box2:2222"):
        assert config.InstallPaths.for_target(host).installed
        assert f"── {host or 'local'} ──" in out
    assert "installed ollama-stack for box1" in out


def test_one_host_failing_fails_only_itself_and_names_it(capsys, stack_home):
    assert run_program("stack.install", "--remote", "box1") == 0
    capsys.readouterr()
    assert run_program("stack.install", "--hosts", "local,box1") == ExitCode.ALREADY_INSTALLED
    captured = capsys.readouterr()
    assert config.InstallPaths.for_target(None).installed
    assert stderr_lines(captured.err)[-1].startswith(
        "error: stack.install failed on box1 (exit 10)"
    )


def test_json_on_a_fleet_is_one_document_per_host(capsys, stack_home, tmp_path):
    (tmp_path / "invoke.yaml").write_text("ollama_stack:\n  hosts:\n    lab: [local, box1]\n")
    assert run_program("backup.list", "--hosts", "@lab", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document == {
        "hosts": {
            "local": {"ok": True, "exit_code": 0, "result": []},
            "box1": {"ok": True, "exit_code": 0, "result": []},
        }
    }


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--hosts", "a", "--remote", "b"], "--remote and --hosts together"),
        (["--hosts", "@lab"], "unknown host group @lab"),
        (["--hosts", "a,b c;d"], "bad host in --hosts 'c;d'"),
        (["stack.logs", "--follow", "--hosts", "a,b"], "--follow with --hosts"),
        (["images.export", "-", "--hosts", "a,b"], "- (stdin or stdout) with --hosts"),
        (["backup.import", "-", "--hosts", "local"], "- (stdin or stdout) with --hosts"),
    ],
)
def test_fleet_refusals_are_one_line_exit_2_and_touch_nothing(capsys, argv, needle):
    assert run_program(*(argv if "." in argv[0] else ["stack.install", *argv])) == ExitCode.CONFIG
    captured = capsys.readouterr()
    assert [needle in line for line in stderr_lines(captured.err)] == [True]
    assert captured.out == ""
    assert not (config.stack_home() / "remotes").exists()


def test_a_task_that_asks_refuses_once_without_a_terminal(capsys, stack_home):
    assert run_program("stack.migrate", "--hosts", "local,box1", "--json") == ExitCode.CONFIG
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"] == (
        "not asking without a terminal: run `stack.migrate --json` on 2 hosts: local, box1?"
    )
    assert len(stderr_lines(captured.err)) == 1


def test_a_task_that_asks_asks_once_for_the_fleet(monkeypatch):
    asked: list[str] = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(Display, "confirm", lambda self, q, default=False: asked.append(q) or True)

    def uninstall(c, yes=False, remove_volumes=False):
        pass

    task = _base.stack_task(_base.guarded(uninstall))
    flags = {"yes": False, "remove_volumes": True}
    assert _base._asked_once(task, "stack.uninstall", ["a", "b"], flags, Display()) == {
        "yes": True,
        "remove_volumes": True,
    }
    assert asked == ["run `stack.uninstall --remove-volumes` on 2 hosts: a, b?"]
    monkeypatch.setattr(Display, "confirm", lambda self, q, default=False: False)
    with pytest.raises(Exit) as info:
        _base._asked_once(task, "stack.uninstall", ["a", "b"], flags, Display())
    assert info.value.code == 1


def test_task_names_are_as_typed():
    from ollama_stack.tasks import backup, stack

    assert _base.task_name(stack.config_) == "stack.config"
    assert _base.task_name(backup.test_restore) == "backup.test-restore"
    assert _base.task_name(backup.list_) == "backup.list"
