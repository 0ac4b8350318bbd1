"""stack/display.py: verbatim logs, clean JSON on stdout, one-line errors on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ollama_stack.stack.display import Display
from ollama_stack.stack.doctor import Check
from ollama_stack.stack.events import Event, emit
from ollama_stack.stack.health import ProbeResult
from ollama_stack.stack.lifecycle import OtherContainers, ServiceStatus, StatusReport


def test_log_lines_are_printed_verbatim(capsys):
    lines = [
        "ollama-1  | [GIN] 2026/11/25 - 10:00:00 | 200 | GET [/x] [bold]not bold",
        "webui-1   | [red]still plain[/red] :smile: \\[escaped]",
        "mcp-1     | " + "long " * 60,
        "",
    ]
    Display().log_lines(iter(lines))
    captured = capsys.readouterr()
    assert captured.out == "".join(line + "\n" for line in lines)
    assert captured.err == ""


def test_text_is_verbatim(capsys):
    yaml_text = "services:\n  webui:\n    image: '[bold]x'\n"
    Display().text(yaml_text)
    assert capsys.readouterr().out == yaml_text + "\n"


def test_json_prints_one_valid_document_on_stdout_only(capsys):
    document = {"target": "local", "path": Path("/x/y"), "services": [{"name": "[/x]"}]}
    Display(json_mode=True).json(document)
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "target": "local",
        "path": "/x/y",
        "services": [{"name": "[/x]"}],
    }
    assert captured.err == ""


def test_json_mode_keeps_messages_off_stdout(capsys):
    out = Display(json_mode=True)
    out.info("working [bold]on it")
    out.success("done")
    out.progress(Event("step", "starting ollama"))
    out.json({"ok": True})
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"ok": True}
    assert "working [bold]on it" in captured.err
    assert "done" in captured.err
    assert "starting ollama" in captured.err


def test_info_goes_to_stdout_without_json_mode(capsys):
    Display().info("  webui      http://127.0.0.1:8080")
    captured = capsys.readouterr()
    assert captured.out == "  webui      http://127.0.0.1:8080\n"
    assert captured.err == ""


def test_error_is_one_line_on_stderr(capsys):
    Display().error("port 8080 is in use by [nginx]", "free it " + "x" * 120)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: port 8080 is in use by [nginx] — free it {'x' * 120}\n"


def test_error_without_remedy(capsys):
    Display().error("plain")
    assert capsys.readouterr().err == "error: plain\n"


def test_progress_uses_the_prefix_and_marks_output(capsys):
    out = Display(prefix="[box] ")
    emit(out.progress, "step", "pulling")
    emit(out.progress, "output", "Container x Started")
    emit(out.progress, "service", "webui healthy", service="webui", state="healthy")
    emit(None, "step", "nobody listens")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "[box] • pulling",
        "[box]   Container x Started",
        "[box] • webui healthy",
    ]


def test_health_table_lists_each_service(capsys):
    Display().health(
        {
            "ollama": ProbeResult("ollama", "healthy", "/api/version OK", 3.2, "0.5.7"),
            "webui": ProbeResult("webui", "unhealthy", "nothing answers [/x]", 1.0),
        }
    )
    out = capsys.readouterr().out
    assert "ollama" in out and "healthy" in out and "3 ms" in out
    assert "nothing answers [/x]" in out


def test_status_when_not_installed_suggests_install(capsys):
    Display().status(StatusReport("local", "ollama-stack", installed=False, platform=None))
    out = capsys.readouterr().out
    assert "not installed on local" in out
    assert "inv stack.install" in out


def running_report() -> StatusReport:
    report = StatusReport("box", "lab", installed=True, platform="cpu")
    for name, port in (("ollama", 11434), ("webui", 8080), ("mcp_proxy", 8200)):
        report.services.append(
            ServiceStatus(
                name,
                "docker",
                "running",
                "healthy",
                f"http://127.0.0.1:{port}",
                f"ollama-stack-standin/{name}:test",
                "Up 5 minutes (healthy)",
            )
        )
    return report


def test_status_table(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    Display().status(running_report())
    out = capsys.readouterr().out
    assert out.startswith("lab on box\n")
    for name, port in (("ollama", 11434), ("webui", 8080), ("mcp_proxy", 8200)):
        row = next(line for line in out.splitlines() if f" {name} " in line)
        assert "running" in row and "healthy" in row
        assert f"http://127.0.0.1:{port}" in row
        assert f"ollama-stack-standin/{name}:test" in row
        assert "5 minutes" in row and "(healthy)" not in row
    assert "Stopped" not in out


def test_status_of_a_stopped_stack_says_how_to_start(capsys):
    report = StatusReport("local", "lab", installed=True, platform="cpu")
    report.services.append(
        ServiceStatus("webui", "docker", "exited", "unknown", "http://127.0.0.1:8080", "w", "")
    )
    Display().status(report)
    assert "Stopped. Start with:  inv stack.start" in capsys.readouterr().out


def test_status_urls_stay_whole_at_80_columns(capsys):
    Display().status(running_report())
    out = capsys.readouterr().out
    for port in (11434, 8080, 8200):
        assert f"http://127.0.0.1:{port}" in out


def test_doctor_lines_show_remedies_only_for_problems(capsys):
    Display().doctor(
        [
            Check("docker", "pass", "engine 27", "never shown"),
            Check("disk", "warn", "12.0 GiB free", "larger models need more"),
            Check("port 8080", "fail", "held by nginx", "free it"),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("PASS ") and "never shown" not in lines[0]
    assert lines[1].startswith("WARN ") and lines[1].endswith("— larger models need more")
    assert lines[2].startswith("FAIL ") and lines[2].endswith("held by nginx — free it")


@pytest.mark.parametrize(
    ("argv0", "said"),
    [
        (
            "/venv/bin/ollama-stack",
            "run `ollama-stack stack.install` first; then ollama-stack stack.start",
        ),
        ("/venv/bin/inv", "run `inv stack.install` first; then inv stack.start"),
    ],
)
def test_hints_name_the_program_the_user_ran(monkeypatch, argv0, said):
    from ollama_stack.stack.display import as_run

    monkeypatch.setattr("sys.argv", [argv0, "stack.status"])
    assert as_run("run `inv stack.install` first; then inv stack.start") == said
    assert as_run("see /usr/bin/inv stack.x and invoke stack.y") == (
        "see /usr/bin/inv stack.x and invoke stack.y"
    )


def test_text_from_a_backup_store_cannot_drive_the_terminal(capsys):
    from ollama_stack.backups.store import SnapshotInfo

    crafted = "evil\x1b]0;title\x07\x1b[2J\x9b"
    Display().backup_list([SnapshotInfo("20261203T000000Z-abcdef", "now", True, 1, crafted, [])])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "\\x1b]0;title" in out


@pytest.mark.parametrize(
    ("others", "said", "stopped_hint"),
    [
        (
            OtherContainers({"lab-webui-1": "a1"}, adopted_by="/srv/new-home", adopter="a1"),
            "warning: not this installation's: lab-webui-1: the installation at /srv/new-home "
            "adopted this project (`stack.adopt`), run status there",
            False,
        ),
        (
            OtherContainers({}, adopted_by="/srv/new-home", adopter="a1"),
            "warning: the installation at /srv/new-home adopted this project (`stack.adopt`), "
            "run status there",
            False,
        ),
        (
            OtherContainers({"lab-webui-1": "unmanaged", "lab-db-1": "unlabelled"}),
            "warning: not this installation's: lab-db-1: another compose project of the same "
            "name, not made by ollama-stack; lab-webui-1: started by hand from our compose "
            "files, `inv stack.adopt` takes them over",
            False,
        ),
        (
            OtherContainers({"lab-db-1": "unlabelled"}),
            "warning: not this installation's: lab-db-1: another compose project of the same "
            "name, not made by ollama-stack",
            True,  # `stack.start` is not refused for those
        ),
        (
            OtherContainers({"lab-ollama-1": "a1", "lab-webui-1": "a1", "lab-x-1": "b2"}),
            "warning: not this installation's: lab-ollama-1, lab-webui-1: another installation "
            "(id a1), run status from its home; lab-x-1: another installation (id b2), run "
            "status from its home",
            False,
        ),
    ],
)
def test_status_says_whose_containers_hold_the_project(capsys, others, said, stopped_hint):
    report = StatusReport("local", "lab", installed=True, platform="cpu", others=others)
    report.services.append(
        ServiceStatus("webui", "docker", "absent", "unknown", "http://127.0.0.1:8080", "w", "")
    )
    Display().status(report)
    captured = capsys.readouterr()
    assert said in " ".join(captured.err.split())  # as wrapped at the terminal's width
    assert ("Start with" in captured.out) == stopped_hint
