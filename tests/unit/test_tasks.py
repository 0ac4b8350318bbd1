"""tasks/: the error choke point, the console script, and tasks that need no engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import invoke
import pytest
import yaml
from invoke import Exit

from ollama_stack.common.errors import (
    ConfigError,
    DockerUnavailable,
    ExitCode,
    HealthTimeout,
    PortInUse,
    StackError,
)
from ollama_stack.stack import config
from ollama_stack.tasks import _base, ns
from ollama_stack.tasks.program import program

from .helpers import mcpo_routes, ollama_routes, webui_routes

CLI = Path(sys.executable).parent / "ollama-stack"


def all_task_names() -> list[str]:
    return [
        f"{collection.name}.{name}"
        for collection in ns.collections.values()
        for name in collection.tasks
    ]


def run_program(*argv: str) -> int:
    """Run the console script in-process; return its exit code."""
    try:
        program.run(["ollama-stack", *argv], exit=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# -- guarded -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("bad config: platform='gpu'", "fix it"), 2),
        (DockerUnavailable("Docker is not reachable", "start it"), 3),
        (PortInUse("port 8080 is in use", "free it"), 5),
        (HealthTimeout("not healthy after 5 s", "see logs"), 7),
        (StackError("custom", code=ExitCode.DOCKER_FAILED), 11),
    ],
)
def test_guarded_turns_stack_errors_into_exit_codes(capsys, error, code):
    @_base.guarded
    def task(c):
        raise error

    with pytest.raises(Exit) as info:
        task(invoke.Context())
    assert info.value.code == code
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = stderr_lines(captured.err)
    assert len(lines) == 1
    expected = f"error: {error.message}" + (f" — {error.remedy}" if error.remedy else "")
    assert lines[0] == expected
    assert "Traceback" not in captured.err


def test_guarded_keeps_a_long_message_on_one_line(capsys):
    message = "bad config: " + "x" * 150 + " (from environment)"

    @_base.guarded
    def task(c):
        raise ConfigError(message, "fix that value; `inv health.doctor` lists the checks")

    with pytest.raises(Exit):
        task(invoke.Context())
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert message in lines[0]


def test_guarded_prints_markup_in_messages_literally(capsys):
    @_base.guarded
    def task(c):
        raise DockerUnavailable("daemon said [bold]no[/bold] and [/x]", "")

    with pytest.raises(Exit):
        task(invoke.Context())
    assert capsys.readouterr().err.strip() == "error: daemon said [bold]no[/bold] and [/x]"


def test_guarded_turns_ctrl_c_into_130(capsys):
    @_base.guarded
    def task(c):
        raise KeyboardInterrupt

    with pytest.raises(Exit) as info:
        task(invoke.Context())
    assert info.value.code == 130
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0].startswith("error: interrupted")


def test_guarded_passes_results_and_arguments_through(capsys):
    @_base.guarded
    def task(c, a, b=0):
        return (a, b)

    assert task(invoke.Context(), 1, b=2) == (1, 2)
    assert task.__name__ == "task"
    assert capsys.readouterr().err == ""


def test_guarded_does_not_hide_bugs():
    @_base.guarded
    def task(c):
        raise ValueError("a real bug")

    with pytest.raises(ValueError, match="a real bug"):
        task(invoke.Context())


def test_every_task_is_guarded():
    for collection in ns.collections.values():
        for name, task in collection.tasks.items():
            assert task.body.__wrapped__, f"{collection.name}.{name} is not guarded"
            assert task.body.__code__ is _base.guarded(lambda c: None).__code__, name


# -- helpers -------------------------------------------------------------------------------


def test_split_names():
    assert _base.split_names("ollama, webui,,mcp_proxy ") == ["ollama", "webui", "mcp_proxy"]
    assert _base.split_names("ollama webui") == ["ollama", "webui"]
    assert _base.split_names("") == []
    assert _base.split_names(None) == []


# -- the console script, in process --------------------------------------------------------


def test_list_shows_every_task(capsys):
    program.run(["ollama-stack", "--list"], exit=False)
    out = capsys.readouterr().out
    names = all_task_names()
    assert len(names) >= 11
    listed = {
        line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.split()
    }
    assert set(names) <= listed


def test_only_the_tasks_named_are_parsed_and_help_still_finds_any(capsys):
    program.run(["ollama-stack", "--help", "stack.status"], exit=False)
    assert "--json" in capsys.readouterr().out
    assert list(program.parser.contexts) == ["stack.status"]
    program.run(["ollama-stack", "--help", "update"], exit=False)  # a default task's alias
    assert "--extensions" in capsys.readouterr().out
    program.run(["ollama-stack", "--help"], exit=False)
    assert "Core options" in capsys.readouterr().out and not program.parser.contexts
    assert run_program("stack.nosuch") == 1
    assert "No idea what 'stack.nosuch' is" in capsys.readouterr().err


@pytest.mark.parametrize(("given", "seen"), [(None, "__all__"), ("logfire", "logfire")])
def test_the_console_script_turns_pydantic_plugins_off_unless_told(monkeypatch, given, seen):
    # pydantic scans every distribution's entry points at its first model.
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", given or "")  # put back after the test
    if given is None:
        monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS")
    found: list[str | None] = []
    monkeypatch.setattr(
        program, "run", lambda: found.append(os.environ.get("PYDANTIC_DISABLE_PLUGINS"))
    )
    from ollama_stack.tasks.program import main

    main()
    assert found == [seen]


@pytest.mark.parametrize(("flag", "writes"), [(None, True), ("1", False)])
def test_the_console_script_writes_bytecode_unless_python_is_told_not_to(flag, writes):
    # invoke turns it off for a project's tasks.py; our modules, imported
    # after it parsed the command line, were then compiled on every run.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if flag:
        env["PYTHONDONTWRITEBYTECODE"] = flag
    code = (
        "import sys; from ollama_stack.tasks.program import program; "
        "program.run(['ollama-stack', '--list'], exit=False); print(not sys.dont_write_bytecode)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == str(writes)


def test_what_status_and_the_reads_import_leaves_out_what_they_do_not_use(closed_port):
    # Each of these cost a few ms of every status: the registry client (and
    # urllib.request), the update records, the host checks, and the idna codec
    # getaddrinfo loads for a str host name; zstandard, of every backup.list.
    code = f"""
import sys
from ollama_stack.stack import lifecycle, links, runtime
from ollama_stack.backups import store
from ollama_stack.stack.config import Settings
from ollama_stack.stack.hosts.target import Target
Settings.validated()  # validates the image references
try:
    Target(None).dial("127.0.0.1", {closed_port}, 1.0).close()
except OSError:
    pass
unused = ("ollama_stack.stack.update.registry", "ollama_stack.stack.update.records",
          "ollama_stack.stack.hosts.hostcheck", "urllib.request", "encodings.idna", "zstandard")
print(",".join(name for name in unused if name in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_install_then_refuse_then_force(capsys, stack_home):
    assert run_program("stack.install", "--project", "lab", "--bind", "0.0.0.0") == 0
    captured = capsys.readouterr()
    assert "installed lab for local" in captured.out
    paths = config.InstallPaths.for_target(None)
    secrets = config.read_secrets(paths)
    settings = config.load_settings(paths, environ={})
    assert (settings.project, settings.bind) == ("lab", "0.0.0.0")

    assert run_program("stack.install") == ExitCode.ALREADY_INSTALLED
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "already installed" in lines[0]

    assert run_program("stack.install", "--force", "--platform", "cpu") == 0
    assert "kept secrets: WEBUI_SECRET_KEY, MCPO_API_KEY" in capsys.readouterr().out
    assert config.read_secrets(paths) == secrets
    assert config.load_settings(paths, environ={}).platform == "cpu"


def test_install_for_a_remote_writes_under_remotes(capsys, stack_home):
    assert run_program("stack.install", "--remote", "user@box:2222") == 0
    assert "--remote user@box:2222" in capsys.readouterr().out
    assert config.InstallPaths.for_target("user@box:2222").installed
    assert not config.InstallPaths.for_target(None).installed


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["stack.install", "--platform", "gpu"], "platform='gpu'"),
        (["stack.install", "--bind", "nope"], "bind='nope'"),
        (["stack.install", "--project", "Bad Name"], "project='Bad Name'"),
        (["stack.start", "--pull", "sometimes"], "--pull 'sometimes'"),
        (["stack.logs", "--services", "ollama,postgres"], "unknown service postgres"),
    ],
)
def test_bad_flags_exit_2_with_one_line(capsys, argv, needle):
    assert run_program(*argv) == ExitCode.CONFIG
    captured = capsys.readouterr()
    lines = stderr_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert needle in lines[0]
    assert captured.out == ""
    assert not config.InstallPaths.for_target(None).installed


def test_invoke_yaml_in_the_working_directory_is_the_lowest_layer(capsys, tmp_path, monkeypatch):
    (tmp_path / "invoke.yaml").write_text("ollama_stack:\n  project: from-invoke\n  bind: ::1\n")
    monkeypatch.setenv("OLLAMA_STACK_BIND", "0.0.0.0")
    assert run_program("stack.install") == 0
    assert "installed from-invoke" in capsys.readouterr().out  # invoke.yaml was read
    # ...but not copied into config.yaml, a higher layer: later invoke.yaml edits still count.
    paths = config.InstallPaths.for_target(None)
    assert "from-invoke" not in paths.config_file.read_text()
    assert "0.0.0.0" not in paths.config_file.read_text()  # neither is the environment
    settings = config.load_settings(paths, {"project": "edited"}, environ={})
    assert settings.project == "edited"


def test_bad_value_in_invoke_yaml_is_blamed_on_it(capsys, tmp_path):
    (tmp_path / "invoke.yaml").write_text("ollama_stack:\n  platform: gpu\n")
    assert run_program("stack.install") == ExitCode.CONFIG
    assert "(from invoke.yaml)" in capsys.readouterr().err


def test_malformed_invoke_yaml_exits_2(capsys, tmp_path):
    (tmp_path / "invoke.yaml").write_text("ollama_stack: [unclosed\n")
    assert run_program("--list") == 2
    assert "cannot read ./invoke.yaml" in capsys.readouterr().err


def test_install_does_not_freeze_the_invoke_yaml_layer(capsys, tmp_path):
    (tmp_path / "invoke.yaml").write_text("ollama_stack:\n  ports:\n    webui: 3000\n")
    assert run_program("stack.install") == 0
    document = yaml.safe_load(config.InstallPaths.for_target(None).config_file.read_text())
    assert "ports" not in (document or {})


@pytest.fixture
def webui_reaches_ollama(pow_calls):
    """The engine answers the exec in the webui container: Ollama's /api/version."""
    pow_calls.stdout = '{"version": "0.5.7"}'
    return pow_calls


def test_health_check_json_against_real_services(
    capsys, http_service, monkeypatch, webui_reaches_ollama
):
    servers = {
        "OLLAMA": http_service(ollama_routes()),
        "WEBUI": http_service(webui_routes()),
        "MCP_PROXY": http_service(mcpo_routes()),
    }
    for key, server in servers.items():
        monkeypatch.setenv(f"OLLAMA_STACK_PORTS_{key}", str(server.port))
    assert run_program("health.check", "--json") == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["target"] == "local"
    assert document["healthy"] is True
    assert [s["service"] for s in document["services"]] == ["ollama", "webui", "mcp_proxy"]
    assert document["services"][0]["version"] == "0.5.7"
    link = next(argv for argv, _ in webui_reaches_ollama.calls if "exec" in argv)
    assert link[link.index("exec") :][:3] == ["exec", "-T", "webui"]


def test_health_check_fails_webui_that_cannot_reach_ollama(
    capsys, http_service, monkeypatch, pow_calls
):
    from python_on_whales.exceptions import DockerException

    for key, routes in (("OLLAMA", ollama_routes()), ("WEBUI", webui_routes())):
        monkeypatch.setenv(f"OLLAMA_STACK_PORTS_{key}", str(http_service(routes).port))
    monkeypatch.setenv("OLLAMA_STACK_PORTS_MCP_PROXY", str(http_service(mcpo_routes()).port))
    refused = "curl: (7) Failed to connect to ollama port 11434: Connection refused"

    def engine(argv: list[str]) -> str:
        raise DockerException(argv, 7, b"", refused.encode())

    pow_calls.on_run = engine
    assert run_program("health.check", "--json") == 1
    services = {s["service"]: s for s in json.loads(capsys.readouterr().out)["services"]}
    assert services["ollama"]["health"] == "healthy"  # from this machine, Ollama answers
    assert services["webui"]["health"] == "reachable"
    assert services["webui"]["detail"] == (
        f"cannot reach Ollama at http://ollama:11434 from its container: {refused}"
    )


def test_health_check_exits_1_when_a_service_is_down(
    capsys, http_service, monkeypatch, closed_port, webui_reaches_ollama
):
    monkeypatch.setenv("OLLAMA_STACK_PORTS_OLLAMA", str(http_service(ollama_routes()).port))
    monkeypatch.setenv("OLLAMA_STACK_PORTS_WEBUI", str(http_service(webui_routes()).port))
    monkeypatch.setenv("OLLAMA_STACK_PORTS_MCP_PROXY", str(closed_port))
    assert run_program("health.check", "--json", "--timeout", "1") == 1
    document = json.loads(capsys.readouterr().out)
    assert document["healthy"] is False
    health = {s["service"]: s["health"] for s in document["services"]}
    assert health == {"ollama": "healthy", "webui": "healthy", "mcp_proxy": "unhealthy"}


def test_doctor_reports_a_bad_config_as_a_failed_check(capsys, monkeypatch):
    monkeypatch.setenv("OLLAMA_STACK_PORTS_WEBUI", "70000")
    assert run_program("health.doctor", "--json") == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert document["checks"][0]["name"] == "config"
    assert document["checks"][0]["verdict"] == "fail"
    assert "ports.webui='70000'" in document["checks"][0]["detail"]


# -- the console script, as a process -------------------------------------------------------


def cli_env(stack_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_STACK_")}
    env.pop("COLUMNS", None)
    env["OLLAMA_STACK_HOME"] = str(stack_home)
    return env


def test_cli_list_in_a_process(stack_home, tmp_path):
    done = subprocess.run(
        [str(CLI), "--list"],
        capture_output=True,
        text=True,
        env=cli_env(stack_home),
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for name in all_task_names():
        assert f"  {name} " in done.stdout or done.stdout.rstrip().endswith(name)


def test_cli_bad_config_exits_2_with_one_line(stack_home, tmp_path):
    env = cli_env(stack_home) | {"OLLAMA_STACK_PLATFORM": "gpu"}
    done = subprocess.run(
        [str(CLI), "stack.status"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    lines = stderr_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: bad config: platform='gpu' is not allowed")
    assert "(from environment)" in lines[0]


# -- malformed flag values ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("stack.start", "--timeout", "abc"),
        ("stack.start", "--timeout", "-5"),
        ("stack.restart", "--timeout", "inf"),
        ("health.check", "--timeout", "0"),
        ("health.check", "--json", "--timeout", "nan"),
        ("health.wait", "--timeout", "soon"),
        ("update.apply", "--timeout", "1e999"),
        ("update.rollback", "--timeout", ""),
    ],
)
def test_a_malformed_timeout_is_one_line_and_exit_2(capsys, argv):
    assert run_program(*argv) == 2
    captured = capsys.readouterr()
    lines = stderr_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"error: --timeout {argv[-1]!r} is not a number of seconds")
    assert "Traceback" not in captured.err
    if "--json" in argv:  # the failure is that task's one JSON document too
        assert json.loads(captured.out)["exit_code"] == 2
    else:
        assert captured.out == ""
    assert not config.InstallPaths.for_target(None).root.joinpath("state").exists()


def test_zero_timeout_means_the_setting_where_that_is_said(capsys):
    assert run_program("stack.start", "--timeout", "x") == 2
    assert "(0: the start_timeout setting)" in capsys.readouterr().err


# -- read-only tasks write nothing ------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root with its contents and modification time (tests run as root,
    so modes prove nothing)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "argv",
    [
        ("stack.status", "--json"),
        ("stack.config",),
        ("stack.logs", "-s", "webui"),
        ("health.check", "--json"),
        ("health.doctor", "--json"),
        ("update.check", "--json"),
    ],
)
def test_read_only_tasks_leave_the_installation_untouched(capsys, monkeypatch, pow_calls, argv):
    monkeypatch.setenv("OLLAMA_STACK_PLATFORM", "cpu")
    paths = config.InstallPaths.for_target(None)
    config.install(paths, {})
    # as after a start: the env file and the state exist
    config.write_runtime_env(paths, {"X": "1"})
    config.write_state(paths, {"platform": "cpu", "platform_reason": "set"})
    pow_calls.on_run = lambda argv: "{}" if "info" in argv else ""
    before = snapshot(paths.root)
    run_program(*argv)
    capsys.readouterr()
    assert snapshot(paths.root) == before


# -- logs of services we do not run -----------------------------------------------------------


def test_logs_of_a_native_ollama_say_where_they_are(capsys, monkeypatch, pow_calls):
    monkeypatch.setenv("OLLAMA_STACK_SERVICES_OLLAMA_TYPE", "native-api")
    monkeypatch.setenv("OLLAMA_STACK_SERVICES_OLLAMA_URL", "http://127.0.0.1:11434")
    pow_calls.lines = [("stdout", b"webui-1  | hello [/x] not markup\n")]
    assert run_program("stack.logs") == 0
    captured = capsys.readouterr()
    assert captured.out == "webui-1  | hello [/x] not markup\n"
    assert stderr_lines(captured.err) == [
        "ollama is not run by this stack (native-api at http://127.0.0.1:11434): its logs are "
        "on the host that runs it (Linux: `journalctl -u ollama`; macOS: "
        "~/.ollama/logs/server.log)"
    ]
    logs_argv = next(argv for argv, _ in pow_calls.calls if "logs" in argv)
    assert logs_argv[logs_argv.index("logs") :] == ["logs", "--no-color", "webui", "mcp_proxy"]


def test_logs_of_only_a_remote_service_run_no_docker(capsys, monkeypatch, pow_calls):
    monkeypatch.setenv("OLLAMA_STACK_SERVICES_WEBUI_TYPE", "remote-api")
    monkeypatch.setenv("OLLAMA_STACK_SERVICES_WEBUI_URL", "https://chat.example")
    assert run_program("stack.logs", "-s", "webui") == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "webui is not run by this stack (remote-api at https://chat.example)" in captured.err
    assert pow_calls.calls == []


def test_the_install_hint_quotes_the_remote_for_copy_and_paste(capsys):
    assert run_program("stack.install", "--remote", "ops@box:2222") == 0
    out = capsys.readouterr().out
    assert "stack.start --remote ops@box:2222 " in out


def test_a_shell_word_for_a_remote_is_refused(capsys):
    assert run_program("stack.install", "--remote", "x;touch /tmp/pwned") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad --remote 'x;touch /tmp/pwned'")
    assert not config.stack_home().joinpath("remotes").exists()


def test_the_same_option_has_the_same_short_flag_in_every_task(capsys):
    """Read from each task's --help (get_arguments() consumes a task's help texts)."""
    import re

    from ollama_stack.tasks import ns
    from ollama_stack.tasks._base import SHORT_FLAGS

    seen = 0
    for name in ns.task_names:
        assert run_program("--help", name) == 0  # `TASK --help` would be a positional's value
        for line in capsys.readouterr().out.splitlines():
            flags = re.findall(
                r"(?<![\w-])(-[a-zA-Z]|--[a-z][a-z-]*)\b",
                line.split("  ")[1:2][0] if line.startswith("  -") else "",
            )
            if not flags:
                continue
            long = next(f for f in flags if f.startswith("--")).removeprefix("--")
            shorts = [f[1] for f in flags if len(f) == 2]
            key = long.replace("-", "_")
            assert shorts == ([SHORT_FLAGS[key]] if key in SHORT_FLAGS else []), (name, line)
            seen += bool(shorts)
    assert seen > 20  # every task has --remote at least


def test_every_seconds_flag_says_so_in_its_help(capsys):
    assert run_program("update.apply", "--help") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "-t, --timeout SECONDS to wait for health before rolling back" in out


# -- every task refuses bad input the same way ------------------------------------------------

BAD_REMOTES = ["x;touch /tmp/pwned", "ssh://127.0.0.1", "@", "-oProxyCommand=id", "u@h:99999"]
TASKS_WITH_JSON = {"stack.status", "health.check", "health.doctor", "update.check", "update.apply"}
BAD_INPUTS = [
    *[(task, "--remote", remote) for task in (
        "stack.install", "stack.start", "stack.stop", "stack.restart", "stack.status",
        "stack.logs", "stack.config", "stack.uninstall", "stack.migrate", "health.check",
        "health.wait",
        "update.check", "update.apply", "update.rollback", "dev.standins",
    ) for remote in BAD_REMOTES],
    ("stack.install", "--project", "Bad Name!"),
    ("stack.install", "--project", ""),
    ("stack.install", "--bind", "0.0.0.x"),
    ("stack.install", "--platform", "gpu"),
    ("stack.start", "--pull", "sometimes"),
    ("stack.start", "--platform", "$(id)"),
    ("stack.logs", "--tail", "-5"),
    ("stack.logs", "--tail", "ten"),
    ("stack.logs", "--services", "ollama,../etc"),
    ("update.check", "--services", "postgres"),
    ("update.apply", "--services", "webui;id"),
    ("dev.standins", "--version", "bad tag!"),
    ("dev.standins", "--mirror", "ftp://mirror"),
]  # fmt: skip


@pytest.mark.parametrize(("task", "flag", "value"), BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, pow_calls, task, flag, value):
    home = config.stack_home()
    before = snapshot(home)
    args = [task, flag, value] + (["--json"] if task in TASKS_WITH_JSON else [])
    assert run_program(*args) == 2
    captured = capsys.readouterr()
    lines = stderr_lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    assert snapshot(home) == before
    assert not [argv for argv, _ in pow_calls.calls if "up" in argv or "build" in argv]
    if task in TASKS_WITH_JSON:
        document = json.loads(captured.out)
        assert document["ok"] is False and document["exit_code"] == 2
    else:
        assert captured.out == ""


# -- credentials in a URL are never shown -------------------------------------------------------

CREDENTIALS_URL = "http://admin:S3cretPass@127.0.0.1:9"


def test_credentials_in_a_service_url_are_never_shown(capsys, monkeypatch, pow_calls):
    monkeypatch.setenv("OLLAMA_STACK_SERVICES_OLLAMA_TYPE", "remote-api")
    monkeypatch.setenv("OLLAMA_STACK_SERVICES_OLLAMA_URL", CREDENTIALS_URL)
    for other in ("WEBUI", "MCP_PROXY"):  # no image to inspect: nothing here asks Docker
        monkeypatch.setenv(f"OLLAMA_STACK_SERVICES_{other}_TYPE", "remote-api")
        monkeypatch.setenv(f"OLLAMA_STACK_SERVICES_{other}_URL", "http://127.0.0.1:9")
    assert run_program("stack.install") == 0
    for argv in (("stack.status", "--json"), ("stack.status",), ("update.check", "--json")):
        run_program(*argv)
        captured = capsys.readouterr()
        assert "S3cretPass" not in captured.out + captured.err, argv
        assert "***@127.0.0.1:9" in captured.out, argv
    monkeypatch.setenv("OLLAMA_STACK_SERVICES_OLLAMA_URL", "ftp://admin:S3cretPass@h")
    assert run_program("stack.status") == 2
    err = capsys.readouterr().err
    assert "S3cretPass" not in err and "ftp://***@h" in err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:p@h:1/x", "http://***@h:1/x"),
        ("https://token@h", "https://***@h"),
        ("http://h:1", "http://h:1"),
        ("http://[::1]:8080/p?q=1", "http://[::1]:8080/p?q=1"),
    ],
)
def test_redact_url(url, shown):
    assert config.redact_url(url) == shown


def test_our_children_are_found_for_sigterm(tmp_path):
    """The SIGTERM handler interrupts the processes we started (compose), and only those."""
    from ollama_stack.tasks._base import _children

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in _children()
        assert os.getppid() not in _children()
    finally:
        child.kill()
        child.wait()


def test_json_for_a_bad_flag_follows_the_task_that_has_it(capsys):
    # two tasks in one command line: only the one given --json answers in JSON
    assert run_program("health.wait", "--timeout", "soon", "stack.status", "--json") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert stderr_lines(captured.err) == [
        "error: --timeout 'soon' is not a number of seconds — give more than 0"
    ]


def test_remote_is_declared_once_for_every_task():
    """No task body declares --remote; StackTask gives it to all of them."""
    import inspect

    from ollama_stack.tasks import ns

    for name in ns.task_names:
        task = ns[name]
        assert "remote" not in inspect.signature(task.body).parameters, name
        assert any(a.name == "remote" for a in task.get_arguments()), name


# -- backup.* ------------------------------------------------------------------------------


def test_backup_list_of_an_empty_store_is_an_empty_json_array(capsys, stack_home):
    assert run_program("backup.list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert not (stack_home / "backups").exists()  # listing creates nothing


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backup.create", "--models", "some"], "--models 'some' is not one of"),
        (["backup.show", "--id", ""], "backup.show needs a backup id"),
        (["backup.verify", "--help"], "reads the word after it as a backup id"),
        (["backup.show", "../../etc"], "'../../etc' is not a backup id"),
        (["backup.verify", "20261203T000000Z-abcdef"], "no backup 20261203T000000Z-abcdef in"),
    ],
)
def test_backup_tasks_refuse_bad_input_in_one_line(capsys, stack_home, argv, message):
    assert run_program(*argv) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.startswith("error: ") and message in line


# -- schema versions and stack.migrate ---------------------------------------------------------


def old_installation(remote: str | None = None) -> config.InstallPaths:
    """An installation as releases before schema versions left it: no `schema` anywhere."""
    paths = config.InstallPaths.for_target(remote)
    config.install(paths, {"platform": "cpu"})
    paths.config_file.write_text("# my note\nplatform: cpu\nports:\n  webui: 3000\n")
    paths.state_file.parent.mkdir(parents=True)
    paths.state_file.write_text('{"platform": "cpu", "platform_reason": "set"}')
    return paths


class FakeSnapshots:
    """backup.create's engine, recording what the installation held when it ran."""

    def __init__(self, paths: config.InstallPaths, fail: StackError | None = None) -> None:
        self.paths, self.fail = paths, fail
        self.taken: list[tuple[str, str]] = []

    def create(self, rt, store, options, progress=None):
        from types import SimpleNamespace

        if self.fail:
            raise self.fail
        self.taken.append((options.description, self.paths.config_file.read_text()))
        return SimpleNamespace(id="20261203T120000Z-abcdef")


@pytest.fixture
def snapshots(monkeypatch, pow_calls) -> FakeSnapshots:
    """Backups recorded, not taken; the engine answers that nobody else holds
    the project (what the backup's own check asks first)."""
    from ollama_stack.backups import snapshot

    fake = FakeSnapshots(config.InstallPaths.for_target(None))
    monkeypatch.setattr(snapshot, "create", fake.create)
    return fake


@pytest.mark.parametrize(
    "argv",
    [
        ("stack.status",),
        ("stack.status", "--json"),
        ("stack.start",),
        ("stack.config",),
        ("stack.install", "--force"),
        ("health.check",),
        ("update.apply", "--yes"),
        ("backup.create",),
        ("dev.standins",),
    ],
)
def test_every_command_refuses_an_older_installation_naming_the_migration(capsys, pow_calls, argv):
    paths = old_installation()
    before = snapshot(paths.root)
    assert run_program(*argv) == ExitCode.CONFIG
    captured = capsys.readouterr()
    (line,) = stderr_lines(captured.err)
    assert line == (
        f"error: {paths.config_file} has schema 1, older than this ollama-stack's (schema 2)"
        " — run `inv stack.migrate` (add --dry-run to see the changes first)"
    )
    assert snapshot(paths.root) == before
    assert pow_calls.calls == []


@pytest.mark.parametrize(
    "argv", [("stack.status",), ("stack.migrate", "--yes"), ("stack.uninstall", "--yes")]
)
def test_a_newer_config_is_refused_by_every_command_naming_both_versions(capsys, pow_calls, argv):
    paths = config.InstallPaths.for_target(None)
    config.install(paths, {})
    paths.config_file.write_text("schema: 99\nproject: from-the-future\n")
    before = snapshot(paths.root)
    assert run_program(*argv) == ExitCode.CONFIG
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line == (
        f"error: {paths.config_file} has schema 99, newer than this ollama-stack understands "
        "(schema 2) — upgrade ollama-stack to a release that knows schema 99"
    )
    assert snapshot(paths.root) == before


def test_help_and_list_need_no_current_installation(capsys):
    old_installation()
    assert run_program("--list") == 0
    assert run_program("--help", "stack.status") == 0
    assert "stack.migrate" in capsys.readouterr().out


def test_migrate_dry_run_says_what_changes_and_writes_nothing(capsys, snapshots):
    paths = old_installation()
    before = snapshot(paths.root)
    assert run_program("stack.migrate", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"{paths.config_file}: schema 1 → 2 (add schema: 2)" in out
    assert f"{paths.state_file}: schema 1 → 2 (add schema: 2)" in out
    assert "dry run: nothing was written" in out
    assert snapshot(paths.root) == before  # bytes and modification times
    assert snapshots.taken == []


def test_migrate_backs_up_first_then_every_command_reads_the_installation(capsys, snapshots):
    paths = old_installation()
    secrets = paths.secrets_file.read_bytes()
    assert run_program("stack.migrate", "--yes") == 0
    out = capsys.readouterr().out
    assert snapshots.taken == [
        ("before stack.migrate", "# my note\nplatform: cpu\nports:\n  webui: 3000\n")
    ]
    assert "migrated local to schema 2 (config.yaml, state.json)" in out
    assert "backup first: 20261203T120000Z-abcdef" in out
    assert paths.config_file.read_text() == (
        "# my note\nschema: 2\nplatform: cpu\nports:\n  webui: 3000\n"
    )
    assert json.loads(paths.state_file.read_text()) == {
        "platform": "cpu",
        "platform_reason": "set",
        "schema": 2,
    }
    assert paths.secrets_file.read_bytes() == secrets
    assert config.load_settings(paths, environ={}).ports["webui"] == 3000
    assert run_program("stack.migrate") == 0  # already current: nothing asked, nothing written
    assert "local is at schema 2; nothing to migrate" in capsys.readouterr().out
    assert len(snapshots.taken) == 1


def test_migrate_asks_and_without_a_terminal_needs_yes(capsys, snapshots):
    paths = old_installation()
    before = snapshot(paths.root)
    assert run_program("stack.migrate") == ExitCode.CONFIG
    lines = stderr_lines(capsys.readouterr().err)
    assert lines == [
        "error: not asking without a terminal: rewrite these files of local? — add --yes to proceed"
    ]
    assert snapshot(paths.root) == before and snapshots.taken == []


def test_a_failed_backup_stops_the_migration(capsys, snapshots):
    from ollama_stack.backups.store import BadBackup

    paths = old_installation()
    before = snapshot(paths.root)
    snapshots.fail = BadBackup("backup store /nas is full", "free space in it")
    assert run_program("stack.migrate", "--yes") == ExitCode.BAD_BACKUP
    *progress, line = stderr_lines(capsys.readouterr().err)
    assert progress == ["• backing up before the migration"]
    assert line == (
        "error: the backup before the migration failed, so nothing was changed: "
        "backup store /nas is full — free space in it; or go on with --no-backup at your own risk"
    )
    after = snapshot(paths.root)
    after.pop("state/.data.lock")  # the lock a backup or a migration holds, as backups leave it
    assert after == before


def test_migrate_no_backup_json(capsys, snapshots):
    old_installation()
    assert run_program("stack.migrate", "--yes", "--no-backup", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["result"] == "migrated"
    assert document["backup"] == "skipped (--no-backup)"
    assert [(f["from"], f["to"]) for f in document["files"]] == [(1, 2), (1, 2)]
    assert snapshots.taken == []


def test_migrate_a_remote_installation_rewrites_only_its_files(capsys, snapshots):
    local = config.InstallPaths.for_target(None)
    config.install(local, {})
    local_before = local.config_file.read_bytes()
    remote = old_installation("ops@box:2222")
    assert run_program("stack.status", "--remote", "ops@box:2222") == ExitCode.CONFIG
    assert "stack.migrate --remote HOST`" in capsys.readouterr().err
    assert run_program("stack.migrate", "--remote", "ops@box:2222", "--yes", "--no-backup") == 0
    assert "migrated ops@box:2222 to schema 2" in capsys.readouterr().out
    assert config.read_config(remote) == {"platform": "cpu", "ports": {"webui": 3000}}
    assert local.config_file.read_bytes() == local_before
