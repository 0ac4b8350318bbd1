"""config.docker_auth: logins read from the docker CLI's config.json and its
credential helpers (a real script on PATH), as the docker CLI finds them."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from ollama_stack.common.errors import ConfigError, StackError
from ollama_stack.stack.config.docker_auth import (
    HUB_SERVER,
    Login,
    docker_config_file,
    login_command,
    login_for,
)

REGISTRY = "127.0.0.1:5000"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_config(document: object, directory: Path | None = None) -> Path:
    path = directory or Path(os.environ["HOME"]) / ".docker"
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(document))
    return path / "config.json"


def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> Path:
    """A docker-credential-NAME script on PATH; what it was given lands in the returned file."""
    bin_dir = tmp_path / "helpers"
    bin_dir.mkdir(exist_ok=True)
    seen = tmp_path / f"{name}.seen"
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f'#!/bin/sh\necho "$@" > "{seen}"\ncat >> "{seen}"\n{body}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return seen


def test_no_config_file_means_anonymous() -> None:
    assert login_for(REGISTRY) is None


def test_inline_auth_is_user_and_password() -> None:
    write_config({"auths": {REGISTRY: {"auth": b64("alice:pa:ss")}}})
    login = login_for(REGISTRY)
    assert login is not None
    assert (login.username, login.password, login.identity_token) == ("alice", "pa:ss", "")
    assert "pa:ss" not in repr(login)  # a login never shows its secret


def test_docker_config_wins_over_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config({"auths": {REGISTRY: {"auth": b64("home:x")}}})
    other = tmp_path / "elsewhere"
    write_config({"auths": {REGISTRY: {"auth": b64("env:y")}}}, other)
    monkeypatch.setenv("DOCKER_CONFIG", str(other))
    assert docker_config_file() == other / "config.json"
    login = login_for(REGISTRY)
    assert login is not None and login.username == "env"


@pytest.mark.parametrize("registry", ["registry-1.docker.io", "docker.io", "index.docker.io"])
def test_docker_hub_is_filed_under_the_index_server(registry: str) -> None:
    write_config({"auths": {HUB_SERVER: {"auth": b64("hubuser:hubpass")}}})
    login = login_for(registry)
    assert login is not None and login.username == "hubuser"
    assert login_command(registry) == "docker login"


def test_keys_written_as_urls_still_match_their_host() -> None:
    write_config({"auths": {"https://ghcr.io/v2/": {"auth": b64("octo:ghp_x")}}})
    login = login_for("ghcr.io")
    assert login is not None and login.password == "ghp_x"
    assert login_for("ghcr.io.evil") is None
    assert login_command("ghcr.io") == "docker login ghcr.io"


def test_identity_token_entry() -> None:
    write_config({"auths": {REGISTRY: {"auth": b64("alice:"), "identitytoken": "refresh-1"}}})
    login = login_for(REGISTRY)
    assert login is not None and login.identity_token == "refresh-1"


def test_an_empty_entry_is_no_login() -> None:
    write_config({"auths": {REGISTRY: {}}})
    assert login_for(REGISTRY) is None


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ("{not json", "it is not JSON"),
        (["a", "list"], "it is not a JSON object"),
        ({"auths": {REGISTRY: {"auth": "!!not-base64-secret!!"}}}, ".auth is not base64"),
        ({"auths": {REGISTRY: {"auth": b64("no-colon-secret")}}}, ".auth is not user:password"),
        ({"auths": {REGISTRY: "secret"}}, "is not an object"),
        ({"credsStore": ["x"]}, "must name a helper"),
    ],
)
def test_a_damaged_config_is_one_line_without_its_values(document: object, why: str) -> None:
    path = Path(os.environ["HOME"]) / ".docker" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(ConfigError) as caught:
        login_for(REGISTRY)
    assert why in caught.value.message and str(path) in caught.value.message
    assert "secret" not in str(caught.value)


def test_cred_helper_is_asked_like_the_docker_cli_asks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = json.dumps({"ServerURL": REGISTRY, "Username": "alice", "Secret": "from-helper"})
    seen = helper(tmp_path, monkeypatch, "test", f"echo '{answer}'")
    write_config({"credHelpers": {REGISTRY: "test"}, "auths": {REGISTRY: {"auth": b64("a:b")}}})
    login = login_for(REGISTRY)
    assert login == Login("docker-credential-test", "alice", "from-helper")
    assert seen.read_text() == f"get\n{REGISTRY}"  # argv, then the server address on stdin


def test_creds_store_serves_registries_without_their_own_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = json.dumps({"ServerURL": HUB_SERVER, "Username": "<token>", "Secret": "idtok"})
    seen = helper(tmp_path, monkeypatch, "store", f"echo '{answer}'")
    write_config({"credsStore": "store", "credHelpers": {"ghcr.io": "other"}})
    login = login_for("registry-1.docker.io")
    assert login is not None and (login.identity_token, login.password) == ("idtok", "")
    assert seen.read_text() == f"get\n{HUB_SERVER}"


def test_a_helper_without_the_login_means_anonymous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper(tmp_path, monkeypatch, "test", "echo 'credentials not found in native keychain'; exit 1")
    write_config({"credsStore": "test"})
    assert login_for(REGISTRY) is None


def test_a_failing_helper_is_one_line_that_does_not_quote_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper(tmp_path, monkeypatch, "test", 'echo \'{"Secret": "leaked"}\'; exit 3')
    write_config({"credsStore": "test"})
    with pytest.raises(StackError) as caught:
        login_for(REGISTRY)
    assert caught.value.message == (
        f"docker's credential helper docker-credential-test did not answer for {REGISTRY}"
    )
    assert "leaked" not in str(caught.value)


def test_a_missing_helper_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config({"credsStore": "nope-not-installed"})
    with pytest.raises(StackError, match="docker-credential-nope-not-installed, which is not"):
        login_for(REGISTRY)
