"""stack/uninstall.py: the plan lists, execute removes in order, config removal is guarded.

``FakeCompose`` stands in for ``ComposeProject`` over an in-memory engine that
holds resources of several compose projects, so "only this installation's"
is checked against real neighbours.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any, Literal

import pytest

from ollama_stack.common.errors import ConfigError, ExitCode, StackError
from ollama_stack.compose.client import AdoptionMark, ComposeProject, Ownership
from ollama_stack.stack import config, uninstall
from ollama_stack.stack.config import InstallPaths
from ollama_stack.stack.events import Event
from ollama_stack.stack.hosts.target import Target
from ollama_stack.stack.runtime import Runtime
from ollama_stack.stack.uninstall import Plan

from .helpers import linux_shell

Kind = Literal["container", "volume", "network"]
OURS, OTHER = "ollama-stack", "lab"
IMAGES = {
    "ollama": "ollama/ollama:latest",
    "webui": "ghcr.io/open-webui/open-webui:main",
    "mcp_proxy": "ghcr.io/open-webui/mcpo:main",
}


class FakeCompose:
    """ComposeProject's resource methods over an engine shared by several projects."""

    def __init__(self, project: str) -> None:
        self.project = project
        # name → owning project (the com.docker.compose.project label)
        self.resources: dict[Kind, dict[str, str]] = {"container": {}, "network": {}, "volume": {}}
        self.created_from: dict[str, str] = {}  # container → the reference it was created from
        self.tags: set[str] = set()
        self.calls: list[tuple[Any, ...]] = []
        self.installation = "me"  # this installation's id
        self.mark: AdoptionMark | None = None  # the project's adoption mark, if one was made

    def add_project(self, project: str, images: dict[str, str]) -> None:
        """Containers, a network and two volumes, as compose creates them."""
        for service, reference in images.items():
            name = f"{project}-{service}-1"
            self.resources["container"][name] = project
            self.created_from[name] = reference
            self.tags.add(reference)
        self.resources["network"][f"{project}_default"] = project
        for volume in ("ollama", "webui"):
            self.resources["volume"][f"{project}_{volume}"] = project

    # -- ComposeProject's methods --

    def labelled(self, kind: Kind, project: str | None = None) -> list[str]:
        self.calls.append(("labelled", kind))
        return sorted(n for n, p in self.resources[kind].items() if p == (project or self.project))

    def scratch_containers(self) -> list[str]:
        return []

    def adoption_mark(self) -> AdoptionMark | None:
        return self.mark

    def ownership(self) -> Ownership:
        """The project's containers carry no other installation's id here."""
        self.calls.append(("ownership",))
        return Ownership(set(), self.mark)

    @property
    def adoption_volume(self) -> str:
        return f"{self.project}_ollama-stack-adoption"

    def remove(self, kind: Kind, names: Sequence[str]) -> None:
        self.calls.append(("remove", kind, list(names)))
        for name in names:
            del self.resources[kind][name]
            self.created_from.pop(name, None)

    def image_exists(self, reference: str) -> bool:
        return reference in self.tags

    def images_matching(self, reference: str) -> list[str]:
        """`docker images PATTERN`: path.Match on the name, so `*` never crosses a "/"."""
        pattern = re.compile("[^/]*".join(re.escape(part) for part in reference.split("*")))
        return sorted(t for t in self.tags if pattern.fullmatch(t.rpartition(":")[0]))

    def remove_image(self, reference: str) -> bool:
        self.calls.append(("remove_image", reference))
        if {reference, reference.removesuffix(":latest")} & set(self.created_from.values()):
            return False
        self.tags.remove(reference)
        return True


def test_the_fake_takes_the_wrappers_arguments():
    names = ("labelled", "remove", "image_exists", "images_matching", "remove_image")
    for name in (*names, "adoption_mark"):
        ours = inspect.signature(getattr(FakeCompose, name)).parameters
        theirs = inspect.signature(getattr(ComposeProject, name)).parameters
        assert list(ours) == list(theirs), name


def make_runtime(paths: InstallPaths, engine: FakeCompose, **settings: Any) -> Runtime:
    merged = config.validate([("test", {"platform": "cpu", **settings})])
    # The engine replaces the compose wrapper (the seam at python-on-whales).
    return Runtime(Target(None, _shell=linux_shell(2)), paths, merged, compose=engine)


@pytest.fixture
def engine() -> FakeCompose:
    """Our installation and a neighbour ("lab") on one engine; lab uses our webui image."""
    fake = FakeCompose(OURS)
    fake.add_project(OURS, IMAGES)
    fake.add_project(OTHER, {"webui": IMAGES["webui"], "mcp_proxy": "lab/mcpo:dev"})
    fake.tags |= {
        f"ollama-stack-rollback/{OURS}/webui:20250101T000000",
        f"ollama-stack-rollback/{OTHER}/webui:20250101T000000",
        "busybox:latest",
    }
    return fake


@pytest.fixture
def rt(local_paths, engine) -> Runtime:
    config.install(local_paths, {})
    return make_runtime(local_paths, engine)


OUR_CONTAINERS = [f"{OURS}-mcp_proxy-1", f"{OURS}-ollama-1", f"{OURS}-webui-1"]
OUR_VOLUMES = [f"{OURS}_ollama", f"{OURS}_webui"]
OUR_IMAGES = sorted([*IMAGES.values(), f"ollama-stack-rollback/{OURS}/webui:20250101T000000"])


# -- plan ----------------------------------------------------------------------------------


def test_plan_by_default_removes_containers_and_networks_only(rt, local_paths):
    todo = uninstall.plan(rt, remove_volumes=False, remove_images=False, remove_config=False)
    assert todo.containers == OUR_CONTAINERS
    assert todo.networks == [f"{OURS}_default"]
    assert (todo.volumes, todo.images, todo.config_dir) == ([], [], None)
    assert todo.kept == [
        f"volumes {', '.join(OUR_VOLUMES)} (add --remove-volumes to delete data)",
        f"{len(OUR_IMAGES)} images (--remove-images)",
        f"config and secrets in {local_paths.root} (--remove-config)",
    ]
    assert not todo.empty


def test_plan_with_every_flag(rt, local_paths):
    todo = uninstall.plan(rt, remove_volumes=True, remove_images=True, remove_config=True)
    assert todo.volumes == OUR_VOLUMES
    assert todo.images == OUR_IMAGES
    assert todo.config_dir == str(local_paths.root)
    assert todo.kept == []
    assert todo.to_json() == {
        "containers": OUR_CONTAINERS,
        "networks": [f"{OURS}_default"],
        "volumes": OUR_VOLUMES,
        "images": OUR_IMAGES,
        "config_dir": str(local_paths.root),
        "kept": [],
        "backup": None,  # none taken (yet)
    }


@pytest.mark.parametrize("flag", ["remove_volumes", "remove_images", "remove_config"])
def test_each_flag_moves_only_its_own_kind_from_kept(rt, flag):
    flags = dict.fromkeys(("remove_volumes", "remove_images", "remove_config"), False)
    todo = uninstall.plan(rt, **(flags | {flag: True}))
    assert bool(todo.volumes) == (flag == "remove_volumes")
    assert bool(todo.images) == (flag == "remove_images")
    assert (todo.config_dir is not None) == (flag == "remove_config")
    assert len(todo.kept) == 2
    word = {"remove_volumes": "volumes", "remove_images": "images", "remove_config": "config"}
    assert not any(word[flag] in line for line in todo.kept)


def test_volumes_another_installation_adopted_are_never_removed_from_here(rt, engine):
    engine.mark = AdoptionMark("n3wn3wn3wn3wn3w0", "/the/new/home", "me")
    with pytest.raises(ConfigError) as info:
        uninstall.plan(rt, remove_volumes=True, remove_images=False, remove_config=True)
    assert info.value.code == ExitCode.CONFIG
    assert "was adopted by the installation at /the/new/home (id n3wn3wn3wn3wn3w0)" in str(
        info.value
    )
    assert "`inv stack.adopt`" in info.value.remedy
    todo = uninstall.plan(rt, remove_volumes=False, remove_images=False, remove_config=True)
    assert todo.volumes == [] and todo.config_dir  # this home's files still go
    assert "volumes: the installation at /the/new/home adopted them (`stack.adopt`)" in todo.kept
    assert todo.images == [] and not any("--remove-images" in line for line in todo.kept)


def test_images_are_never_removed_from_a_home_whose_project_another_adopted(rt, engine):
    """The rollback tags are named by project: the adopter's now."""
    engine.mark = AdoptionMark("n3wn3wn3wn3wn3w0", "/the/new/home", "me")
    with pytest.raises(ConfigError, match="was adopted by the installation at /the/new/home"):
        uninstall.plan(rt, remove_volumes=False, remove_images=True, remove_config=False)
    assert not [call for call in engine.calls if call[0].startswith("remove")]


def test_the_adopters_remove_volumes_takes_the_mark_along(rt, engine):
    engine.mark = AdoptionMark("me", "/here", "0ld0ld0ld0ld0ld0")
    todo = uninstall.plan(rt, remove_volumes=True, remove_images=False, remove_config=False)
    assert todo.volumes == [*OUR_VOLUMES, f"{OURS}_ollama-stack-adoption"]
    todo = uninstall.plan(rt, remove_volumes=False, remove_images=False, remove_config=False)
    assert todo.volumes == []


def test_plan_images_are_the_docker_services_images_present_and_our_rollback_tags(
    local_paths, engine
):
    engine.tags.discard(IMAGES["mcp_proxy"])  # not pulled here
    rt = make_runtime(
        local_paths,
        engine,
        services={"ollama": {"type": "native-api", "url": "http://127.0.0.1:11434"}},
    )
    todo = uninstall.plan(rt, remove_volumes=False, remove_images=True, remove_config=False)
    assert todo.images == sorted(
        [IMAGES["webui"], f"ollama-stack-rollback/{OURS}/webui:20250101T000000"]
    )


def test_plan_follows_the_configured_images(local_paths, engine):
    engine.tags.add("registry.example.org/webui:7")
    rt = make_runtime(local_paths, engine, images={"webui": "registry.example.org/webui:7"})
    todo = uninstall.plan(rt, remove_volumes=False, remove_images=True, remove_config=False)
    assert "registry.example.org/webui:7" in todo.images
    assert IMAGES["webui"] not in todo.images


def test_plan_of_nothing_is_empty(stack_home):
    never = InstallPaths.for_target("user@never-installed")
    rt = make_runtime(never, FakeCompose(OURS))  # no directory, nothing on the engine
    todo = uninstall.plan(rt, remove_volumes=True, remove_images=True, remove_config=True)
    assert todo.empty
    assert todo == Plan()


def test_plan_empty_counts_every_list():
    assert Plan().empty
    for field in ("containers", "networks", "volumes", "images"):
        assert not Plan(**{field: ["x"]}).empty
    assert not Plan(config_dir="/x").empty
    assert Plan(kept=["volumes a"]).empty  # only kept: nothing to remove


def test_plan_never_lists_another_installations_rollback_tags(rt, engine):
    neighbours = {  # a project whose name starts like ours, in both tag layouts
        f"ollama-stack-rollback/{OURS}-dev/webui:20250101T000000",
        f"ollama-stack-rollback/{OURS}-dev-webui:20250101T000000",
    }
    engine.tags |= neighbours
    todo = uninstall.plan(rt, remove_volumes=False, remove_images=True, remove_config=False)
    assert todo.images == OUR_IMAGES


def test_plan_keeps_no_config_line_for_a_directory_without_an_installation(local_paths, engine):
    assert local_paths.root.exists() and not local_paths.installed
    rt = make_runtime(local_paths, engine)
    todo = uninstall.plan(rt, remove_volumes=True, remove_images=True, remove_config=True)
    assert todo.config_dir is None
    assert todo.kept == []


# -- execute -------------------------------------------------------------------------------


def test_execute_removes_in_order_and_names_images_still_in_use(rt, engine, local_paths):
    todo = uninstall.plan(rt, remove_volumes=True, remove_images=True, remove_config=True)
    engine.calls.clear()
    events: list[Event] = []
    left = uninstall.execute(rt, todo, progress=events.append)

    assert engine.calls == [
        ("remove", "container", OUR_CONTAINERS),
        ("remove", "network", [f"{OURS}_default"]),
        ("remove", "volume", OUR_VOLUMES),
        *(("remove_image", image) for image in OUR_IMAGES),
    ]
    assert left == [f"{IMAGES['webui']} (still used by another container)"]
    assert not local_paths.root.exists()
    assert [(e.kind, e.message) for e in events] == [("step", "removing 3 containers on local")]

    # the neighbour is whole; of our images only the shared one is left
    assert engine.resources["container"] == {
        f"{OTHER}-webui-1": OTHER,
        f"{OTHER}-mcp_proxy-1": OTHER,
    }
    assert set(engine.resources["volume"]) == {f"{OTHER}_ollama", f"{OTHER}_webui"}
    assert set(engine.resources["network"]) == {f"{OTHER}_default"}
    assert engine.tags == {
        IMAGES["webui"],
        "lab/mcpo:dev",
        f"ollama-stack-rollback/{OTHER}/webui:20250101T000000",
        "busybox:latest",
    }


def test_execute_default_plan_keeps_volumes_images_and_config(rt, engine, local_paths):
    todo = uninstall.plan(rt, remove_volumes=False, remove_images=False, remove_config=False)
    assert uninstall.execute(rt, todo) == []
    assert set(OUR_VOLUMES) <= set(engine.resources["volume"])
    assert set(OUR_IMAGES) <= engine.tags
    assert "remove_image" not in [c[0] for c in engine.calls]
    assert local_paths.secrets_file.exists()


def test_execute_stops_at_the_first_engine_failure(rt, engine, local_paths):
    todo = uninstall.plan(rt, remove_volumes=True, remove_images=True, remove_config=True)

    def refuse(kind: Kind, names: Sequence[str]) -> None:
        if kind == "network":
            raise StackError("network has active endpoints")
        FakeCompose.remove(engine, kind, names)

    engine.remove = refuse  # type: ignore[method-assign]
    with pytest.raises(StackError, match="active endpoints"):
        uninstall.execute(rt, todo)
    assert set(OUR_VOLUMES) <= set(engine.resources["volume"])
    assert local_paths.secrets_file.exists()


def test_local_remove_config_keeps_remote_installations(rt, local_paths):
    remote = InstallPaths.for_target("user@box")
    config.install(remote, {})
    assert remote.root.is_relative_to(local_paths.root)  # the layout that makes it bite
    todo = uninstall.plan(rt, remove_volumes=False, remove_images=False, remove_config=True)
    uninstall.execute(rt, todo)
    assert not local_paths.secrets_file.exists()
    assert remote.secrets_file.exists()


def test_remote_remove_config_removes_only_that_hosts_directory(local_paths, engine):
    config.install(local_paths, {})
    remote = InstallPaths.for_target("user@box")
    config.install(remote, {})
    rt = make_runtime(remote, engine)
    todo = uninstall.plan(rt, remove_volumes=False, remove_images=False, remove_config=True)
    assert todo.config_dir == str(remote.root)
    uninstall.execute(rt, todo)
    assert not remote.root.exists()
    assert local_paths.secrets_file.exists()


# -- removing the config ---------------------------------------------------------------------


def test_remove_config_removes_only_the_installations_own_files(rt, local_paths, tmp_path):
    """The local root may be any directory the user chose (OLLAMA_STACK_HOME)."""
    config.write_state(local_paths, {"platform": "cpu"})
    config.write_runtime_env(local_paths, {"A": "1"})
    mine = local_paths.root / "notes.txt"
    mine.write_text("the user's own file")
    todo = uninstall.plan(rt, remove_volumes=False, remove_images=False, remove_config=True)
    uninstall.execute(rt, todo)
    for path in (
        local_paths.config_file,
        local_paths.secrets_file,
        local_paths.state_file,
        local_paths.runtime_env_file,
    ):
        assert not path.exists(), path
    assert mine.read_text() == "the user's own file"


def test_remove_config_leaves_no_empty_directory(local_paths, engine):
    remote = InstallPaths.for_target("user@box")
    config.install(remote, {})
    config.write_state(remote, {"platform": "cpu"})
    with config.installation_lock(remote, "a backup"):  # leaves its lock file in state/
        pass
    rt = make_runtime(remote, engine)
    uninstall.execute(rt, Plan(config_dir=str(remote.root)))
    assert not remote.root.exists()
    assert remote.root.parent.exists()  # remotes/: other boxes may live there


def test_execute_never_removes_the_directory_a_plan_names(rt, local_paths, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.yaml").write_text("{}\n")
    (elsewhere / "secrets.env").write_text("A=1\n")
    uninstall.execute(rt, Plan(config_dir=str(elsewhere)))
    assert sorted(p.name for p in elsewhere.iterdir()) == ["config.yaml", "secrets.env"]


def test_execute_without_config_dir_keeps_the_config(rt, local_paths):
    uninstall.execute(rt, Plan(containers=list(OUR_CONTAINERS)))
    assert local_paths.installed
    assert local_paths.config_file.exists()


# -- the task: a backup before --remove-volumes ---------------------------------------------------


class Backups:
    """backup.create's engine: records what the engine held when it ran, or fails."""

    def __init__(self, engine: FakeCompose) -> None:
        self.engine = engine
        self.fail: StackError | None = None
        self.taken: list[tuple[str, list[str]]] = []
        self.owned: list[bool] = []  # whether each backup's Runtime came checked

    def create(self, rt, store, options, progress=None):
        from types import SimpleNamespace

        self.owned.append(rt.owned)
        if self.fail:
            raise self.fail
        volumes = sorted(n for n, p in self.engine.resources["volume"].items() if p == OURS)
        self.taken.append((options.description, volumes))
        return SimpleNamespace(id="20261203T120000Z-abcdef")


class Terminal:
    """stdin on a terminal, and a user who answers each question as told."""

    def __init__(self, answers: dict[str, bool]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, bool]] = []

    def isatty(self) -> bool:
        return True

    def confirm(self, question: str, default: bool = False) -> bool:
        self.asked.append((question, default))
        return self.answers.get(question, default)


@pytest.fixture
def backups(local_paths, engine, monkeypatch) -> Backups:
    from ollama_stack.backups import snapshot

    config.install(local_paths, {})
    monkeypatch.setattr(Runtime, "_new_compose", lambda self: engine)
    fake = Backups(engine)
    monkeypatch.setattr(snapshot, "create", fake.create)
    return fake


def on_a_terminal(monkeypatch, answers: dict[str, bool]) -> Terminal:
    import sys

    from ollama_stack.stack.display import Display

    terminal = Terminal(answers)
    monkeypatch.setattr(sys, "stdin", terminal)
    monkeypatch.setattr(
        Display, "confirm", lambda _, *asked, **default: terminal.confirm(*asked, **default)
    )
    return terminal


def uninstall_task(*argv: str) -> int:
    from .test_tasks import run_program

    return run_program("stack.uninstall", *argv)


BACKUP_QUESTION = "take a backup of the volumes first?"
REMOVE_QUESTION = "remove the above from local?"
NO_BACKUP_WARNING = "warning: no backup of the volumes was taken first (--backup takes one)"


def test_backup_flag_takes_one_before_anything_is_removed(capsys, backups, engine):
    assert uninstall_task("--remove-volumes", "--backup", "--yes") == 0
    assert backups.taken == [("before stack.uninstall", OUR_VOLUMES)]  # volumes still there
    assert not [n for n, p in engine.resources["volume"].items() if p == OURS]
    captured = capsys.readouterr()
    assert "backup 20261203T120000Z-abcdef taken first" in captured.out
    assert NO_BACKUP_WARNING not in captured.err


def test_on_a_terminal_the_backup_is_offered_and_taken_by_default(capsys, backups, monkeypatch):
    terminal = on_a_terminal(monkeypatch, {REMOVE_QUESTION: True})
    assert uninstall_task("--remove-volumes") == 0
    assert terminal.asked == [(REMOVE_QUESTION, False), (BACKUP_QUESTION, True)]
    assert backups.taken == [("before stack.uninstall", OUR_VOLUMES)]


def test_on_a_terminal_no_means_no_backup(capsys, backups, monkeypatch):
    terminal = on_a_terminal(monkeypatch, {REMOVE_QUESTION: True, BACKUP_QUESTION: False})
    assert uninstall_task("--remove-volumes") == 0
    assert [q for q, _ in terminal.asked] == [REMOVE_QUESTION, BACKUP_QUESTION]
    assert backups.taken == []
    assert NO_BACKUP_WARNING not in capsys.readouterr().err  # the user said so


@pytest.mark.parametrize("argv", [(), ("--remove-images",), ("--remove-volumes", "--no-backup")])
def test_no_question_without_volumes_going_or_with_no_backup(capsys, backups, monkeypatch, argv):
    terminal = on_a_terminal(monkeypatch, {REMOVE_QUESTION: True})
    assert uninstall_task(*argv) == 0
    assert terminal.asked == [(REMOVE_QUESTION, False)]
    assert backups.taken == []
    assert NO_BACKUP_WARNING not in capsys.readouterr().err


def test_without_a_terminal_scripts_go_on_with_one_warning(capsys, backups, engine):
    assert uninstall_task("--remove-volumes", "--yes") == 0  # stdin is not a terminal here
    assert backups.taken == []
    assert not [n for n, p in engine.resources["volume"].items() if p == OURS]
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "backup" in ln]
    assert warnings == [NO_BACKUP_WARNING]


def test_a_failed_backup_stops_the_uninstall_with_nothing_removed(capsys, backups, engine):
    from ollama_stack.backups.store import BadBackup

    before = {kind: dict(names) for kind, names in engine.resources.items()}
    backups.fail = BadBackup("backup store /nas is full", "free space in it")
    assert uninstall_task("--remove-volumes", "--remove-config", "--backup", "--yes") == 16
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert errors == [
        "error: the backup before the uninstall failed, so nothing was removed: "
        "backup store /nas is full — free space in it; or go on with --no-backup at your own risk"
    ]
    assert engine.resources == before
    assert not [c for c in engine.calls if c[0] in ("remove", "remove_image")]
    assert config.InstallPaths.for_target(None).installed


def test_a_backup_that_would_be_refused_is_refused_before_the_question(capsys, backups, engine):
    """Adopted elsewhere: the volumes are the adopter's. --backup stops before
    anything is asked (without a terminal, the question would be refused first)."""
    engine.mark = AdoptionMark("n3wn3wn3wn3wn3w0", "/the/new/home", "me")
    assert uninstall_task("--remove-config", "--backup") == ExitCode.CONFIG
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(
        "error: the backup before the uninstall failed, so nothing was removed: "
        "compose project 'ollama-stack' on local was adopted by the installation at /the/new/home"
    )
    assert errors[0].endswith("; or go on with --no-backup at your own risk")
    assert backups.taken == [] and not [c for c in engine.calls if c[0].startswith("remove")]
    assert config.InstallPaths.for_target(None).installed


def test_the_backup_gets_the_runtime_checked_before_the_question(backups, engine):
    assert uninstall_task("--remove-volumes", "--backup", "--yes") == 0
    assert [c[0] for c in engine.calls].count("ownership") == 1
    assert backups.owned == [True]  # so the real backup does not list the engine again


def test_backup_and_no_backup_together_are_refused(capsys, backups, engine):
    assert uninstall_task("--remove-volumes", "--backup", "--no-backup", "--yes") == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert line.startswith("error: --backup and --no-backup contradict each other")
    assert engine.calls == []


def test_the_json_result_names_the_backup(capsys, backups):
    import json

    assert uninstall_task("--remove-volumes", "--backup", "--yes", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["result"] == "removed"
    assert document["backup"] == "20261203T120000Z-abcdef"


def test_an_installation_of_an_older_schema_can_still_be_uninstalled(capsys, backups, engine):
    paths = config.InstallPaths.for_target(None)
    paths.config_file.write_text("platform: cpu\n")  # no schema: before versions
    assert uninstall_task("--yes", "--remove-config") == 0
    assert not paths.installed
    assert not [n for n, p in engine.resources["container"].items() if p == OURS]
