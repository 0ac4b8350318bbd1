"""extensions/registry.py and extensions/manage.py: finding extensions, putting
the enabled ones in the catalog, and the checks `ext.enable` makes first."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from ollama_stack.common.errors import ConfigError
from ollama_stack.extensions import manage, registry
from ollama_stack.stack import config
from ollama_stack.stack.hosts import hostcheck
from ollama_stack.stack.hosts.platform import PlatformChoice
from ollama_stack.stack.hosts.target import Target
from ollama_stack.stack.runtime import Runtime
from ollama_stack.stack.services import CATALOG
from ollama_stack.stack.services.core import mcpo_config_json, tool_server_connections
from ollama_stack.stack.services.spec import EnvContext
from ollama_stack.stack.update import engine as update

from .helpers import FakeShell

SECRETS = {"WEBUI_SECRET_KEY": "w" * 43, "MCPO_API_KEY": "m" * 43}
STDIO = "server: {transport: stdio, command: python3, args: ['-m', 'mcp_server_time']}\n"


@pytest.fixture(autouse=True)
def no_extensions_left():
    yield
    CATALOG.set_extensions([], [])  # the catalog is the process's: leave it as found


def folder(root: Path, name: str, body: str) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "extension.yaml").write_text(
        f"name: {name}\ndescription: {name} for tests\nversion: '1'\n{body}"
    )
    return root / name


def runtime(local_paths, platform: str = "cpu", **settings: Any) -> Runtime:
    merged = config.validate([("test", settings)])
    facts = hostcheck.HostFacts("Linux", "x86_64", 2)
    choice = PlatformChoice(platform, "set for the test")
    return Runtime(
        Target(None, _shell=FakeShell()), local_paths, merged, platform=choice, facts=facts
    )


# -- discover -------------------------------------------------------------------------


def test_the_shipped_extensions_are_found():
    found = registry.discover()
    assert {"time", "notes", "dia_tts"} <= set(found.extensions)
    assert found.problems == {}


def test_a_users_folder_cannot_take_a_name_in_use_and_a_broken_one_is_reported(tmp_path):
    mine = tmp_path / "mine"
    folder(mine, "time", "kind: stdio\n" + STDIO)  # the shipped one's name
    folder(mine, "webui", "kind: stdio\n" + STDIO)  # a core service's
    folder(mine, "stack", "kind: stdio\n" + STDIO)  # the proxy's built-in server
    folder(mine, "broken", "kind: container\n" + STDIO)  # kind and server disagree
    folder(mine, "fine", "kind: stdio\n" + STDIO)
    (mine / "Not-A-Name").mkdir()
    (mine / "Not-A-Name" / "extension.yaml").write_text("name: x\n")
    found = registry.discover([mine, tmp_path / "missing"])
    assert found.extensions["time"].folder == registry.BUILTIN / "time"
    assert "fine" in found.extensions and "broken" not in found.extensions
    problems = found.problems
    assert all(len(p.splitlines()) == 1 for p in problems.values())
    assert "the name time is taken" in problems[str(mine / "time")]
    assert "taken" in problems[str(mine / "webui")] and "taken" in problems[str(mine / "stack")]
    assert "kind container does not match" in problems[str(mine / "broken")]
    assert "not an extension name" in problems[str(mine / "Not-A-Name")]
    assert "not a folder" in problems[str(tmp_path / "missing")]


# -- activate -----------------------------------------------------------------------------


def test_an_enabled_container_extension_is_a_service_and_every_enabled_one_a_tool_server():
    found = registry.discover()
    assert registry.activate(found, ["time", "notes"]) == []
    notes = CATALOG["notes"]
    assert notes.extension and notes.fragment == registry.BUILTIN / "notes" / "compose.yml"
    assert [(v.name, v.mount) for v in notes.volumes] == [("notes_data", "/data")]
    assert (notes.env_prefix, notes.port, notes.container_port) == ("NOTES", 8210, 8000)
    servers = {s.name: dict(s.proxy_entry) for s in CATALOG.tool_servers()}
    assert servers["notes"] == {"type": "streamable-http", "url": "http://notes:8000/mcp"}
    assert servers["time"]["command"] == "python3" and "time" not in CATALOG  # no container
    # Activated again with fewer: what extensions added is replaced, the core kept.
    assert registry.activate(found, []) == []
    assert "notes" not in CATALOG and CATALOG.tool_servers() == []
    assert {"ollama", "webui", "mcp_proxy"} <= set(CATALOG.names())


def test_an_enabled_name_that_is_not_found_is_reported_not_fatal():
    problems = registry.activate(registry.discover(), ["time", "gone"])
    assert problems == ["extension gone is enabled but not found"]
    assert [s.name for s in CATALOG.tool_servers()] == ["time"]


def test_settings_name_an_enabled_extensions_image_and_port(local_paths):
    raw = {"extensions": {"enabled": ["notes"]}, "images": {"notes": "mine/notes:2"}}
    _, problems = registry.activate_from_config(raw)
    assert problems == []
    settings = config.validate([("test", raw)])
    assert settings.images["notes"] == "mine/notes:2" and settings.ports["notes"] == 8210
    # Disabled again, a setting naming it stays valid (and unused): no command breaks.
    registry.activate_from_config({"images": {"notes": "mine/notes:2"}})
    assert "notes" not in CATALOG
    assert config.validate([("test", raw)]).images["notes"] == "mine/notes:2"
    with pytest.raises(ConfigError, match=r"images\.nosuch"):
        config.validate([("test", {"images": {"nosuch": "x:1"}})])


def test_the_proxy_and_open_webui_get_every_enabled_server(local_paths):
    registry.activate(registry.discover(), ["time", "notes"])
    rt = runtime(local_paths)
    context = EnvContext(rt.settings, SECRETS, {"mcp_proxy": "http://mcp_proxy:8000"}, "")
    proxy = json.loads(mcpo_config_json(context))["mcpServers"]
    assert list(proxy) == ["stack", "time", "notes"]
    assert proxy["notes"]["url"] == "http://notes:8000/mcp"
    offered = {c["info"]["id"]: c for c in tool_server_connections(context)}
    assert set(offered) == {"stack", "time", "notes"}
    assert offered["time"]["url"] == "http://mcp_proxy:8000/time"
    assert (
        offered["time"]["key"] == SECRETS["MCPO_API_KEY"] and offered["time"]["type"] == "openapi"
    )


def test_an_extensions_token_reaches_compose_only_through_its_env(local_paths):
    registry.activate(registry.discover(), ["dia_tts"])
    rt = runtime(local_paths, platform="nvidia")
    env = rt.compose_env({**SECRETS, "HF_TOKEN": "hf_secret"})
    assert env["HF_TOKEN"] == "hf_secret"
    assert (env["DIA_TTS_PORT"], env["DIA_TTS_IMAGE"]) == (
        "8211",
        "ghcr.io/ollama-stack/dia-tts-mcp:0.1.0",
    )


# -- the checks of ext.enable ---------------------------------------------------------------


def test_dependencies_come_first_core_services_are_always_there_and_a_circle_is_refused(tmp_path):
    mine = tmp_path / "mine"
    folder(mine, "base", "kind: stdio\ndepends_on: [ollama]\n" + STDIO)
    folder(mine, "top", "kind: stdio\ndepends_on: [base, notes]\n" + STDIO)
    folder(mine, "ping", "kind: stdio\ndepends_on: [pong]\n" + STDIO)
    folder(mine, "pong", "kind: stdio\ndepends_on: [ping]\n" + STDIO)
    found = registry.discover([mine])
    assert manage._with_dependencies(found, "top", []) == ["base", "notes", "top"]
    assert manage._with_dependencies(found, "top", ["notes"]) == ["base", "top"]
    with pytest.raises(ConfigError, match="circle: ping → pong → ping"):
        manage._with_dependencies(found, "ping", [])


def test_an_unknown_name_lists_the_ones_there_are():
    with pytest.raises(ConfigError) as refused:
        manage.known(registry.discover(), "nosuch")
    assert refused.value.code == 2 and "dia_tts, notes, time" in (refused.value.remedy or "")


def test_a_gpu_extension_is_refused_on_a_cpu_host_and_fine_on_nvidia(local_paths):
    gpu = registry.discover().extensions["dia_tts"]
    assert manage.unsupported(runtime(local_paths, "cpu"), gpu) == (
        "it runs on nvidia; this host is cpu"
    )
    assert manage.unsupported(runtime(local_paths, "nvidia"), gpu) == ""


def test_update_touches_extensions_only_when_asked(local_paths):
    registry.activate(registry.discover(), ["notes"])
    rt = runtime(local_paths)
    assert "notes" not in update.select(rt, [])
    assert update.select(rt, [], extensions=True)[-1] == "notes"
    assert update.select(rt, ["notes"]) == ["notes"]  # named: always


@pytest.mark.parametrize("name", ["../notes", "notes/../../x", "-rf", "Notes", "", "n" * 40, "a b"])
def test_a_name_that_is_no_extension_name_never_reaches_a_path(name):
    with pytest.raises(ConfigError) as refused:
        manage.known(registry.discover(), name)
    assert refused.value.code == 2 and "available:" in (refused.value.remedy or "")


def test_a_stdio_servers_token_reaches_it_through_the_proxys_config(local_paths, tmp_path):
    mine = tmp_path / "mine"
    folder(mine, "tokened", "kind: stdio\nrequires: {secrets: [TOKENED_KEY]}\n" + STDIO)
    registry.activate(registry.discover([mine]), ["tokened"])
    rt = runtime(local_paths)
    context = EnvContext(rt.settings, {**SECRETS, "TOKENED_KEY": "t0k"}, {}, "")
    entry = json.loads(mcpo_config_json(context))["mcpServers"]["tokened"]
    assert entry["env"] == {"TOKENED_KEY": "t0k"} and "t0k" not in json.dumps(entry["args"])
    # Open WebUI is offered ours, not the user's own mcp_servers (theirs to offer).
    user = runtime(local_paths, mcp_servers={"mine": {"command": "x"}})
    offered = tool_server_connections(EnvContext(user.settings, SECRETS, {}, ""))
    assert [c["info"]["id"] for c in offered] == ["stack", "tokened"]


def test_an_extension_needing_more_memory_than_the_host_has_is_refused(local_paths, tmp_path):
    mine = tmp_path / "mine"
    folder(mine, "big", "kind: stdio\nrequires: {memory_mb: 8192}\n" + STDIO)
    big = registry.discover([mine]).extensions["big"]
    rt = runtime(local_paths)
    small = dataclasses.replace(rt, facts=hostcheck.HostFacts("Linux", "x86_64", 2, "", 4 << 30))
    assert manage.unsupported(small, big) == "it needs 8192 MiB of memory; this host has 4096"
    large = dataclasses.replace(rt, facts=hostcheck.HostFacts("Linux", "x86_64", 2, "", 16 << 30))
    assert manage.unsupported(large, big) == ""
    assert manage.unsupported(rt, big) == ""  # memory not known (0): never a refusal
