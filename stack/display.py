"""All terminal output, on rich. Nothing else in the project prints.

Structured output (``--json``) goes to stdout as one document and nothing
else; progress and errors go to stderr so pipes stay clean. Container logs are
written with ``Console.out`` (no markup, no highlighting), because a log line
like ``[/x]`` must print as itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .events import Event

if TYPE_CHECKING:
    from rich.console import Console

    from ollama_stack.backups.manifest import Manifest
    from ollama_stack.backups.prune import Report as PruneReport
    from ollama_stack.backups.store import SnapshotInfo
    from ollama_stack.backups.transfer import Exported, Imported
    from ollama_stack.extensions.manage import Row as ExtensionRow

    from .adopt import Takeover
    from .config.migrate import Migration
    from .doctor import Check
    from .fleet import FleetReport, HostOutcome, Question
    from .health import ProbeResult
    from .images import ImageRow
    from .lifecycle import OtherContainers, StartResult, StatusReport
    from .models import Model
    from .uninstall import Plan
    from .update.engine import ServiceCheck, UpdateReport

OUTCOME_STYLE = {
    "updated": "green",
    "up-to-date": "green",
    "validated": "green",
    "rolled-back": "yellow",
    "needs-sudo": "yellow",
    "manual": "yellow",
    "failed": "red",
    "unreachable": "red",
}
HEALTH_STYLE = {"healthy": "green", "reachable": "yellow", "unhealthy": "red", "unknown": "dim"}
PIPE_WIDTH = 200
_INV_COMMAND = re.compile(r"(?<![\w/.-])inv (?=[a-z]+\.[a-z])")


def as_run(text: str) -> str:
    """Hints name our commands as `inv stack.start`; say them the way the user
    runs us (`ollama-stack stack.start` from the installed script)."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "inv"
    if program != "ollama-stack":
        return text
    return _INV_COMMAND.sub("ollama-stack ", text)


VERDICT_STYLE = {"pass": "green", "warn": "yellow", "fail": "red"}
# One host's question in a fleet: (question, its plan as (stdout, stderr) text, default) → answer.
HostAsk = Callable[[str, tuple[str, str], bool], bool]


class Display:
    def __init__(self, json_mode: bool = False, prefix: str = "") -> None:
        self.json_mode = json_mode
        self.prefix = prefix
        self._bars: Any = None  # rich Progress while items transfer (a model's layers)
        self._bar_ids: dict[str, Any] = {}

    # Consoles are made on first use: `--json` output never needs rich.
    @cached_property
    def out(self) -> Console:
        from rich.console import Console

        # Piped output gets a wide page so URLs and image names stay copyable.
        width = None if sys.stdout.isatty() else PIPE_WIDTH
        return Console(highlight=False, soft_wrap=True, width=width)

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False, soft_wrap=True)

    # -- progress -------------------------------------------------------------

    def progress(self, event: Event) -> None:
        from rich.text import Text

        if event.kind == "transfer":
            self._transfer(event)
            return
        self._end_transfers()
        style = {"step": "bold", "output": "dim", "warn": "yellow", "done": "green"}.get(event.kind)
        if event.kind == "service":
            style = HEALTH_STYLE.get(event.state or "", "")
        marker = "  " if event.kind == "output" else "• "
        self.err.print(Text(f"{self.prefix}{marker}{event.message}", style=style or ""))

    def _transfer(self, event: Event) -> None:
        """One bar per item (a model's layer): bytes, rate and time left."""
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        if self._bars is None:
            self._bars = Progress(
                TextColumn(f"{self.prefix}{{task.description}}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self.err,
            )
            self._bars.start()
            self._bar_ids = {}
        if event.message not in self._bar_ids:
            self._bar_ids[event.message] = self._bars.add_task(event.message, total=event.total)
        self._bars.update(self._bar_ids[event.message], completed=event.done, total=event.total)

    def _end_transfers(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    # -- plain messages -------------------------------------------------------

    def info(self, message: str) -> None:
        from rich.text import Text

        self._end_transfers()

        target = self.err if self.json_mode else self.out
        target.print(Text(self.prefix + as_run(message)))

    def note(self, message: str) -> None:
        """A remark beside output that must stay verbatim (logs): on stderr."""
        from rich.text import Text

        self.err.print(Text(self.prefix + as_run(message), style="yellow"))

    def success(self, message: str) -> None:
        from rich.text import Text

        self._end_transfers()

        target = self.err if self.json_mode else self.out
        target.print(Text(self.prefix + message, style="green"))

    def error(self, message: str, remedy: str = "") -> None:
        from rich.text import Text

        self._end_transfers()

        line = Text(f"{self.prefix}error: ", style="bold red")
        line.append(as_run(message))
        if remedy:
            line.append(f" — {as_run(remedy)}", style="yellow")
        self.err.print(line)

    def confirm(self, question: str, default: bool = False) -> bool:
        from rich.prompt import Confirm

        try:
            return Confirm.ask(question, console=self.err, default=default)
        except EOFError:  # Ctrl-D is a no
            return False

    def json(self, document: Any) -> None:
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")
        sys.stdout.flush()

    def text(self, text: str) -> None:
        """Verbatim text (generated YAML): no markup, no wrapping."""
        self.out.out(text, highlight=False)

    def log_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.out.out(line, highlight=False)

    # -- reports --------------------------------------------------------------

    def started(self, result: StartResult) -> None:
        if result.already_running:
            self.info(f"already running and healthy ({result.platform}); nothing to do")
        else:
            self.success(f"stack healthy in {result.seconds:.1f} s ({result.platform})")
        for name, url in result.urls.items():
            self.info(f"  {name:<10} {url}")

    def status(self, report: StatusReport) -> None:
        from rich.table import Table
        from rich.text import Text

        if not report.installed and not report.running:
            self.info(f"ollama-stack is not installed on {report.target}.")
            self.info("Begin with:  inv stack.install  then  inv stack.start")
            if report.others:
                self.note(_others_line(report.others))
            return
        table = Table(title=f"{report.project} on {report.target}", title_justify="left")
        for column in ("service", "type", "state", "health"):
            table.add_column(column, no_wrap=True)
        for column in ("url", "image", "uptime", "models"):
            table.add_column(column, overflow="fold")
        for s in report.services:
            table.add_row(
                s.name,
                s.type,
                s.state,
                Text(s.health, style=HEALTH_STYLE.get(s.health, "")),
                s.url,
                Text(s.image),
                s.uptime.removeprefix("Up ").split(" (")[0],
                f"{s.models} ({s.loaded_models} loaded)" if s.models is not None else "",
            )
        self.out.print(table)
        if report.others:
            self.note(_others_line(report.others))
        if not report.running and not (report.others and report.others.blocks_start):
            self.info("Stopped. Start with:  inv stack.start")

    def health(self, results: dict[str, ProbeResult]) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table()
        for column in ("service", "health", "latency", "detail"):
            table.add_column(column)
        for r in results.values():
            table.add_row(
                r.service,
                Text(r.health, style=HEALTH_STYLE.get(r.health, "")),
                f"{r.latency_ms:.0f} ms",
                Text(r.detail),
            )
        self.out.print(table)

    def doctor(self, checks: list[Check]) -> None:
        from rich.text import Text

        for check in checks:
            line = Text(f"{self.prefix}")
            line.append(f"{check.verdict.upper():<5}", style=VERDICT_STYLE[check.verdict])
            line.append(f" {check.name:<11} {check.detail}")
            if check.remedy and check.verdict != "pass":
                line.append(f" — {as_run(check.remedy)}", style="yellow")
            self.out.print(line)

    def update_checks(self, checks: list[ServiceCheck]) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table()
        for column in ("service", "type", "runs", "status", "detail"):
            table.add_column(column, overflow="fold")
        for c in checks:
            runs = c.version or (c.local_digest or c.image_id or "")[:19]
            style = "yellow" if c.status == "update-available" else OUTCOME_STYLE.get(c.status, "")
            table.add_row(
                c.service,
                c.type,
                Text(f"{c.image} {runs}".strip()),
                Text(c.status, style=style),
                Text(c.detail),
            )
        self.out.print(table)

    def update_report(self, report: UpdateReport) -> None:
        from rich.text import Text

        for o in report.outcomes:
            line = Text(f"{self.prefix}{o.service:<10} ")
            line.append(o.outcome, style=OUTCOME_STYLE.get(o.outcome, ""))
            if o.detail:
                line.append(f"  {o.detail}")
            self.out.print(line)

    def uninstall_plan(self, plan: Plan, target: str) -> None:
        from rich.text import Text

        console = self.err if self.json_mode else self.out
        if plan.empty:
            console.print(Text(f"nothing of this installation is left on {target}"))
        for kind in ("containers", "networks", "volumes", "images"):
            for name in getattr(plan, kind):
                console.print(Text(f"  remove {kind[:-1]:<9} {name}"))
        if plan.config_dir:
            console.print(Text(f"  remove config    {plan.config_dir}"))
        for item in plan.kept:
            console.print(Text(f"  keep   {item}", style="green"))

    def adoption_plan(self, todo: Takeover) -> None:
        from rich.text import Text

        self.out.print(Text(f"take over compose project {todo.project} on {todo.target}:"))
        for owner in todo.owners:
            if owner.by_hand:
                whose = f"containers started by hand from our compose files ({owner.installation})"
            elif owner.home:
                there = "still there" if owner.still_there else "no installation there now"
                whose = f"installation {owner.installation}, home {owner.home} ({there})"
            else:
                whose = f"installation {owner.installation} (its home is not recorded)"
            self.out.print(Text(f"  from     {whose}"))
        for c in todo.containers:
            what = "recreate" if c.recreated else "remove  "
            why = "" if c.recreated else "; its service is not this installation's"
            self.out.print(Text(f"  {what} container {c.name} ({c.service}, {c.state}{why})"))
        for name, owner in sorted(todo.volumes.items()):
            self.out.print(
                Text(f"  keep     volume    {name} (its data as it is; labelled {owner})", "green")
            )
        if todo.mark:
            self.out.print(
                Text(
                    f"  rewrite  adoption mark (adopted by {todo.mark.installation}, "
                    f"home {todo.mark.home}) to name this installation"
                )
            )

    # -- backups ----------------------------------------------------------------

    def backup_created(self, manifest: Manifest, store: str) -> None:
        from rich.text import Text

        volumes = ", ".join(f"{v.service}:{v.name}" for v in manifest.volumes) or "no volumes"
        self.success(
            f"backup {manifest.id}: {_size(manifest.size)} of {volumes}; "
            f"{_size(manifest.written)} new in {store}"
        )
        for item in manifest.excluded:
            self.out.print(Text(f"  left out     {item}", style="dim"))
        for item in manifest.not_covered:
            self.out.print(Text(f"  not covered  {item}", style="yellow"))

    def backup_list(self, found: list[SnapshotInfo]) -> None:
        from rich.table import Table
        from rich.text import Text

        if not found:
            self.info("no backups in this store yet")
            return
        table = Table()
        for column in ("id", "created", "size", "services", "description"):
            table.add_column(column, overflow="fold")
        for info in found:
            size = _size(info.size) if info.complete else Text("incomplete", style="red")
            table.add_row(
                info.id,
                info.created,
                size,
                ", ".join(info.services),
                Text(printable(info.description or info.problem)),
            )
        self.out.print(table)

    def backup_manifest(self, manifest: Manifest) -> None:
        from rich.text import Text

        def row(label: str, text: str, style: str = "") -> None:
            self.out.print(Text(f"  {label:<12} {printable(text)}", style=style))

        title = f"backup {manifest.id} of {manifest.target} ({manifest.project})"
        self.out.print(Text(printable(title)))
        row("created", f"{manifest.created} by ollama-stack {manifest.tool_version}")
        if manifest.description:
            row("description", manifest.description)
        for service in manifest.services:
            image = f" {service.image}" if service.image else ""
            said = [f"version {service.version}"] if service.version else []
            said += [f"schema {service.schema_revision}"] if service.schema_revision else []
            facts = "".join(f", {fact}" for fact in said)
            row("service", f"{service.name} ({service.kind}{image}, {service.state or '-'}{facts})")
        for volume in manifest.volumes:
            files = sum(1 for e in volume.entries if e.type == "file")
            size = sum(e.size for e in volume.entries)
            row("volume", f"{volume.service}:{volume.name} {files} files, {_size(size)}")
        row("installation", ", ".join(f.name for f in manifest.files))
        for item in manifest.excluded:
            row("left out", item, "dim")
        for item in manifest.not_covered:
            row("not covered", item, "yellow")

    def backup_pruned(self, report: PruneReport) -> None:
        from rich.text import Text

        for sid, why in report.kept.items():
            problem = report.damaged.get(sid)
            detail = f"damaged: {printable(problem)}" if problem else ", ".join(why)
            self.out.print(Text(f"  keep    {sid}  ({detail})", style="yellow" if problem else ""))
        for sid in report.removed:
            incomplete = "  (incomplete)" if sid in report.incomplete else ""
            self.out.print(Text(f"  remove  {sid}{incomplete}", style="dim"))
        for warning in report.warnings:
            self.note(warning)
        gone = f"{len(report.removed)} backups and {report.blobs_removed} blobs"
        if report.dry_run:
            self.info(f"dry run: would remove {gone}, {_size(report.bytes_freed)}; nothing changed")
        else:
            self.success(f"removed {gone}: {_size(report.bytes_freed)} freed")

    def backup_exported(self, done: Exported) -> None:
        """On stderr when the export itself went to stdout."""
        from rich.text import Text

        console = self.err if done.file == "-" or self.json_mode else self.out
        where = "stdout" if done.file == "-" else done.file
        line = f"backup {done.id} exported to {where}: {_size(done.size)}, {done.blobs} blobs"
        console.print(Text(self.prefix + line, style="green"))

    def backup_imported(self, done: Imported) -> None:
        self.success(
            f"backup {done.id} imported into {done.store}: {done.blobs_received} blobs "
            f"received ({_size(done.written)}), {done.blobs_present} already there"
        )

    # -- schema migration ---------------------------------------------------------

    def migration_plan(self, migration: Migration, target: str) -> None:
        """Which files change and how; never their values (config.yaml may hold tokens)."""
        from rich.text import Text

        console = self.err if self.json_mode else self.out
        for change in migration.files:
            line = f"  {change.path}: schema {change.schema} → {migration.schema}"
            console.print(Text(f"{line} ({'; '.join(change.changes)})"))
        if not migration.needed:
            self.info(f"{target} is at schema {migration.schema}; nothing to migrate")

    def migrated(self, migration: Migration, target: str) -> None:
        self.success(
            f"migrated {target} to schema {migration.schema} "
            f"({', '.join(c.path.name for c in migration.files)})"
        )
        self.info(f"  backup first: {migration.backup}")

    # -- extensions ---------------------------------------------------------------

    def extension_rows(self, rows: list[ExtensionRow], problems: list[str]) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table()
        for column in ("name", "kind", "enabled", "running", "on this host", "description"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(
                row.name,
                row.kind,
                "yes" if row.enabled else "no",
                Text("yes", style="green") if row.running else "no",
                Text(row.supported or "ok", style="yellow" if row.supported else ""),
                Text(printable(row.description)),
            )
        self.out.print(table)
        for problem in problems:  # a broken folder is reported, never fatal
            self.err.print(Text(f"skipped: {printable(problem)}", style="yellow"))

    def extension_info(self, document: dict) -> None:
        from rich.text import Text

        manifest = document["manifest"]

        def row(label: str, text: str, style: str = "") -> None:
            self.out.print(Text(f"  {label:<13} {printable(text)}", style=style))

        self.out.print(Text(f"{document['name']} {document['version']}: {document['description']}"))
        row("kind", f"{document['kind']} ({manifest['server']['transport']})")
        row("folder", document["folder"])
        row("enabled", "yes" if document["enabled"] else "no")
        row("running", "yes" if document["running"] else "no")
        row("platforms", ", ".join(manifest["platforms"]))
        refused = document["supported"]
        row("on this host", refused or "ok", "yellow" if refused else "")
        requires = manifest["requires"]
        needs = [f"{requires['memory_mb']} MiB memory"] if requires["memory_mb"] else []
        needs += ["an NVIDIA GPU"] if requires["gpu"] == "nvidia" else []
        needs += [f"secret {s}" for s in requires["secrets"]]
        row("requires", ", ".join(needs) or "nothing more")
        if document["secrets_missing"]:
            row("missing", ", ".join(document["secrets_missing"]), "yellow")
        if manifest["depends_on"]:
            row("depends on", ", ".join(manifest["depends_on"]))
        if document.get("port"):
            row("port", str(document["port"]))
        for volume in document.get("volumes", []):
            row("volume", volume)
        for tool in document["tools"]:
            row("tool", tool)

    # -- models -------------------------------------------------------------------

    def model_table(self, models: list[Model]) -> None:
        from rich.table import Table
        from rich.text import Text

        if not models:
            self.info("no models yet: `inv models.pull NAME`")
            return
        table = Table()
        for column in ("name", "size", "digest", "modified", "loaded"):
            table.add_column(column, overflow="fold")
        for model in models:
            table.add_row(
                Text(printable(model.name)),
                _size(model.size),
                model.digest[:12],
                model.modified[:19],
                Text("yes", style="green") if model.loaded else "no",
            )
        self.out.print(table)

    def model_details(self, document: dict) -> None:
        from rich.text import Text

        def row(label: str, text: str) -> None:
            self.out.print(Text(f"  {label:<13} {printable(text)}"))

        self.out.print(Text(printable(str(document.get("name", "")))))
        details = document.get("details") or {}
        for key in ("family", "parameter_size", "quantization_level", "format"):
            if details.get(key):
                row(key.replace("_", " "), str(details[key]))
        manifest = document.get("manifest") or {}
        parts = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
        for layer in (p for p in parts if isinstance(p, dict) and p.get("digest")):
            kind = str(layer.get("mediaType", "")).rsplit(".", 1)[-1]
            row("layer", f"{kind:<10} {_size(int(layer.get('size') or 0)):>10}  {layer['digest']}")

    def image_rows(self, rows: list[ImageRow]) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table()
        for column in ("service", "image", "id", "from"):
            table.add_column(column, overflow="fold")
        for row in rows:
            missing = Text("missing", style="yellow")
            table.add_row(row.service, row.image, row.id[7:19] or missing, row.origin)
        self.out.print(table)

    # -- fleets (--hosts) ---------------------------------------------------------

    def for_host(
        self,
        host: str,
        on_event: Callable[[str, Event], None],
        ask: HostAsk | None = None,
    ) -> HostDisplay:
        """What one host's task prints to, in a fleet: kept until the fleet's
        report (or a question shows it); its questions go to ``ask``."""
        terminal, width = self.out.is_terminal, self.out.width
        return HostDisplay(host, on_event, self.json_mode, terminal, width, ask)

    def fleet_view(self, hosts: list[str]) -> FleetView:
        return FleetView(hosts, self.err)

    def fleet_report(
        self, report: FleetReport, sections: Mapping[str, tuple[str, str]], command: str = ""
    ) -> None:
        """Each host's own output under its name, then one row per host (or,
        with --json, the one document), then which hosts failed and the
        command (as typed) to run again on them."""
        if self.json_mode:
            self.json(report.to_json())
        else:
            self._host_sections(report, sections)
            self.out.print(_fleet_table(report))
        if report.failed:
            self._fleet_failures(report, command or report.task)

    def fleet_question(self, questions: list[Question]) -> bool:
        """One round of a fleet's questions: each host's plan under its name and
        what it asks, then one question for them all."""
        from rich.text import Text

        for question in questions:
            self._host_section(question.host, *question.plan, always=True)
            self.err.print(Text(as_run(question.text), style="bold"))
        hosts = [q.host for q in questions]
        names = ", ".join(hosts[:-1]) + f" and {hosts[-1]}" if len(hosts) > 1 else hosts[0]
        these = "each of these" if len(hosts) > 1 else "this"
        default = all(q.default for q in questions)
        return self.confirm(f"yes to {these}, on {names}?", default=default)

    def _host_sections(self, report: FleetReport, sections: Mapping[str, tuple[str, str]]) -> None:
        for outcome in report.outcomes:
            self._host_section(outcome.host, *sections.get(outcome.host, ("", "")))

    def _host_section(self, host: str, out_text: str, err_text: str, always: bool = False) -> None:
        """A host's output under its name (with --json its stdout part is not
        shown: stdout holds the one document)."""
        from rich.text import Text

        if not (out_text or err_text or always):
            return
        out = self.err if self.json_mode else self.out
        out.print(Text(f"── {host} ──", style="bold"))
        for console, text in ((out, "" if self.json_mode else out_text), (self.err, err_text)):
            console.file.write(text)  # rendered already, for this terminal
            console.file.flush()

    def _fleet_failures(self, report: FleetReport, command: str) -> None:
        said = []
        for state in ("failed", "interrupted"):
            hosts = [o for o in report.failed if o.state == state]
            if hosts:
                named = ", ".join(f"{o.host} (exit {o.exit_code})" for o in hosts)
                said.append(f"{state} on {named}")
        again = ",".join(o.host for o in report.failed)
        self.error(
            f"{report.task} {'; '.join(said)}", f"again on those: inv {command} --hosts {again}"
        )


FLEET_MARK = {"finished": ("✓", "green"), "failed": ("✗", "red"), "interrupted": ("■", "yellow")}


def _others_line(others: OtherContainers) -> str:
    """One line: whose the project's other containers are, each holder with its remedy."""
    holders = others.holders()
    parts = []
    if others.adopted_by and not any(kind == "adopter" for kind, _, _ in holders):
        parts.append(_holder("adopter", others.adopter or "", others))  # its containers gone
    if holders:
        clauses = [
            f"{', '.join(names)}: {_holder(kind, id_, others)}" for kind, id_, names in holders
        ]
        parts.append(f"not this installation's: {'; '.join(clauses)}")
    return f"warning: {'; '.join(parts)}"


def _holder(kind: str, installation: str, others: OtherContainers) -> str:
    if kind == "adopter":
        return (
            f"the installation at {others.adopted_by} adopted this project (`stack.adopt`), "
            "run status there"
        )
    if kind == "by-hand":
        return "started by hand from our compose files, `inv stack.adopt` takes them over"
    if kind == "other-project":
        return "another compose project of the same name, not made by ollama-stack"
    return f"another installation (id {installation}), run status from its home"


def _fleet_table(report: FleetReport) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{report.task} on {len(report.outcomes)} hosts", title_justify="left")
    for column in ("host", "result", "time"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold")
    for outcome in report.outcomes:
        mark, style = FLEET_MARK[outcome.state]
        code = f" ({outcome.exit_code})" if outcome.exit_code else ""
        table.add_row(
            outcome.host,
            Text(f"{mark} {outcome.state}{code}", style=style),
            f"{outcome.seconds:.1f} s",
            Text(printable(as_run(outcome.error))),
        )
    return table


class HostDisplay(Display):
    """One host's display in a fleet. Its task runs as it would alone, but
    what it prints is kept (rendered as for this terminal) for the fleet's
    report, its --json document and error line are recorded, and its progress
    goes to the host's live line. What it asks goes to the fleet (``ask``),
    with what it printed before asking (its plan), which the fleet shows then."""

    def __init__(
        self,
        host: str,
        on_event: Callable[[str, Event], None],
        json_mode: bool,
        terminal: bool,
        width: int,
        ask: HostAsk | None = None,
    ) -> None:
        super().__init__(json_mode=json_mode)
        self.host = host
        self.document: Any = None
        self.error_line = ""
        self._on_event, self._ask = on_event, ask
        self._terminal, self._width = terminal, width
        self._kept = {"out": io.StringIO(), "err": io.StringIO()}
        self._shown = {"out": 0, "err": 0}  # how much of each a question has shown

    @cached_property
    def out(self) -> Console:
        return self._console("out")

    @cached_property
    def err(self) -> Console:
        return self._console("err")

    def _console(self, stream: str) -> Console:
        from rich.console import Console

        file = self._kept[stream]
        return Console(
            file=file,
            force_terminal=self._terminal,
            width=self._width,
            highlight=False,
            soft_wrap=True,
        )

    def captured(self) -> tuple[str, str]:
        """What the task printed that no question has shown: (stdout, stderr)."""
        out, err = (self._kept[s].getvalue()[self._shown[s] :] for s in ("out", "err"))
        return out, err

    def _mark_shown(self, plan: tuple[str, str]) -> None:
        """Once a question's round has shown ``plan`` above itself, and not
        before: a stop before the round leaves it for the report."""
        for stream, text in zip(("out", "err"), plan, strict=True):
            self._shown[stream] += len(text)

    def progress(self, event: Event) -> None:
        self._on_event(self.host, event)

    def json(self, document: Any) -> None:
        self.document = document

    def error(self, message: str, remedy: str = "") -> None:
        # Kept, not shown in the host's output: the report's row (or --json) says it.
        self.error_line = f"{message} — {remedy}" if remedy else message

    def confirm(self, question: str, default: bool = False) -> bool:
        if self._ask is None:
            from ollama_stack.common.errors import ConfigError

            raise ConfigError(
                f"not asking one host of a fleet: {question}", "give the flag that answers it"
            )
        self._on_event(self.host, Event("step", f"waits for the answer: {question}"))
        plan = self.captured()
        answer = self._ask(question, plan, default)  # raises on a stop: the plan stays unshown
        self._mark_shown(plan)  # the round showed it above the question
        self._on_event(self.host, Event("step", ""))  # its live line: answered
        return answer


class FleetView:
    """One live line per host while a fleet runs: what it does now and for
    how long; on a terminal only (elsewhere the report says it all). Hosts'
    threads call ``event``, ``started`` and ``ended``; rich redraws."""

    def __init__(self, hosts: list[str], console: Console) -> None:
        self._console = console
        self._lock = threading.Lock()
        self._lines = {host: _HostLine() for host in hosts}
        self._live: Any = None

    def __enter__(self) -> FleetView:
        if self._console.is_terminal:
            from rich.live import Live

            self._live = Live(
                self,
                console=self._console,
                refresh_per_second=8,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The live lines taken off the terminal (a question is asked there)."""
        if self._live is None:
            yield
            return
        self._live.stop()
        try:
            yield
        finally:
            self._live.start()

    def started(self, host: str) -> None:
        with self._lock:
            self._lines[host].began = time.monotonic()

    def event(self, host: str, event: Event) -> None:
        text = event.message
        if event.kind == "transfer" and event.total:
            text = f"{event.message} {100 * (event.done or 0) // event.total}%"
        with self._lock:
            self._lines[host].doing = text

    def ended(self, outcome: HostOutcome) -> None:
        with self._lock:
            line = self._lines[outcome.host]
            line.state, line.took = outcome.state, outcome.seconds
            line.doing = outcome.error

    def __rich__(self) -> Any:
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, style="bold")
        grid.add_column(no_wrap=True, justify="right")
        grid.add_column(no_wrap=True, overflow="ellipsis")
        with self._lock:
            for host, line in self._lines.items():
                if line.state:
                    mark, style = FLEET_MARK[line.state]
                    marker: Any = Text(mark, style=style)
                    took = f"{line.took:.1f} s"
                elif line.began:
                    marker = line.spinner or Spinner("dots")
                    line.spinner = marker
                    took = f"{time.monotonic() - line.began:.1f} s"
                else:
                    marker, took = Text("·", style="dim"), "waiting"
                doing = Text(printable(as_run(line.doing)), style="dim")
                grid.add_row(marker, host, took, doing)
        return grid


@dataclass
class _HostLine:
    began: float = 0.0
    doing: str = ""
    state: str = ""
    took: float = 0.0
    spinner: Any = None


def printable(text: str) -> str:
    """Text from a backup store (a description, a version an image gave) with
    control characters shown as escapes: a crafted store must not drive the
    terminal (rich passes ESC through)."""
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in text)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"
