"""stack/update/engine.py: selection, check, apply with its rollback, and rollback by hand.

Docker is faked at the wrapper boundary: ``FakeCompose`` stands in for
``ComposeProject`` with a small model of an engine (tags, RepoDigests,
containers) and of what the registry serves, and ``registry.remote_digest`` reads
that same model. The services' health is real HTTP on loopback: each service
has a server that answers healthy only while its container runs an image that
is not marked broken, so ``lifecycle.wait_healthy`` runs for real.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ollama_stack.common.errors import (
    ConfigError,
    DockerFailed,
    ExitCode,
    HealthTimeout,
    ImageUnavailable,
    NotInstalled,
    StackError,
)
from ollama_stack.compose.client import (
    AdoptionMark,
    ComposeProject,
    ContainerRun,
    ContainerState,
    ImageInfo,
    Ownership,
)
from ollama_stack.stack import config, lifecycle
from ollama_stack.stack.config import InstallPaths, Settings
from ollama_stack.stack.events import Event
from ollama_stack.stack.hosts.target import Target
from ollama_stack.stack.runtime import Runtime
from ollama_stack.stack.services import CATALOG, kinds
from ollama_stack.stack.services import ollama_native as native
from ollama_stack.stack.services.ollama_native import InstallMethod, NativeUpdate
from ollama_stack.stack.update import engine as update
from ollama_stack.stack.update import registry
from ollama_stack.stack.update.engine import ServiceOutcome, UpdateReport

from .helpers import FakeShell, Route, json_route, linux_shell, mcpo_routes, webui_routes

HEALTHY_ROUTES: dict[str, dict[str, Route]] = {
    "ollama": {"/api/version": json_route(200, {"version": "0.5.7"})},
    "webui": webui_routes() | {"/api/version": json_route(200, {"version": "0.6.5"})},
    "mcp_proxy": mcpo_routes(),
}
HOMEBREW = {
    "command -v ollama": (0, "/opt/homebrew/bin/ollama\n"),
    "command -v brew": (0, "/opt/homebrew/bin/brew\n"),
    "list --versions ollama": (0, "ollama 0.5.7\n"),
}


def image_id(service: str, version: str) -> str:
    return "sha256:" + hashlib.sha256(f"image {service} {version}".encode()).hexdigest()


def digest_of(service: str, version: str) -> str:
    return "sha256:" + hashlib.sha256(f"manifest {service} {version}".encode()).hexdigest()


def repository(reference: str) -> str:
    """``name:tag`` → ``name`` (a colon before the last slash is a port)."""
    return (
        reference.rpartition(":")[0] if reference.rfind(":") > reference.rfind("/") else reference
    )


# -- the fake at the wrapper boundary ----------------------------------------------------


@dataclass(frozen=True)
class Release:
    """What the registry serves for a reference: the image a pull brings, and its digest."""

    id: str
    digest: str


@dataclass
class Container:
    state: str
    image_id: str
    reference: str  # what it was created from, as `docker ps --format {{.Image}}` shows


@dataclass
class UpCall:
    services: list[str]
    pull: str
    force_recreate: bool
    no_deps: bool
    files: list[str] = field(default_factory=list, compare=False)  # compose files it ran with


class FakeCompose:
    """ComposeProject's interface over an in-memory engine and registry."""

    def __init__(self, project: str, images: Mapping[str, str]) -> None:
        self.project = project
        self.images = dict(images)  # service → reference, as ComposeProject.images
        self.tags: dict[str, str] = {}  # local reference → image ID
        self.repo_digests: dict[str, tuple[str, ...]] = {}  # image ID → RepoDigests
        self.containers: dict[str, Container] = {}  # service → its container
        self.published: dict[str, Release] = {}  # reference → what the registry serves
        self.unreachable: set[str] = set()  # references whose registry does not answer
        self.pull_errors: dict[str, StackError] = {}
        self.broken: set[str] = set()  # image IDs that never become healthy
        self.calls: list[tuple[Any, ...]] = []
        self.on_change: Callable[[], None] = lambda: None
        self.files: list[Any] = []  # what Runtime.resolve() points it at
        self.installation = "me"
        self.held = Ownership(set())  # other installations' ids, and an adoption mark

    def with_files(self, files: Sequence[Any]) -> FakeCompose:
        """The same engine seen through other compose files (as Runtime.resolve()
        makes it): a copy, so a call on the unresolved one shows in UpCall.files."""
        view = copy.copy(self)
        view.files = list(files)
        return view

    # -- set-up helpers (not part of ComposeProject) --

    def have(self, service: str, version: str) -> str:
        """The engine holds ``version`` of the service's image under its reference."""
        reference, found = self.images[service], image_id(service, version)
        self.tags[reference] = found
        self.repo_digests[found] = (f"{repository(reference)}@{digest_of(service, version)}",)
        return found

    def run(self, service: str, version: str, state: str = "running") -> str:
        found = self.have(service, version)
        self.containers[service] = Container(state, found, self.images[service])
        self.on_change()
        return found

    def publish(self, service: str, version: str) -> None:
        self.published[self.images[service]] = Release(
            image_id(service, version), digest_of(service, version)
        )

    def remote_digest(self, image: str, timeout: float = 10.0) -> str:
        """Stands in for registry.remote_digest."""
        self.calls.append(("remote_digest", image))
        if image in self.unreachable:
            raise registry.RegistryUnreachable(
                f"cannot reach registry for {image}: connection refused",
                registry.UNREACHABLE_REMEDY,
            )
        if image not in self.published:
            raise registry.ImageNotInRegistry(f"{image} is not in the registry")
        return self.published[image].digest

    def ups(self) -> list[UpCall]:
        return [c[1] for c in self.calls if c[0] == "up"]

    def kinds(self) -> list[str]:
        return [c[0] for c in self.calls]

    # -- ComposeProject's methods --

    def ps(self) -> list[ContainerState]:
        self.calls.append(("ps",))
        return [
            ContainerState(
                name=f"{self.project}-{service}-1",
                service=service,
                state=c.state,
                image=c.reference,
            )
            for service, c in self.containers.items()
        ]

    def adoption_mark(self) -> AdoptionMark | None:
        self.calls.append(("adoption_mark",))
        return self.held.mark

    def ownership(self) -> Ownership:
        self.calls.append(("ownership",))
        return self.held

    def container_runs(self) -> dict[str, ContainerRun]:
        self.calls.append(("container_runs",))
        return {
            service: ContainerRun(service, f"{self.project}-{service}-1", c.state, 0, 0)
            for service, c in self.containers.items()
        }

    def exec_in(self, service: str, argv: list[str], timeout: float = 15.0) -> tuple[int, str]:
        """Open WebUI asked from inside whether it reaches Ollama: it does."""
        self.calls.append(("exec_in", service))
        return 0, '{"version": "0.5.7"}'

    def container_image_ids(self) -> dict[str, str]:
        self.calls.append(("container_image_ids",))
        return {service: c.image_id for service, c in self.containers.items()}

    def image_info(self, reference: str) -> ImageInfo | None:
        found = self.tags.get(reference)
        if found is None:
            return None
        tags = tuple(t for t, i in self.tags.items() if i == found)
        return ImageInfo(found, self.repo_digests.get(found, ()), tags)

    def image_exists(self, reference: str) -> bool:
        # by name or by ID, like `docker image inspect`; an ID left without
        # any tag here stands for an image pruned away
        return reference in self.tags or reference in self.tags.values()

    def pull_image(self, reference: str, sink: Callable[[str], None] | None = None) -> None:
        self.calls.append(("pull", reference))
        if reference in self.pull_errors:
            raise self.pull_errors[reference]
        release = self.published[reference]
        self.tags[reference] = release.id
        self.repo_digests[release.id] = (f"{repository(reference)}@{release.digest}",)
        if sink:
            sink(f"{reference}: Pull complete")

    def tag(self, source: str, target: str) -> None:
        self.calls.append(("tag", source, target))
        try:
            registry.parse_reference(target)
        except ConfigError:  # what `docker tag` says to a bad name
            raise DockerFailed(f'invalid reference format: "{target}"') from None
        known = set(self.tags.values()) | {c.image_id for c in self.containers.values()}
        found = self.tags.get(source, source)
        if found not in known:
            raise ImageUnavailable(f"No such image: {source}")
        self.tags[target] = found

    def up(
        self,
        services: Sequence[str],
        *,
        pull: str = "missing",
        force_recreate: bool = False,
        no_deps: bool = False,
        sink: Callable[[str], None] | None = None,
    ) -> None:
        files = [Path(f).name for f in self.files]
        self.calls.append(("up", UpCall(list(services), pull, force_recreate, no_deps, files)))
        for service in list(services) or list(self.images):  # no names: compose means all
            reference = self.images[service]
            self.containers[service] = Container("running", self.tags[reference], reference)
            if sink:
                sink(f"Container {self.project}-{service}-1 Started")
        self.on_change()

    def images_matching(self, reference: str) -> list[str]:
        """`docker images PATTERN`: path.Match on the name, so `*` never crosses a "/"."""
        pattern = re.compile("[^/]*".join(re.escape(part) for part in reference.split("*")))
        with_tag = ":" in reference.rpartition("/")[2]
        return sorted(t for t in self.tags if pattern.fullmatch(t if with_tag else repository(t)))

    def remove_image(self, reference: str) -> bool:
        self.calls.append(("remove_image", reference))
        if {reference, reference.removesuffix(":latest")} & {
            c.reference for c in self.containers.values()
        }:
            return False
        del self.tags[reference]
        return True

    def last_log_lines(self, service: str, count: int = 5) -> list[str]:
        return [f"{service}-1  | still starting"]


def test_the_fake_takes_the_wrappers_arguments():
    """Each stand-in method is called exactly like ComposeProject's."""
    fake_only = {"have", "run", "publish", "remote_digest", "ups", "kinds"}
    methods = [
        name
        for name, _ in inspect.getmembers(FakeCompose, inspect.isfunction)
        if not name.startswith("_") and name not in fake_only
    ]
    assert len(methods) >= 10
    for name in methods:
        ours = inspect.signature(getattr(FakeCompose, name)).parameters
        theirs = inspect.signature(getattr(ComposeProject, name)).parameters
        assert [(p.name, p.kind) for p in ours.values()] == [
            (p.name, p.kind) for p in theirs.values()
        ], name
    ours = inspect.signature(FakeCompose.remote_digest).parameters
    theirs = inspect.signature(registry.remote_digest).parameters
    assert list(ours)[1:] == list(theirs)


# -- the stack: runtime, fake engine, real health servers ----------------------------------


@dataclass
class Stack:
    rt: Runtime
    engine: FakeCompose
    servers: dict[str, Any]
    events: list[Event] = field(default_factory=list)

    def progress(self, event: Event) -> None:
        self.events.append(event)

    def history(self) -> list[dict[str, Any]]:
        return config.read_state(self.rt.paths).get("updates", [])

    def rollback_tags(self) -> dict[str, str]:
        return {
            t: i for t, i in self.engine.tags.items() if t.startswith(update.ROLLBACK_REPO + "/")
        }


class Answers:
    """A confirm callback that remembers each question."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def __call__(self, question: str) -> bool:
        self.asked.append(question)
        return self.answer


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch):
    monkeypatch.setattr(lifecycle, "POLL_SECONDS", 0.02)


@pytest.fixture
def make_stack(local_paths, http_service, monkeypatch):
    """A runtime whose compose is a FakeCompose and whose services answer on loopback."""

    def build(
        *,
        installed: bool = True,
        shell: FakeShell | None = None,
        paths: InstallPaths = local_paths,
        external: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> Stack:
        """``external``: service → native-api/remote-api, served by its (always healthy) server."""
        servers = {name: http_service({}) for name in tuple(CATALOG.names())}
        ports = {name: server.port for name, server in servers.items()}
        if external:
            kinds = {n: {"type": k, "url": servers[n].url} for n, k in external.items()}
            settings["services"] = kinds | settings.get("services", {})
        merged = config.validate([("test", {"platform": "cpu", "ports": ports, **settings})])
        engine = FakeCompose(merged.project, merged.images)
        # The engine replaces the compose wrapper: the seam every update test uses.
        rt = Runtime(Target(None, _shell=shell or linux_shell(2)), paths, merged, compose=engine)

        def sync_health() -> None:
            for name, server in servers.items():
                c = engine.containers.get(name)
                good = c is not None and c.state == "running" and c.image_id not in engine.broken
                good = good or not rt.kind(name).in_compose
                server.routes = HEALTHY_ROUTES[name] if good else {}

        engine.on_change = sync_health
        monkeypatch.setattr(registry, "remote_digest", engine.remote_digest)
        if installed:
            config.install(paths, {})
        sync_health()
        return Stack(rt, engine, servers)

    return build


@pytest.fixture
def running_stack(make_stack) -> Callable[..., Stack]:
    """Installed; every docker service runs v1 and the registry serves v1."""

    def build(**kwargs: Any) -> Stack:
        s = make_stack(**kwargs)
        for name in s.rt.docker_services():
            s.engine.run(name, "v1")
            s.engine.publish(name, "v1")
        return s

    return build


@pytest.fixture
def stack(running_stack) -> Stack:
    return running_stack()


def forbid_native_update(*args: Any, **kwargs: Any) -> NativeUpdate:
    raise AssertionError("native.update_native must not run here")


# -- select -------------------------------------------------------------------------------


def test_select_defaults_to_every_service(make_stack):
    s = make_stack(installed=False)
    assert update.select(s.rt, []) == list(tuple(CATALOG.names()))
    assert update.select(s.rt, ["mcp_proxy", "ollama"]) == ["mcp_proxy", "ollama"]


def test_select_unknown_name_is_a_config_error_listing_valid_names(make_stack):
    s = make_stack(installed=False)
    with pytest.raises(ConfigError) as info:
        update.select(s.rt, ["webui", "postgres"], docker_only=True)
    assert info.value.code == ExitCode.CONFIG == 2
    assert info.value.message == "unknown service postgres"
    assert info.value.remedy == "valid services: ollama, webui, mcp_proxy"


@pytest.mark.parametrize(
    ("flag", "names", "expected"),
    [
        ("docker_only", [], ["mcp_proxy"]),
        ("native_only", [], ["ollama"]),
        ("remote_only", [], ["webui"]),
        ("docker_only", ["webui", "mcp_proxy"], ["mcp_proxy"]),
        ("native_only", ["webui", "mcp_proxy"], []),
        ("remote_only", ["mcp_proxy", "webui"], ["webui"]),
    ],
)
def test_select_type_filters(make_stack, flag, names, expected):
    s = make_stack(
        installed=False,
        services={
            "ollama": {"type": "native-api", "url": "http://127.0.0.1:11434"},
            "webui": {"type": "remote-api", "url": "https://chat.example.org"},
        },
    )
    assert update.select(s.rt, names, **{flag: True}) == expected


@pytest.mark.parametrize(
    "flags",
    [
        {"docker_only": True, "native_only": True},
        {"docker_only": True, "remote_only": True},
        {"native_only": True, "remote_only": True},
        {"docker_only": True, "native_only": True, "remote_only": True},
    ],
)
def test_select_two_type_filters_exclude_each_other(make_stack, flags):
    s = make_stack(installed=False)
    with pytest.raises(ConfigError) as info:
        update.select(s.rt, ["webui"], **flags)
    assert info.value.code == 2
    assert "exclude each other" in info.value.message


# -- check --------------------------------------------------------------------------------


def checks_by_name(s: Stack, names: list[str] | None = None, **kwargs: Any):
    return {
        c.service: c for c in update.check(s.rt, names or list(tuple(CATALOG.names())), **kwargs)
    }


def test_check_up_to_date_when_digests_match_and_the_container_runs_that_image(stack):
    found = checks_by_name(stack)
    assert {c.status for c in found.values()} == {"up-to-date"}
    webui = found["webui"]
    assert webui.image == "ghcr.io/open-webui/open-webui:main"
    assert webui.image_id == image_id("webui", "v1")
    assert webui.local_digest == webui.registry_digest == digest_of("webui", "v1")
    assert webui.detail == ""
    assert ("container_image_ids",) in stack.engine.calls
    asked = [c[1] for c in stack.engine.calls if c[0] == "remote_digest"]
    assert sorted(asked) == sorted(stack.engine.images[n] for n in tuple(CATALOG.names()))
    assert [c.service for c in found.values()] == list(CATALOG.names())  # in catalog order


def test_check_update_available_when_the_registry_has_another_digest(stack):
    stack.engine.publish("webui", "v2")
    found = checks_by_name(stack)
    webui = found["webui"]
    assert webui.status == "update-available"
    assert webui.local_digest == digest_of("webui", "v1")
    assert webui.registry_digest == digest_of("webui", "v2")
    assert webui.detail == ""
    assert found["ollama"].status == found["mcp_proxy"].status == "up-to-date"


def test_check_pulled_but_the_container_still_runs_the_old_image(stack):
    stack.engine.publish("webui", "v2")
    stack.engine.have("webui", "v2")  # pulled by hand; the container was not recreated
    webui = checks_by_name(stack, ["webui"])["webui"]
    assert webui.status == "update-available"
    assert webui.detail == "pulled; container still runs the old image"
    assert webui.local_digest == webui.registry_digest == digest_of("webui", "v2")
    assert webui.image_id == image_id("webui", "v1")  # what runs, not what is tagged


def test_check_a_stopped_container_on_the_current_image_is_up_to_date(make_stack):
    s = make_stack()
    s.engine.run("webui", "v1", state="exited")
    s.engine.publish("webui", "v1")
    assert checks_by_name(s, ["webui"])["webui"].status == "up-to-date"


def test_check_not_pulled(make_stack):
    s = make_stack()
    s.engine.publish("webui", "v1")
    webui = checks_by_name(s, ["webui"])["webui"]
    assert (webui.status, webui.detail) == ("not-pulled", "not on this engine yet")
    assert webui.image_id is None and webui.local_digest is None
    assert webui.registry_digest == digest_of("webui", "v1")


def test_check_not_pulled_keeps_the_id_the_container_still_runs(stack):
    del stack.engine.tags[stack.engine.images["webui"]]  # untagged; the container remains
    webui = checks_by_name(stack, ["webui"])["webui"]
    assert webui.status == "not-pulled"
    assert webui.image_id == image_id("webui", "v1")


def test_check_an_image_without_repo_digest_is_a_local_build(stack):
    # Built here or `docker load`ed (RepoDigests are empty then): there is no
    # digest to compare, so claiming an update would be a guess.
    stack.engine.repo_digests[image_id("webui", "v1")] = ()
    webui = checks_by_name(stack, ["webui"])["webui"]
    assert webui.local_digest is None
    assert webui.status == "local-build"


def test_check_before_install_reads_no_containers(make_stack):
    s = make_stack(installed=False)
    s.engine.have("webui", "v1")
    s.engine.publish("webui", "v1")
    assert checks_by_name(s, ["webui"])["webui"].status == "up-to-date"
    assert "container_image_ids" not in s.engine.kinds()


def test_check_unreachable_registry_is_a_status_unless_strict(stack):
    stack.engine.unreachable.add(stack.engine.images["webui"])
    found = checks_by_name(stack)
    webui = found["webui"]
    assert webui.status == "unknown"
    assert webui.detail == f"cannot reach registry for {webui.image}: connection refused"
    assert webui.registry_digest is None
    assert webui.local_digest == digest_of("webui", "v1")
    assert found["mcp_proxy"].status == "up-to-date"  # the others are still checked

    with pytest.raises(registry.RegistryUnreachable) as info:
        update.check(stack.rt, list(tuple(CATALOG.names())), strict=True)
    assert info.value.code == ExitCode.REGISTRY_UNREACHABLE


def test_check_asks_the_registries_at_the_same_time(stack, monkeypatch):
    # Each registry costs a token round trip and a HEAD: asked one after
    # another, a check took the sum of them.
    answer = stack.engine.remote_digest

    def slow_registry(image: str, timeout: float = 10.0) -> str:
        time.sleep(0.4)
        return answer(image, timeout)

    monkeypatch.setattr(registry, "remote_digest", slow_registry)
    began = time.monotonic()
    found = checks_by_name(stack)
    assert time.monotonic() - began < 0.4 * (len(found) - 1)
    assert {c.status for c in found.values()} == {"up-to-date"}


def test_check_an_image_missing_from_the_registry_is_unknown(stack):
    del stack.engine.published[stack.engine.images["ollama"]]
    ollama = checks_by_name(stack, ["ollama"])["ollama"]
    assert ollama.status == "unknown"
    assert "is not in the registry" in ollama.detail


def test_check_native_api_reports_version_and_install_method(make_stack, http_service):
    native_ollama = http_service({"/api/version": json_route(200, {"version": "0.6.2"})})
    s = make_stack(
        shell=FakeShell(dict(HOMEBREW)),
        services={"ollama": {"type": "native-api", "url": native_ollama.url + "/"}},
    )
    ollama = checks_by_name(s, ["ollama"])["ollama"]
    assert (ollama.type, ollama.status, ollama.version) == ("native-api", "ok", "0.6.2")
    assert ollama.image == native_ollama.url  # the trailing slash is gone
    assert ollama.detail.startswith("installed via homebrew;")
    assert native_ollama.requests == ["/api/version"]
    assert "remote_digest" not in s.engine.kinds()


def test_check_native_api_that_does_not_answer(make_stack, closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    s = make_stack(
        shell=FakeShell(dict(HOMEBREW)), services={"ollama": {"type": "native-api", "url": url}}
    )
    ollama = checks_by_name(s, ["ollama"])["ollama"]
    assert (ollama.status, ollama.version) == ("unreachable", None)
    assert ollama.detail.startswith("nothing answers on 127.0.0.1:")


def test_check_remote_api_is_validated_only(make_stack, http_service, closed_port):
    remote = http_service(
        {
            "/health": json_route(200, {"status": True}),  # validated on its real endpoint
            "/api/version": json_route(200, {"version": "0.6.5"}),
        }
    )
    s = make_stack(
        services={
            "webui": {"type": "remote-api", "url": remote.url},
            "ollama": {"type": "remote-api", "url": f"http://127.0.0.1:{closed_port}"},
        }
    )
    found = checks_by_name(s, ["webui", "ollama"])
    assert (found["webui"].status, found["webui"].version) == ("ok", "0.6.5")
    assert found["webui"].detail == "remote service: validated, never changed from here"
    assert found["ollama"].status == "unreachable"
    assert s.rt.target.shell().commands == []  # no install detection for a remote service


def test_check_remote_api_answering_without_a_version_is_unreachable(make_stack, http_service):
    remote = http_service({"/api/version": json_route(200, ["not", "a", "dict"])})
    s = make_stack(services={"webui": {"type": "remote-api", "url": remote.url}})
    assert checks_by_name(s, ["webui"])["webui"].status == "unreachable"


def test_check_remote_api_mcp_proxy_that_is_healthy_is_not_unreachable(make_stack, http_service):
    mcpo = http_service(mcpo_routes())
    s = make_stack(services={"mcp_proxy": {"type": "remote-api", "url": mcpo.url}})
    assert checks_by_name(s, ["mcp_proxy"])["mcp_proxy"].status == "ok"


# -- apply: order, confirmation, history -----------------------------------------------------


def apply(s: Stack, names: list[str] | None = None, answer: bool = True, **kwargs: Any):
    kwargs.setdefault("timeout", 3)
    kwargs.setdefault("backup", None)  # the backup engine's own tests are elsewhere
    confirm = Answers(answer)
    report = update.apply(
        s.rt, names or list(tuple(CATALOG.names())), confirm=confirm, progress=s.progress, **kwargs
    )
    return report, confirm


def test_apply_pulls_everything_before_recreating_only_what_changed(stack):
    engine = stack.engine
    engine.publish("webui", "v2")
    engine.publish("mcp_proxy", "v2")
    report, confirm = apply(stack)

    kinds = engine.kinds()
    pulls = [i for i, k in enumerate(kinds) if k == "pull"]
    ups = [i for i, k in enumerate(kinds) if k == "up"]
    assert [engine.calls[i][1] for i in pulls] == [
        engine.images["webui"],
        engine.images["mcp_proxy"],
    ]
    assert len(ups) == 1 and max(pulls) < ups[0]
    assert engine.ups() == [UpCall(["webui", "mcp_proxy"], "never", False, True)]
    assert engine.containers["webui"].image_id == image_id("webui", "v2")
    assert engine.containers["mcp_proxy"].image_id == image_id("mcp_proxy", "v2")
    assert engine.containers["ollama"].image_id == image_id("ollama", "v1")

    outcomes = {o.service: o for o in report.outcomes}
    assert [o.service for o in report.outcomes] == ["ollama", "webui", "mcp_proxy"]
    assert outcomes["ollama"].outcome == "up-to-date"
    assert outcomes["ollama"].current == digest_of("ollama", "v1")
    assert (outcomes["webui"].outcome, outcomes["webui"].previous, outcomes["webui"].current) == (
        "updated",
        image_id("webui", "v1"),
        image_id("webui", "v2"),
    )
    assert report.exit_code == ExitCode.OK
    # asked once, naming only what will change (ollama has nothing new)
    assert confirm.asked == ["update mcp_proxy, webui on local while the stack runs?"]

    (entry,) = stack.history()
    assert entry["status"] == "applied"
    assert entry["services"] == {
        "webui": {
            "image": engine.images["webui"],
            "previous_id": image_id("webui", "v1"),
            "new_id": image_id("webui", "v2"),
        },
        "mcp_proxy": {
            "image": engine.images["mcp_proxy"],
            "previous_id": image_id("mcp_proxy", "v1"),
            "new_id": image_id("mcp_proxy", "v2"),
        },
    }
    assert config.read_state(stack.rt.paths)["platform"] == "cpu"  # prepare ran
    json_doc = report.to_json()
    assert json_doc["exit_code"] == 0 and len(json_doc["services"]) == 3


def test_apply_tags_the_previous_images_before_pulling(stack):
    engine = stack.engine
    engine.publish("webui", "v2")
    engine.publish("mcp_proxy", "v2")
    apply(stack)
    (entry,) = stack.history()
    tags = [(c[1], c[2]) for c in engine.calls if c[0] == "tag"]
    assert tags == [
        (image_id("webui", "v1"), f"ollama-stack-rollback/ollama-stack/webui:{entry['id']}"),
        (
            image_id("mcp_proxy", "v1"),
            f"ollama-stack-rollback/ollama-stack/mcp_proxy:{entry['id']}",
        ),
    ]
    kinds = engine.kinds()
    assert max(i for i, k in enumerate(kinds) if k == "tag") < kinds.index("pull")
    assert stack.rollback_tags() == {
        f"ollama-stack-rollback/ollama-stack/webui:{entry['id']}": image_id("webui", "v1"),
        f"ollama-stack-rollback/ollama-stack/mcp_proxy:{entry['id']}": image_id("mcp_proxy", "v1"),
    }


def test_apply_rollback_tags_carry_the_project_name(running_stack):
    s = running_stack(project="lab-2")
    s.engine.publish("webui", "v2")
    apply(s, ["webui"])
    (tag,) = s.rollback_tags()
    assert tag.startswith("ollama-stack-rollback/lab-2/webui:")


def test_apply_a_pull_failure_on_the_second_image_changes_no_container(stack):
    """No `up` at all; the reference already pulled points at its old image again."""
    engine = stack.engine
    engine.publish("webui", "v2")
    engine.publish("mcp_proxy", "v2")
    failure = ImageUnavailable("ghcr.io/open-webui/mcpo:main: manifest unknown", "check the tag")
    engine.pull_errors[engine.images["mcp_proxy"]] = failure
    with pytest.raises(ImageUnavailable) as info:
        apply(stack)
    assert info.value is failure
    assert [c[1] for c in engine.calls if c[0] == "pull"] == [
        engine.images["webui"],
        engine.images["mcp_proxy"],
    ]
    assert engine.ups() == []
    assert {s: c.image_id for s, c in engine.containers.items()} == {
        s: image_id(s, "v1") for s in tuple(CATALOG.names())
    }
    assert engine.tags[engine.images["webui"]] == image_id("webui", "v1")
    (entry,) = stack.history()
    assert entry["status"] == "failed"
    assert set(entry["services"]) == {"webui", "mcp_proxy"}


def test_apply_a_failed_up_recreates_the_previous_images(stack):
    engine = stack.engine
    engine.publish("webui", "v2")
    refusal = DockerFailed("Error response from daemon: driver failed programming")
    real_up = engine.up

    def up_once_refused(services, **kwargs):
        if not kwargs.get("force_recreate"):
            real_up(services, **kwargs)  # webui was recreated on v2, then compose failed
            raise refusal
        real_up(services, **kwargs)

    engine.up = up_once_refused  # type: ignore[method-assign]
    with pytest.raises(DockerFailed) as info:
        apply(stack, ["webui"])
    assert info.value is refusal
    assert engine.ups() == [
        UpCall(["webui"], "never", False, True),
        UpCall(["webui"], "never", True, True),
    ]
    assert engine.tags[engine.images["webui"]] == image_id("webui", "v1")
    assert engine.containers["webui"].image_id == image_id("webui", "v1")
    assert [e["status"] for e in stack.history()] == ["failed"]


def test_apply_strict_check_stops_before_any_change(stack):
    stack.engine.publish("webui", "v2")
    stack.engine.unreachable.add(stack.engine.images["mcp_proxy"])
    with pytest.raises(registry.RegistryUnreachable):
        apply(stack)
    assert not {"tag", "pull", "up"} & set(stack.engine.kinds())
    assert stack.history() == []


def test_apply_asks_only_when_a_selected_service_runs(make_stack):
    s = make_stack()
    s.engine.run("webui", "v1")
    s.engine.run("mcp_proxy", "v1", state="exited")
    s.engine.have("ollama", "v1")
    for name in tuple(CATALOG.names()):
        s.engine.publish(name, "v2")  # something new for everyone

    _, confirm = apply(s, ["ollama", "mcp_proxy"])  # neither runs
    assert confirm.asked == []
    _, confirm = apply(s, ["mcp_proxy", "webui"])
    assert confirm.asked == ["update webui on local while the stack runs?"]


def test_apply_asks_before_a_native_update_even_when_nothing_runs(make_stack, monkeypatch):
    s = make_stack(external={"ollama": "native-api"})
    update_result = NativeUpdate(
        InstallMethod("homebrew", "/opt/homebrew/bin/ollama", "brew upgrade ollama", False, ""),
        "0.5.1",
        "0.5.1",
        "brew upgrade ollama",
        "unchanged",
        "Ollama is still 0.5.1: nothing newer came",
    )
    monkeypatch.setattr(native, "update_native", lambda *a, **k: update_result)
    report, confirm = apply(s, ["ollama"])
    assert confirm.asked == ["update ollama on local while the stack runs?"]
    assert [o.outcome for o in report.outcomes] == ["up-to-date"]
    assert s.engine.calls == []  # no docker service selected: the engine is not asked


def test_apply_with_nothing_new_asks_nothing(stack):
    _, confirm = apply(stack, ["webui"], answer=False)
    assert confirm.asked == []


def test_apply_declined_changes_nothing(stack):
    stack.engine.publish("webui", "v2")
    with pytest.raises(StackError) as info:
        apply(stack, ["webui"], answer=False)
    assert info.value.code == ExitCode.FAILED
    assert info.value.message == "cancelled; nothing was changed"
    # only read-only questions were asked before the answer: no tag, pull or up
    assert not {"tag", "pull", "up"} & set(stack.engine.kinds())
    assert stack.history() == []


def test_apply_before_install_touches_neither_engine_nor_network(make_stack):
    s = make_stack(installed=False)
    with pytest.raises(NotInstalled):
        apply(s, ["webui"])
    assert s.engine.calls == []


def test_apply_with_nothing_newer_pulls_nothing(stack):
    report, _ = apply(stack)
    assert [o.outcome for o in report.outcomes] == ["up-to-date"] * 3
    assert not {"tag", "pull", "up"} & set(stack.engine.kinds())
    assert report.backup == ""
    assert report.exit_code == ExitCode.OK
    assert stack.history() == []


def test_apply_a_service_never_pulled_is_pulled_and_not_tagged(running_stack):
    s = running_stack()
    del s.engine.containers["webui"], s.engine.tags[s.engine.images["webui"]]
    report, _ = apply(s, ["webui"])
    assert [(o.outcome, o.previous) for o in report.outcomes] == [("updated", None)]
    assert "tag" not in s.engine.kinds()
    assert "pull" in s.engine.kinds()
    # it had no running container: an update pulls it but never starts it
    assert s.engine.ups() == []
    assert "not started" in report.outcomes[0].detail


def test_apply_backs_up_before_it_changes_anything(stack):
    stack.engine.publish("webui", "v2")
    report, _ = apply(stack, ["webui"], backup=None)
    assert report.backup == "skipped (--no-backup)"

    stack.engine.publish("webui", "v3")
    seen: list[list[str]] = []

    def back_up(rt: Runtime) -> str:
        seen.append(stack.engine.kinds())  # what had happened when the backup ran
        assert rt.owned  # checked before the question: the backup need not ask again
        return "20261203T120000Z-abcdef"

    before = len(stack.engine.kinds())
    report, _ = apply(stack, ["webui"], backup=back_up)
    assert report.backup == "20261203T120000Z-abcdef"
    (done,) = seen
    assert not {"tag", "pull", "up"} & set(done[before:])
    assert report.outcomes[0].outcome == "updated"


def test_a_failed_backup_stops_the_update_before_anything_changes(stack):
    from ollama_stack.backups.store import BadBackup

    stack.engine.publish("webui", "v2")

    def failing(rt: Runtime) -> str:
        raise BadBackup("the store's disk is full", "free some space")

    before = len(stack.engine.kinds())
    with pytest.raises(StackError) as failure:
        apply(stack, ["webui"], backup=failing)
    assert failure.value.message.startswith("the backup before the update failed")
    assert failure.value.code == ExitCode.BAD_BACKUP
    assert not {"tag", "pull", "up"} & set(stack.engine.kinds()[before:])
    assert stack.history() == []


def test_nothing_to_update_takes_no_backup(stack):
    def forbidden(rt: Runtime) -> str:
        raise AssertionError("a backup was taken with nothing to update")

    report, _ = apply(stack, backup=forbidden)
    assert report.backup == ""


def test_apply_streams_pull_and_up_output_as_events(stack):
    stack.engine.publish("webui", "v2")
    apply(stack, ["webui"])
    steps = [e.message for e in stack.events if e.kind == "step"]
    assert f"pulling {stack.engine.images['webui']} for webui" in steps
    assert "recreating webui" in steps
    output = [(e.message, e.service) for e in stack.events if e.kind == "output"]
    assert (f"{stack.engine.images['webui']}: Pull complete", "webui") in output
    assert ("Container ollama-stack-webui-1 Started", None) in output


# -- apply: health and the automatic rollback -----------------------------------------------


def test_apply_rolls_back_when_health_does_not_come(stack):
    engine = stack.engine
    engine.publish("webui", "v2")
    engine.broken.add(image_id("webui", "v2"))
    report, _ = apply(stack, ["webui"], timeout=0.3)

    assert engine.ups() == [
        UpCall(["webui"], "never", False, True),
        UpCall(["webui"], "never", True, True),
    ]
    assert [c[1:] for c in engine.calls if c[0] == "tag"][-1] == (
        image_id("webui", "v1"),
        engine.images["webui"],
    )
    assert engine.tags[engine.images["webui"]] == image_id("webui", "v1")
    assert engine.containers["webui"].image_id == image_id("webui", "v1")

    (outcome,) = report.outcomes
    assert (outcome.outcome, outcome.current) == ("rolled-back", image_id("webui", "v1"))
    assert outcome.detail.startswith("not healthy after 0.3 s: webui (")
    assert report.exit_code == ExitCode.ROLLED_BACK == 12
    (entry,) = stack.history()
    assert entry["status"] == "rolled-back"
    assert list(stack.rollback_tags().values()) == [image_id("webui", "v1")]  # kept
    warns = [e.message for e in stack.events if e.kind == "warn"]
    assert any(m.startswith("update unhealthy (not healthy after") for m in warns)


def test_apply_rollback_that_is_still_unhealthy_says_so(stack):
    engine = stack.engine
    engine.publish("webui", "v2")
    engine.broken |= {image_id("webui", "v2"), image_id("webui", "v1")}
    with pytest.raises(HealthTimeout) as info:
        apply(stack, ["webui"], timeout=0.2)
    assert info.value.message.startswith("rolled back, but still unhealthy: not healthy after 0.2")
    assert update.ROLLBACK_REPO in info.value.remedy
    assert info.value.code == ExitCode.HEALTH_TIMEOUT
    assert [u.force_recreate for u in engine.ups()] == [False, True]
    assert engine.tags[engine.images["webui"]] == image_id("webui", "v1")


def test_apply_uses_start_timeout_when_no_timeout_is_given(running_stack):
    s = running_stack(start_timeout=0.2)
    s.engine.publish("webui", "v2")
    s.engine.broken.add(image_id("webui", "v2"))
    report, _ = apply(s, ["webui"], timeout=None)
    assert report.outcomes[0].detail.startswith("not healthy after 0.2 s")


def test_apply_success_releases_older_rollback_tags_but_keeps_its_own(stack):
    engine = stack.engine
    older = "ollama-stack-rollback/ollama-stack/webui:20200101T000000"
    elsewhere = "ollama-stack-rollback/lab/webui:20200101T000000"
    engine.tags[older] = engine.tags[elsewhere] = image_id("webui", "v0")
    engine.publish("webui", "v2")
    apply(stack, ["webui"])
    (entry,) = stack.history()
    own = f"ollama-stack-rollback/ollama-stack/webui:{entry['id']}"
    assert ("remove_image", older) in engine.calls
    assert own in engine.tags and older not in engine.tags
    assert elsewhere in engine.tags
    assert ("remove_image", own) not in engine.calls


def test_apply_rollback_keeps_older_rollback_tags(stack):
    older = "ollama-stack-rollback/ollama-stack/webui:20200101T000000"
    stack.engine.tags[older] = image_id("webui", "v0")
    stack.engine.publish("webui", "v2")
    stack.engine.broken.add(image_id("webui", "v2"))
    apply(stack, ["webui"], timeout=0.2)
    assert older in stack.engine.tags
    assert "remove_image" not in stack.engine.kinds()


def test_apply_never_releases_another_installations_rollback_tags(stack):
    neighbours = [  # projects whose names start like ours
        "ollama-stack-rollback/ollama-stack-dev/webui:20200101T000000",
        "ollama-stack-rollback/ollama-stack-dev-webui:20200101T000000",  # the old layout
    ]
    for neighbour in neighbours:
        stack.engine.tags[neighbour] = image_id("webui", "v0")
    stack.engine.publish("webui", "v2")
    apply(stack, ["webui"])
    assert set(neighbours) <= set(stack.engine.tags)
    assert "remove_image" not in stack.engine.kinds()


def test_a_stopped_stack_is_updated_without_being_started(make_stack):
    s = make_stack()
    for name in tuple(CATALOG.names()):
        s.engine.run(name, "v1", state="exited")
    s.engine.publish("webui", "v2")
    s.engine.broken.add(image_id("webui", "v2"))  # would fail health if it were started
    report, confirm = apply(s, ["webui"], timeout=0.2)
    assert confirm.asked == []  # nothing running is touched
    assert s.engine.ups() == []  # `up` would have started what the user stopped
    assert [(o.outcome, o.detail) for o in report.outcomes] == [
        ("updated", "pulled; not started because it was stopped")
    ]
    assert {c.state for c in s.engine.ps()} == {"exited"}


def test_rollback_by_hand_needs_the_earlier_images_on_the_engine(stack):
    stack.engine.publish("webui", "v2")
    apply(stack, ["webui"])
    previous = stack.history()[-1]["services"]["webui"]["previous_id"]
    for ref in [r for r, i in stack.engine.tags.items() if i == previous]:
        del stack.engine.tags[ref]  # e.g. `docker image prune -a` ran since
    ups_before = len(stack.engine.ups())
    with pytest.raises(StackError) as info:
        update.rollback(stack.rt, timeout=1)
    assert "not on this engine" in info.value.message
    assert len(stack.engine.ups()) == ups_before and stack.history()[-1]["status"] == "applied"


def test_each_update_rolls_back_by_hand_once(stack):
    stack.engine.publish("webui", "v2")
    apply(stack, ["webui"])
    stack.engine.publish("webui", "v3")
    apply(stack, ["webui"])
    update.rollback(stack.rt, timeout=3)  # v3 → v2
    with pytest.raises(StackError) as info:
        update.rollback(stack.rt, timeout=3)  # not on to v1 through a released update
    assert "rolled-back-by-hand" in info.value.message


def test_apply_of_one_service_does_not_wait_for_stopped_others(make_stack):
    s = make_stack()
    s.engine.run("ollama", "v1", state="exited")
    s.engine.run("mcp_proxy", "v1", state="exited")
    s.engine.run("webui", "v1")
    s.engine.publish("webui", "v2")
    report, _ = apply(s, ["webui"], timeout=0.3)
    assert [o.outcome for o in report.outcomes] == ["updated"]
    assert [u.force_recreate for u in s.engine.ups()] == [False]


def test_rollback_waits_only_for_the_services_it_put_back(make_stack):
    s = make_stack()
    s.engine.run("ollama", "v1", state="exited")
    s.engine.run("webui", "v1")
    s.engine.publish("webui", "v2")
    s.engine.broken.add(image_id("webui", "v2"))
    report, _ = apply(s, ["webui"], timeout=0.3)
    assert [o.outcome for o in report.outcomes] == ["rolled-back"]
    assert "ollama" not in report.outcomes[0].detail


def test_config_refuses_project_names_docker_cannot_use_in_an_image_name():
    # Rollback tags put the project in an image path: "stack_" would make every apply fail.
    for bad in ("stack_", "stack-", "a_-b", "Stack"):
        with pytest.raises(ConfigError, match=f"bad config: project='{bad}'"):
            Settings.validated(project=bad)


def test_apply_works_for_a_project_name_with_separators(running_stack):
    s = running_stack(project="my_stack--2")
    s.engine.publish("webui", "v2")
    report, _ = apply(s, ["webui"])
    assert [o.outcome for o in report.outcomes] == ["updated"]


def test_two_updates_in_one_second_both_stay_in_the_history(stack, monkeypatch):
    monkeypatch.setattr(update.time, "strftime", lambda fmt, *a: "20250101T120000")
    stack.engine.publish("webui", "v2")
    apply(stack, ["webui"])
    stack.engine.publish("mcp_proxy", "v2")
    apply(stack, ["mcp_proxy"])
    recorded = [set(e["services"]) for e in stack.history()]
    assert recorded == [{"webui"}, {"mcp_proxy"}]


# -- apply: native and remote services, exit codes --------------------------------------------


def native_result(outcome: str, before: str | None = "0.5.1", after: str | None = "0.5.1"):
    method = InstallMethod("apt", "/usr/bin/ollama", "apt-get install ollama", True, "")
    return NativeUpdate(method, before, after, None, outcome, f"native said {outcome}")  # type: ignore[arg-type]


def test_apply_native_update_gets_the_hosts_shell_and_a_live_version_probe(make_stack, monkeypatch):
    shell = FakeShell()
    s = make_stack(shell=shell, external={"ollama": "native-api"})
    seen: dict[str, Any] = {}

    def fake_update_native(given_shell, version_probe, *, progress=None, **kwargs):
        seen.update(shell=given_shell, version=version_probe(), progress=progress, kwargs=kwargs)
        return native_result("updated", "0.5.7", "0.5.8")

    monkeypatch.setattr(native, "update_native", fake_update_native)
    report, _ = apply(s, ["ollama"])
    assert seen["shell"] is shell
    assert seen["version"] == "0.5.7"  # asked the native server's /api/version
    assert seen["progress"] == s.progress
    assert seen["kwargs"] == {}  # never a dry run
    assert s.servers["ollama"].requests == ["/api/version"]
    (outcome,) = report.outcomes
    assert (outcome.type, outcome.outcome, outcome.previous, outcome.current) == (
        "native-api",
        "updated",
        "0.5.7",
        "0.5.8",
    )
    assert outcome.detail == "native said updated"
    assert report.exit_code == ExitCode.OK


def test_apply_native_unchanged_is_reported_up_to_date(make_stack, monkeypatch):
    s = make_stack(external={"ollama": "native-api"})
    monkeypatch.setattr(native, "update_native", lambda *a, **k: native_result("unchanged"))
    report, _ = apply(s, ["ollama"])
    assert [o.outcome for o in report.outcomes] == ["up-to-date"]
    assert report.exit_code == ExitCode.OK


def test_apply_remote_service_is_validated_and_never_changed(make_stack, monkeypatch):
    monkeypatch.setattr(native, "update_native", forbid_native_update)
    s = make_stack(external={"webui": "remote-api"})
    report, confirm = apply(s, ["webui"])
    assert confirm.asked == []
    (outcome,) = report.outcomes
    assert (outcome.type, outcome.outcome, outcome.current) == ("remote-api", "validated", "0.6.5")
    assert outcome.detail == "remote service: validated, never changed from here"
    assert report.exit_code == ExitCode.OK
    assert s.engine.calls == []


def test_apply_unreachable_remote_service_fails(make_stack, closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    s = make_stack(services={"webui": {"type": "remote-api", "url": url}})
    report, _ = apply(s, ["webui"])
    (outcome,) = report.outcomes
    assert (outcome.outcome, outcome.current) == ("unreachable", None)
    assert outcome.detail.startswith("nothing answers on 127.0.0.1:")
    assert report.exit_code == ExitCode.FAILED


@pytest.mark.parametrize(
    ("docker_update", "native_outcome", "expected"),
    [
        (True, "needs-sudo", ExitCode.PARTLY_UPDATED),
        (True, "failed", ExitCode.PARTLY_UPDATED),
        (False, "needs-sudo", ExitCode.FAILED),
        (False, "manual", ExitCode.FAILED),
        (False, "unchanged", ExitCode.OK),
        (True, "updated", ExitCode.OK),
    ],
)
def test_apply_exit_code_for_a_docker_and_native_mix(
    running_stack, monkeypatch, docker_update, native_outcome, expected
):
    s = running_stack(external={"ollama": "native-api"})
    if docker_update:
        s.engine.publish("webui", "v2")
    monkeypatch.setattr(native, "update_native", lambda *a, **k: native_result(native_outcome))
    report, _ = apply(s, ["ollama", "webui"])
    assert [(o.service, o.type) for o in report.outcomes] == [
        ("webui", "docker"),
        ("ollama", "native-api"),
    ]
    assert report.outcomes[0].outcome == ("updated" if docker_update else "up-to-date")
    assert report.exit_code == expected
    assert report.to_json()["exit_code"] == int(expected)


def outcomes(*kinds: str) -> UpdateReport:
    return UpdateReport([ServiceOutcome(f"s{i}", "docker", k) for i, k in enumerate(kinds)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ((), 0),
        (("up-to-date", "validated", "updated"), 0),
        (("updated", "needs-sudo"), 13),
        (("updated", "unreachable"), 13),
        (("needs-sudo",), 1),
        (("up-to-date", "manual"), 1),
        (("failed", "unreachable"), 1),
        (("rolled-back",), 12),
        (("rolled-back", "updated", "needs-sudo"), 12),
    ],
)
def test_report_exit_code(kinds, expected):
    assert outcomes(*kinds).exit_code == expected


# -- rollback by hand -------------------------------------------------------------------------


def test_rollback_without_an_applied_update_is_an_error(stack):
    with pytest.raises(StackError) as info:
        update.rollback(stack.rt)
    assert info.value.code == ExitCode.FAILED
    assert info.value.message == "no applied update to roll back"

    config.write_state(
        stack.rt.paths,
        {"updates": [{"id": "1", "status": "rolled-back"}, {"id": "2", "status": "aborted-pull"}]},
    )
    with pytest.raises(StackError, match="no applied update"):
        update.rollback(stack.rt)
    assert stack.engine.calls == []


def test_rollback_puts_back_the_last_applied_update_offline(stack):
    engine = stack.engine
    engine.publish("webui", "v2")
    engine.publish("mcp_proxy", "v2")
    apply(stack)
    engine.calls.clear()
    engine.unreachable |= set(engine.images.values())  # no network needed

    entry = update.rollback(stack.rt, timeout=3, progress=stack.progress)

    assert entry["status"] == "rolled-back-by-hand"
    assert set(entry["services"]) == {"webui", "mcp_proxy"}
    assert sorted(c[1:] for c in engine.calls if c[0] == "tag") == sorted(
        [
            (image_id("webui", "v1"), engine.images["webui"]),
            (image_id("mcp_proxy", "v1"), engine.images["mcp_proxy"]),
        ]
    )
    (up,) = engine.ups()
    assert sorted(up.services) == ["mcp_proxy", "webui"]
    assert (up.pull, up.force_recreate, up.no_deps) == ("never", True, True)
    assert {s: c.image_id for s, c in engine.containers.items()} == {
        s: image_id(s, "v1") for s in tuple(CATALOG.names())
    }
    assert "remote_digest" not in engine.kinds() and "pull" not in engine.kinds()
    assert [e["status"] for e in stack.history()] == ["rolled-back-by-hand"]
    with pytest.raises(StackError, match="no applied update"):
        update.rollback(stack.rt)


def test_rollback_is_refused_where_another_installation_adopted_the_project(stack):
    engine = stack.engine
    engine.publish("webui", "v2")
    apply(stack)
    engine.calls.clear()
    engine.held = Ownership({"n3w"}, AdoptionMark("n3w", "/the/new/home", "me"))
    with pytest.raises(ConfigError, match="adopted by the installation at /the/new/home"):
        update.rollback(stack.rt, timeout=3)
    assert engine.ups() == [] and "tag" not in engine.kinds()
    assert [e["status"] for e in stack.history()] == ["applied"]


def test_apply_is_refused_where_another_installation_adopted_the_project(stack):
    engine = stack.engine
    adopters_tag = f"{update.rollback_repository(engine.project)}/webui:t0"
    engine.tags[adopters_tag] = image_id("webui", "v0")
    engine.publish("webui", "v2")
    engine.held = Ownership({"n3w"}, AdoptionMark("n3w", "/the/new/home", "me"))
    with pytest.raises(ConfigError, match="adopted by the installation at /the/new/home"):
        apply(stack)
    assert engine.kinds() == ["ownership"]  # nothing asked of the registry, pulled or tagged
    assert adopters_tag in engine.tags and stack.history() == []


def test_apply_is_refused_before_any_question_where_another_installation_holds_the_project(
    stack,
):
    """A copied home not adopted yet: its backup would read volumes it cannot pause,
    and its rollback tags are named by the project (the other home's)."""
    engine = stack.engine
    engine.publish("webui", "v2")
    engine.held = Ownership({"0ld0ld0ld0ld0ld0"})
    with pytest.raises(ConfigError, match="belongs to another ollama-stack installation"):
        apply(stack, ["webui"], backup=lambda rt: "never taken")
    assert engine.kinds() == ["ownership"]  # no registry, no question, no backup, no tag
    assert stack.history() == []


def test_rollback_takes_the_latest_applied_entry(stack):
    def entry(entry_id: str, status: str, version: str) -> dict[str, Any]:
        services = {
            "webui": {
                "image": stack.engine.images["webui"],
                "previous_id": image_id("webui", version),
                "new_id": None,
            }
        }
        return {"id": entry_id, "status": status, "services": services}

    stack.engine.have("webui", "v0")
    stack.engine.have("webui", "v1")
    history = [
        entry("a", "applied", "v0"),
        entry("b", "applied", "v1"),
        entry("c", "rolled-back", "v9"),
    ]
    config.write_state(stack.rt.paths, {"updates": history})
    assert update.rollback(stack.rt, timeout=3)["id"] == "b"
    assert stack.engine.tags[stack.engine.images["webui"]] == image_id("webui", "v1")
    assert [e["status"] for e in stack.history()] == [
        "applied",
        "rolled-back-by-hand",
        "rolled-back",
    ]


def test_rollback_that_stays_unhealthy_keeps_the_entry_applied(stack):
    stack.engine.publish("webui", "v2")
    apply(stack, ["webui"])
    stack.engine.broken.add(image_id("webui", "v1"))
    with pytest.raises(HealthTimeout, match="rolled back, but still unhealthy"):
        update.rollback(stack.rt, timeout=0.2)
    assert [e["status"] for e in stack.history()] == ["applied"]


def test_a_remote_boxs_loopback_registry_is_not_asked_from_here(monkeypatch):
    asked: list[str] = []
    monkeypatch.setattr(registry, "remote_digest", lambda image, **kw: asked.append(image) or "x")
    rt = Runtime.open(remote="box", environ={"OLLAMA_STACK_HOME": config.stack_home().as_posix()})
    with pytest.raises(registry.RegistryUnreachable) as info:
        kinds._registry_digest(rt, "127.0.0.1:5000/team/ollama:stable")
    assert "box's own loopback" in info.value.message and asked == []
    assert kinds._registry_digest(rt, "registry.example:5000/team/ollama:stable") == "x"
    local = Runtime.open(environ={"OLLAMA_STACK_HOME": config.stack_home().as_posix()})
    assert kinds._registry_digest(local, "127.0.0.1:5000/team/ollama:stable") == "x"


def test_a_locally_built_image_is_not_looked_up_in_any_registry(stack, monkeypatch):
    asked: list[str] = []
    monkeypatch.setattr(registry, "remote_digest", lambda image, **kw: asked.append(image) or "x")
    stack.engine.repo_digests[image_id("webui", "v1")] = ()  # e.g. `dev.standins`
    found = checks_by_name(stack, ["webui"])["webui"]
    assert found.status == "local-build" and asked == []
    report, _ = apply(stack, ["webui"])
    assert [(o.outcome, o.service) for o in report.outcomes] == [("skipped", "webui")]
    assert report.exit_code == 0 and asked == []


def test_recreate_runs_with_the_resolved_platforms_compose_files(running_stack):
    """`up` runs on the Runtime resolve() made: a native Ollama's file is not in it."""
    s = running_stack(external={"ollama": "native-api"})
    s.engine.publish("webui", "v2")
    report, _ = apply(s, ["webui"])
    assert [(o.service, o.outcome) for o in report.outcomes] == [("webui", "updated")]
    (up,) = s.engine.ups()
    assert up.files == ["base.yml", "webui.yml", "mcp_proxy.yml"]
    assert s.engine.files == []  # the unresolved Runtime's view was never used for `up`
