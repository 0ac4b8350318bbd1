"""`ext.*`: list, info, enable, disable, start, stop, restart, logs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from invoke import Context

from ._base import display, guarded, positional, runtime, runtime_with_extensions, stack_task

if TYPE_CHECKING:
    from ollama_stack.extensions.registry import Found
    from ollama_stack.stack.runtime import Runtime

NAME_HELP = "the extension's name (`inv ext.list` shows them)"
JSON_HELP = "print one JSON document on stdout"


def _opened(c: Context) -> tuple[Runtime, Found]:
    return runtime_with_extensions(c)


def _name(given: str | None, task: str) -> str:
    return positional(given, task, "an extension's name", "`inv ext.list` shows them")


@stack_task(name="list", help={"json": JSON_HELP})
@guarded
def list_(c: Context, json: bool = False) -> None:
    """The extensions there are: enabled, running, and whether this host can run them."""
    from ollama_stack.extensions import manage

    rt, found = _opened(c)
    out = display(json_mode=json)
    rows = manage.rows(rt, found)
    problems = sorted(found.problems.values())
    if json:
        out.json({"extensions": [r.to_json() for r in rows], "problems": problems})
    else:
        out.extension_rows(rows, problems)


@stack_task(positional=["name"], help={"name": NAME_HELP, "json": JSON_HELP})
@guarded
def info(c: Context, name: str | None = None, json: bool = False) -> None:
    """An extension's manifest, requirements, ports, volumes, and tools once running."""
    from ollama_stack.extensions import manage

    rt, found = _opened(c)
    document = manage.info(rt, found, _name(name, "ext.info"))
    out = display(json_mode=json)
    if json:
        out.json(document)
    else:
        out.extension_info(document)


def _reopen(c: Context):
    return lambda: runtime(c, record=True)  # the installation as the change left it


@stack_task(
    positional=["name"],
    help={
        "name": NAME_HELP,
        "with_deps": "also enable the extensions it depends on",
        "json": JSON_HELP,
    },
)
@guarded
def enable(
    c: Context, name: str | None = None, with_deps: bool = False, json: bool = False
) -> None:
    """Check, then enable an extension: its server behind the proxy, offered to Open WebUI."""
    from ollama_stack.extensions import manage

    rt, found = _opened(c)
    out = display(json_mode=json)
    chosen = _name(name, "ext.enable")
    wanted = (
        found.extensions[chosen].manifest.requires.secrets if chosen in found.extensions else []
    )
    tokens = {key: os.environ[key] for key in wanted if os.environ.get(key)}
    changed = manage.enable(
        rt,
        found,
        chosen,
        with_deps=with_deps,
        tokens=tokens,
        reopen=_reopen(c),
        progress=out.progress,
    )
    _report(out, changed, json, "enabled")


@stack_task(
    positional=["name"],
    help={
        "name": NAME_HELP,
        "force": "disable it even though an enabled extension depends on it",
        "json": JSON_HELP,
    },
)
@guarded
def disable(c: Context, name: str | None = None, force: bool = False, json: bool = False) -> None:
    """Take an extension's server out of the proxy and Open WebUI; its data volumes stay."""
    from ollama_stack.extensions import manage

    rt, found = _opened(c)
    out = display(json_mode=json)
    changed = manage.disable(
        rt, found, _name(name, "ext.disable"), force=force, reopen=_reopen(c), progress=out.progress
    )
    _report(out, changed, json, "disabled")


def _report(out: Any, changed: Any, json: bool, verb: str) -> None:
    if json:
        out.json(changed.to_json())
        return
    if changed.changed:
        out.success(f"{verb} {', '.join(changed.changed)}")
    for note in changed.notes:
        out.info(note)


@stack_task(positional=["name"], help={"name": NAME_HELP})
@guarded
def start(c: Context, name: str | None = None) -> None:
    """Start an enabled extension's container and wait for its health."""
    from ollama_stack.extensions import manage

    rt, found = _opened(c)
    out = display()
    ext = manage.container_extension(rt, found, _name(name, "ext.start"), "ext.start")
    manage.start_container(rt, ext, out.progress)
    out.success(f"{ext.name} is running")


@stack_task(positional=["name"], help={"name": NAME_HELP})
@guarded
def stop(c: Context, name: str | None = None) -> None:
    """Stop an enabled extension's container (its data stays)."""
    from ollama_stack.extensions import manage

    rt, found = _opened(c)
    out = display()
    ext = manage.container_extension(rt, found, _name(name, "ext.stop"), "ext.stop")
    manage.stop_container(rt, ext, out.progress)
    out.success(f"{ext.name} is stopped")


@stack_task(positional=["name"], help={"name": NAME_HELP})
@guarded
def restart(c: Context, name: str | None = None) -> None:
    """Restart an enabled extension's container."""
    from ollama_stack.extensions import manage

    rt, found = _opened(c)
    out = display()
    ext = manage.container_extension(rt, found, _name(name, "ext.restart"), "ext.restart")
    manage.stop_container(rt, ext, out.progress)
    manage.start_container(rt, ext, out.progress)
    out.success(f"{ext.name} restarted")


@stack_task(positional=["name"], help={"name": NAME_HELP, "tail": "lines from the end, or all"})
@guarded
def logs(c: Context, name: str | None = None, tail: str = "100") -> None:
    """An enabled extension's container logs, as plain text."""
    from ollama_stack.common.errors import ConfigError
    from ollama_stack.extensions import manage
    from ollama_stack.stack import lifecycle

    if tail != "all" and not tail.isdigit():
        raise ConfigError(f"--tail {tail!r} is not a number of lines", "give 0 or more, or all")
    rt, found = _opened(c)
    ext = manage.container_extension(rt, found, _name(name, "ext.logs"), "ext.logs")
    display().log_lines(lifecycle.logs(rt, [ext.name], tail=tail))
