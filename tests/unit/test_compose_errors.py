"""compose/errors.py: what docker/compose say on stderr → StackError class and exit code."""

from __future__ import annotations

import pytest

from ollama_stack.common.errors import (
    ComposeMissing,
    DockerFailed,
    DockerUnavailable,
    ExitCode,
    ImageUnavailable,
    PortInUse,
    SSHError,
    StackError,
)
from ollama_stack.compose.errors import translate

UP = ["/usr/bin/docker", "compose", "--project-name", "p", "up", "--detach", "ollama"]
PS = ["/usr/bin/docker", "compose", "--project-name", "p", "ps", "--all"]
IMAGES = {
    "ollama": "nope/img:1",
    "webui": "ghcr.io/open-webui/open-webui:main",
    "mcp_proxy": "ghcr.io/open-webui/mcpo:main",
}


def check(err: StackError, cls: type[StackError], code: ExitCode) -> StackError:
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert err.code == code
    assert err.remedy, "every translated error carries a remedy"
    return err


@pytest.mark.parametrize(
    "stderr",
    [
        "Cannot connect to the Docker daemon at unix:///nope.sock. Is the docker daemon running?",
        "permission denied while trying to connect to the Docker daemon socket at "
        'unix:///var/run/docker.sock: Get "http://%2Fvar%2Frun%2Fdocker.sock/v1.47/info": '
        "dial unix /var/run/docker.sock: connect: permission denied",
        'error during connect: Get "http://docker.example:2375/v1.47/info": '
        "dial tcp 10.0.0.9:2375: connect: connection refused",
    ],
)
def test_docker_down(stderr):
    err = check(translate(stderr, PS), DockerUnavailable, ExitCode.DOCKER_UNAVAILABLE)
    assert err.message.startswith("Docker is not reachable: ")
    assert stderr.strip().splitlines()[-1] in err.message


def test_docker_down_even_when_the_command_was_up():
    stderr = (
        "Cannot connect to the Docker daemon at unix:///nope.sock. Is the docker daemon running?"
    )
    check(translate(stderr, UP, images=IMAGES), DockerUnavailable, ExitCode.DOCKER_UNAVAILABLE)


@pytest.mark.parametrize(
    "stderr",
    [
        "docker: 'compose' is not a docker command.\nSee 'docker --help'",
        "unknown shorthand flag: 'p' in -p\nSee 'docker --help'.",
        'unknown command "compose" for "docker"',
    ],
)
def test_compose_missing(stderr):
    err = check(translate(stderr, PS), ComposeMissing, ExitCode.COMPOSE_MISSING)
    assert "Compose v2" in err.message
    assert "docker-compose-plugin" in err.remedy


def test_compose_missing_on_a_remote_names_the_host():
    err = translate("docker: 'compose' is not a docker command.", PS, target="user@box:2222")
    assert err.message.endswith(" on user@box:2222")


@pytest.mark.parametrize(
    ("stderr", "port"),
    [
        (
            "Error response from daemon: driver failed programming external connectivity on "
            "endpoint x: Bind for 127.0.0.1:8080 failed: port is already allocated",
            "8080",
        ),
        (
            " Container p-ollama-1  Starting\nError response from daemon: failed to set up "
            "container networking: driver failed programming external connectivity on endpoint "
            "p-ollama-1 (3f2a): failed to bind host port for 0.0.0.0:11434:172.18.0.2:11434/tcp: "
            "address already in use",
            "11434",
        ),
        (
            "Error starting userland proxy: listen tcp4 [::]:8200: bind: address already in use",
            "8200",
        ),
    ],
)
def test_port_in_use_names_the_port(stderr, port):
    err = check(translate(stderr, UP, images=IMAGES), PortInUse, ExitCode.PORT_IN_USE)
    assert err.message.startswith(f"port {port} is already in use")
    assert stderr.strip().splitlines()[-1].strip() in err.message
    assert "OLLAMA_STACK_PORTS_" in err.remedy


def test_image_unavailable_names_the_service():
    stderr = (
        "Error response from daemon: pull access denied for nope/img, repository does not exist "
        "or may require 'docker login': denied: requested access to the resource is denied"
    )
    err = check(translate(stderr, UP, images=IMAGES), ImageUnavailable, ExitCode.IMAGE_UNAVAILABLE)
    assert "ollama (nope/img:1)" in err.message
    assert "webui" not in err.message
    assert "--pull never" in err.remedy


@pytest.mark.parametrize(
    ("stderr", "culprit", "command"),
    [
        (
            ' Image 127.0.0.1:5000/team/webui:stable Error Head "http://127.0.0.1:5000/v2/team/'
            'webui/manifests/stable": no basic auth credentials\nError response from daemon: Head'
            ' "http://127.0.0.1:5000/v2/team/webui/manifests/stable": no basic auth credentials',
            "webui (127.0.0.1:5000/team/webui:stable)",
            "docker login 127.0.0.1:5000",
        ),
        (
            " Image 127.0.0.1:5000/team/webui:stable Error unauthorized: authentication required\n"
            "Error response from daemon: unauthorized: authentication required",
            "webui (127.0.0.1:5000/team/webui:stable)",
            "docker login 127.0.0.1:5000",
        ),
        (
            " Image me/private:1 Error unauthorized: incorrect username or password\n"
            'Error response from daemon: Head "https://registry-1.docker.io/v2/me/private/'
            'manifests/1": unauthorized: incorrect username or password',
            "ollama (me/private:1)",
            "docker login",
        ),
    ],
)
def test_a_registry_login_missing_or_refused_names_docker_login(stderr, culprit, command):
    images = {"ollama": "me/private:1", "webui": "127.0.0.1:5000/team/webui:stable"}
    err = check(translate(stderr, UP, images=images), ImageUnavailable, ExitCode.IMAGE_UNAVAILABLE)
    assert err.message.startswith(f"cannot get {culprit}: its registry wants a login")
    assert err.remedy.startswith(f"`{command}` on this machine")


def test_image_unavailable_for_the_second_service():
    stderr = (
        " webui Error manifest for ghcr.io/open-webui/open-webui:main not found: "
        "manifest unknown: manifest unknown"
    )
    err = check(translate(stderr, UP, images=IMAGES), ImageUnavailable, ExitCode.IMAGE_UNAVAILABLE)
    assert "webui (ghcr.io/open-webui/open-webui:main)" in err.message


def test_image_unavailable_without_a_known_image_says_an_image():
    stderr = "Error response from daemon: manifest for other/thing:2 not found: manifest unknown"
    err = check(translate(stderr, UP, images=IMAGES), ImageUnavailable, ExitCode.IMAGE_UNAVAILABLE)
    assert "cannot get an image" in err.message


def test_registry_refusing_a_connection_during_up_is_an_image_problem_not_docker_down():
    stderr = (
        ' ollama Error Get "https://registry.local:5000/v2/": dial tcp 10.1.1.1:5000: '
        "connect: connection refused"
    )
    check(translate(stderr, UP, images=IMAGES), ImageUnavailable, ExitCode.IMAGE_UNAVAILABLE)


def test_image_words_outside_pull_or_up_are_not_an_image_problem():
    # `docker image inspect` failing is not a pull failure
    stderr = "Error response from daemon: No such image: nope/img:1"
    argv = ["/usr/bin/docker", "image", "inspect", "nope/img:1"]
    check(translate(stderr, argv, images=IMAGES), DockerFailed, ExitCode.DOCKER_FAILED)


@pytest.mark.parametrize(
    "stderr",
    [
        "Host key verification failed.",
        "user@box: Permission denied (publickey,password).",
        "ssh: Could not resolve hostname nobox: Name or service not known",
        "ssh: connect to host box port 2222: Connection refused",
    ],
)
def test_ssh_failures(stderr):
    err = translate(stderr, PS, target="user@box:2222")
    check(err, SSHError, ExitCode.SSH)
    assert err.message.startswith("SSH to user@box:2222 failed: ")
    assert stderr.strip() in err.message
    assert "ssh user@box:2222" in err.remedy


def test_unknown_failure_keeps_the_last_stderr_line():
    stderr = (
        "some progress line\n"
        'service "webui" refers to undefined volume extra: invalid compose project\n\n'
    )
    err = check(translate(stderr, UP), DockerFailed, ExitCode.DOCKER_FAILED)
    assert err.message.endswith(
        ': service "webui" refers to undefined volume extra: invalid compose project'
    )
    assert "some progress line" not in err.message
    assert "/usr/bin/docker compose --project-name p" in err.message  # first argv words
    assert "--detach" not in err.message


def test_unknown_failure_without_output():
    err = check(translate("", PS, target="box"), DockerFailed, ExitCode.DOCKER_FAILED)
    assert err.message.endswith(" on box: no output")


def test_local_target_is_not_named():
    err = translate("weird", PS, target="local")
    assert " on local" not in err.message


def test_a_missing_mount_source_is_not_docker_down():
    stderr = (
        "Error response from daemon: failed to create task for container: failed to create "
        "shim task: OCI runtime create failed: runc create failed: unable to start container "
        'process: error during container init: error mounting "/srv/x" to rootfs at "/data": '
        "mount /srv/x:/data, flags: 0x5000: no such file or directory: unknown"
    )
    err = translate(stderr, UP, images=IMAGES)
    assert not isinstance(err, DockerUnavailable)


def test_local_registry_images_blame_the_right_service():
    images = {"ollama": "localhost:5000/ollama", "webui": "localhost:5000/webui"}
    stderr = (
        "Error response from daemon: manifest for localhost:5000/webui:latest not found: "
        "manifest unknown"
    )
    err = translate(stderr, UP, images=images)
    assert isinstance(err, ImageUnavailable)
    assert "webui (localhost:5000/webui)" in err.message
