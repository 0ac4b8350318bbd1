"""One task on many hosts at once (``--hosts a,b,@group``).

The task layer hands ``run`` a function that does the task on one host — the
same code path as ``--remote``, with that host's own config, secrets and
state — and says what it gave: its exit code, its ``--json`` document, its
error line. ``run`` calls it for every host in parallel, each in its own
thread and its own copy of the caller's context (so per-task context
variables such as the host and the display stay per host), and gathers a
``FleetReport``. Nothing here prints: the caller watches through ``started``
and ``ended``, and each host's task reports progress to its own display.

Ctrl-C or SIGTERM reaches the main thread, which waits here: every host still
working is stopped the way the signal stops a single task (the same
KeyboardInterrupt, or ``Terminated``, raised in its thread; docker CLI
children get SIGINT from the terminal or from the SIGTERM handler), hosts
not begun are not begun, and the report says which finished, failed or
were interrupted. A second Ctrl-C gives hosts that still have not stopped
(blocked in a call) GRACE_SECONDS more, then the fleet leaves them.

A host's task that asks (``ask``, from the host's thread) is not answered
alone: it waits until every host not yet ended waits at a question too, then
the main thread hands all the questions to the caller's ``asker`` (one
round: the user sees each host's plan and answers once) and every waiting
host gets that answer. A task can ask again later: another round.

A fleet's exit code: 0 when every host finished; else 130 (Ctrl-C) or 143
(SIGTERM) when the run was stopped; else the code of the first host that
failed, in the order the hosts were given.
"""

from __future__ import annotations

import contextvars
import ctypes
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ollama_stack.common.errors import ConfigError, interruption_code

from .config.values import LOCAL_HOST
from .hosts.target import check_host_spec

LOCAL = LOCAL_HOST  # in --hosts: this machine
MAX_PARALLEL = 16  # hosts worked on at once; the rest wait for a slot
GRACE_SECONDS = 5.0  # after a second Ctrl-C, how long hosts still have to stop
HostState = Literal["finished", "failed", "interrupted"]
DECLINED = "cancelled: answered no"  # the row of a host that ended on a "no"


def expand_hosts(value: str, groups: Mapping[str, Sequence[str]]) -> list[str]:
    """``a,b,@lab`` → the hosts, each once, in the order given (a group's in its order).

    Every name is judged as --remote judges one; ``local`` is this machine.
    """
    given = [name.strip() for name in value.replace(" ", ",").split(",") if name.strip()]
    if not given:
        raise ConfigError("--hosts names no host", "give --hosts a,b or --hosts @group")
    hosts: list[str] = []
    for entry in given:
        hosts.extend(_members(entry, groups, ()))
    return list(dict.fromkeys(hosts))


def _members(entry: str, groups: Mapping[str, Sequence[str]], within: tuple[str, ...]) -> list[str]:
    if not entry.startswith("@"):
        return [entry if entry == LOCAL else check_host_spec(entry, what="host in --hosts")]
    name = entry[1:]
    if name not in groups:
        known = ", ".join(f"@{g}" for g in groups) or "none yet"
        raise ConfigError(
            f"unknown host group {entry}",
            f"groups: {known} (set `hosts: {{{name or 'lab'}: [host1, host2]}}` "
            "under ollama_stack in invoke.yaml or in this machine's config.yaml)",
        )
    if name in within:  # the settings refuse loops; this keeps a hand-made mapping finite
        raise ConfigError(f"host group @{name} names itself", "take it out of its own list")
    return [host for member in groups[name] for host in _members(member, groups, (*within, name))]


@dataclass(frozen=True)
class Finished:
    """What the task gave on one host."""

    exit_code: int
    document: Any = None  # its --json document, when it printed one
    error: str = ""  # its one error line, when it failed


@dataclass(frozen=True)
class HostOutcome:
    host: str
    state: HostState
    exit_code: int
    seconds: float
    document: Any = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "finished"

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"ok": self.ok, "exit_code": self.exit_code}
        if self.ok:
            entry["result"] = self.document
        else:
            entry["error"] = self.error
        return entry


@dataclass(frozen=True)
class FleetReport:
    task: str
    outcomes: list[HostOutcome]
    stopped_by: int | None = None  # 130 or 143 when Ctrl-C or SIGTERM stopped the run

    @property
    def failed(self) -> list[HostOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def exit_code(self) -> int:
        if not self.failed:
            return 0
        return self.stopped_by or self.failed[0].exit_code

    def to_json(self) -> dict[str, Any]:
        return {"hosts": {o.host: o.to_json() for o in self.outcomes}}


@dataclass(frozen=True)
class Question:
    """What one host's task asks, with what it printed before asking and has not shown."""

    host: str
    text: str
    plan: tuple[str, str] = ("", "")  # (stdout, stderr) text, rendered by the host's display
    default: bool = False


Work = Callable[[str], Finished]
Asker = Callable[[list[Question]], bool]  # one round: every waiting host's question, one answer
# Set in each host's thread: the fleet and the host, for ``ask``.
_HERE: contextvars.ContextVar[tuple[_Fleet, str] | None] = contextvars.ContextVar(
    "fleet_host", default=None
)


def ask(question: str, plan: tuple[str, str] = ("", ""), default: bool = False) -> bool:
    """From a host's thread: wait for the fleet's next round and give its answer.

    Raises the fleet's stop (KeyboardInterrupt or Terminated) when the fleet is
    stopped while this host waits, as a single task's question raises Ctrl-C."""
    here = _HERE.get()
    if here is None:
        raise RuntimeError("fleet.ask is for a host's thread of fleet.run")
    fleet, host = here
    return fleet.asked(Question(host, question, plan, default))


def run(
    task: str,
    hosts: Sequence[str],
    work: Work,
    *,
    started: Callable[[str], None] | None = None,
    ended: Callable[[HostOutcome], None] | None = None,
    parallel: int = MAX_PARALLEL,
    asker: Asker | None = None,
) -> FleetReport:
    """``work(host)`` on every host at once; call from the main thread (it
    takes Ctrl-C and SIGTERM for the fleet, and runs ``asker`` for each round
    of questions). Without ``asker`` a host that asks is refused."""
    fleet = _Fleet(work, started, ended, parallel, hosts, asker)
    with _HeldStops() as held:
        for host in hosts:
            threading.Thread(
                target=contextvars.copy_context().run,
                args=(fleet.host, host),
                name=f"fleet {host}",
                daemon=True,  # a host that never lets go cannot keep the process alive
            ).start()
    began = time.monotonic()
    fleet.wait(held)
    outcomes = [fleet.outcomes.get(h) or _left_behind(h, fleet, began) for h in hosts]
    return FleetReport(task, outcomes, fleet.stopped_by)


class _HeldStops:
    """Ctrl-C (and SIGTERM, where a handler makes it a stop) kept while the
    hosts' threads start: raised between two starts, it would leave the hosts
    not started yet out of the run and its report. ``give_back`` puts the
    handlers back and delivers what was kept to them, where the fleet's wait
    takes any stop; a stop landing midway just makes the next call go on."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}  # signal → its handler, until given back
        self.held: list[int] = []

    def __enter__(self) -> _HeldStops:
        if threading.current_thread() is threading.main_thread():  # signals reach it only
            for signum in (signal.SIGINT, signal.SIGTERM):
                if callable(signal.getsignal(signum)):
                    self.previous[signum] = signal.signal(signum, self._hold)
        return self

    def __exit__(self, failed: type[BaseException] | None, *exc: object) -> None:
        """Given back in the wait, where a stop is taken; here only when the
        threads could not all start (no wait follows: the failure is the news)."""
        if failed is not None:
            for signum, handler in self.previous.items():
                signal.signal(signum, handler)
            self.previous.clear()

    def _hold(self, signum: int, frame: object) -> None:
        self.held.append(signum)

    def give_back(self) -> None:
        while self.previous:
            signum, handler = next(iter(self.previous.items()))
            signal.signal(signum, handler)
            del self.previous[signum]
        while self.held:  # its own handler runs now (SIGTERM's also stops our children)
            signal.raise_signal(self.held.pop(0))


def _left_behind(host: str, fleet: _Fleet, began: float) -> HostOutcome:
    """A host still stuck in a call when the fleet gave up on it (a second stop)."""
    code, seconds = fleet.stopped_by or 130, time.monotonic() - began
    return HostOutcome(host, "interrupted", code, seconds, None, "did not stop in time; left")


@dataclass
class _Waiting:
    """One host at a question: released by a round (answer) or a stop (None)."""

    question: Question
    answer: bool | None = None
    given: threading.Event = field(default_factory=threading.Event)


class _Fleet:
    def __init__(
        self,
        work: Work,
        started: Callable[[str], None] | None,
        ended: Callable[[HostOutcome], None] | None,
        parallel: int,
        hosts: Sequence[str],
        asker: Asker | None = None,
    ) -> None:
        self.work, self.started, self.ended, self.asker = work, started, ended, asker
        self.hosts = list(hosts)
        self.left = len(hosts)  # hosts not ended yet
        self.all_ended = threading.Event()
        self.wake = threading.Event()  # the main thread has something to look at
        self.parallel = max(1, parallel)
        self.slots = threading.Semaphore(self.parallel)
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}  # host → its thread's id, while its work runs
        self.waiting: dict[str, _Waiting] = {}  # hosts at a question, until a round answers
        self.declined: dict[str, str] = {}  # hosts whose last answer was no → why
        # Seconds each host spent at its questions (the others' plans, the
        # user's answer): not its own work, so not in its time.
        self.waited: dict[str, float] = {}
        self.stop_kind: type[KeyboardInterrupt] | None = None
        self.outcomes: dict[str, HostOutcome] = {}

    @property
    def stopped_by(self) -> int | None:
        return int(interruption_code(self.stop_kind())) if self.stop_kind else None

    def wait(self, held: _HeldStops) -> None:
        """Until every host has ended; a stop (again and again) reaches them all,
        ``held`` first: the signals that came while the hosts were starting.

        Not Thread.join: on Python 3.11 a Ctrl-C inside join() can mark a
        thread that still runs as ended (its lock is released on the way out).
        """
        give_up = math.inf
        while time.monotonic() < give_up or held.previous:  # never leave a handler held
            try:
                held.give_back()
                if time.monotonic() >= give_up:
                    return
                self.wake.wait(0.2)  # short: the main thread must see signals
                self.wake.clear()
                if self.all_ended.is_set():
                    return
                self._ask_round()
            except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (Terminated)
                if self.stop_kind:  # the second: a host blocked in a call gets a last while
                    give_up = min(give_up, time.monotonic() + GRACE_SECONDS)
                self.stop(type(stop))

    def stop(self, kind: type[KeyboardInterrupt]) -> None:
        with self.lock:
            self.stop_kind = self.stop_kind or kind
            for ident in self.running.values():
                _raise_in(ident, kind)
            for waiting in self.waiting.values():  # answered by the stop itself
                waiting.given.set()
            self.waiting.clear()

    # -- questions ------------------------------------------------------------

    def _ask_round(self) -> None:
        """When every host that could still ask is asking: one answer for all."""
        with self.lock:
            if self.stop_kind or not self.waiting or len(self.waiting) < len(self.running):
                return
            # Hosts still to begin hold the round up while a slot is free for them.
            if len(self.running) < min(self.left, self.parallel):
                return
            asking = [self.waiting[h] for h in self.hosts if h in self.waiting]
        assert self.asker is not None  # ``asked`` refuses a question without one
        why = DECLINED
        try:
            answer = self.asker([w.question for w in asking])
        except Exception as exc:  # the terminal went away, a closed pipe: a no, said so
            answer, why = False, f"cancelled: could not ask ({type(exc).__name__}: {exc})"
        with self.lock:
            for waiting in asking:
                host = waiting.question.host
                if answer:
                    self.declined.pop(host, None)
                else:
                    self.declined[host] = why
                waiting.answer = answer
                self.waiting.pop(host, None)
                waiting.given.set()

    def asked(self, question: Question) -> bool:
        """In the host's thread: wait for the round that answers ``question``."""
        if self.asker is None:
            raise ConfigError(
                f"not asking one host of a fleet: {question.text}", "add --yes to proceed"
            )
        waiting = _Waiting(question)
        with self.lock:
            if self.stop_kind is None:
                self.waiting[question.host] = waiting
        self.wake.set()
        asked_at = time.monotonic()
        try:
            if self.stop_kind is None:
                waiting.given.wait()  # a stop sets it too: its exception reaches us here
        finally:
            waited = time.monotonic() - asked_at
            self.waited[question.host] = self.waited.get(question.host, 0.0) + waited
        if waiting.answer is None:
            raise (self.stop_kind or KeyboardInterrupt)()
        return waiting.answer

    # -- in each host's thread ------------------------------------------------

    def host(self, host: str) -> None:
        _HERE.set((self, host))
        began = time.monotonic()
        finished: Finished | None = None
        stopping = False  # was the fleet being stopped when this host's work ended?
        try:
            with self.slots:
                try:
                    with self.lock:
                        if self.stop_kind:
                            finished = Finished(self.stopped_by or 130, error="not begun")
                        else:
                            self.running[host] = threading.get_ident()
                    if finished is None:
                        began = time.monotonic()
                        finished = self._attempt(host)
                finally:
                    stopping = self._leave(host)
        except BaseException:  # a stop that arrived just as the work ended
            finished, stopping = finished or Finished(self.stopped_by or 130, "interrupted"), True
            self._leave(host)  # (it may have come before ``_leave`` had begun)
        # Out of ``running`` now: no stop reaches this thread below.
        assert finished is not None  # set on every path above
        declined = self.declined.get(host, "")
        worked = time.monotonic() - began - self.waited.get(host, 0.0)
        outcome = _outcome(host, finished, stopping, worked, declined)
        self.outcomes[host] = outcome
        try:
            if self.ended:
                self.ended(outcome)
        finally:
            with self.lock:
                self.left -= 1
                if not self.left:
                    self.all_ended.set()
            self.wake.set()  # the hosts left may all be asking now

    def _leave(self, host: str) -> bool:
        """First thing after the work: out of ``running``, so a stop raises
        nothing more here; a stop already on its way is taken here (or cleared),
        never in the bookkeeping after, which must reach ``all_ended``.
        Says whether the fleet is being stopped."""
        while True:
            try:
                with self.lock:
                    self.running.pop(host, None)
                    stopping = self.stop_kind is not None
                _raise_in(threading.get_ident(), None)  # NULL: clears one still pending
                return stopping
            except KeyboardInterrupt:  # raised by a stop before we left: the work is over
                continue

    def _attempt(self, host: str) -> Finished:
        if self.started:
            self.started(host)
        try:
            return self.work(host)
        except KeyboardInterrupt as stop:  # reached this thread outside the task's own guard
            return Finished(interruption_code(stop), error="interrupted")
        except Exception as exc:  # a bug: one host's, reported as its line, never the fleet's
            return Finished(1, error=f"internal error: {type(exc).__name__}: {exc}")


def _outcome(
    host: str, finished: Finished, stopping: bool, seconds: float, declined: str = ""
) -> HostOutcome:
    """A host that ended well finished, even when the fleet was being stopped.
    One that ended as a "no" ends (exit 1, cancelled) says so."""
    if finished.exit_code == 0:
        return HostOutcome(host, "finished", 0, seconds, finished.document)
    state: HostState = "interrupted" if stopping else "failed"
    error = finished.error or f"exit code {finished.exit_code}"
    if declined and finished.exit_code == 1 and error.startswith(("cancelled", "exit code")):
        error = declined
    return HostOutcome(host, state, finished.exit_code, seconds, finished.document, error)


def _raise_in(thread_id: int, kind: type[BaseException] | None) -> None:
    """Raise ``kind`` in another thread at its next Python instruction.

    Python stops only its main thread on a signal; a host's thread may be in a
    loop of its own (waiting for health, polling every second). This is the
    one way to stop it where it stands, so its task says what it left, as a
    single task does on Ctrl-C. A thread blocked in a call (a docker CLI
    child) gets it when that call returns: the child got SIGINT too.
    ``None`` takes back one not yet raised.
    """
    exc = None if kind is None else ctypes.py_object(kind)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exc)
