"""`update.*`: check, apply (the default), rollback."""

from __future__ import annotations

from invoke import Context, Exit

from ._base import (
    backup_taker,
    confirmer,
    display,
    guarded,
    runtime,
    seconds,
    split_names,
    stack_task,
)

UPDATE_TIMEOUT = seconds("--timeout", 0.0, zero_means="the start_timeout setting")

FILTER_HELP = {
    "services": "comma-separated service names (default: all; `stack.status` lists them)",
    "docker_only": "only services of type docker",
    "native_only": "only native-api services (Ollama installed on the host)",
    "remote_only": "only remote-api services (validated, never changed)",
}


def _selection(
    c: Context,
    services: str,
    docker_only: bool,
    native_only: bool,
    remote_only: bool,
    extensions: bool = False,
):
    from ollama_stack.stack.update import engine as update

    rt = runtime(c)
    chosen = update.select(
        rt,
        split_names(services),
        docker_only=docker_only,
        native_only=native_only,
        remote_only=remote_only,
        extensions=extensions,
    )
    return rt, chosen


EXTENSIONS_HELP = "also the enabled extensions' containers"


@stack_task(
    help={**FILTER_HELP, "extensions": EXTENSIONS_HELP, "json": "print one JSON document on stdout"}
)
@guarded
def check(
    c: Context,
    services: str = "",
    extensions: bool = False,
    docker_only: bool = False,
    native_only: bool = False,
    remote_only: bool = False,
    json: bool = False,
) -> None:
    """Show what each service runs and whether a newer version exists."""
    from ollama_stack.stack.update import engine as update

    rt, chosen = _selection(c, services, docker_only, native_only, remote_only, extensions)
    checks = update.check(rt, chosen)
    out = display(json_mode=json)
    if json:
        out.json({"target": rt.target.label, "services": [vars(x) for x in checks]})
    else:
        out.update_checks(checks)


@stack_task(
    default=True,
    help={
        **FILTER_HELP,
        "extensions": EXTENSIONS_HELP,
        "yes": "do not ask before touching a running stack",
        "no_backup": "skip the backup taken before updating",
        "timeout": "seconds to wait for health before rolling back (default: start_timeout)",
        "json": "print one JSON document on stdout",
    },
)
@guarded
def apply(
    c: Context,
    services: str = "",
    extensions: bool = False,
    docker_only: bool = False,
    native_only: bool = False,
    remote_only: bool = False,
    yes: bool = False,
    no_backup: bool = False,
    timeout: float = UPDATE_TIMEOUT,
    json: bool = False,
) -> None:
    """Update, wait for health, and roll back automatically if it does not come."""
    from ollama_stack.stack.update import engine as update

    rt, chosen = _selection(c, services, docker_only, native_only, remote_only, extensions)
    out = display(json_mode=json)
    report = update.apply(
        rt,
        chosen,
        confirm=confirmer(yes, out),
        backup=None if no_backup else backup_taker(out, "before update.apply"),
        timeout=timeout or None,
        progress=out.progress,
    )
    if json:
        out.json(report.to_json())
    else:
        out.update_report(report)
    if report.exit_code:
        raise Exit(code=int(report.exit_code))


@stack_task(help={"timeout": "seconds to wait for health"})
@guarded
def rollback(c: Context, timeout: float = UPDATE_TIMEOUT) -> None:
    """Put back the images the last update replaced."""
    from ollama_stack.stack.update import engine as update

    out = display()
    entry = update.rollback(runtime(c), timeout or None, out.progress)
    out.success(
        f"rolled back {', '.join(entry['restored'])} to the images before update {entry['id']}"
    )
