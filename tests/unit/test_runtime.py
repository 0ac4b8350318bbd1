"""stack/runtime.py: the compose environment, URLs, and platform wiring."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest

from ollama_stack.common.errors import ConfigError
from ollama_stack.compose.client import FILES_DIR, compose_file
from ollama_stack.stack import config, hostcheck
from ollama_stack.stack.config import Settings
from ollama_stack.stack.platform import PlatformChoice
from ollama_stack.stack.runtime import Runtime
from ollama_stack.stack.target import Target

from .helpers import FakeShell, linux_shell, ollama_routes

SECRETS = {"WEBUI_SECRET_KEY": "w" * 43, "MCPO_API_KEY": "m" * 43}


def make_runtime(local_paths, shell: FakeShell | None = None, **settings: Any) -> Runtime:
    merged = config.validate([("test", settings)])
    return Runtime(Target(None, _shell=shell or linux_shell(2)), local_paths, merged)


# -- compose_env ------------------------------------------------------------------------


def test_compose_env_clamps_cpus_to_the_host(local_paths):
    rt = make_runtime(local_paths, linux_shell(2), limits={"ollama": {"cpus": 64}})
    env = rt.compose_env(SECRETS)
    assert env["OLLAMA_CPUS"] == "2"
    assert env["WEBUI_CPUS"] == "2"  # no limit: the whole host
    assert env["MCPO_CPUS"] == "2"


def test_compose_env_keeps_a_limit_below_the_host(local_paths):
    rt = make_runtime(
        local_paths, linux_shell(8), limits={"ollama": {"cpus": 6}, "webui": {"cpus": 0.5}}
    )
    env = rt.compose_env(SECRETS)
    assert (env["OLLAMA_CPUS"], env["WEBUI_CPUS"], env["MCPO_CPUS"]) == ("6", "0.5", "8")


def test_compose_env_reads_host_facts_through_the_target_shell(local_paths):
    shell = linux_shell(3)
    rt = make_runtime(local_paths, shell)
    assert rt.compose_env(SECRETS)["OLLAMA_CPUS"] == "3"
    rt.compose_env(SECRETS)
    assert sum("uname" in c for c in shell.commands) == 1  # facts are cached


def test_compose_env_with_facts_set_directly(local_paths):
    rt = make_runtime(local_paths, FakeShell(), limits={"webui": {"cpus": 4}})
    rt.__dict__["facts"] = hostcheck.HostFacts("Linux", "x86_64", 16)
    assert rt.compose_env(SECRETS)["WEBUI_CPUS"] == "4"
    assert rt.compose_env(SECRETS)["OLLAMA_CPUS"] == "16"


def test_compose_env_carries_settings_and_secrets(local_paths):
    rt = make_runtime(
        local_paths,
        project="lab",
        bind="0.0.0.0",
        ports={"webui": 3000, "mcp_proxy": 9200},
        images={"ollama": "standin/ollama:t"},
    )
    env = rt.compose_env(SECRETS)
    assert env["OLLAMA_STACK_PROJECT"] == "lab"
    assert env["OLLAMA_STACK_BIND"] == "0.0.0.0"
    assert (env["OLLAMA_PORT"], env["WEBUI_PORT"], env["MCPO_PORT"]) == ("11434", "3000", "9200")
    assert env["OLLAMA_IMAGE"] == "standin/ollama:t"
    assert env["WEBUI_IMAGE"] == Settings().images.webui
    assert env["WEBUI_SECRET_KEY"] == SECRETS["WEBUI_SECRET_KEY"]
    assert env["MCPO_API_KEY"] == SECRETS["MCPO_API_KEY"]
    assert all(isinstance(v, str) for v in env.values())


def test_compose_env_fills_every_variable_the_compose_files_use(local_paths):
    used: set[str] = set()
    for path in FILES_DIR.glob("*.yml"):
        text = path.read_text()
        used |= set(re.findall(r"\$\{([A-Z0-9_]+)", text))
        # top-level secrets read from the compose environment
        used |= set(re.findall(r"^    environment: ([A-Z0-9_]+)$", text, re.M))
    assert {"OLLAMA_BASE_URL", "WEBUI_SECRET_KEY", "MCPO_API_KEY", "MCPO_CONFIG"} <= used
    env = make_runtime(local_paths).compose_env(SECRETS)
    assert used - set(env) == set()


def test_compose_env_needs_both_secrets(local_paths):
    rt = make_runtime(local_paths)
    with pytest.raises(KeyError):
        rt.compose_env({"WEBUI_SECRET_KEY": "x"})


# -- where the containers find Ollama ---------------------------------------------------


@pytest.mark.parametrize(
    ("ollama", "expected"),
    [
        ({"type": "docker"}, "http://ollama:11434"),
        (
            {"type": "native-api", "url": "http://localhost:11434"},
            "http://host.docker.internal:11434",
        ),
        (
            {"type": "native-api", "url": "http://127.0.0.1:11500/"},
            "http://host.docker.internal:11500",
        ),
        ({"type": "native-api", "url": "http://[::1]:11434"}, "http://host.docker.internal:11434"),
        ({"type": "native-api", "url": "http://10.0.0.7:11434/"}, "http://10.0.0.7:11434"),
        (
            {"type": "remote-api", "url": "https://gpu.example/ollama/"},
            "https://gpu.example/ollama",
        ),
    ],
)
def test_ollama_base_url_for_containers(local_paths, ollama, expected):
    rt = make_runtime(local_paths, services={"ollama": ollama})
    assert rt.ollama_url_for_containers() == expected
    assert rt.compose_env(SECRETS)["OLLAMA_BASE_URL"] == expected


def test_containers_and_probes_agree_on_a_portless_native_url(local_paths):
    rt = make_runtime(
        local_paths, services={"ollama": {"type": "native-api", "url": "http://localhost"}}
    )
    probe_port = rt.endpoints(["ollama"])[0].host_port[1]
    assert rt.ollama_url_for_containers().endswith(f":{probe_port}")


# -- urls ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "webui_url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("::", "http://127.0.0.1:8080"),
        ("::1", "http://[::1]:8080"),
        ("192.168.1.20", "http://192.168.1.20:8080"),
    ],
)
def test_urls_follow_the_bind_address(local_paths, bind, webui_url):
    assert make_runtime(local_paths, bind=bind).url("webui") == webui_url


def test_urls_use_configured_ports_and_external_urls(local_paths):
    rt = make_runtime(
        local_paths,
        bind="0.0.0.0",
        ports={"ollama": 12000, "mcp_proxy": 9200},
        services={"webui": {"type": "remote-api", "url": "https://chat.example/"}},
    )
    assert rt.url("ollama") == "http://127.0.0.1:12000"
    assert rt.url("webui") == "https://chat.example"
    assert rt.url("mcp_proxy") == "http://127.0.0.1:9200"
    endpoints = rt.endpoints()
    assert [(e.service, e.url, e.path) for e in endpoints] == [
        ("ollama", "http://127.0.0.1:12000", "/api/version"),
        ("webui", "https://chat.example", "/health/db"),
        ("mcp_proxy", "http://127.0.0.1:9200", "/openapi.json"),
    ]
    assert [e.service for e in rt.endpoints(["webui"])] == ["webui"]


# -- open, platform and compose files ---------------------------------------------------


def test_open_layers_environment_and_flags(monkeypatch, stack_home):
    monkeypatch.setenv("OLLAMA_STACK_PROJECT", "from-env")
    rt = Runtime.open(invoke_layer={"bind": "0.0.0.0"}, flags={"platform": "cpu", "project": None})
    assert rt.settings.project == "from-env"
    assert rt.settings.bind == "0.0.0.0"
    assert rt.platform_override == "cpu"
    assert rt.paths.root == stack_home
    assert not rt.target.is_remote


def test_open_for_a_remote_uses_its_own_directory(stack_home):
    rt = Runtime.open(remote="user@box:2222")
    assert rt.target.label == "user@box:2222"
    assert rt.target.docker_host == "ssh://user@box:2222"
    assert rt.paths.root.parent == stack_home / "remotes"
    assert rt.compose.docker_host == "ssh://user@box:2222"
    assert rt.compose.target_label == "user@box:2222"


def test_open_refuses_an_unknown_platform_flag(stack_home):
    with pytest.raises(ConfigError):
        Runtime.open(flags={"platform": "gpu"})


def engine_answers(monkeypatch, info: dict[str, Any]) -> list[list[str]]:
    """`docker system info` answered at python-on-whales' runner."""
    import python_on_whales.components.system.cli_wrapper as system_cli

    calls: list[list[str]] = []

    def fake_run(args, **kwargs):
        calls.append([str(a) for a in args])
        return json.dumps(info)

    monkeypatch.setattr(system_cli, "run", fake_run)
    return calls


def test_auto_platform_asks_the_engine(local_paths, monkeypatch, fake_docker):
    calls = engine_answers(monkeypatch, {"ServerVersion": "27.3.1", "Runtimes": {"nvidia": {}}})
    rt = make_runtime(local_paths, linux_shell(4, nvidia0=(0, "")))
    assert rt.platform.name == "nvidia"
    assert calls == [[str(fake_docker), "system", "info", "--format", "{{json .}}"]]
    assert rt.compose_files() == [compose_file("base.yml"), compose_file("nvidia.yml")]
    _ = rt.platform
    assert len(calls) == 1  # decided once


def test_platform_override_needs_no_engine(local_paths, monkeypatch, fake_docker):
    calls = engine_answers(monkeypatch, {})
    rt = make_runtime(local_paths)
    rt.platform_override = "nvidia"
    assert rt.platform == PlatformChoice("nvidia", "set by --platform")
    assert rt.compose_files() == [compose_file("base.yml"), compose_file("nvidia.yml")]
    assert calls == []


def test_cpu_platform_uses_only_the_base_file(local_paths):
    rt = make_runtime(local_paths, platform="cpu")
    assert rt.platform.name == "cpu"
    assert rt.compose_files() == [compose_file("base.yml")]


def test_apple_platform_runs_ollama_natively_when_it_answers(local_paths, http_service):
    server = http_service(ollama_routes())
    dialed: list[tuple[str, int]] = []

    def to_fake_native_ollama(host: str, port: int, timeout: float) -> socket.socket:
        dialed.append((host, port))
        return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)

    rt = make_runtime(local_paths, platform="apple")
    rt.target.dial = to_fake_native_ollama  # type: ignore[method-assign]
    assert rt.platform.name == "apple"
    assert dialed == [("127.0.0.1", 11434)]
    assert rt.settings.services["ollama"].type == "native-api"
    assert rt.settings.docker_services() == ["webui", "mcp_proxy"]
    assert rt.ollama_url_for_containers() == "http://host.docker.internal:11434"
    assert rt.compose_files() == [compose_file("base.yml"), compose_file("apple.yml")]


def test_apple_without_native_ollama_falls_back_to_cpu(local_paths, closed_port):
    rt = make_runtime(local_paths, platform="apple")
    rt.target.dial = lambda h, p, t: socket.create_connection(("127.0.0.1", closed_port), t)  # type: ignore[method-assign]
    choice = rt.platform
    assert choice.name == "cpu"
    assert "Ollama.app" in choice.reason
    assert rt.settings.services["ollama"].type == "docker"
    assert rt.compose_files() == [compose_file("base.yml")]


def test_apple_keeps_a_configured_ollama_service(local_paths):
    rt = make_runtime(
        local_paths, services={"ollama": {"type": "remote-api", "url": "http://gpu:11434"}}
    )
    assert rt.settings_for("apple").services["ollama"].url == "http://gpu:11434"


def test_refresh_compose_points_at_platform_files_and_env_file(local_paths, fake_docker):
    rt = make_runtime(local_paths, platform="nvidia")
    assert rt.compose.env_files == []  # no env file written yet
    config.write_runtime_env(local_paths, {"A": "1"})
    _ = rt.platform
    project = rt.refresh_compose()
    assert project is rt.compose
    argv = project.compose_argv("ps")
    assert argv == [
        str(fake_docker),
        "compose",
        "--file",
        str(compose_file("base.yml")),
        "--file",
        str(compose_file("nvidia.yml")),
        "--env-file",
        str(local_paths.runtime_env_file),
        "--project-name",
        "ollama-stack",
        "ps",
    ]


# -- the proxy's config and key ---------------------------------------------------------------


def test_mcpo_config_always_has_the_builtin_server_first(local_paths):
    document = json.loads(make_runtime(local_paths).mcpo_config_json())
    assert document == {
        "mcpServers": {
            "stack": {"command": "python3", "args": ["/app/ollama-stack/stack_tools.py"]}
        }
    }


def test_mcpo_config_carries_every_server_and_survives_the_env_file(local_paths):
    servers = {
        "time": {"command": "mcp-server-time", "args": ["--local-timezone=UTC"]},
        "notes": {"type": "streamable-http", "url": "http://notes:8000/mcp/"},
        "odd": {"command": "sh", "args": ["-c", "echo 'it''s' $HOME # x"], "env": {"K": "ü"}},
    }
    text = make_runtime(local_paths, mcp_servers=servers).mcpo_config_json()
    assert text.isascii() and "'" not in text and "$" not in text and "\n" not in text
    document = json.loads(text)
    assert list(document["mcpServers"]) == ["stack", "time", "notes", "odd"]
    assert document["mcpServers"]["notes"] == {
        "type": "streamable-http",
        "url": "http://notes:8000/mcp/",  # the slash the server may need is kept
    }
    assert document["mcpServers"]["odd"]["args"][1] == "echo 'it''s' $HOME # x"
    assert document["mcpServers"]["odd"]["env"] == {"K": "ü"}
    line = config.env_file_line("MCPO_CONFIG", text)
    assert line == f"MCPO_CONFIG='{text}'\n"


def test_a_new_mcpo_config_or_key_changes_the_proxy_label(local_paths):
    plain = make_runtime(local_paths).compose_env(SECRETS)["MCPO_CONFIG_HASH"]
    more = make_runtime(local_paths, mcp_servers={"t": {"command": "x"}})
    assert more.compose_env(SECRETS)["MCPO_CONFIG_HASH"] != plain
    rotated = SECRETS | {"MCPO_API_KEY": "n" * 43}
    assert make_runtime(local_paths).compose_env(rotated)["MCPO_CONFIG_HASH"] != plain
    assert make_runtime(local_paths).compose_env(SECRETS)["MCPO_CONFIG_HASH"] == plain


def test_the_key_goes_only_to_our_own_proxy(local_paths):
    config.install(local_paths, {})
    key = config.read_secrets(local_paths)["MCPO_API_KEY"]
    ours = make_runtime(local_paths)
    assert ours.probe_headers("mcp_proxy") == {"Authorization": f"Bearer {key}"}
    assert ours.probe_headers("webui") == {} and ours.probe_headers("ollama") == {}
    theirs = make_runtime(
        local_paths,
        services={"mcp_proxy": {"type": "remote-api", "url": "http://tools.example:8000"}},
    )
    assert theirs.probe_headers("mcp_proxy") == {}
