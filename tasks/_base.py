"""What every task shares: the error choke point and building a Runtime.

Heavy libraries (pydantic, python-on-whales, rich, fabric) are imported inside
task bodies so `--help` and `--list` stay fast.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from invoke import Argument, Exit, Task, task

from ollama_stack.common.errors import StackError, Terminated, interruption_code

if TYPE_CHECKING:
    from invoke import Context

    from ollama_stack.extensions.registry import Found
    from ollama_stack.stack.config import Memo
    from ollama_stack.stack.display import Display, HostDisplay
    from ollama_stack.stack.runtime import Runtime

F = TypeVar("F", bound=Callable[..., Any])


def guarded(func: F) -> F:
    """Turn every expected failure into one line on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("json"))
        try:
            refuse_bad_flags(kwargs)
            with sigterm_as_interrupt():
                return func(c, *args, **kwargs)
        except StackError as exc:
            fail(exc.message, exc.remedy, exc.code, as_json)
        except OSError as exc:  # a full disk, a read-only home: say which file
            where = f" ({exc.filename})" if exc.filename else ""
            fail(f"{exc.strerror or exc}{where}", "check the path and free space", 1, as_json)
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (Terminated)
            what = "terminated" if isinstance(stop, Terminated) else "interrupted"
            fail(what, "see `inv stack.status` for what runs now", interruption_code(stop), as_json)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """`kill` (SIGTERM) stops a task the way Ctrl-C does: saying what it left."""

    def terminate(signum: int, frame: Any) -> None:
        # Ctrl-C reaches `docker compose` too (same process group); a `kill` of
        # us alone would leave it starting containers after we said what runs.
        for child in _children():
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGINT)
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (a fleet's workers inherit it)
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _children() -> list[int]:
    """Our own child processes (Linux /proc; elsewhere none are found)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # field 4, the parent pid, after "pid (comm) state"
            found.append(int(entry))
    return found


def fail(message: str, remedy: str, code: int, as_json: bool) -> NoReturn:
    """The one line on stderr; with --json also the one document on stdout."""
    out = display(json_mode=as_json)
    out.error(message, remedy)
    if as_json:
        out.json({"ok": False, "error": message, "remedy": remedy, "exit_code": int(code)})
    raise Exit(code=int(code)) from None


class _Seconds(float):
    """A seconds flag, checked while invoke parses the command line.

    invoke casts a flag's value with the type of its default, and a ValueError
    there is a traceback. So a bad value parses to a marked NaN instead, and
    ``guarded`` refuses it before the task runs, as one line (and one JSON
    document with that task's --json). Subclasses name their flag (``seconds()``).
    """

    flag = "--timeout"
    zero_means = ""  # what 0 stands for, where 0 is allowed
    refusal: tuple[str, str] | None = None  # (message, remedy) for a bad value

    def __new__(cls, value: Any = 0.0) -> _Seconds:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        allowed = number >= 0 if cls.zero_means else number > 0
        if math.isfinite(number) and allowed:
            return super().__new__(cls, number)
        bad = super().__new__(cls, math.nan)
        least = "0 or more" if cls.zero_means else "more than 0"
        zero = f" (0: {cls.zero_means})" if cls.zero_means else ""
        bad.refusal = (f"{cls.flag} {value!r} is not a number of seconds", f"give {least}{zero}")
        return bad


def refuse_bad_flags(kwargs: Mapping[str, Any]) -> None:
    """Flag values invoke parsed but that are not what their type allows."""
    for value in kwargs.values():
        if isinstance(value, _Seconds) and value.refusal:
            from ollama_stack.common.errors import ConfigError

            raise ConfigError(*value.refusal)


def seconds(flag: str, default: float, zero_means: str = "") -> float:
    """A float default whose type checks the flag: ``timeout: float = seconds(...)``."""
    kind = type("SECONDS", (_Seconds,), {"flag": flag, "zero_means": zero_means})
    return kind(default)


# The same option has the same short flag in every task; other options have
# none (invoke would hand out first free letters, so `--remote` was -m in one
# task and -r in the others).
SHORT_FLAGS = {
    "remote": "r",
    "hosts": "H",  # as fabric's
    "json": "j",
    "timeout": "t",
    "services": "s",
    "yes": "y",
    "follow": "f",
    "force": "f",
}


REMOTE_HELP = "SSH host (~/.ssh/config alias or user@host[:port]); default: this machine"
HOSTS_HELP = (
    "run on many hosts at once: a,b,c (local: this machine; @name: a group of the hosts setting)"
)
_REMOTE: contextvars.ContextVar[str] = contextvars.ContextVar("remote", default="")
# In a fleet, each host's task prints to its own display (kept for the report).
_DISPLAY: contextvars.ContextVar[Display | None] = contextvars.ContextVar("display", default=None)


def current_remote() -> str:
    """The --remote of the task running now ("" for this machine)."""
    return _REMOTE.get()


class StackTask(Task):
    """invoke's Task with our short flags, the value's type shown in help where
    invoke's own help shows none (it names only STRING and INT), and `--remote`
    and `--hosts`: declared here once for every task, the way fabric adds its
    host flags, instead of in each task's signature."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        hosts = kwargs.pop("hosts", "") or ""
        if hosts:
            remote = kwargs.pop("remote", "") or ""
            c, rest = args[0], args[1:]
            json = bool(kwargs.get("json"))  # for a refusal's one JSON document
            return _on_fleet(c, self, hosts, remote, rest, kwargs, json=json)
        token = _REMOTE.set(kwargs.pop("remote", "") or "")
        try:
            return super().__call__(*args, **kwargs)
        finally:
            _REMOTE.reset(token)

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Any]:
        # invoke pops each help text as it builds the flags, so a second parse in
        # the same process (tests, a fleet of hosts) would show no help at all.
        kept = dict(self.help)
        try:
            arguments = super().get_arguments(ignore_unknown_help)
        finally:
            self.help = kept
        names = ("remote", SHORT_FLAGS["remote"])
        remote = Argument(names=names, kind=str, default="", help=REMOTE_HELP)
        hosts = Argument(
            names=("hosts", SHORT_FLAGS["hosts"]), kind=str, default="", help=HOSTS_HELP
        )
        return [*arguments, remote, hosts]

    def arg_opts(self, name: str, default: Any, taken_names: set[str]) -> dict[str, Any]:
        self.auto_shortflags = False
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short and short not in taken_names:
            opts["names"].append(short)
        kind = opts.get("kind")
        if isinstance(kind, type) and issubclass(kind, _Seconds):
            text = opts.get("help") or ""
            opts["help"] = "SECONDS" + text[7:] if text.startswith("seconds") else f"SECONDS {text}"
        return opts


def stack_task(*args: Any, **kwargs: Any) -> Any:
    """``@task`` for our namespaces (see StackTask)."""
    kwargs.setdefault("klass", StackTask)
    return task(*args, **kwargs)


def display(json_mode: bool = False) -> Display:
    captured = _DISPLAY.get()
    if captured is not None:  # one host of a fleet
        return captured
    from ollama_stack.stack.display import Display

    return Display(json_mode=json_mode)


def positional(
    given: str | None, task: str, what: str, remedy: str, where: str = "after it"
) -> str:
    """A positional argument's value. invoke reads the word after a task with
    one as that argument, `--help` included: say how to get the help instead."""
    from ollama_stack.common.errors import ConfigError

    if given in ("--help", "-h"):
        raise ConfigError(f"{task} reads the word {where} as {what}", f"`inv --help {task}`")
    if not given:
        raise ConfigError(f"{task} needs {what}", remedy)
    return given


def runtime(
    c: Context,
    *,
    older_schema: bool = False,
    local: bool = False,
    record: bool = False,
    **flags: Any,
) -> Runtime:
    """The installation this task acts on: invoke's configuration (``c.config``)
    with the installation's levels and these flags on top. Files of an older
    schema are refused unless ``older_schema`` (stack.migrate, stack.uninstall).
    ``record``: a task that changes the installation keeps what it judged for
    the queries after it (see config.memo)."""
    opened = runtime_with_extensions(
        c, older_schema=older_schema, local=local, record=record, **flags
    )
    return opened[0]


def runtime_with_extensions(
    c: Context,
    *,
    older_schema: bool = False,
    local: bool = False,
    record: bool = False,
    **flags: Any,
) -> tuple[Runtime, Found]:
    """``runtime``'s installation, and every extension found while opening it
    (what ``ext.*`` lists: read once, not again)."""
    from ollama_stack.extensions.registry import Found, activate_from_config
    from ollama_stack.stack.runtime import Runtime

    found = Found()

    def extend(raw: Mapping[str, Any], memo: Memo) -> list[str]:
        nonlocal found
        found, problems = activate_from_config(raw, memo)
        return problems

    rt = Runtime.open(
        remote=None
        if local
        else current_remote() or None,  # local: this machine's, whatever --remote says
        base=c.config,
        flags=flags,
        older_schema=older_schema,
        extend=extend,
        record=record,
    )
    # Skipped, never fatal to the core stack. A task that opens two installations
    # (a push: this machine's and the box's) says whose extension it skipped.
    where = f" on {rt.target.label}" if rt.target.host else ""
    for problem in rt.extension_problems:
        display().note(f"extension skipped{where}: {problem}")
    return rt, found


def backup_taker(out: Display, description: str) -> Callable[[Runtime], str]:
    """A backup of the installation into its store, as `backup.create` takes it:
    what a task hands the library to call before it changes anything."""

    def back_up(rt: Runtime) -> str:
        from ollama_stack.backups import snapshot
        from ollama_stack.backups.store import open_store
        from ollama_stack.stack import config

        store = open_store(config.backup_store(rt.settings.backup.store, None, os.environ))
        options = snapshot.Options(description=description)
        return snapshot.create(rt, store, options, out.progress).id

    return back_up


def backup_possible(rt: Runtime, before: str, unchanged: str) -> Runtime:
    """What the backup a change begins with would refuse first (volumes another
    installation holds), asked before the change's question: nobody is asked
    about a change that then stops at its backup. The failure reads as the
    backup's would (``before``: "the migration", ``unchanged``: "changed").
    Returns ``rt`` marked checked, so the backup does not ask again."""
    from ollama_stack.common.errors import backed_up_first
    from ollama_stack.stack.lifecycle import refuse_foreign

    return backed_up_first(lambda: refuse_foreign(rt), before, unchanged)


def confirmer(yes: bool, out: Display) -> Callable[[str], bool]:
    """Ask on a terminal; without one, refuse unless --yes was given (never hang)."""

    def confirm(question: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            from ollama_stack.common.errors import ConfigError

            raise ConfigError(f"not asking without a terminal: {question}", "add --yes to proceed")
        return out.confirm(question)

    return confirm


def split_names(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").replace(" ", ",").split(",") if n.strip()]


# -- fleets: one task on many hosts (--hosts) -----------------------------------


@guarded
def _on_fleet(
    c: Context,
    task: StackTask,
    hosts: str,
    remote: str,
    args: tuple[Any, ...],
    flags: dict[str, Any],
    json: bool = False,
) -> None:
    """The task on every host at once, each exactly as with --remote HOST (or
    on this machine for `local`); then each host's output and one row per host.
    A task that asks asks in its own thread as it would alone (it shows its
    plan first; without a terminal it refuses, without --yes): the fleet
    gathers every host's question and asks once for all (stack/fleet.py).
    Exits with the fleet's code (stack/fleet.py says which)."""
    from ollama_stack.common.errors import ConfigError
    from ollama_stack.stack import fleet
    from ollama_stack.stack.config import host_groups

    if remote:
        raise ConfigError("--remote and --hosts together", "give --remote HOST, or --hosts A,B")
    refuse_bad_flags(flags)  # once, not once per host
    _refuse_streams(args, flags)
    chosen = fleet.expand_hosts(hosts, host_groups(c.config) if "@" in hosts else {})
    name = task_name(task)
    out = display(json_mode=json)
    view = out.fleet_view(chosen)
    shown: dict[str, HostDisplay] = {}

    def ask_round(questions: list[fleet.Question]) -> bool:  # in the main thread
        with view.paused():
            return out.fleet_question(questions)

    def on_host(host: str) -> fleet.Finished:  # in the host's own thread and context
        mine = shown[host] = out.for_host(host, view.event, fleet.ask)
        _DISPLAY.set(mine)
        _REMOTE.set("" if host == fleet.LOCAL else host)
        try:
            Task.__call__(task, c, *args, **flags)
            code = 0
        except Exit as done:
            code = int(done.code or 0)
        return fleet.Finished(code, mine.document, mine.error_line)

    with view:
        report = fleet.run(
            name, chosen, on_host, started=view.started, ended=view.ended, asker=ask_round
        )
    sections = {host: mine.captured() for host, mine in shown.items()}
    out.fleet_report(report, sections, command_line(task, name, args, flags))
    if report.exit_code:
        raise Exit(code=report.exit_code)


def _refuse_streams(args: tuple[Any, ...], flags: dict[str, Any]) -> None:
    """What cannot be shared by many hosts: one terminal followed, one pipe."""
    from ollama_stack.common.errors import ConfigError

    if flags.get("follow"):
        raise ConfigError(
            "--follow with --hosts: a host's output is shown when it ends",
            "follow one host with --remote HOST",
        )
    if "-" in (*args, flags.get("file")):
        raise ConfigError(
            "- (stdin or stdout) with --hosts: one pipe cannot serve many hosts",
            "run it with --remote HOST for each host",
        )


def command_line(task: Task, name: str, args: tuple[Any, ...], flags: Mapping[str, Any]) -> str:
    """The task as the user typed it (arguments and the flags that differ from
    their defaults), for a hint that repeats it on the hosts that failed."""
    import inspect
    import shlex

    parameters = inspect.signature(task.body).parameters
    words = [name, *(shlex.quote(str(arg)) for arg in args)]
    for key, value in flags.items():
        if key not in parameters or value == parameters[key].default or value in (False, None):
            continue
        words.append(f"--{key.replace('_', '-')}")
        if value is not True:  # (120, not 120.0: as it was typed)
            words.append(shlex.quote(f"{value:g}" if isinstance(value, float) else str(value)))
    return " ".join(words)


def task_name(task: Task) -> str:
    """``stack.start``, as the user types it: the namespace is the task's module."""
    namespace = task.body.__module__.rsplit(".", 1)[-1]
    return f"{namespace}.{task.name.replace('_', '-')}"
