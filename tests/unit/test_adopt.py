"""stack/adopt.py and `stack.adopt`: what another installation holds of the
project, taken over with python-on-whales' runners replaced at the wrapper
boundary (real HTTP services stand in for the stack's health)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from python_on_whales.exceptions import DockerException

from ollama_stack.backups import snapshot
from ollama_stack.backups.store import Store
from ollama_stack.common.errors import ConfigError, ExitCode, NotInstalled, StackError
from ollama_stack.compose.client import UNMANAGED, AdoptionMark
from ollama_stack.stack import adopt, config, lifecycle, models
from ollama_stack.stack.config import InstallPaths
from ollama_stack.stack.runtime import Runtime

# The lifecycle tests' fixtures too: fast polling, and real HTTP services for health.
from .test_lifecycle import fast_polling, make_runtime, ours, ports_of, services  # noqa: F401
from .test_tasks import old_installation, run_program, stderr_lines


@pytest.fixture
def old_home(tmp_path: Path) -> InstallPaths:
    """Another home that made the project's containers (a copy still there)."""
    paths = InstallPaths(tmp_path / "old-home")
    config.install(paths, {})
    return paths


def row(service: str, installation: str, env_file: str = "", state: str = "running") -> dict:
    labels = f"com.docker.compose.project=p,io.ollama-stack.installation={installation}"
    if env_file:
        labels += f",com.docker.compose.project.environment_file={env_file}"
    return {"Name": f"p-{service}-1", "Service": service, "State": state, "Labels": labels}


class Engine:
    """The project as the engine shows it; `up` relabels the containers as ours."""

    def __init__(self, calls: Any, rows: list[dict], volumes: dict[str, str]) -> None:
        self.calls, self.rows, self.volumes = calls, rows, volumes
        self.mark: tuple[str, str, str] | None = None  # (adopted by, home, volumes' id)

    def recreated(self) -> bool:
        return any("--force-recreate" in argv for argv, _ in self.calls.calls)

    def containers(self) -> list[dict]:
        if not self.recreated():
            return self.rows
        return [row(r["Service"], ours()) for r in self.rows]

    def __call__(self, argv: list[str]) -> str:
        fmt = argv[argv.index("--format") + 1] if "--format" in argv else ""
        if "compose" in argv and "ps" in argv:
            return "\n".join(json.dumps(r) for r in self.containers())
        if argv[1:3] == ["volume", "ls"]:
            return self.volume_listing(argv, fmt)
        if argv[1:3] == ["volume", "create"]:
            labels = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--label")
            by, home, volumes = (labels[f"io.ollama-stack.adopted-{k}"] for k in MARK_KEYS)
            self.mark = (by, home, volumes)
        if argv[1] == "ps" and "io.ollama-stack.installation" in fmt:
            return "".join(
                f"{r['Labels'].split('installation=')[1].split(',')[0]}\n"
                for r in self.containers()
            )
        if "inspect" in argv:
            return "\n".join(
                f"{r['Service']}\t\tid-{r['Name']}\trunning\t0\t0\t2026-01-01T00:00:00Z"
                for r in self.containers()
            )
        if "exec" in argv:
            return '{"version":"0.5.7"}'
        return ""

    def volume_listing(self, argv: list[str], fmt: str) -> str:
        """`docker volume ls` in each format the wrapper asks for; the mark is a
        volume of the project with no installation label."""
        mark = "\t".join(self.mark) if self.mark else ""
        if "label=io.ollama-stack.adopted-by" in argv:
            return f"{mark}\n" if mark else ""
        rows = [(name, owner, "") for name, owner in self.volumes.items()]
        rows += [("p_ollama-stack-adoption", "", mark)] if mark else []
        if fmt.startswith("{{.Name}}"):
            return "".join(f"{name}\t{owner}\t{m}\n" for name, owner, m in rows)
        return "".join(f"{owner}\t{m}\n" for _, owner, m in rows)


MARK_KEYS = ("by", "home", "volumes")


def engine_with(pow_calls, rows: list[dict], volumes: dict[str, str]) -> Engine:
    engine = Engine(pow_calls, rows, volumes)
    pow_calls.on_run = engine
    return engine


def moved_project(pow_calls, old_home: InstallPaths) -> Engine:
    old = config.installation_id(old_home)
    env_file = str(old_home.runtime_env_file)
    rows = [row(name, old, env_file) for name in ("ollama", "webui", "mcp_proxy")]
    return engine_with(pow_calls, rows, {"p_ollama_data": old, "p_webui_data": old})


# -- plan -------------------------------------------------------------------------------


def test_plan_needs_an_installation_and_asks_docker_nothing(local_paths, pow_calls):
    with pytest.raises(NotInstalled) as info:
        adopt.plan(make_runtime(local_paths, {}, project="p"))
    assert "run `inv stack.install --project p` first" in info.value.remedy
    assert pow_calls.calls == []


def test_plan_names_a_copied_home_that_still_claims_the_project(local_paths, pow_calls, old_home):
    config.install(local_paths, {})
    moved_project(pow_calls, old_home)
    todo = adopt.plan(make_runtime(local_paths, {}, project="p"))
    old = config.installation_id(old_home)
    assert todo.owners == [adopt.Owner(old, str(old_home.root), still_there=True)]
    assert [(c.name, c.recreated) for c in todo.containers] == [
        ("p-ollama-1", True),
        ("p-webui-1", True),
        ("p-mcp_proxy-1", True),
    ]
    assert todo.volumes == {"p_ollama_data": old, "p_webui_data": old}
    assert todo.volumes_installation == old
    assert pow_calls.subcommands().count("up") == 0  # read only
    notes = adopt.left_behind(todo)
    assert len(notes) == 1 and str(old_home.root) in notes[0]


def test_a_moved_home_that_is_gone_or_names_another_project_claims_nothing(
    local_paths, pow_calls, old_home
):
    config.install(local_paths, {})
    moved_project(pow_calls, old_home)
    config.update_user_config(old_home, {"project": "elsewhere"})
    (owner,) = adopt.plan(make_runtime(local_paths, {}, project="p")).owners
    assert owner.home == str(old_home.root) and not owner.still_there
    config.remove_installation(old_home)
    (owner,) = adopt.plan(make_runtime(local_paths, {}, project="p")).owners
    assert owner.home == str(old_home.root) and not owner.still_there


def test_an_env_file_that_is_not_the_labelled_homes_names_no_home(local_paths, pow_calls, tmp_path):
    """The label's id is not the hash of that path: someone else's file."""
    config.install(local_paths, {})
    elsewhere = str(tmp_path / "elsewhere" / "state" / "compose.env")
    engine_with(pow_calls, [row("ollama", "0123456789abcdef", elsewhere)], {})
    (owner,) = adopt.plan(make_runtime(local_paths, {}, project="p")).owners
    assert owner == adopt.Owner("0123456789abcdef")


def test_containers_started_by_hand_and_a_service_we_do_not_run(local_paths, pow_calls):
    config.install(local_paths, {})
    rows = [row("ollama", UNMANAGED), row("notes", UNMANAGED, state="exited")]
    engine_with(pow_calls, rows, {"p_ollama_data": UNMANAGED})
    todo = adopt.plan(make_runtime(local_paths, {}, project="p"))
    assert [o.by_hand for o in todo.owners] == [True]
    assert [(c.service, c.recreated) for c in todo.containers] == [
        ("ollama", True),
        ("notes", False),
    ]
    assert todo.volumes_installation == UNMANAGED


def test_nothing_of_another_installation_is_an_empty_plan(local_paths, pow_calls):
    config.install(local_paths, {})
    engine_with(pow_calls, [row("ollama", ours())], {"p_ollama_data": ours(), "other": ""})
    todo = adopt.plan(make_runtime(local_paths, {}, project="p"))
    assert todo.empty and todo.owners == [] and todo.volumes_installation is None


def test_foreign_containers_over_our_own_volumes_keep_the_volumes_id(local_paths, pow_calls):
    config.install(local_paths, {})
    engine_with(pow_calls, [row("ollama", UNMANAGED)], {"p_ollama_data": ours()})
    todo = adopt.plan(make_runtime(local_paths, {}, project="p"))
    assert todo.volumes == {} and todo.volumes_installation is None
    assert [c.name for c in todo.containers] == ["p-ollama-1"]


def test_volumes_of_two_installations_are_refused(local_paths, pow_calls):
    config.install(local_paths, {})
    engine_with(pow_calls, [], {"p_ollama_data": "aaaa", "p_webui_data": ours()})
    with pytest.raises(ConfigError) as info:
        adopt.plan(make_runtime(local_paths, {}, project="p"))
    assert "aaaa: p_ollama_data" in info.value.message
    assert f"{ours()}: p_webui_data" in info.value.message
    assert "nothing was changed" in info.value.message


# -- execute ----------------------------------------------------------------------------


def test_adoption_recreates_with_our_files_and_keeps_the_volumes_id(
    local_paths,
    pow_calls,
    old_home,
    services,  # noqa: F811 (the fixture imported above)
):
    config.install(local_paths, {})
    engine = moved_project(pow_calls, old_home)
    rt = make_runtime(local_paths, ports_of(services), project="p")
    todo = adopt.plan(rt)
    done = adopt.execute(rt, todo, pull="never", timeout=5)

    assert {r.ok for r in done.health.values()} == {True}
    (up,) = [argv for argv, _ in pow_calls.calls if "up" in argv]
    assert up[-4:] == ["--force-recreate", "ollama", "webui", "mcp_proxy"]
    assert up[up.index("--pull") + 1] == "never" and "--remove-orphans" in up
    old = config.installation_id(old_home)
    env = local_paths.runtime_env_file.read_text()
    assert f"OLLAMA_STACK_VOLUMES_INSTALLATION={old}\n" in env
    assert f"OLLAMA_STACK_INSTALLATION={ours()}\n" in env
    state = config.read_state(local_paths)
    assert state[config.VOLUMES_INSTALLATION_KEY] == old
    assert state["adopted"][0]["volumes"] == ["p_ollama_data", "p_webui_data"]
    assert state["adopted"][0]["from"][0]["home"] == str(old_home.root)
    # The mark names us from now on, written after `up` (nothing changes before it).
    assert engine.mark == (ours(), str(local_paths.root), old)
    changes = [argv[1:3] for argv, _ in pow_calls.calls if "up" in argv or "create" in argv]
    assert changes[-1] == ["volume", "create"] and len(changes) == 2


def test_after_adoption_the_old_volumes_are_ours_and_its_containers_are_not(
    local_paths, pow_calls, old_home
):
    config.install(local_paths, {})
    old = config.installation_id(old_home)
    config.record_adoption(local_paths, old, {"at": "then"})
    rt = Runtime.open()
    assert rt.volumes_installation == old and rt.compose.volume_installation == old
    engine_with(pow_calls, [row("ollama", ours())], {"p_ollama_data": old})
    assert rt.compose.foreign_installations() == set()
    lifecycle.refuse_foreign(rt)  # start, stop and logs go on
    engine_with(pow_calls, [row("ollama", old)], {"p_ollama_data": old})
    assert rt.compose.foreign_installations() == {old}  # the old home took them back


def test_a_failed_up_records_nothing_and_says_what_runs(
    local_paths, pow_calls, old_home, monkeypatch
):
    from ollama_stack.compose import client

    config.install(local_paths, {})
    moved_project(pow_calls, old_home)
    rt = make_runtime(local_paths, {}, project="p")
    todo = adopt.plan(rt)

    def up_fails(argv: list[str], **kwargs: Any):
        pow_calls.calls.append(([str(a) for a in argv], kwargs))
        raise DockerException(argv, 1, b"", b"no space left on device")
        yield  # a generator, as python-on-whales' is

    monkeypatch.setattr(client, "stream_output", up_fails)
    with pytest.raises(StackError) as info:
        adopt.execute(rt, todo, pull="never", timeout=1)
    assert "nothing was recorded; running now: ollama, webui, mcp_proxy" in info.value.message
    assert "`inv stack.adopt` again" in info.value.remedy
    assert config.VOLUMES_INSTALLATION_KEY not in config.read_state(local_paths)


def test_a_failed_mark_says_the_containers_are_ours_and_records_nothing(
    local_paths, pow_calls, old_home, monkeypatch
):
    from ollama_stack.compose.client import ComposeProject

    config.install(local_paths, {})
    moved_project(pow_calls, old_home)
    rt = make_runtime(local_paths, {}, project="p")

    def refused(self: ComposeProject, home: str) -> None:
        raise StackError("docker volume create: no space left on device")

    monkeypatch.setattr(ComposeProject, "mark_adoption", refused)
    with pytest.raises(StackError) as info:
        adopt.execute(rt, adopt.plan(rt), pull="never", timeout=1)
    assert "the adoption mark was not written and nothing was recorded" in info.value.message
    assert info.value.remedy == "`inv stack.adopt` again finishes it"
    assert config.VOLUMES_INSTALLATION_KEY not in config.read_state(local_paths)


# -- the old home, once another installation adopted the project -------------------------


def adopted_by(pow_calls, adopter: InstallPaths, rows: list[dict]) -> Engine:
    """The project as the adopter left it: our (the old home's) id on the volumes."""
    engine = engine_with(pow_calls, rows, {"p_ollama_data": ours(), "p_webui_data": ours()})
    engine.mark = (config.installation_id(adopter), str(adopter.root), ours())
    return engine


def test_refuse_adopted_elsewhere_names_the_adopter_and_both_ways_out(
    local_paths, pow_calls, old_home
):
    config.install(local_paths, {})
    rt = make_runtime(local_paths, {}, project="p")
    engine = adopted_by(pow_calls, old_home, [])
    with pytest.raises(ConfigError) as info:
        lifecycle.refuse_adopted_elsewhere(rt)
    adopter = config.installation_id(old_home)
    assert info.value.code == ExitCode.CONFIG
    assert info.value.message.startswith(
        f"compose project 'p' on local was adopted by the installation at {old_home.root} "
        f"(id {adopter})"
    )
    assert str(old_home.root) in info.value.remedy and "`inv stack.adopt`" in info.value.remedy
    assert "\n" not in str(info.value)
    engine.mark = (ours(), str(local_paths.root), ours())  # the mark names us: go on
    lifecycle.refuse_adopted_elsewhere(rt)
    engine.mark = None  # nobody adopted it
    lifecycle.refuse_adopted_elsewhere(rt)


def test_the_old_home_sees_its_own_id_on_the_volumes_and_is_refused_all_the_same(
    local_paths, pow_calls, old_home
):
    """The adopter's containers are gone (removed by hand, or its uninstall):
    nothing but the mark tells the volumes are not this home's any more."""
    config.install(local_paths, {})
    rt = make_runtime(local_paths, {}, project="p")
    adopted_by(pow_calls, old_home, [])
    assert rt.compose.foreign_installations() == set()
    pow_calls.calls.clear()
    for refused in (
        lambda: lifecycle.refuse_foreign(rt),
        lambda: lifecycle.start(rt, timeout=1),
        lambda: lifecycle.stop(rt),
        lambda: list(lifecycle.logs(rt, [])),
    ):
        with pytest.raises(ConfigError, match="was adopted by the installation at"):
            refused()
    assert not {"up", "stop", "logs"} & set(pow_calls.subcommands())
    listings = [argv for argv, _ in pow_calls.calls if argv[1:3] == ["volume", "ls"]]
    assert len(listings) == 4  # one for each refusal: the mark comes with the ownership listing


@pytest.fixture
def here(local_paths, services) -> Runtime:  # noqa: F811 (the fixture imported above)
    """This home, installed, its project "p" answered by the stand-in services."""
    config.install(local_paths, {})
    return make_runtime(local_paths, ports_of(services), project="p")


def test_the_old_home_takes_the_project_back_with_adopt(local_paths, pow_calls, old_home, here):
    rt = here
    adopter = config.installation_id(old_home)
    env_file = str(old_home.runtime_env_file)
    engine = adopted_by(pow_calls, old_home, [row("ollama", adopter, env_file)])
    todo = adopt.plan(rt)
    assert not todo.empty and todo.volumes == {}  # the volumes carry our id already
    assert todo.mark == AdoptionMark(adopter, str(old_home.root), ours())
    assert todo.owners == [adopt.Owner(adopter, str(old_home.root), still_there=True)]
    engine.rows = []  # the adopter's containers removed: the mark alone is taken back
    todo = adopt.plan(rt)
    assert not todo.empty and todo.owners == [
        adopt.Owner(adopter, str(old_home.root), still_there=True)
    ]
    adopt.execute(rt, todo, pull="never", timeout=5)
    assert engine.mark == (ours(), str(local_paths.root), ours())
    lifecycle.refuse_adopted_elsewhere(rt)


def test_the_old_home_neither_pulls_nor_deletes_the_adopters_models(
    local_paths,
    pow_calls,
    old_home,
    here,
    services,  # noqa: F811 (the fixture imported above)
):
    """The adopter's Ollama answers on the same port: a docker Ollama's models are its."""
    rt = here
    adopted_by(pow_calls, old_home, [])
    for refused in (
        lambda: models.remove(rt, "tiny", confirm=lambda question: True),
        lambda: models.pull(rt, "tiny"),
    ):
        with pytest.raises(ConfigError, match="was adopted by the installation at"):
            refused()
    assert services["ollama"].requests == []
    url = f"http://127.0.0.1:{services['ollama'].port}"
    native = make_runtime(
        local_paths, {}, project="p", services={"ollama": {"type": "native-api", "url": url}}
    )
    with pytest.raises(StackError, match="could not pull tiny: HTTP 201"):  # the stand-in's
        models.pull(native, "tiny")  # asked: the host's own Ollama is no project's
    assert services["ollama"].requests == ["POST /api/pull"]


def test_the_start_task_refused_by_the_mark_says_it_in_one_line(
    capsys, local_paths, pow_calls, old_home
):
    config.install(local_paths, {"project": "p", "platform": "cpu"})
    adopted_by(pow_calls, old_home, [])
    assert run_program("stack.start") == ExitCode.CONFIG
    (line,) = [ln for ln in stderr_lines(capsys.readouterr().err) if ln.startswith("error:")]
    assert f"was adopted by the installation at {old_home.root}" in line
    assert "up" not in pow_calls.subcommands()


def test_status_in_the_old_home_names_the_adopter_instead_of_how_to_start(
    capsys, local_paths, pow_calls, old_home
):
    """The adopter's containers run under the project's name: not ours, not stopped."""
    config.install(local_paths, {"project": "p", "platform": "cpu"})
    adopter = config.installation_id(old_home)
    adopted_by(pow_calls, old_home, [row("ollama", adopter), row("webui", adopter)])
    assert run_program("stack.status", "--json") == ExitCode.OK
    document = json.loads(capsys.readouterr().out)
    assert document["running"] is False
    assert document["others"] == {
        "containers": {"p-ollama-1": adopter, "p-webui-1": adopter},
        "adopted_by": str(old_home.root),
        "adopter": adopter,
    }
    assert run_program("stack.status") == ExitCode.OK
    captured = capsys.readouterr()
    said = f"p-ollama-1, p-webui-1: the installation at {old_home.root} adopted this project"
    assert said in " ".join(captured.err.split())
    assert "Start with" not in captured.out
    adopted_by(pow_calls, old_home, [])  # the adopter's containers removed: the mark still says
    assert run_program("stack.status") == ExitCode.OK
    captured = capsys.readouterr()
    said = f"warning: the installation at {old_home.root} adopted this project"
    assert said in " ".join(captured.err.split())
    assert "Start with" not in captured.out


@pytest.mark.parametrize("adopted", [True, False])
def test_a_backup_of_volumes_another_installation_holds_is_refused_before_it_begins(
    local_paths, pow_calls, old_home, tmp_path, adopted
):
    """Its containers write them and are not ours to pause: a copy would be torn."""
    config.install(local_paths, {"project": "p", "platform": "cpu"})
    if adopted:  # this home is the old one; the adopter's containers run
        adopter = config.installation_id(old_home)
        adopted_by(pow_calls, old_home, [row("webui", adopter)])
        refusal = f"was adopted by the installation at {old_home.root}"
    else:  # this home is a copy, not adopted yet
        moved_project(pow_calls, old_home)
        refusal = "belongs to another ollama-stack installation"
    store = Store(tmp_path / "store")
    with pytest.raises(ConfigError, match=refusal):
        snapshot.create(make_runtime(local_paths, {}, project="p"), store, snapshot.Options())
    assert pow_calls.subcommands() == ["ps", "volume"]  # who holds the project, nothing more
    assert not store.root.exists()


def test_a_backup_with_a_runtime_just_checked_does_not_ask_who_holds_the_project_again(
    local_paths, pow_calls, tmp_path
):
    """Restore's safety copy and an update's backup follow their own check."""
    config.install(local_paths, {"project": "p", "platform": "cpu"})
    engine_with(pow_calls, [], {})
    options = snapshot.Options(services=("mcp_proxy",))  # no volume to read
    rt = make_runtime(local_paths, {}, project="p")
    snapshot.create(rt, Store(tmp_path / "store"), options)
    assert pow_calls.subcommands().count("volume") == 1  # its own check
    checked = lifecycle.refuse_foreign(rt)
    assert checked.owned and not rt.owned
    pow_calls.calls.clear()
    snapshot.create(checked, Store(tmp_path / "store"), options)
    assert "volume" not in pow_calls.subcommands()
    assert not checked.throwaway("p-trial", tmp_path / "trial.env", {}).owned  # another project


def test_a_migration_whose_backup_would_be_refused_stops_before_its_question(
    capsys, pow_calls, old_home
):
    """A copied home: its backup would read the other home's volumes. Said before
    "rewrite these files?" (no terminal here: the question would be refused first)."""
    paths = old_installation()
    written = paths.config_file.read_text()
    moved_project(pow_calls, old_home)
    assert run_program("stack.migrate") == ExitCode.CONFIG
    (line,) = [ln for ln in stderr_lines(capsys.readouterr().err) if ln.startswith("error:")]
    assert line.startswith(
        "error: the backup before the migration failed, so nothing was changed: compose "
        "project 'ollama-stack' on local belongs to another ollama-stack installation"
    )
    assert line.endswith("; or go on with --no-backup at your own risk")
    assert paths.config_file.read_text() == written
    pow_calls.calls.clear()
    assert run_program("stack.migrate", "--yes", "--no-backup") == ExitCode.OK
    assert pow_calls.calls == []  # no backup: nothing to ask the engine


# -- refusals elsewhere name adopt ------------------------------------------------------


def test_start_refuses_containers_started_by_hand_naming_adopt(local_paths, pow_calls):
    config.install(local_paths, {})
    engine_with(pow_calls, [row("ollama", UNMANAGED)], {"p_ollama_data": UNMANAGED})
    with pytest.raises(ConfigError) as info:
        lifecycle.start(make_runtime(local_paths, {}, project="p"), timeout=1)
    assert "was started without ollama-stack" in info.value.message
    assert "stack.adopt" in info.value.remedy
    assert "up" not in pow_calls.subcommands()


def test_install_goes_on_over_containers_started_by_hand_only(local_paths, pow_calls):
    engine_with(pow_calls, [row("ollama", UNMANAGED)], {})
    lifecycle.refuse_foreign_at_install(make_runtime(local_paths, {}, project="p"))
    engine_with(pow_calls, [row("ollama", UNMANAGED), row("webui", "0ther0ther0ther0")], {})
    with pytest.raises(ConfigError) as info:
        lifecycle.refuse_foreign_at_install(make_runtime(local_paths, {}, project="p"))
    assert "(id 0ther0ther0ther0)" in info.value.message
    assert "stack.adopt" in info.value.remedy


# -- the task ---------------------------------------------------------------------------


def test_the_task_without_a_terminal_asks_for_yes_and_changes_nothing(
    capsys, local_paths, pow_calls, old_home
):
    config.install(local_paths, {"project": "p"})
    moved_project(pow_calls, old_home)
    assert run_program("stack.adopt") == ExitCode.CONFIG
    captured = capsys.readouterr()
    assert f"home {old_home.root} (still there)" in captured.out
    assert "recreate container p-webui-1 (webui, running)" in captured.out
    (line,) = stderr_lines(captured.err)
    assert line.startswith("error: not asking without a terminal") and "add --yes" in line
    assert "up" not in pow_calls.subcommands()
    assert not local_paths.state_file.exists()


def test_the_task_with_nothing_to_adopt_says_so_in_one_line(capsys, local_paths, pow_calls):
    config.install(local_paths, {"project": "p"})
    engine_with(pow_calls, [row("ollama", ours())], {"p_ollama_data": ours()})
    assert run_program("stack.adopt", "--yes") == 0
    out = capsys.readouterr().out
    assert stderr_lines(out) == [
        "nothing to adopt: nothing of compose project p on local is another installation's"
    ]


def test_the_task_before_install_names_the_install_command(capsys, pow_calls):
    assert run_program("stack.adopt", "--yes") == ExitCode.NOT_INSTALLED
    (line,) = stderr_lines(capsys.readouterr().err)
    assert "stack.install --project ollama-stack` first" in line
    assert run_program("stack.adopt", "--pull", "sometimes") == ExitCode.CONFIG
