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

from ollama_stack.common.errors import ConfigError, ExitCode, interruption_code
from ollama_stack.stack import config, fleet
from ollama_stack.stack.display import Display
from ollama_stack.stack.events import Event
from ollama_stack.stack.services import CATALOG
from ollama_stack.tasks import _base

from .test_tasks import run_program, stderr_lines


@pytest.fixture(autouse=True)
def python_handles_ctrl_c():
    """Python's own Ctrl-C handler, as a terminal gives it. A test run started
    with SIGINT ignored (a background job of a script) would never see the
    Ctrl-C these tests send (`interrupt_main` does nothing then): they would
    wait for it for ever."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


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


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_hosts_start_is_held_and_reaches_every_host(monkeypatch, signum):
    """Between two thread starts it would leave the hosts not started yet out."""
    real_start = threading.Thread.start
    starts: list[str] = []

    def start(thread: threading.Thread) -> None:
        real_start(thread)
        if thread.name.startswith("fleet "):
            starts.append(thread.name)
            if len(starts) == 1:
                _thread.interrupt_main(signum)  # taken here in the main thread, before the next

    monkeypatch.setattr(threading.Thread, "start", start)
    children_looked_for: list[bool] = []  # by SIGTERM's own handler (none to stop here)
    monkeypatch.setattr(_base, "_children", lambda: children_looked_for.append(True) or [])
    began = threading.Semaphore(0)
    with _base.sigterm_as_interrupt():
        terminate = signal.getsignal(signal.SIGTERM)
        report = fleet.run("t", ["slow", "slow2", "later"], _stoppable(began), parallel=2)
        code = 143 if signum == signal.SIGTERM else 130
        assert bool(children_looked_for) == (signum == signal.SIGTERM)  # delivered to its handler
        assert starts == ["fleet slow", "fleet slow2", "fleet later"]
        assert [(o.state, o.exit_code) for o in report.outcomes] == [("interrupted", code)] * 3
        assert report.stopped_by == code
        assert signal.getsignal(signal.SIGTERM) is terminate  # given back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back


def test_threads_that_cannot_all_start_give_the_handlers_back(monkeypatch):
    """No wait follows a failed start: the handlers come back on the way out."""
    real_start = threading.Thread.start
    starts: list[str] = []

    def start(thread: threading.Thread) -> None:
        if thread.name.startswith("fleet "):
            starts.append(thread.name)
            if len(starts) == 2:
                raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    with _base.sigterm_as_interrupt():
        terminate = signal.getsignal(signal.SIGTERM)
        with pytest.raises(RuntimeError, match="can't start new thread"):
            fleet.run("t", ["a", "b", "c"], lambda host: fleet.Finished(0, {}))
        assert signal.getsignal(signal.SIGTERM) is terminate
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_stop_landing_as_the_handlers_are_given_back_is_taken_and_they_all_come_back(
    monkeypatch,
):
    """Ctrl-C once SIGINT's handler is back and SIGTERM's is not yet: the wait
    takes it, and SIGTERM's handler still comes back."""
    real_signal = signal.signal
    interrupted: list[int] = []

    def setting(signum, handler):
        if handler is not signal.default_int_handler and not interrupted and len(hosts) == 3:
            interrupted.append(signum)
            raise KeyboardInterrupt  # as a Ctrl-C taken at this call
        return real_signal(signum, handler)

    hosts: list[str] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        real_start(thread)
        hosts.append(thread.name)

    monkeypatch.setattr(threading.Thread, "start", start)
    monkeypatch.setattr(signal, "signal", setting)
    began = threading.Semaphore(0)
    with _base.sigterm_as_interrupt():
        before = signal.getsignal(signal.SIGTERM)
        report = fleet.run("t", ["slow", "slow2", "later"], _stoppable(began), parallel=2)
        assert signal.getsignal(signal.SIGTERM) is before
    assert interrupted == [signal.SIGTERM]  # given back after SIGINT's, and interrupted once
    assert [(o.state, o.exit_code) for o in report.outcomes] == [("interrupted", 130)] * 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


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
    stuck, began, stopped = threading.Event(), threading.Semaphore(0), threading.Event()
    first_stop = fleet._Fleet.stop

    def stop(self: fleet._Fleet, kind: type[KeyboardInterrupt]) -> None:
        first_stop(self, kind)
        stopped.set()

    monkeypatch.setattr(fleet._Fleet, "stop", stop)

    def work(host: str) -> fleet.Finished:
        began.release()
        stuck.wait()  # a call that does not return for a signal (a lock, a read)
        return fleet.Finished(0)

    def twice() -> None:
        began.acquire(timeout=10)
        time.sleep(0.1)  # the main thread is at its wait (not still starting threads)
        _thread.interrupt_main()
        # Two interrupts before the main thread handles the first are one
        # (Python keeps a flag, not a count): the second waits for the first
        # to be handled, and for the main thread to be back at its wait.
        stopped.wait(10)
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


# -- questions (a round) and the stop race --------------------------------------------


def _asks(times: int = 1, answers: dict[str, list[bool]] | None = None):
    """A host's work that asks ``times`` times (stopping at a no), recording each answer."""

    def work(host: str) -> fleet.Finished:
        given: list[bool] = []
        for n in range(times):
            given.append(fleet.ask(f"{host} #{n}?", (f"plan of {host}\n", ""), default=True))
            if not given[-1]:
                if answers is not None:
                    answers[host] = given
                return fleet.Finished(1)  # as a task's "no": cancelled, exit 1
        if answers is not None:
            answers[host] = given
        return fleet.Finished(0, given)

    return work


def test_hosts_asking_are_asked_together_once_after_the_others_ended():
    happened: list[object] = []

    def work(host: str) -> fleet.Finished:
        if host == "gone":
            time.sleep(0.3)  # the others wait at their question meanwhile
            return fleet.Finished(8, error="SSH to gone refused")
        return _asks()(host)

    def asker(questions: list[fleet.Question]) -> bool:
        happened.append([(q.host, q.text, q.plan, q.default) for q in questions])
        return True

    ended = lambda outcome: happened.append(outcome.host)  # noqa: E731
    report = fleet.run("t", ["a", "gone", "b"], work, ended=ended, asker=asker)
    assert happened[0] == "gone"  # an ended host does not hold the round up
    assert happened[1] == [
        ("a", "a #0?", ("plan of a\n", ""), True),
        ("b", "b #0?", ("plan of b\n", ""), True),
    ]
    assert [o.state for o in report.outcomes] == ["finished", "failed", "finished"]
    assert report.outcomes[0].document == [True]


def test_a_hosts_time_leaves_out_its_wait_for_the_others_and_the_answer():
    def work(host: str) -> fleet.Finished:
        if host == "slow":
            time.sleep(0.3)  # "quick" waits at its question meanwhile
        return _asks()(host)

    def asker(questions: list[fleet.Question]) -> bool:
        time.sleep(0.3)  # the user reads the plans
        return True

    report = fleet.run("t", ["quick", "slow"], work, asker=asker)
    quick, slow = report.outcomes
    assert quick.ok and slow.ok
    assert quick.seconds < 0.25 and 0.3 <= slow.seconds < 0.55  # 0.6 and 0.6 with the waits


def test_a_no_reaches_every_waiting_host_and_says_so():
    report = fleet.run("t", ["a", "b"], _asks(), asker=lambda questions: False)
    assert [(o.state, o.exit_code, o.error) for o in report.outcomes] == [
        ("failed", 1, fleet.DECLINED),
        ("failed", 1, fleet.DECLINED),
    ]
    assert report.exit_code == 1


def test_a_second_question_is_a_second_round():
    rounds: list[list[str]] = []
    answers: dict[str, list[bool]] = {}

    def asker(questions: list[fleet.Question]) -> bool:
        rounds.append([q.text for q in questions])
        return len(rounds) == 1  # yes, then no (a backup offer declined)

    work = _asks(2, answers)
    once = _asks(1, answers)
    report = fleet.run(
        "t", ["a", "b", "c"], lambda h: once(h) if h == "c" else work(h), asker=asker
    )
    assert rounds == [["a #0?", "b #0?", "c #0?"], ["a #1?", "b #1?"]]
    assert answers == {"a": [True, False], "b": [True, False], "c": [True]}
    assert report.outcomes[2].ok


def test_hosts_without_a_slot_ask_in_a_later_round():
    rounds: list[list[str]] = []
    asker = lambda questions: rounds.append([q.host for q in questions]) or True  # noqa: E731
    report = fleet.run("t", ["a", "b"], _asks(), asker=asker, parallel=1)
    assert rounds == [["a"], ["b"]] and report.exit_code == 0


def test_ctrl_c_at_the_question_stops_every_host():
    def work(host: str) -> fleet.Finished:
        try:
            fleet.ask("go?")
        except KeyboardInterrupt as stop:
            return fleet.Finished(interruption_code(stop), error="interrupted at the question")
        return fleet.Finished(0)

    def asker(questions: list[fleet.Question]) -> bool:
        raise KeyboardInterrupt  # as Confirm.ask does on Ctrl-C

    report = fleet.run("t", ["a", "b"], work, asker=asker)
    assert {(o.state, o.exit_code, o.error) for o in report.outcomes} == {
        ("interrupted", 130, "interrupted at the question")
    }
    assert report.exit_code == 130


class _StopAsTheWorkReturns:
    """The fleet's lock, letting a stop (Ctrl-C, from the main thread) in the
    moment the host's thread comes back to the lock after its work returned:
    the second time that thread takes it (the first put it in ``running``)."""

    def __init__(self, fleet_: fleet._Fleet) -> None:
        self.inner, self.fleet, self.entries = threading.Lock(), fleet_, 0

    def __enter__(self) -> None:
        if threading.current_thread().name == "the host":
            self.entries += 1
            if self.entries == 2:
                stopper = threading.Thread(target=self.fleet.stop, args=(KeyboardInterrupt,))
                stopper.start()
                stopper.join()  # the stop is raised here, in the host's thread
        self.inner.acquire()

    def __exit__(self, *exc: object) -> None:
        self.inner.release()


def test_a_stop_as_the_work_returns_still_ends_the_host():
    """Review finding: a stop between the work's return and the host leaving
    ``running`` raised in the fleet's bookkeeping; the host never ended and
    ``wait`` spun on."""
    one = fleet._Fleet(lambda host: fleet.Finished(0, {"done": True}), None, None, 1, ["a"])
    one.lock = _StopAsTheWorkReturns(one)  # type: ignore[assignment]
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(one.host, "a"), name="the host").start()
    assert one.all_ended.wait(3), "the host never ended"
    assert one.outcomes["a"].state == "finished"  # its work was done: it finished
    assert one.running == {}


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
        out.confirm("remove?")  # given no way to ask the fleet


def test_a_hosts_question_carries_what_it_has_not_shown():
    asked: list[tuple[str, tuple[str, str], bool]] = []
    lines: list[str] = []
    out = Display().for_host(
        "gpu1", lambda host, e: lines.append(e.message), lambda *a: asked.append(a) or True
    )
    out.info("  remove volume v")
    assert out.confirm("remove?", default=True)
    out.info("removed")
    assert asked == [("remove?", ("  remove volume v\n", ""), True)]
    assert lines == ["waits for the answer: remove?", ""]  # its live line, until the round
    assert out.captured() == ("removed\n", "")  # the report shows only the rest


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


def _asking_task() -> _base.StackTask:
    """A task that shows its plan and asks, as stack.uninstall does, without Docker."""

    @_base.stack_task
    @_base.guarded
    def remove(c, yes=False):
        out = _base.display()
        out.info(f"  remove container of {_base.current_remote() or 'local'}")
        if not _base.confirmer(yes, out)("remove the above?"):
            out.info("cancelled; nothing was removed")
            raise Exit(code=1)
        out.success("removed")

    return remove


def _rows(text: str) -> dict[str, str]:
    return {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}


def test_a_fleet_shows_each_hosts_plan_then_asks_once(monkeypatch, capsys):
    seen: list[tuple[str, list[str], list[str]]] = []  # question, stdout and stderr before it

    def confirm(self, question, default=False):
        captured = capsys.readouterr()
        seen.append((question, stderr_lines(captured.out), stderr_lines(captured.err)))
        return True

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(Display, "confirm", confirm)
    _asking_task()(invoke.Context(), hosts="local,box1")
    [(question, out, err)] = seen
    assert question == "yes to each of these, on local and box1?"
    assert out == [
        "── local ──",
        "  remove container of local",
        "── box1 ──",
        "  remove container of box1",
    ]
    assert err == ["remove the above?", "remove the above?"]  # each under its plan
    after = capsys.readouterr().out
    assert after.count("removed") == 2 and "remove container" not in after  # shown once
    assert "✓ finished" in _rows(after)["local"] and "✓ finished" in _rows(after)["box1"]


def test_a_no_cancels_every_waiting_host(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(Display, "confirm", lambda self, q, default=False: False)
    with pytest.raises(Exit) as info:
        _asking_task()(invoke.Context(), hosts="local,box1")
    assert info.value.code == 1
    out = capsys.readouterr().out
    assert "removed" not in out.replace("nothing was removed", "")
    assert set(_rows(out)) == {"local", "box1"}
    for row in _rows(out).values():
        assert "✗ failed (1)" in row and "cancelled: answered no" in row


def test_ctrl_c_at_the_fleets_question_stops_every_host(monkeypatch, capsys):
    def interrupted(self, question, default=False):
        raise KeyboardInterrupt  # as rich's prompt does on Ctrl-C

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(Display, "confirm", interrupted)
    with pytest.raises(Exit) as info:
        _asking_task()(invoke.Context(), hosts="local,box1")
    assert info.value.code == 130
    rows = _rows(capsys.readouterr().out)
    assert set(rows) == {"local", "box1"}
    for row in rows.values():
        assert "■ interrupted (130)" in row


def test_a_question_that_cannot_be_asked_is_a_no_that_says_why(monkeypatch, capsys):
    def gone(self, question, default=False):
        raise BrokenPipeError(32, "Broken pipe")  # the terminal went away mid-round

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(Display, "confirm", gone)
    with pytest.raises(Exit) as info:
        _asking_task()(invoke.Context(), hosts="local,box1")
    assert info.value.code == 1  # every host ended (none left waiting), nothing removed
    out = capsys.readouterr().out
    assert "removed" not in out.replace("nothing was removed", "")
    rows = _rows(out)
    assert set(rows) == {"local", "box1"}  # the report came: no host was left waiting
    for row in rows.values():
        assert "cancelled: could not ask (BrokenPipeError" in row


def test_a_stop_before_the_round_keeps_the_waiting_hosts_plan_for_the_report(capsys):
    shown: dict[str, _base.HostDisplay] = {}
    out = Display()

    def work(host: str) -> fleet.Finished:
        mine = shown[host] = out.for_host(host, lambda h, e: None, fleet.ask)
        if host == "a":
            mine.info("PLAN of a")
            try:
                mine.confirm("remove?")
            except KeyboardInterrupt:
                return fleet.Finished(130, error="interrupted")
        while True:  # b works on, so the round never comes; the stop ends it
            time.sleep(0.05)

    def stop_when_a_asks() -> None:
        time.sleep(0.5)
        _thread.interrupt_main()

    threading.Thread(target=stop_when_a_asks).start()
    fleet.run("t", ["a", "b"], work, asker=lambda questions: True)
    assert "PLAN of a" in shown["a"].captured()[0]  # not lost: the round never showed it


def test_without_a_terminal_each_host_refuses_with_its_own_line(monkeypatch, capsys):
    asked: list[str] = []
    monkeypatch.setattr(Display, "confirm", lambda self, q, default=False: asked.append(q))
    with pytest.raises(Exit) as info:
        _asking_task()(invoke.Context(), hosts="local,box1")
    assert info.value.code == ExitCode.CONFIG and asked == []
    rows = _rows(capsys.readouterr().out)
    for host in ("local", "box1"):
        assert "✗ failed (2)" in rows[host]
        assert "not asking without a terminal: remove the above? — add --yes" in rows[host]


def test_yes_asks_nothing(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(Display, "confirm", lambda self, q, default=False: pytest.fail(q))
    _asking_task()(invoke.Context(), hosts="local,box1", yes=True)
    assert capsys.readouterr().out.count("removed") == 2


def test_task_names_are_as_typed():
    from ollama_stack.tasks import backup, stack

    assert _base.task_name(stack.config_) == "stack.config"
    assert _base.task_name(backup.test_restore) == "backup.test-restore"
    assert _base.task_name(backup.list_) == "backup.list"


def test_the_again_hint_repeats_the_command_as_typed():
    from ollama_stack.tasks import stack as stack_tasks

    flags = {"pull": "always", "platform": None, "timeout": 60.0, "json": False}
    line = _base.command_line(stack_tasks.start, "stack.start", (), flags)
    assert line == "stack.start --pull always --timeout 60"
    logs = {"services": "webui proxy", "follow": False, "timestamps": True}
    assert _base.command_line(stack_tasks.logs, "stack.logs", (), logs) == (
        "stack.logs --services 'webui proxy' --timestamps"
    )


def test_the_failure_line_names_the_command_given(capsys):
    Display(json_mode=True).fleet_report(_report(), {}, "stack.status --json")
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.endswith("— again on those: inv stack.status --json --hosts gpu1,gpu2")
