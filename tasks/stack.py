"""`stack.*`: install, start, stop, restart, status, logs, config, uninstall, migrate, adopt."""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING

from invoke import Context, Exit

from ollama_stack.common.errors import Terminated

from ._base import (
    backup_possible,
    backup_taker,
    confirmer,
    current_remote,
    display,
    guarded,
    runtime,
    seconds,
    split_names,
    stack_task,
)

if TYPE_CHECKING:
    from ollama_stack.stack.display import Display
    from ollama_stack.stack.uninstall import Plan

START_TIMEOUT = seconds("--timeout", 0.0, zero_means="the start_timeout setting")
START_HELP = {
    "pull": "image pull policy: missing (default), always or never",
    "platform": "cpu, nvidia or apple (default: detect)",
    "timeout": "seconds to wait for health (default: start_timeout setting)",
}


@stack_task(
    help={
        "force": "rewrite an existing config (secrets are kept)",
        "project": "compose project name (one per installation)",
        "bind": "address to publish ports on (default 127.0.0.1)",
        "platform": "auto, cpu, nvidia or apple",
    }
)
@guarded
def install(
    c: Context,
    force: bool = False,
    project: str | None = None,
    bind: str | None = None,
    platform: str | None = None,
) -> None:
    """Write the config and a private secrets file for a new installation."""
    from ollama_stack.stack import config
    from ollama_stack.stack.lifecycle import refuse_foreign_at_install

    chosen = {"project": project, "bind": bind, "platform": platform}
    rt = runtime(c, project=project, bind=bind, platform=platform)
    if not rt.target.is_remote:  # a box not reachable yet is installed for; start asks it
        refuse_foreign_at_install(rt)
    result = config.install(rt.paths, chosen, force=force)
    out = display()
    out.success(f"installed {rt.settings.project} for {rt.target.label} in {result.paths.root}")
    if result.secrets_created:
        out.info(f"  new secrets: {', '.join(result.secrets_created)} (mode 0600)")
    if result.secrets_kept:
        out.info(f"  kept secrets: {', '.join(result.secrets_kept)}")
    exposed = rt.settings.exposure(rt.docker_services())
    if exposed:
        out.note(f"warning: {exposed}")
    remote = current_remote()
    where = f" --remote {shlex.quote(remote)}" if remote else ""  # safe to copy and paste
    out.info(f"Next: inv stack.start{where}   (offline? inv dev.standins{where} first)")


def _start(
    c: Context, pull: str, platform: str | None, timeout: float, restart: bool = False
) -> None:
    from ollama_stack.stack import lifecycle

    _check_pull(pull)
    # Every flag is validated before anything stops; what was judged is kept.
    rt = runtime(c, record=True, platform=platform)
    out = display()
    if restart:
        lifecycle.stop(rt, progress=out.progress)
    result = lifecycle.start(rt, pull=pull, timeout=timeout or None, progress=out.progress)  # type: ignore[arg-type]
    out.started(result)


@stack_task(help=START_HELP)
@guarded
def start(
    c: Context,
    pull: str = "missing",
    platform: str | None = None,
    timeout: float = START_TIMEOUT,
) -> None:
    """Start the stack and wait until every service is healthy."""
    _start(c, pull, platform, timeout)


@stack_task()
@guarded
def stop(c: Context) -> None:
    """Stop the stack; data volumes are always kept."""
    from ollama_stack.stack import lifecycle

    out = display()
    stopped = lifecycle.stop(runtime(c, record=True), progress=out.progress)
    out.success(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@stack_task(help=START_HELP)
@guarded
def restart(
    c: Context,
    pull: str = "missing",
    platform: str | None = None,
    timeout: float = START_TIMEOUT,
) -> None:
    """Stop, then start with the same options."""
    _start(c, pull, platform, timeout, restart=True)


@stack_task(help={"json": "print one JSON document on stdout"})
@guarded
def status(c: Context, json: bool = False) -> None:
    """Show each service's state, health, URL, image and uptime."""
    from ollama_stack.stack import lifecycle

    report = lifecycle.status(runtime(c))
    out = display(json_mode=json)
    if json:
        out.json(report.to_json())
    else:
        out.status(report)


@stack_task(
    help={
        "services": "comma-separated service names (default: all; `stack.status` lists them)",
        "follow": "keep printing new lines",
        "tail": "LINES from the end of each log: a number or all (default: all)",
        "since": "only lines since a time, e.g. 10m or 2026-11-25T10:00:00",
        "timestamps": "prefix each line with its time",
    }
)
@guarded
def logs(
    c: Context,
    services: str = "",
    follow: bool = False,
    tail: str | None = None,
    since: str | None = None,
    timestamps: bool = False,
) -> None:
    """Print container logs as plain text."""
    from ollama_stack.stack import lifecycle

    if tail is not None and tail != "all" and not tail.isdigit():
        from ollama_stack.common.errors import ConfigError

        raise ConfigError(f"--tail {tail!r} is not a number of lines", "give 0 or more, or all")
    rt, names = runtime(c), split_names(services)
    out = display()
    for place in lifecycle.log_places(rt, names):
        out.note(place)
    lines = lifecycle.logs(rt, names, follow=follow, tail=tail, since=since, timestamps=timestamps)
    try:
        out.log_lines(lines)
    except Terminated:
        raise
    except KeyboardInterrupt:
        raise Exit(code=0) from None  # Ctrl-C is how one leaves --follow


@stack_task(name="config")
@guarded
def config_(c: Context) -> None:
    """Print the merged compose file the tool runs (secrets as ${NAME})."""
    from ollama_stack.stack import lifecycle

    display().text(lifecycle.merged_config(runtime(c)))


@stack_task(
    help={
        "yes": "do not ask for confirmation",
        "force": "same as --yes",
        "remove_volumes": "also delete the data volumes (models, chats): irreversible",
        "remove_images": "also remove the images pulled or built for this installation",
        "remove_config": "also delete config and secrets (backups live elsewhere and stay)",
        "backup": "take a backup (as backup.create) before removing, without asking",
        "no_backup": "do not offer a backup before --remove-volumes",
        "json": "print the plan and result as JSON on stdout",
    }
)
@guarded
def uninstall(
    c: Context,
    yes: bool = False,
    force: bool = False,
    remove_volumes: bool = False,
    remove_images: bool = False,
    remove_config: bool = False,
    backup: bool = False,
    no_backup: bool = False,
    json: bool = False,
) -> None:
    """Remove this installation's containers and networks; data stays unless asked."""
    from ollama_stack.stack import uninstall as remover

    if backup and no_backup:
        from ollama_stack.common.errors import ConfigError

        raise ConfigError("--backup and --no-backup contradict each other", "give one of them")
    rt = runtime(c, older_schema=True)  # an old installation can still be removed
    out = display(json_mode=json)
    todo = remover.plan(
        rt, remove_volumes=remove_volumes, remove_images=remove_images, remove_config=remove_config
    )
    out.uninstall_plan(todo, rt.target.label)
    if todo.empty:
        if json:
            out.json({**todo.to_json(), "result": "nothing to remove"})
        return
    if backup:
        rt = backup_possible(rt, "the uninstall", "removed")
    if not confirmer(yes or force, out)(f"remove the above from {rt.target.label}?"):
        if json:
            out.json({**todo.to_json(), "result": "cancelled"})
        out.info("cancelled; nothing was removed")
        raise Exit(code=1)
    take = _wants_backup(todo, backup, no_backup, asking=not (yes or force), out=out)
    taker = backup_taker(out, "before stack.uninstall") if take else None
    left = remover.execute(rt, todo, progress=out.progress, backup=taker)
    if json:
        out.json({**todo.to_json(), "result": "removed", "left": left})
    if todo.backup:
        out.info(f"  backup {todo.backup} taken first")
    for item in left:
        out.info(f"  kept {item}")
    out.success(f"uninstalled {rt.settings.project} from {rt.target.label}")


def _wants_backup(todo: Plan, backup: bool, no_backup: bool, asking: bool, out: Display) -> bool:
    """--backup or --no-backup; else, when volumes go, ask on a terminal, or say
    that none is taken (scripts with --yes go on as before)."""
    if backup or no_backup or not todo.volumes:
        return backup
    if asking and sys.stdin.isatty():
        return out.confirm("take a backup of the volumes first?", default=True)
    out.note("warning: no backup of the volumes was taken first (--backup takes one)")
    return False


@stack_task(
    help={
        "dry_run": "show what would change and write nothing",
        "yes": "do not ask before rewriting the files",
        "no_backup": "skip the backup (as backup.create) taken before migrating",
        "json": "print the plan and result as JSON on stdout",
    }
)
@guarded
def migrate(
    c: Context,
    dry_run: bool = False,
    yes: bool = False,
    no_backup: bool = False,
    json: bool = False,
) -> None:
    """Bring config.yaml and the state file to this release's schema, after a backup."""
    from functools import partial

    from ollama_stack.stack.config import migrate as migration

    rt = runtime(c, older_schema=True)  # a newer file is still refused here
    out = display(json_mode=json)
    todo = migration.plan(rt.paths)
    out.migration_plan(todo, rt.target.label)
    result = "migrated" if todo.needed else "nothing to migrate"
    if todo.needed and dry_run:
        out.info("dry run: nothing was written")
        result = "dry run"
    elif todo.needed:
        if not no_backup:
            rt = backup_possible(rt, "the migration", "changed")
        if not confirmer(yes, out)(f"rewrite these files of {rt.target.label}?"):
            if json:
                out.json({**todo.to_json(), "result": "cancelled"})
            out.info("cancelled; nothing was changed")
            raise Exit(code=1)
        taker = None if no_backup else partial(backup_taker(out, "before stack.migrate"), rt)
        todo = migration.apply(rt.paths, todo, backup=taker, progress=out.progress)
        out.migrated(todo, rt.target.label)
    if json:
        out.json({**todo.to_json(), "result": result})


@stack_task(
    help={
        "yes": "do not ask for confirmation",
        "pull": START_HELP["pull"],
        "timeout": START_HELP["timeout"],
    }
)
@guarded
def adopt(
    c: Context, yes: bool = False, pull: str = "missing", timeout: float = START_TIMEOUT
) -> None:
    """Take over this project's containers from a moved home or a start by hand (asks first)."""
    from ollama_stack.stack import adopt as adoption

    _check_pull(pull)
    rt = runtime(c, record=True)
    out = display()
    todo = adoption.plan(rt)
    if todo.empty:
        out.info(
            f"nothing to adopt: nothing of compose project {todo.project} on {todo.target} "
            "is another installation's"
        )
        return
    out.adoption_plan(todo)
    if not confirmer(yes, out)(f"make these this installation's ({rt.paths.root})?"):
        out.info("cancelled; nothing was changed")
        raise Exit(code=1)
    result = adoption.execute(
        rt,
        todo,
        pull=pull,  # type: ignore[arg-type]
        timeout=timeout or None,
        progress=out.progress,
    )
    out.started(result)
    for note in adoption.left_behind(todo):
        out.note(f"note: {note}")


def _check_pull(pull: str) -> None:
    if pull not in ("missing", "always", "never"):
        from ollama_stack.common.errors import ConfigError

        raise ConfigError(f"--pull {pull!r} is not allowed", "use missing, always or never")
