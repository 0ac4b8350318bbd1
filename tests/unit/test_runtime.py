"""stack/runtime.py: the compose environment, URLs, and platform wiring."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest
from invoke.config import Config

from ollama_stack.common.errors import ConfigError
from ollama_stack.compose.client import FILES_DIR, compose_file
from ollama_stack.stack import config
from ollama_stack.stack.config import Settings
from ollama_stack.stack.hosts import hostcheck
from ollama_stack.stack.hosts.platform import PlatformChoice
from ollama_stack.stack.hosts.target import Target
from ollama_stack.stack.runtime import Runtime

from .helpers import FakeShell, linux_shell, ollama_routes

SECRETS = {"WEBUI_SECRET_KEY": "w" * 43, "MCPO_API_KEY": "m" * 43}


def make_runtime(local_paths, shell: FakeShell | None = None, **settings: Any) -> Runtime:
    merged = config.validate([("test", settings)])
    return Runtime(Target(None, _shell=shell or linux_shell(2)), local_paths, merged)


def resolved(local_paths, cpus: float = 2, **settings: Any) -> Runtime:
    """As resolve() leaves it on a Linux host with ``cpus`` CPUs."""
    merged = config.validate([("test", settings)])
    facts = hostcheck.HostFacts("Linux", "x86_64", cpus)
    return Runtime(Target(None, _shell=FakeShell()), local_paths, merged, facts=facts)


# -- compose_env ------------------------------------------------------------------------


def test_compose_env_clamps_cpus_to_the_host(local_paths):
    rt = resolved(local_paths, 2, limits={"ollama": {"cpus": 64}})
    env = rt.compose_env(SECRETS)
    assert env["OLLAMA_CPUS"] == "2"
    assert env["WEBUI_CPUS"] == "2"  # no limit: the whole host
    assert env["MCPO_CPUS"] == "2"


def test_compose_env_keeps_a_limit_below_the_host(local_paths):
    rt = resolved(local_paths, 8, limits={"ollama": {"cpus": 6}, "webui": {"cpus": 0.5}})
    env = rt.compose_env(SECRETS)
    assert (env["OLLAMA_CPUS"], env["WEBUI_CPUS"], env["MCPO_CPUS"]) == ("6", "0.5", "8")


def test_resolve_reads_host_facts_through_the_target_shell_once(local_paths):
    shell = linux_shell(3)
    rt = make_runtime(local_paths, shell, platform="cpu")
    with pytest.raises(RuntimeError, match="resolve"):
        rt.compose_env(SECRETS)  # nothing asked the host yet: no guessing
    assert shell.commands == []
    done = rt.resolve()
    assert done.compose_env(SECRETS)["OLLAMA_CPUS"] == "3"
    done.compose_env(SECRETS)
    assert done.resolve() is done
    assert sum("uname" in c for c in shell.commands) == 1  # asked once, in resolve()


def test_compose_env_carries_settings_and_secrets(local_paths):
    rt = resolved(
        local_paths,
        2,
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
    assert env["WEBUI_IMAGE"] == Settings.validated().images["webui"]
    assert env["WEBUI_SECRET_KEY"] == SECRETS["WEBUI_SECRET_KEY"]
    assert env["MCPO_API_KEY"] == SECRETS["MCPO_API_KEY"]
    assert all(isinstance(v, str) for v in env.values())


def test_a_throwaway_copy_acts_on_its_own_project_on_loopback(local_paths, tmp_path):
    rt = resolved(local_paths, 2, project="lab", bind="0.0.0.0", ports={"webui": 3000})
    env_file = tmp_path / "trial.env"
    trial = rt.throwaway("lab-trial", env_file, {"ollama": 0, "webui": 0})
    env = trial.compose_env(SECRETS)
    assert (env["OLLAMA_STACK_PROJECT"], env["OLLAMA_STACK_BIND"]) == ("lab-trial", "127.0.0.1")
    assert (env["OLLAMA_PORT"], env["WEBUI_PORT"], env["MCPO_PORT"]) == ("0", "0", "8200")
    assert env["OLLAMA_STACK_INSTALLATION"] == rt.compose_env(SECRETS)["OLLAMA_STACK_INSTALLATION"]
    assert (trial.compose.project, trial.compose.env_files) == ("lab-trial", (env_file,))
    assert trial.compose.files == rt.compose.files
    # The installation's own Runtime is unchanged.
    assert (rt.settings.project, rt.settings.bind, rt.compose.project) == ("lab", "0.0.0.0", "lab")


def test_compose_env_fills_every_variable_the_compose_files_use(local_paths):
    used: set[str] = set()
    for path in FILES_DIR.glob("*.yml"):
        text = path.read_text()
        used |= set(re.findall(r"\$\{([A-Z0-9_]+)", text))
        # top-level secrets read from the compose environment
        used |= set(re.findall(r"^    environment: ([A-Z0-9_]+)$", text, re.M))
    assert {"OLLAMA_BASE_URL", "WEBUI_SECRET_KEY", "MCPO_API_KEY", "MCPO_CONFIG"} <= used
    env = resolved(local_paths).compose_env(SECRETS)
    assert used - set(env) == set()


def test_compose_env_needs_both_secrets(local_paths):
    rt = resolved(local_paths)
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
    rt = resolved(local_paths, services={"ollama": ollama})
    assert rt.container_url("ollama") == expected
    assert rt.compose_env(SECRETS)["OLLAMA_BASE_URL"] == expected


def test_containers_and_probes_agree_on_a_portless_native_url(local_paths):
    rt = make_runtime(
        local_paths, services={"ollama": {"type": "native-api", "url": "http://localhost"}}
    )
    probe_port = rt.endpoints(["ollama"])[0].host_port[1]
    assert rt.container_url("ollama").endswith(f":{probe_port}")


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
    base = Config(lazy=True)
    base.load_collection({"ollama_stack": {"bind": "0.0.0.0"}})
    rt = Runtime.open(base=base, flags={"platform": "cpu", "project": None})
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


def test_auto_platform_asks_the_engine_in_resolve_only(local_paths, monkeypatch, fake_docker):
    calls = engine_answers(monkeypatch, {"ServerVersion": "27.3.1", "Runtimes": {"nvidia": {}}})
    rt = make_runtime(local_paths, linux_shell(4, nvidia0=(0, "")))
    assert rt.platform.name == "auto" and calls == []  # open and getters ask nothing
    done = rt.resolve()
    assert done.platform.name == "nvidia"
    assert calls == [[str(fake_docker), "system", "info", "--format", "{{json .}}"]]
    assert done.compose_files()[:3] == [
        compose_file("base.yml"),
        compose_file("ollama.yml"),
        compose_file("ollama.nvidia.yml"),
    ]
    assert done.compose.files == tuple(done.compose_files())
    assert rt.compose_files()[1:2] == [compose_file("ollama.yml")]  # the original is unchanged
    done.resolve()
    assert len(calls) == 1  # decided once


def test_platform_override_needs_no_engine(local_paths, monkeypatch, fake_docker):
    calls = engine_answers(monkeypatch, {})
    merged = config.validate([("test", {})])
    rt = Runtime(Target(None, _shell=linux_shell(2)), local_paths, merged, "nvidia").resolve()
    assert rt.platform == PlatformChoice("nvidia", "set by --platform")
    assert compose_file("ollama.nvidia.yml") in rt.compose_files()
    assert calls == []


def test_cpu_platform_uses_each_docker_services_file_only(local_paths):
    rt = make_runtime(local_paths, platform="cpu").resolve()
    assert rt.platform.name == "cpu"
    assert rt.compose_files() == [
        compose_file(name) for name in ("base.yml", "ollama.yml", "webui.yml", "mcp_proxy.yml")
    ]


def test_open_takes_the_recorded_platform_without_asking(stack_home, local_paths):
    config.write_state(local_paths, {"platform": "apple", "platform_reason": "Apple Silicon"})
    rt = Runtime.open()
    assert rt.platform == PlatformChoice("apple", "Apple Silicon")
    assert rt.settings.services["ollama"].type == "native-api"
    assert rt.configured.services["ollama"].type == "docker"
    assert compose_file("ollama.yml") not in rt.compose_files()


def test_apple_platform_runs_ollama_natively_when_it_answers(local_paths, http_service):
    server = http_service(ollama_routes())
    dialed: list[tuple[str, int]] = []

    def to_fake_native_ollama(host: str, port: int, timeout: float) -> socket.socket:
        dialed.append((host, port))
        return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)

    rt = make_runtime(local_paths, platform="apple")
    rt.target.dial = to_fake_native_ollama  # type: ignore[method-assign]
    rt = rt.resolve()
    assert rt.platform.name == "apple"
    assert dialed == [("127.0.0.1", 11434)]
    assert rt.settings.services["ollama"].type == "native-api"
    assert rt.docker_services() == ["webui", "mcp_proxy"]
    assert rt.container_url("ollama") == "http://host.docker.internal:11434"
    # Ollama's file is left out: `stack.config`'s plain `up` cannot start it in Docker too.
    assert rt.compose_files() == [
        compose_file(name) for name in ("base.yml", "webui.yml", "mcp_proxy.yml")
    ]
    assert rt.compose.files == tuple(rt.compose_files())


def test_apple_without_native_ollama_falls_back_to_cpu(local_paths, closed_port):
    rt = make_runtime(local_paths, platform="apple")
    rt.target.dial = lambda h, p, t: socket.create_connection(("127.0.0.1", closed_port), t)  # type: ignore[method-assign]
    rt = rt.resolve()
    assert rt.platform.name == "cpu"
    assert rt.platform.reason == (
        "Linux/x86_64, but no native Ollama answers on http://127.0.0.1:11434 "
        "(install Ollama.app for Metal); running Ollama in Docker on CPU"
    )
    assert rt.settings.services["ollama"].type == "docker"
    assert compose_file("ollama.yml") in rt.compose_files()


def test_apple_keeps_a_configured_ollama_service(local_paths):
    merged = config.validate(
        [("test", {"services": {"ollama": {"type": "remote-api", "url": "http://gpu:11434"}}})]
    )
    rt = Runtime(
        Target(None, _shell=FakeShell()), local_paths, merged, platform=PlatformChoice("apple", "")
    )
    assert rt.settings.services["ollama"].url == "http://gpu:11434"


def test_the_compose_project_names_the_env_file_once_it_exists(local_paths, fake_docker):
    rt = make_runtime(local_paths, platform="nvidia").resolve()
    assert rt.compose.docker.client_config.compose_env_files == []  # not written yet
    config.write_runtime_env(local_paths, {"A": "1"})
    argv = rt.compose.compose_argv("ps")
    assert argv == [
        str(fake_docker),
        "compose",
        *[
            arg
            for name in (
                "base.yml",
                "ollama.yml",
                "ollama.nvidia.yml",
                "webui.yml",
                "mcp_proxy.yml",
            )
            for arg in ("--file", str(compose_file(name)))
        ],
        "--env-file",
        str(local_paths.runtime_env_file),
        "--project-name",
        "ollama-stack",
        "ps",
    ]
    assert rt.compose.docker.client_config.compose_env_files == [local_paths.runtime_env_file]


# -- the proxy's config and key ---------------------------------------------------------------


def mcpo_config(rt: Runtime) -> dict[str, Any]:
    return json.loads(rt.compose_env(SECRETS)["MCPO_CONFIG"])


def test_mcpo_config_always_has_the_builtin_server_first(local_paths):
    document = mcpo_config(resolved(local_paths))
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
    text = resolved(local_paths, mcp_servers=servers).compose_env(SECRETS)["MCPO_CONFIG"]
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
    plain = resolved(local_paths).compose_env(SECRETS)["MCPO_CONFIG_HASH"]
    more = resolved(local_paths, mcp_servers={"t": {"command": "x"}})
    assert more.compose_env(SECRETS)["MCPO_CONFIG_HASH"] != plain
    rotated = SECRETS | {"MCPO_API_KEY": "n" * 43}
    assert resolved(local_paths).compose_env(rotated)["MCPO_CONFIG_HASH"] != plain
    assert resolved(local_paths).compose_env(SECRETS)["MCPO_CONFIG_HASH"] == plain


def test_the_key_goes_only_to_our_own_proxy(local_paths):
    config.install(local_paths, {})
    key = config.read_secrets(local_paths)["MCPO_API_KEY"]
    ours = make_runtime(local_paths)
    assert ours.endpoint("mcp_proxy").headers == {"Authorization": f"Bearer {key}"}
    assert ours.endpoint("webui").headers == {} and ours.endpoint("ollama").headers == {}
    theirs = make_runtime(
        local_paths,
        services={"mcp_proxy": {"type": "remote-api", "url": "http://tools.example:8000"}},
    )
    assert theirs.endpoint("mcp_proxy").headers == {}


# -- volumes taken over from another installation (stack.adopt) ---------------------------


def test_volumes_carry_our_id_until_they_were_taken_over(local_paths, tmp_path):
    rt = resolved(local_paths, 2)
    env = rt.compose_env(SECRETS)
    assert env["OLLAMA_STACK_VOLUMES_INSTALLATION"] == env["OLLAMA_STACK_INSTALLATION"]
    assert rt.compose.volume_installation is None

    taken = rt.with_volumes_installation("0123456789abcdef")
    env = taken.compose_env(SECRETS)
    assert env["OLLAMA_STACK_VOLUMES_INSTALLATION"] == "0123456789abcdef"
    assert env["OLLAMA_STACK_INSTALLATION"] == config.installation_id(local_paths)
    assert taken.compose.volume_installation == "0123456789abcdef"
    trial = taken.throwaway("lab-trial", tmp_path / "trial.env", {})
    assert trial.compose.volume_installation == "0123456789abcdef"  # its volumes match ours
    assert rt.compose.volume_installation is None  # unchanged


def test_open_reads_the_volumes_id_from_the_state(local_paths):
    config.install(local_paths, {})
    assert Runtime.open().volumes_installation is None
    config.record_adoption(local_paths, "0123456789abcdef", {"at": "then"})
    rt = Runtime.open()
    assert rt.volumes_installation == rt.compose.volume_installation == "0123456789abcdef"


def test_every_volume_in_our_compose_files_is_labelled_with_the_volumes_id():
    """Compose offers to recreate (empty) a volume whose labels differ from its
    file: a volume taken over keeps its id only through this variable."""
    import yaml

    extensions = FILES_DIR.parents[1] / "extensions"
    files = [*FILES_DIR.glob("*.yml"), *extensions.glob("*/compose.yml")]
    volumes = {
        (path.name, name): spec
        for path in files
        for name, spec in (yaml.safe_load(path.read_text()).get("volumes") or {}).items()
    }
    assert len(volumes) >= 3
    for where, spec in volumes.items():
        label = spec["labels"]["io.ollama-stack.installation"]
        assert label == "${OLLAMA_STACK_VOLUMES_INSTALLATION:-unmanaged}", where
