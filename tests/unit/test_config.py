"""stack/config/: layers, validation messages, install and the files it writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from invoke.config import Config

from ollama_stack.common.errors import AlreadyInstalled, ConfigError, ExitCode, NotInstalled
from ollama_stack.stack import config
from ollama_stack.stack.config import InstallPaths, Settings, load_settings
from ollama_stack.stack.services import CATALOG


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_config(paths: InstallPaths, text: str, schema: int | None = config.CONFIG_SCHEMA) -> Path:
    """config.yaml as a user writes it, at this release's schema unless told."""
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text((f"schema: {schema}\n" if schema else "") + text)
    return paths.config_file


def config_error(paths: InstallPaths, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(paths, *args, **kwargs)
    assert info.value.code == ExitCode.CONFIG == 2
    return info.value


# -- defaults and where things live ---------------------------------------------


def test_defaults_when_no_layer_sets_anything(local_paths):
    settings = load_settings(local_paths, environ={})
    assert settings.project == "ollama-stack"
    assert settings.bind == "127.0.0.1"
    assert settings.platform == "auto"
    assert (settings.ports["ollama"], settings.ports["webui"], settings.ports["mcp_proxy"]) == (
        11434,
        8080,
        8200,
    )
    assert settings.images["ollama"] == "ollama/ollama:latest"
    assert settings.images["webui"] == "ghcr.io/open-webui/open-webui:main"
    assert settings.images["mcp_proxy"] == "ghcr.io/open-webui/mcpo:main"
    assert {n: s.type for n, s in settings.services.items()} == dict.fromkeys(
        CATALOG.names(), "docker"
    )
    assert settings.limits == {}
    assert settings.start_timeout == 300.0


def test_stack_home_comes_from_the_environment(stack_home):
    assert config.stack_home() == stack_home
    assert config.InstallPaths.for_target(None).root == stack_home


def test_stack_home_without_the_variable_is_under_the_temporary_home(tmp_path):
    # platformdirs reads $HOME, which the autouse fixture points into tmp_path
    home = config.stack_home({})
    assert home == Path(os.environ["HOME"]) / ".config" / "ollama-stack"
    assert tmp_path in home.parents


def test_stack_home_expands_a_tilde():
    assert config.stack_home({config.HOME_ENV: "~/stacks"}) == Path(os.environ["HOME"]) / "stacks"


def test_install_paths_layout(local_paths, stack_home):
    assert local_paths.config_file == stack_home / "config.yaml"
    assert local_paths.secrets_file == stack_home / "secrets.env"
    assert local_paths.runtime_env_file == stack_home / "state" / "compose.env"
    assert local_paths.state_file == stack_home / "state" / "state.json"
    assert not local_paths.installed


def test_local_and_remote_targets_get_different_directories(stack_home):
    local = InstallPaths.for_target(None)
    remote = InstallPaths.for_target("user@box:2222")
    other = InstallPaths.for_target("box2")
    assert local.root == stack_home
    assert remote.root.parent == stack_home / "remotes"
    assert remote.root != local.root
    assert other.root != remote.root
    # the slug is a single, safe path component
    assert "/" not in remote.root.name and ":" not in remote.root.name
    assert remote.root.name.startswith("user")
    assert "2222" in remote.root.name


def test_local_and_remote_installs_have_separate_secrets(stack_home):
    local = InstallPaths.for_target(None)
    remote = InstallPaths.for_target("user@box:2222")
    config.install(local, {})
    config.install(remote, {"project": "remote"})
    assert config.read_secrets(local) != config.read_secrets(remote)
    assert load_settings(local, environ={}).project == "ollama-stack"
    assert load_settings(remote, environ={}).project == "remote"


def test_distinct_remote_hosts_never_share_a_directory():
    a = InstallPaths.for_target("user@box:2222", {config.HOME_ENV: "/h"})
    b = InstallPaths.for_target("user_box_2222", {config.HOME_ENV: "/h"})
    assert a.root != b.root


# -- layers ----------------------------------------------------------------------


def test_each_layer_overrides_the_one_below(local_paths):
    invoke_layer = {"project": "from-invoke", "ports": {"webui": 1001, "ollama": 1002}}
    assert load_settings(local_paths, invoke_layer, environ={}).project == "from-invoke"

    write_config(local_paths, "project: from-file\nports:\n  webui: 2001\n")
    settings = load_settings(local_paths, invoke_layer, environ={})
    assert settings.project == "from-file"
    assert settings.ports["webui"] == 2001
    assert settings.ports["ollama"] == 1002  # nested keys merge, they do not replace

    environ = {"OLLAMA_STACK_PROJECT": "from-env", "OLLAMA_STACK_PORTS_WEBUI": "3001"}
    settings = load_settings(local_paths, invoke_layer, environ=environ)
    assert settings.project == "from-env"
    assert settings.ports["webui"] == 3001
    assert settings.ports["ollama"] == 1002

    settings = load_settings(local_paths, invoke_layer, {"project": "from-flag"}, environ)
    assert settings.project == "from-flag"
    assert settings.ports["webui"] == 3001


def test_flags_left_at_none_do_not_override(local_paths):
    environ = {"OLLAMA_STACK_BIND": "0.0.0.0"}
    settings = load_settings(local_paths, flags={"bind": None, "project": "p"}, environ=environ)
    assert settings.bind == "0.0.0.0"
    assert settings.project == "p"


def test_load_settings_reads_the_process_environment_by_default(local_paths, monkeypatch):
    monkeypatch.setenv("OLLAMA_STACK_PROJECT", "from-process-env")
    assert load_settings(local_paths).project == "from-process-env"


def test_empty_config_file_means_defaults(local_paths):
    write_config(local_paths, "# nothing set\n")
    assert load_settings(local_paths, environ={}) == Settings.validated()


def limit_cpus(service: str):
    return lambda s: s.limits[service].cpus if service in s.limits else None


@pytest.mark.parametrize(
    ("var", "value", "read", "expected"),
    [
        ("OLLAMA_STACK_PROJECT", "lab", lambda s: s.project, "lab"),
        ("OLLAMA_STACK_BIND", "0.0.0.0", lambda s: s.bind, "0.0.0.0"),
        ("OLLAMA_STACK_PLATFORM", "nvidia", lambda s: s.platform, "nvidia"),
        (
            "OLLAMA_STACK_IMAGES_OLLAMA",
            "reg/ollama:1",
            lambda s: s.images["ollama"],
            "reg/ollama:1",
        ),
        (
            "OLLAMA_STACK_IMAGES_MCP_PROXY",
            "reg/mcpo:2",
            lambda s: s.images["mcp_proxy"],
            "reg/mcpo:2",
        ),
        ("OLLAMA_STACK_PORTS_WEBUI", "9090", lambda s: s.ports["webui"], 9090),
        ("OLLAMA_STACK_PORTS_MCP_PROXY", "9300", lambda s: s.ports["mcp_proxy"], 9300),
        ("OLLAMA_STACK_LIMITS_OLLAMA_CPUS", "1.5", limit_cpus("ollama"), 1.5),
        ("OLLAMA_STACK_LIMITS_MCP_PROXY_CPUS", "2", limit_cpus("mcp_proxy"), 2.0),
        ("OLLAMA_STACK_START_TIMEOUT", "42", lambda s: s.start_timeout, 42.0),
    ],
)
def test_environment_key_paths(local_paths, var, value, read, expected):
    settings = load_settings(local_paths, environ={var: value})
    assert read(settings) == expected
    assert read(Settings.validated()) != expected  # the variable, not the default, set it


def test_environment_sets_a_service_type_and_url(local_paths):
    environ = {
        "OLLAMA_STACK_SERVICES_OLLAMA_TYPE": "native-api",
        "OLLAMA_STACK_SERVICES_OLLAMA_URL": "http://127.0.0.1:11434",
        "OLLAMA_STACK_SERVICES_MCP_PROXY_TYPE": "remote-api",
        "OLLAMA_STACK_SERVICES_MCP_PROXY_URL": "https://tools.example/",
    }
    settings = load_settings(local_paths, environ=environ)
    assert settings.services["ollama"].type == "native-api"
    assert settings.services["ollama"].url == "http://127.0.0.1:11434"
    assert settings.services["mcp_proxy"].type == "remote-api"
    assert settings.services["webui"].type == "docker"
    assert [n for n, s in settings.services.items() if s.type == "docker"] == ["webui"]


def test_env_layer_builds_nested_keys_and_ignores_unknown_names():
    layer = config.env_layer(
        {
            "OLLAMA_STACK_PORTS_MCP_PROXY": "8300",
            "OLLAMA_STACK_SERVICES_OLLAMA_URL": "http://x",
            "OLLAMA_STACK_LIMITS_WEBUI_CPUS": "1",
            "OLLAMA_STACK_HOME": "/somewhere",
            "OLLAMA_STACK_NOT_A_SETTING": "1",
            "OLLAMA_STACK_PORTS_NOPE": "1",
            "OLLAMA_HOST": "0.0.0.0",
            "PATH": "/bin",
        }
    )
    assert layer == {
        "ports": {"mcp_proxy": "8300"},
        "services": {"ollama": {"url": "http://x"}},
        "limits": {"webui": {"cpus": "1"}},
    }


def test_service_type_from_env_combines_with_url_from_the_config_file(local_paths):
    write_config(local_paths, "services:\n  ollama:\n    url: http://10.0.0.5:11434\n")
    settings = load_settings(
        local_paths, environ={"OLLAMA_STACK_SERVICES_OLLAMA_TYPE": "remote-api"}
    )
    assert settings.services["ollama"].type == "remote-api"
    assert settings.services["ollama"].url == "http://10.0.0.5:11434"


# -- bad values --------------------------------------------------------------------


def test_bad_platform_names_key_value_allowed_values_and_layer(local_paths):
    err = config_error(local_paths, environ={"OLLAMA_STACK_PLATFORM": "gpu"})
    assert "platform" in err.message
    assert "'gpu'" in err.message
    for allowed in get_args(config.Platform):
        assert f"'{allowed}'" in err.message
    assert "(from environment)" in err.message
    assert err.remedy


def test_port_out_of_range_from_the_config_file(local_paths):
    path = write_config(local_paths, "ports:\n  webui: 70000\n")
    err = config_error(local_paths, environ={})
    assert "ports.webui" in err.message
    assert "70000" in err.message
    assert "65535" in err.message
    assert f"(from {path})" in err.message


def test_port_zero_names_the_lower_bound(local_paths):
    err = config_error(local_paths, flags={"ports": {"ollama": 0}}, environ={})
    assert "ports.ollama=0" in err.message
    assert "greater than or equal to 1" in err.message
    assert "(from flags)" in err.message


def test_non_numeric_port_from_the_environment(local_paths):
    err = config_error(local_paths, environ={"OLLAMA_STACK_PORTS_OLLAMA": "eleven"})
    assert "ports.ollama='eleven'" in err.message
    assert "(from environment)" in err.message


def test_bind_that_is_not_an_address(local_paths):
    err = config_error(local_paths, flags={"bind": "not-an-ip"}, environ={})
    assert "bind='not-an-ip'" in err.message
    assert "IPv4 or IPv6" in err.message
    assert "(from flags)" in err.message


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "::1", "192.168.1.20"])
def test_bind_accepts_addresses(local_paths, bind):
    assert load_settings(local_paths, flags={"bind": bind}, environ={}).bind == bind


def test_malformed_yaml_names_the_file_and_line(local_paths):
    path = write_config(local_paths, "project: a\nbind: 127.0.0.1\n  bad: indent\n", None)
    err = config_error(local_paths, environ={})
    assert str(path) in err.message
    assert "line 3" in err.message
    assert "malformed YAML" in err.message


def test_yaml_that_is_not_a_mapping(local_paths):
    path = write_config(local_paths, "- project\n- bind\n", None)
    err = config_error(local_paths, environ={})
    assert str(path) in err.message
    assert "mapping" in err.message
    assert "list" in err.message


def test_unknown_top_level_key(local_paths):
    path = write_config(local_paths, "projekt: typo\n")
    err = config_error(local_paths, environ={})
    assert "unknown setting projekt" in err.message
    assert f"(from {path})" in err.message


def test_unknown_nested_key_names_its_path(local_paths):
    err = config_error(local_paths, {"images": {"olama": "x"}}, environ={})
    assert "unknown setting images.olama" in err.message
    assert "(from invoke.yaml)" in err.message


def test_bad_service_type_lists_the_types(local_paths):
    err = config_error(local_paths, flags={"services": {"webui": {"type": "podman"}}}, environ={})
    assert "services.webui.type='podman'" in err.message
    for allowed in ("'docker'", "'native-api'", "'remote-api'"):
        assert allowed in err.message


def test_bad_value_is_blamed_on_the_highest_layer_that_set_it(local_paths):
    write_config(local_paths, "platform: gpu\n")
    err = config_error(local_paths, {"platform": "tpu"}, environ={})
    assert "'gpu'" in err.message
    assert f"(from {local_paths.config_file})" in err.message
    # a good value above a bad one wins, so there is no error at all
    assert load_settings(local_paths, environ={"OLLAMA_STACK_PLATFORM": "cpu"}).platform == "cpu"


@pytest.mark.parametrize("kind", ["native-api", "remote-api"])
def test_non_docker_service_without_url_is_refused(local_paths, kind):
    err = config_error(local_paths, environ={"OLLAMA_STACK_SERVICES_OLLAMA_TYPE": kind})
    assert "services.ollama.url is required" in err.message
    assert kind in err.message
    assert "(from environment)" in err.message


def test_bad_limits(local_paths):
    err = config_error(local_paths, environ={"OLLAMA_STACK_LIMITS_WEBUI_CPUS": "0"})
    assert "limits.webui.cpus" in err.message
    assert "greater than 0" in err.message


def test_unknown_service_under_limits_is_blamed_on_its_layer(local_paths):
    err = config_error(local_paths, flags={"limits": {"olama": {"cpus": 2}}}, environ={})
    assert "olama" in err.message
    assert "(from flags)" in err.message


def test_project_name_must_suit_compose(local_paths):
    err = config_error(local_paths, flags={"project": "My Stack"}, environ={})
    assert "project='My Stack'" in err.message


# -- install and secrets -------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (ln.partition("=") for ln in path.read_text().splitlines() if "=" in ln)
    return {k: v for k, _, v in pairs}


def test_install_writes_config_and_private_secrets(local_paths):
    result = config.install(local_paths, {"project": "lab", "bind": "0.0.0.0"})
    assert local_paths.installed
    assert mode(local_paths.secrets_file) == 0o600
    assert result.secrets_created == list(config.SECRET_KEYS)
    assert result.secrets_kept == []
    secrets = config.read_secrets(local_paths)
    assert set(secrets) == set(config.SECRET_KEYS)
    for key in config.SECRET_KEYS:
        assert len(secrets[key]) >= 32
    assert secrets["WEBUI_SECRET_KEY"] != secrets["MCPO_API_KEY"]
    # the config round-trips to the same settings
    reloaded = load_settings(local_paths, environ={})
    assert reloaded == Settings.validated(project="lab", bind="0.0.0.0")
    assert not list(local_paths.root.glob("*.tmp"))


def test_install_config_round_trips_non_default_services_and_limits(local_paths):
    settings = config.validate(
        [
            (
                "flags",
                {
                    "services": {"ollama": {"type": "native-api", "url": "http://127.0.0.1:11434"}},
                    "limits": {"ollama": {"cpus": 3}},
                    "ports": {"webui": 3000},
                },
            )
        ]
    )
    config.install(local_paths, settings.to_json())
    yaml.safe_load(local_paths.config_file.read_text())  # valid YAML
    assert load_settings(local_paths, environ={}) == settings


def test_two_installs_get_different_secrets(tmp_path):
    a = InstallPaths(tmp_path / "a")
    b = InstallPaths(tmp_path / "b")
    config.install(a, {})
    config.install(b, {})
    sa, sb = config.read_secrets(a), config.read_secrets(b)
    for key in config.SECRET_KEYS:
        assert sa[key] != sb[key]


def test_second_install_is_refused_without_force(local_paths):
    config.install(local_paths, {})
    before = local_paths.secrets_file.read_text()
    with pytest.raises(AlreadyInstalled) as info:
        config.install(local_paths, {"project": "other"})
    assert info.value.code == ExitCode.ALREADY_INSTALLED == 10
    assert str(local_paths.root) in info.value.message
    assert "--force" in info.value.remedy
    assert local_paths.secrets_file.read_text() == before
    assert load_settings(local_paths, environ={}).project == "ollama-stack"


def test_force_rewrites_config_but_keeps_secrets(local_paths):
    config.install(local_paths, {})
    secrets = config.read_secrets(local_paths)
    result = config.install(local_paths, {"bind": "0.0.0.0"}, force=True)
    assert config.read_secrets(local_paths) == secrets
    assert result.secrets_kept == list(config.SECRET_KEYS)
    assert result.secrets_created == []
    assert load_settings(local_paths, environ={}).bind == "0.0.0.0"
    assert mode(local_paths.secrets_file) == 0o600


def test_force_refuses_to_repoint_an_installation_at_another_project(local_paths):
    config.install(local_paths, {"project": "first"})
    with pytest.raises(ConfigError) as info:
        config.install(local_paths, {"project": "renamed"}, force=True)
    assert "'first'" in info.value.message and "stack.uninstall" in info.value.remedy
    assert load_settings(local_paths, environ={}).project == "first"


def test_force_adds_only_the_missing_secret(local_paths):
    local_paths.root.mkdir(parents=True, exist_ok=True)
    local_paths.secrets_file.write_text("WEBUI_SECRET_KEY=keep-me-please\n")
    with pytest.raises(ConfigError) as info:
        config.read_secrets(local_paths)
    assert "MCPO_API_KEY" in info.value.message
    assert "WEBUI_SECRET_KEY" not in info.value.message

    result = config.install(local_paths, {}, force=True)
    secrets = config.read_secrets(local_paths)
    assert secrets["WEBUI_SECRET_KEY"] == "keep-me-please"
    assert len(secrets["MCPO_API_KEY"]) >= 32
    assert result.secrets_kept == ["WEBUI_SECRET_KEY"]
    assert result.secrets_created == ["MCPO_API_KEY"]


def test_read_secrets_without_install(local_paths):
    with pytest.raises(NotInstalled) as info:
        config.read_secrets(local_paths)
    assert info.value.code == ExitCode.NOT_INSTALLED == 9
    assert str(local_paths.root) in info.value.message
    assert "stack.install" in info.value.remedy


def test_read_secrets_ignores_comments_and_keeps_equals_in_values(local_paths):
    local_paths.root.mkdir(parents=True, exist_ok=True)
    local_paths.secrets_file.write_text(
        "# comment=not a key\nWEBUI_SECRET_KEY = a=b=c \nMCPO_API_KEY=xyz\n"
    )
    assert config.read_secrets(local_paths) == {"WEBUI_SECRET_KEY": "a=b=c", "MCPO_API_KEY": "xyz"}


# -- user config updates, runtime env, state -------------------------------------------


def test_update_user_config_creates_the_file(local_paths):
    path = config.update_user_config(local_paths, {"images": {"ollama": "standin/ollama:t"}})
    assert path == local_paths.config_file
    assert load_settings(local_paths, environ={}).images["ollama"] == "standin/ollama:t"


def test_update_user_config_merges_with_what_is_there(local_paths):
    write_config(local_paths, "project: lab\nimages:\n  webui: mine/webui:1\n")
    config.update_user_config(local_paths, {"images": {"ollama": "mine/ollama:2"}})
    document = yaml.safe_load(local_paths.config_file.read_text())
    assert document == {
        "schema": config.CONFIG_SCHEMA,
        "project": "lab",
        "images": {"webui": "mine/webui:1", "ollama": "mine/ollama:2"},
    }


def test_update_user_config_refuses_an_invalid_result_and_leaves_the_file(local_paths):
    original = write_config(local_paths, "project: lab\n").read_text()
    with pytest.raises(ConfigError) as info:
        config.update_user_config(local_paths, {"ports": {"webui": 70000}})
    assert "ports.webui=70000" in info.value.message
    assert local_paths.config_file.read_text() == original


def test_write_runtime_env_is_private(local_paths):
    path = config.write_runtime_env(local_paths, {"A": "1", "WEBUI_SECRET_KEY": "s3cret"})
    assert path == local_paths.runtime_env_file
    assert mode(path) == 0o600
    assert path.read_text() == "A=1\nWEBUI_SECRET_KEY=s3cret\n"


def test_write_runtime_env_tightens_an_existing_open_file(local_paths):
    path = local_paths.runtime_env_file
    path.parent.mkdir(parents=True)
    path.write_text("OLD=1\n")
    path.chmod(0o644)
    config.write_runtime_env(local_paths, {"NEW": "2"})
    assert mode(path) == 0o600
    assert read_env_file(path) == {"NEW": "2"}


def test_state_merges(local_paths):
    assert config.read_state(local_paths) == {}
    config.write_state(local_paths, {"platform": "cpu"})
    config.write_state(local_paths, {"platform_reason": "no GPU"})
    assert config.read_state(local_paths) == {"platform": "cpu", "platform_reason": "no GPU"}
    assert not list(local_paths.state_file.parent.glob(".*.tmp"))  # no temporary left


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"updates": [', "not JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_damaged_state_is_refused_never_reset(local_paths, text, why):
    """It holds the update history and rollback records: dropping it silently loses them."""
    local_paths.state_file.parent.mkdir(parents=True)
    if isinstance(text, bytes):
        local_paths.state_file.write_bytes(text)
    else:
        local_paths.state_file.write_text(text)
    before = local_paths.state_file.read_bytes()
    for action in (
        lambda: config.read_state(local_paths),
        lambda: config.write_state(local_paths, {"platform": "cpu"}),
    ):
        with pytest.raises(ConfigError) as info:
            action()
        assert info.value.code == 2
        assert info.value.message.startswith(f"state file {local_paths.state_file} is damaged")
        assert why in info.value.message
        assert info.value.remedy.endswith(f"{local_paths.state_file}.damaged")
    assert local_paths.state_file.read_bytes() == before  # kept as it was


def test_writes_are_atomic_and_keep_their_modes(local_paths, monkeypatch):
    config.install(local_paths, {})
    secrets_before = local_paths.secrets_file.read_text()

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        config.install(local_paths, {"bind": "::1"}, force=True)
    assert local_paths.secrets_file.read_text() == secrets_before  # the old file, whole
    assert "::1" not in local_paths.config_file.read_text()
    assert not list(local_paths.root.glob(".*.tmp"))
    monkeypatch.undo()
    config.install(local_paths, {"bind": "::1"}, force=True)
    assert stat.S_IMODE(local_paths.secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(local_paths.config_file.stat().st_mode) == 0o644


def test_deep_merge_does_not_mutate_its_inputs():
    base = {"ports": {"webui": 1, "ollama": 2}, "project": "a"}
    top = {"ports": {"webui": 3}, "bind": "::"}
    merged = config.deep_merge(base, top)
    assert merged == {"ports": {"webui": 3, "ollama": 2}, "project": "a", "bind": "::"}
    assert base == {"ports": {"webui": 1, "ollama": 2}, "project": "a"}
    assert top == {"ports": {"webui": 3}, "bind": "::"}


def test_installation_id_is_stable_per_directory_and_differs_between_homes(tmp_path):
    first = config.InstallPaths(tmp_path / "a")
    assert config.installation_id(first) == config.installation_id(
        config.InstallPaths(tmp_path / "a")
    )
    assert config.installation_id(first) != config.installation_id(
        config.InstallPaths(tmp_path / "b")
    )
    assert len(config.installation_id(first)) == 16


# -- the compose env file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("abc-123_./:@,+=%", "K=abc-123_./:@,+=%\n"),
        ("", "K=\n"),
        ('{"a": "b c"}', 'K=\'{"a": "b c"}\'\n'),
        ("has # hash", "K='has # hash'\n"),
        ("${NOT_INTERPOLATED}", "K='${NOT_INTERPOLATED}'\n"),
        ("back\\slash inside", "K='back\\slash inside'\n"),
    ],
)
def test_env_file_line_quotes_what_compose_would_read_otherwise(value, line):
    assert config.env_file_line("K", value) == line


@pytest.mark.parametrize("value", ["it's", "two\nlines", "cr\r", "ends in \\"])
def test_env_file_line_refuses_what_has_no_literal_form(value):
    with pytest.raises(ConfigError) as info:
        config.env_file_line("SECRET", value)
    assert info.value.message.startswith("SECRET cannot be written to the compose env file")
    assert value not in str(info.value)  # a secret is never echoed


# -- strict values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "says"),
    [
        ({"images": {"ollama": "--help"}}, "images.ollama='--help': Value error, invalid image"),
        ({"images": {"ollama": ""}}, "images.ollama='': Value error, invalid image reference"),
        ({"images": {"webui": "Open WebUI"}}, "images.webui='Open WebUI'"),
        ({"images": {"webui": "a:b:c"}}, "images.webui='a:b:c'"),
        ({"ports": {"ollama": True}}, "ports.ollama=True: Value error, expected a number"),
        ({"ports": {"webui": False}}, "ports.webui=False"),
        ({"ports": {"webui": 11434}}, "ollama and webui both want port 11434"),
        ({"ports": {"webui": "8200"}}, "webui and mcp_proxy both want port 8200"),
    ],
)
def test_values_docker_would_misread_are_refused(layer, says):
    with pytest.raises(ConfigError) as info:
        config.validate([("config.yaml", layer)])
    assert info.value.code == 2
    assert says in info.value.message
    assert info.value.message.endswith("(from config.yaml)")


@pytest.mark.parametrize(
    "image",
    [
        "ollama/ollama:0.5.7",
        "127.0.0.1:5000/ost/webui:stable",
        "ghcr.io/open-webui/open-webui@sha256:" + "a" * 64,
        "localhost/x",
    ],
)
def test_good_image_references_pass(image):
    assert config.validate([("f", {"images": {"webui": image}})]).images["webui"] == image


def test_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("ports:\n  webui: 3000\n  webui: 3001\n")
    with pytest.raises(ConfigError) as info:
        config.read_yaml(path)
    assert info.value.message == f"{path} line 3: malformed YAML (key 'webui' is given twice)"


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_a_deeply_nested_file_is_one_line(tmp_path, depth):
    path = tmp_path / "config.yaml"
    path.write_text("a: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ConfigError) as info:
        config.read_yaml(path)
    assert info.value.code == 2 and str(path) in info.value.message


def test_a_private_config_stays_private_and_a_link_is_written_through(local_paths, tmp_path):
    config.install(local_paths, {})
    local_paths.config_file.chmod(0o600)  # the user keeps MCP tokens in it
    config.update_user_config(local_paths, {"bind": "::1"})
    assert stat.S_IMODE(local_paths.config_file.stat().st_mode) == 0o600
    dotfiles = tmp_path / "dotfiles" / "ollama-stack.yaml"
    dotfiles.parent.mkdir()
    dotfiles.write_bytes(local_paths.config_file.read_bytes())
    local_paths.config_file.unlink()
    local_paths.config_file.symlink_to(dotfiles)
    config.update_user_config(local_paths, {"bind": "127.0.0.1"})
    assert local_paths.config_file.is_symlink()
    assert "127.0.0.1" in dotfiles.read_text()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:p@[::1", "http://***@[::1"),  # malformed: still no password shown
        ("x://tok@h", "x://***@h"),
    ],
)
def test_redact_url_never_fails(url, shown):
    assert config.redact_url(url) == shown


def test_a_bad_url_with_credentials_is_one_line_without_them():
    with pytest.raises(ConfigError) as info:
        config.validate([("env", {"services": {"ollama": {"url": "http://u:S3cret@[::1"}}})])
    assert "S3cret" not in str(info.value)


# -- one config system: invoke's, with our levels -------------------------------------


def invoke_config(section: Any = None, **sections: Any) -> Config:
    """invoke's configuration as a project invoke.yaml would leave it."""
    base = Config(lazy=True)
    base.load_collection({"ollama_stack": section or {}, **sections})
    return base


def test_stack_config_puts_our_levels_above_invokes_files(local_paths):
    write_config(local_paths, "project: from-file\nports:\n  webui: 2001\n")
    base = invoke_config({"project": "from-invoke", "bind": "::1", "ports": {"ollama": 1002}})
    layered = config.stack_config(
        local_paths, base, {"platform": "cpu"}, {"OLLAMA_STACK_PORTS_WEBUI": "3001"}
    )
    assert isinstance(layered, config.StackConfig) and not isinstance(base, config.StackConfig)
    settings = layered.settings()
    assert (settings.project, settings.bind, settings.platform) == ("from-file", "::1", "cpu")
    assert (settings.ports["ollama"], settings.ports["webui"]) == (1002, 3001)
    # the merged section is invoke's config too: tasks may read it as c.config.ollama_stack
    assert layered.ollama_stack.ports.webui == "3001"
    assert base.ollama_stack.project == "from-invoke"  # the task's own config is not changed


def test_stack_config_blames_the_layer_that_set_a_bad_value(local_paths):
    with pytest.raises(ConfigError) as info:
        config.stack_config(local_paths, invoke_config({"platform": "gpu"}), environ={}).settings()
    assert "(from invoke.yaml)" in info.value.message and "platform" in info.value.message
    write_config(local_paths, "bind: nowhere\n")
    with pytest.raises(ConfigError) as info:
        config.stack_config(local_paths, invoke_config(), environ={}).settings()
    assert f"(from {local_paths.config_file})" in info.value.message


@pytest.mark.parametrize("section", ["just text", ["a", "list"]])
def test_an_ollama_stack_section_that_is_not_a_mapping_is_one_line(local_paths, section):
    with pytest.raises(ConfigError, match="ollama_stack must be a mapping"):
        config.stack_config(local_paths, invoke_config(section), environ={})


def test_a_higher_level_replaces_a_value_of_another_shape(local_paths):
    write_config(local_paths, "ports: 8080\n")
    base = invoke_config({"ports": {"webui": 1}, "limits": None})
    with pytest.raises(ConfigError) as info:
        config.stack_config(local_paths, base, environ={}).settings()
    assert "ports=8080" in info.value.message
    assert f"(from {local_paths.config_file})" in info.value.message
    write_config(local_paths, "limits:\n  webui:\n    cpus: 1\n")
    settings = config.stack_config(local_paths, base, environ={}).settings()
    assert settings.limits["webui"].cpus == 1 and settings.ports["webui"] == 1


def test_an_empty_ollama_stack_section_is_no_settings(local_paths):
    empty = Config(lazy=True)
    empty.load_collection({"ollama_stack": None})  # `ollama_stack:` with all lines commented
    assert config.stack_config(local_paths, empty, environ={}).settings() == Settings.validated()


def test_library_callers_read_no_invoke_files_of_the_user(local_paths, unit_env):
    home = Path(os.environ["HOME"])
    (home / ".invoke.yaml").write_text("ollama_stack:\n  project: from-user-file\n")
    assert config.stack_config(local_paths, environ={}).settings().project == "ollama-stack"


def test_host_commands_run_with_invokes_run_settings(local_paths, capfd):
    """A bare Context would drop run.*: host checks run with the task's config,
    except what would make a check lie (a dry run) or spoil --json (echo)."""
    from ollama_stack.stack.hosts.target import run_quiet
    from ollama_stack.stack.runtime import Runtime

    base = invoke_config(run={"env": {"OST_FROM_INVOKE": "yes"}, "echo": True, "dry": True})
    shell = Runtime.open(base=base, environ={}).target.shell()
    assert run_quiet(shell, "echo $OST_FROM_INVOKE-$LC_ALL") == (0, "yes-C\n")
    assert capfd.readouterr().out == ""  # not echoed
    bare = Runtime.open(environ={}).target.shell()
    assert run_quiet(bare, "echo ${OST_FROM_INVOKE:-unset}") == (0, "unset\n")


def test_a_configured_run_timeout_fails_a_host_check_without_a_traceback(local_paths):
    from ollama_stack.stack.hosts.target import run_quiet
    from ollama_stack.stack.runtime import Runtime

    base = invoke_config(timeouts={"command": 1})  # invoke's --command-timeout
    shell = Runtime.open(base=base, environ={}).target.shell()
    assert run_quiet(shell, "sleep 5")[0] == 124


def test_host_commands_over_ssh_get_the_same_settings():
    from ollama_stack.stack.hosts.target import host_commands

    base = invoke_config(run={"echo": True, "env": {"A": "1"}}, sudo={"prefix": "doas "})
    taken = host_commands(config.StackConfig.of(base))
    assert taken["run"]["echo"] is True and taken["run"]["env"] == {"A": "1"}
    assert taken["sudo"]["prefix"] == "doas "
    assert host_commands(None) == {}


def test_exposure_names_an_unauthenticated_model_api_only_when_it_is_published():
    exposed = config.validate([("f", {"bind": "0.0.0.0"})])
    assert "Ollama's API has no authentication" in str(exposed.exposure(["ollama", "webui"]))
    assert "authentication" not in str(exposed.exposure(["webui", "mcp_proxy"]))
    assert Settings.validated().exposure(["ollama"]) is None  # loopback only


# -- another home, as stack.adopt finds it ------------------------------------------------


def test_home_of_env_file_only_for_our_layout(tmp_path):
    home = tmp_path / "old"
    assert config.home_of_env_file(str(home / "state" / "compose.env")) == home
    assert config.home_of_env_file(str(home / "compose.env")) is None
    assert config.home_of_env_file(str(home / "state" / ".env")) is None
    assert config.home_of_env_file("") is None


def test_claims_project_needs_an_installation_that_may_use_it(tmp_path):
    paths = config.InstallPaths(tmp_path / "old")
    assert not config.claims_project(paths.root, "p")  # nothing there
    config.install(paths, {})
    assert config.claims_project(paths.root, "p")  # its project came from elsewhere
    config.update_user_config(paths, {"project": "other"})
    assert not config.claims_project(paths.root, "p")
    assert config.claims_project(paths.root, "other")
    paths.config_file.write_text("schema: 99\n")  # unreadable here: claims nothing
    assert not config.claims_project(paths.root, "other")


def test_record_adoption_keeps_the_history_and_the_state(local_paths):
    config.write_state(local_paths, {"platform": "cpu"})
    config.record_adoption(local_paths, "aaaa", {"at": "first"})
    config.record_adoption(local_paths, None, {"at": "second"})  # volumes were ours already
    state = config.read_state(local_paths)
    assert state["platform"] == "cpu"
    assert state[config.VOLUMES_INSTALLATION_KEY] == "aaaa"
    assert [entry["at"] for entry in state["adopted"]] == ["first", "second"]


def test_the_keys_a_variable_may_set_are_the_models_fields():
    """values.settable_keys is written out (no pydantic on the read path): it
    must name exactly what the model holds."""
    from ollama_stack.stack.config.settings import Limits, SettingsModel
    from ollama_stack.stack.config.values import settable_keys
    from ollama_stack.stack.services import CATALOG

    def shape(tree: dict) -> dict:
        return {k: shape(v) if isinstance(v, dict) else None for k, v in tree.items()}

    expected = shape(SettingsModel().model_dump(exclude={"mcp_servers"}))
    expected["limits"] = {name: dict.fromkeys(Limits.model_fields) for name in CATALOG.names()}
    assert settable_keys(CATALOG.names()) == expected
