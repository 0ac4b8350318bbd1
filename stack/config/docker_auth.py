"""Registry logins as the docker CLI keeps them: read-only, never written.

``docker login`` stores each login in ``$DOCKER_CONFIG/config.json``
(``~/.docker`` by default): inline under ``auths`` (base64 ``user:password``,
or an ``identitytoken``), or in a credential helper the file names
(``credHelpers`` per registry, else ``credsStore``), which is asked as the CLI
asks it: ``docker-credential-NAME get`` with the server address on stdin.
Pulls go through the docker CLI and so use the same logins; ``update.check``
asks the registry itself, with these.

It lives with the config code because that is the one place files the tool
does not own are read; the registry module stays HTTP only. A login is never
printed: its repr hides the secrets, and no message quotes a value.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollama_stack.common.errors import ConfigError, ExitCode, StackError

# The key the docker CLI files Docker Hub under (its "index server").
HUB_SERVER = "https://index.docker.io/v1/"
HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
HELPER_TIMEOUT = 60.0  # a helper may ask a keyring or gpg-agent to unlock
TOKEN_USER = "<token>"  # a helper's Username when Secret is an identity token


@dataclass(frozen=True)
class Login:
    """Credentials for one registry; ``where`` says where they came from, for messages."""

    where: str
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)


def docker_config_file() -> Path:
    """The docker CLI's config.json: ``$DOCKER_CONFIG`` or ``~/.docker``."""
    directory = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(directory) / "config.json"


def server_address(registry: str) -> str:
    """The name the docker CLI stores ``registry``'s login under."""
    return HUB_SERVER if registry in HUB_HOSTS else registry


def login_command(registry: str) -> str:
    """What a user runs to log in (Docker Hub is the CLI's default)."""
    hub = registry in HUB_HOSTS or registry == HUB_SERVER
    return "docker login" if hub else f"docker login {registry}"


def login_for(registry: str) -> Login | None:
    """The login docker would use for ``registry`` (``host[:port]``), or None: anonymous."""
    path = docker_config_file()
    document = _read(path)
    server = server_address(registry)
    helper = _entry(document.get("credHelpers"), server, registry) or document.get("credsStore")
    if helper:
        if not isinstance(helper, str):
            raise _bad_file(path, "credHelpers/credsStore must name a helper")
        return _from_helper(helper, server)
    entry = _entry(document.get("auths"), server, registry)
    return _from_entry(entry, path, server) if entry is not None else None


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}  # never logged in: anonymous, as docker is
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", "check its permissions") from None
    try:
        document = json.loads(text) if text.strip() else {}
    except ValueError:
        raise _bad_file(path, "it is not JSON") from None
    if not isinstance(document, dict):
        raise _bad_file(path, "it is not a JSON object")
    return document


def _bad_file(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"docker's config {path} is damaged: {why}",
        "fix it, or move it away and `docker login` again",
    )


def _entry(table: Any, server: str, registry: str) -> Any:
    """``table[server]``, else a key that names the same host (``https://host/v2/``),
    as the docker CLI reads keys written by older versions."""
    if not isinstance(table, dict):
        return None
    if server in table:
        return table[server]
    wanted = {registry} | (HUB_HOSTS if server == HUB_SERVER else set())
    for key, value in table.items():
        if isinstance(key, str) and _hostname(key) in wanted:
            return value
    return None


def _hostname(key: str) -> str:
    for scheme in ("https://", "http://"):
        key = key.removeprefix(scheme)
    return key.split("/", 1)[0]


def _from_entry(entry: Any, path: Path, server: str) -> Login | None:
    if not isinstance(entry, dict):
        raise _bad_file(path, f"auths[{server!r}] is not an object")
    where = f"docker's config ({path})"
    token = entry.get("identitytoken") or ""
    username, password = entry.get("username") or "", entry.get("password") or ""
    if entry.get("auth"):
        username, password = _decode_auth(entry["auth"], path, server)
    if not isinstance(token, str) or not isinstance(username, str):
        raise _bad_file(path, f"auths[{server!r}] has a field that is not text")
    if not (password or token):
        return None  # an empty entry: credentials live elsewhere, or nowhere
    return Login(where, username, password, token)


def _decode_auth(value: Any, path: Path, server: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
        raise _bad_file(path, f"auths[{server!r}].auth is not base64 text") from None
    username, colon, password = decoded.partition(":")
    if not colon:
        raise _bad_file(path, f"auths[{server!r}].auth is not user:password")
    return username, password


def _from_helper(name: str, server: str) -> Login | None:
    program = f"docker-credential-{name}"
    failed = StackError(
        f"docker's credential helper {program} did not answer for {server}",
        f"check it, or `{login_command(server)}` again",
        code=ExitCode.REGISTRY_UNREACHABLE,
    )
    try:
        done = subprocess.run(
            [program, "get"],
            input=server,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT,
        )
    except FileNotFoundError:
        raise StackError(
            f"docker's config names the credential helper {program}, which is not installed",
            f"install it, or remove it from {docker_config_file()}",
            code=ExitCode.REGISTRY_UNREACHABLE,
        ) from None
    except (subprocess.TimeoutExpired, OSError):
        raise failed from None
    if done.returncode != 0:
        if "credentials not found" in (done.stdout + done.stderr).lower():
            return None  # the helper's "not logged in": anonymous, as docker is
        raise failed  # its output is not quoted: it is not ours to print
    try:
        answer = json.loads(done.stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise failed from None
    if not isinstance(username, str) or not isinstance(secret, str) or not secret:
        raise failed
    if username == TOKEN_USER:
        return Login(program, identity_token=secret)
    return Login(program, username, secret)
