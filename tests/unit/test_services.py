"""stack/services: the catalog, the core descriptions and one class per kind.

A fourth service registered here (and removed after each test) must reach
settings, the compose files and env, URLs, status and uninstall with no
other edit; the live-engine version is tests/integration/test_catalog.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_stack.common.errors import ConfigError
from ollama_stack.compose.client import ContainerState
from ollama_stack.stack import config
from ollama_stack.stack.hosts import hostcheck
from ollama_stack.stack.hosts.target import Target
from ollama_stack.stack.runtime import Runtime
from ollama_stack.stack.services import CATALOG, ServiceSpec, Volume
from ollama_stack.stack.services.kinds import KINDS, kind_of

from .helpers import FakeShell, extra_service

SECRETS = {"WEBUI_SECRET_KEY": "w" * 43, "MCPO_API_KEY": "m" * 43}


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[ServiceSpec]:
    fragment = tmp_path / "echo.yml"
    fragment.write_text("services:\n  echo:\n    image: ${ECHO_IMAGE}\n")
    spec = CATALOG.register(
        extra_service(
            "echo",
            fragment,
            volumes=(Volume("echo_data", "/data", cache=("cache",)),),
            env=lambda ctx: {"ECHO_GREETING": ctx.settings.project},
        )
    )
    yield spec
    CATALOG.unregister("echo")


def runtime(paths: config.InstallPaths, **settings: object) -> Runtime:
    merged = config.validate([("test", settings)])
    facts = hostcheck.HostFacts("Linux", "x86_64", 4)
    return Runtime(Target(None, _shell=FakeShell()), paths, merged, facts=facts)


def test_the_core_services_are_registered_in_order():
    assert CATALOG.names() == ["ollama", "webui", "mcp_proxy"]
    assert [s.title for s in CATALOG] == ["Ollama", "Open WebUI", "the MCP proxy (mcpo)"]


def test_every_core_service_names_a_fragment_that_runs_it():
    for spec in CATALOG:
        assert spec.fragment.is_file()
        assert f"\n  {spec.name}:\n" in spec.fragment.read_text()
        for extra in spec.platform_fragments.values():
            assert extra.is_file()


def test_only_open_webuis_model_downloads_are_cache_not_its_tool_outputs():
    (volume,) = CATALOG["webui"].volumes
    assert volume.mount == "/app/backend/data"
    assert "cache" not in volume.cache  # cache/ also holds files chats link to
    assert all(path.startswith("cache/") for path in volume.cache)
    # models are never "re-creatable": only an unfinished download is
    assert CATALOG["ollama"].volumes[0].cache == ("models/blobs/*-partial*",)


def test_only_a_service_with_native_support_can_be_native(local_paths):
    assert CATALOG["ollama"].kinds == ("docker", "native-api", "remote-api")
    assert CATALOG["webui"].kinds == ("docker", "remote-api")
    with pytest.raises(ConfigError, match="not one webui can be"):
        config.validate(
            [("f", {"services": {"webui": {"type": "native-api", "url": "http://h:1"}}})]
        )


def test_unknown_names_list_the_registered_services(echo):
    with pytest.raises(ConfigError) as info:
        CATALOG.check_names(["echo", "postgres"])
    assert info.value.message == "unknown service postgres"
    assert info.value.remedy == "valid services: ollama, webui, mcp_proxy, echo"


def test_registering_twice_is_refused(echo):
    with pytest.raises(ValueError, match="registered twice"):
        CATALOG.register(echo)


def test_a_registered_service_gets_settings_with_its_defaults(echo, local_paths):
    settings = config.load_settings(local_paths, environ={})
    assert settings.images["echo"] == "example.invalid/echo:1"
    assert settings.ports["echo"] == 9999
    assert settings.services["echo"].type == "docker"
    environ = {"OLLAMA_STACK_PORTS_ECHO": "9998", "OLLAMA_STACK_LIMITS_ECHO_CPUS": "1"}
    settings = config.load_settings(local_paths, environ=environ)
    assert settings.ports["echo"] == 9998 and settings.limits["echo"].cpus == 1


def test_a_service_not_registered_has_no_settings():
    with pytest.raises(ConfigError) as info:
        config.validate([("f", {"ports": {"echo": 1}})])
    assert "unknown setting ports.echo (services: ollama, webui, mcp_proxy)" in info.value.message


def test_a_registered_service_is_in_the_compose_files_and_env(echo, local_paths):
    rt = runtime(local_paths, project="lab")
    assert rt.compose_files()[-1] == echo.fragment
    assert rt.docker_services() == ["ollama", "webui", "mcp_proxy", "echo"]
    env = rt.compose_env(SECRETS)
    assert (env["ECHO_IMAGE"], env["ECHO_PORT"], env["ECHO_CPUS"]) == (
        "example.invalid/echo:1",
        "9999",
        "4",
    )
    assert env["ECHO_GREETING"] == "lab"  # its own env hook
    assert rt.url("echo") == "http://127.0.0.1:9999"
    assert rt.container_url("echo") == "http://echo:80"
    assert [e.service for e in rt.endpoints()][-1] == "echo"


def test_an_external_service_leaves_its_fragment_out(echo, local_paths):
    rt = runtime(local_paths, services={"echo": {"type": "remote-api", "url": "http://far:1"}})
    assert echo.fragment not in rt.compose_files()
    assert "echo" not in rt.docker_services()
    assert rt.url("echo") == "http://far:1"


# -- kinds --------------------------------------------------------------------------


def container(service: str, state: str = "running") -> ContainerState:
    return ContainerState(
        name=f"p-{service}-1", service=service, state=state, image="img:1", status="Up 2 minutes"
    )


def test_each_kind_is_one_class_found_by_the_settings(local_paths):
    rt = runtime(
        local_paths,
        services={
            "ollama": {"type": "native-api", "url": "http://127.0.0.1:11434"},
            "mcp_proxy": {"type": "remote-api", "url": "http://tools:8000"},
        },
    )
    assert [kind_of(rt.settings, n).name for n in CATALOG.names()] == [
        "native-api",
        "docker",
        "remote-api",
    ]
    assert {type(k).__name__ for k in KINDS.values()} == {
        "DockerKind",
        "NativeApiKind",
        "RemoteApiKind",
    }


def test_status_fields_by_kind(local_paths):
    rt = runtime(local_paths, services={"mcp_proxy": {"type": "remote-api", "url": "http://t:1"}})
    docker, remote = rt.kind("webui"), rt.kind("mcp_proxy")
    assert docker.status(rt, CATALOG["webui"], None) == (
        "absent",
        "ghcr.io/open-webui/open-webui:main",
        "",
    )
    assert docker.status(rt, CATALOG["webui"], container("webui")) == (
        "running",
        "img:1",
        "Up 2 minutes",
    )
    assert remote.status(rt, CATALOG["mcp_proxy"], None) == ("external", "", "")
    # a stopped container's port may be someone else's: its probe does not count
    assert not docker.counts(None, container("webui", "exited"))
    assert remote.counts(None, None)


def test_log_places_say_where_a_native_services_logs_are(local_paths):
    rt = runtime(
        local_paths,
        services={
            "ollama": {"type": "native-api", "url": "http://127.0.0.1:11434"},
            "mcp_proxy": {"type": "remote-api", "url": "http://u:p@tools:8000"},
        },
    )
    assert rt.kind("webui").log_place(rt, CATALOG["webui"]) is None
    native = rt.kind("ollama").log_place(rt, CATALOG["ollama"])
    assert native is not None and "journalctl -u ollama" in native
    remote = rt.kind("mcp_proxy").log_place(rt, CATALOG["mcp_proxy"])
    assert remote is not None and "***@tools:8000" in remote and "u:p" not in remote


def test_only_docker_services_own_volumes_and_images(local_paths):
    rt = runtime(local_paths, services={"ollama": {"type": "remote-api", "url": "http://g:1"}})
    assert rt.kind("ollama").volumes(CATALOG["ollama"]) == ()
    assert rt.kind("webui").volumes(CATALOG["webui"]) == CATALOG["webui"].volumes
    assert rt.kind("ollama").images(rt, CATALOG["ollama"]) == []
