"""stack/links.py: declared links (webui → Ollama), asked over HTTP on Open WebUI's own
/ollama/api/version (a real server on loopback) or else inside the container (the exec is
faked at the python-on-whales boundary; its argv is asserted)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from python_on_whales.exceptions import DockerException

from ollama_stack.stack import config, links
from ollama_stack.stack.health import ProbeResult
from ollama_stack.stack.hosts.target import Target
from ollama_stack.stack.runtime import Runtime

from .helpers import Route, extra_service, json_route, linux_shell

HEALTHY = {
    name: ProbeResult(name, "healthy", "OK", 1.0) for name in ("ollama", "webui", "mcp_proxy")
}


@pytest.fixture(autouse=True)
def webui_port(closed_port) -> int:
    """Where Open WebUI is published: nothing answers there unless a test starts it."""
    return closed_port


@pytest.fixture
def make_runtime(local_paths, webui_port):
    def make(_paths: Any = None, target: Target | None = None, **settings: Any) -> Runtime:
        ports = {"webui": webui_port, **settings.pop("ports", {})}
        merged = config.validate([("t", {"platform": "cpu", "ports": ports, **settings})])
        return Runtime(target or Target(None, _shell=linux_shell(2)), local_paths, merged)

    return make


def answers(*replies: tuple[int, str]):
    """The exec's replies in order: (exit code, output)."""
    queue = list(replies)

    def run(argv: list[str]) -> str:
        code, output = queue.pop(0)
        if code:
            raise DockerException(argv, code, b"", output.encode())
        return output

    return run


def execs(pow_calls) -> list[list[str]]:
    return [argv[argv.index("exec") + 3 :] for argv, _ in pow_calls.calls]


def test_reaches_ollama_with_curl_at_the_url_webui_was_given(make_runtime, local_paths, pow_calls):
    pow_calls.on_run = answers((0, '{"version":"0.5.7"}'))
    link = links.reaches(make_runtime(local_paths), "webui", "ollama")
    assert (link.ok, link.url) == (True, "http://ollama:11434")
    argv = pow_calls.calls[0][0]
    assert argv[argv.index("exec") :][:3] == ["exec", "-T", "webui"]
    assert execs(pow_calls) == [["curl", "-sS", "-f", "-m", "5", "http://ollama:11434/api/version"]]


def test_container_url_setting_is_what_is_checked(make_runtime, local_paths, pow_calls):
    pow_calls.on_run = answers((0, '{"version":"1"}'))
    rt = make_runtime(local_paths, services={"ollama": {"container_url": "http://gpu-box:11434"}})
    assert links.reaches(rt, "webui", "ollama").url == "http://gpu-box:11434"
    assert execs(pow_calls)[0][-1] == "http://gpu-box:11434/api/version"


def test_without_curl_python_asks(make_runtime, local_paths, pow_calls):
    no_curl = 'OCI runtime exec failed: exec: "curl": executable file not found in $PATH'
    pow_calls.on_run = answers((126, no_curl), (0, '{"version":"1"}'))
    link = links.reaches(make_runtime(local_paths), "webui", "ollama")
    assert link.ok is True
    assert [argv[:2] for argv in execs(pow_calls)] == [["curl", "-sS"], ["python3", "-c"]]


def test_an_exec_whose_answer_was_lost_cannot_tell_and_is_not_asked_again(
    make_runtime, local_paths, pow_calls, monkeypatch
):
    from ollama_stack.common.errors import DockerUnavailable
    from ollama_stack.compose.client import ComposeProject

    def lost(self: ComposeProject, service: str, argv: list[str], timeout: float = 15) -> Any:
        pow_calls.calls.append((argv, {}))
        raise DockerUnavailable("the Docker engine stopped answering …: it may have run")

    monkeypatch.setattr(ComposeProject, "exec_in", lost)
    link = links.reaches(make_runtime(local_paths), "webui", "ollama")
    assert link.ok is None and link.detail.startswith("cannot check from inside: the Docker")
    assert len(pow_calls.calls) == 1  # python3 is not tried after it


def test_with_neither_tool_it_cannot_tell(make_runtime, local_paths, pow_calls):
    pow_calls.on_run = answers((127, "sh: curl: not found"), (127, "python3: not found"))
    link = links.reaches(make_runtime(local_paths), "webui", "ollama")
    assert link.ok is None
    assert "neither curl nor python3" in link.detail


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        ((7, "curl: (7) Failed to connect to ollama port 11434"), "curl: (7) Failed to connect"),
        (
            (0, "<html>not Ollama</html>"),
            "it answers, but not as Ollama: '<html>not Ollama</html>'",
        ),
        ((0, ""), "it answers, but not as Ollama: ''"),
    ],
)
def test_a_broken_link_makes_webui_reachable_not_healthy(
    make_runtime, local_paths, pow_calls, reply, detail
):
    pow_calls.on_run = answers(reply)
    results = links.with_links(make_runtime(local_paths), HEALTHY)
    assert results["ollama"].ok and results["mcp_proxy"].ok
    webui = results["webui"]
    assert webui.health == "reachable"
    assert webui.detail.startswith(
        "cannot reach Ollama at http://ollama:11434 from its container: "
    )
    assert detail in webui.detail


def test_native_ollama_on_loopback_gets_the_remedy(make_runtime, local_paths, pow_calls):
    pow_calls.on_run = answers((7, "curl: (7) Failed to connect to host.docker.internal"))
    rt = make_runtime(
        local_paths, services={"ollama": {"type": "native-api", "url": "http://127.0.0.1:11434"}}
    )
    detail = links.with_links(rt, HEALTHY)["webui"].detail
    assert "http://host.docker.internal:11434" in detail and "OLLAMA_HOST=0.0.0.0" in detail


@pytest.mark.parametrize(
    ("results", "settings"),
    [
        # Ollama itself down here: that is the failure to report, not its echo
        (HEALTHY | {"ollama": ProbeResult("ollama", "unhealthy", "x", 1.0)}, {}),
        # webui not healthy yet: nothing to ask it
        (HEALTHY | {"webui": ProbeResult("webui", "unhealthy", "x", 1.0)}, {}),
        # webui not ours to exec into
        (HEALTHY, {"services": {"webui": {"type": "remote-api", "url": "http://chat:80"}}}),
    ],
)
def test_the_link_is_not_asked(make_runtime, local_paths, pow_calls, results, settings):
    assert links.with_links(make_runtime(local_paths, **settings), results) == results
    assert pow_calls.calls == []


def test_not_asked_when_ollama_was_not_probed(make_runtime, local_paths, pow_calls):
    # an update waiting on webui alone must not fail on an Ollama it did not touch
    only_webui = {"webui": HEALTHY["webui"]}
    assert links.with_links(make_runtime(local_paths), only_webui) == only_webui
    assert pow_calls.calls == []


def test_a_link_to_a_service_that_needs_our_key_is_not_asked_from_inside(
    make_runtime, local_paths, pow_calls, tmp_path
):
    """The key would show in the caller's process list: the link is left unchecked."""
    from ollama_stack.stack.services import CATALOG

    CATALOG.register(extra_service("caller", tmp_path / "caller.yml", depends_on=("mcp_proxy",)))
    try:
        config.install(local_paths, {})
        rt = make_runtime(local_paths)
        assert ("caller", "mcp_proxy") in links.declared_links(rt)
        link = links.reaches(rt, "caller", "mcp_proxy")
        assert link.ok is None and "needs our key" in link.detail
        assert pow_calls.calls == []  # nothing was run inside a container
        results = {**HEALTHY, "caller": ProbeResult("caller", "healthy", "OK", 1.0)}
        assert links.with_links(rt, results)["caller"].ok  # unchecked is not unhealthy
    finally:
        CATALOG.unregister("caller")


# -- asked over HTTP: Open WebUI's own /ollama/api/version -------------------------------------

NO_OLLAMA = {"detail": "WebUI could not connect to Ollama"}  # the real one's 500


ASKED = "/ollama/api/version"


def webui_answering(http_service, route: Route):
    return http_service({"/health": json_route(200, {"status": True}), ASKED: route})


def test_webui_that_reaches_ollama_says_so_over_http(make_runtime, pow_calls, http_service):
    webui = webui_answering(http_service, json_route(200, {"version": "0.5.7"}))
    link = links.reaches(make_runtime(ports={"webui": webui.port}), "webui", "ollama")
    assert (link.ok, link.url, link.detail) == (
        True,
        "http://ollama:11434",
        "Open WebUI reaches Ollama",
    )
    assert webui.requests == [ASKED]
    assert pow_calls.calls == []  # no exec into its container


def test_webui_that_finds_no_ollama_answers_500_and_is_not_linked(
    make_runtime, pow_calls, http_service
):
    webui = webui_answering(http_service, json_route(500, NO_OLLAMA))
    rt = make_runtime(ports={"webui": webui.port})
    link = links.reaches(rt, "webui", "ollama")
    assert link.ok is False
    assert link.detail == f"Open WebUI answers 500 on {ASKED}: WebUI could not connect to Ollama"
    assert pow_calls.calls == []
    webui_row = links.with_links(rt, HEALTHY)["webui"]
    assert webui_row.health == "reachable"
    assert webui_row.detail == (
        "cannot reach Ollama at http://ollama:11434 from its container: "
        f"Open WebUI answers 500 on {ASKED}: WebUI could not connect to Ollama"
    )


def test_webui_refusing_the_connection_is_asked_from_inside(make_runtime, pow_calls, webui_port):
    # Nothing listens on its published port (not published here, or not up yet).
    pow_calls.on_run = answers((0, '{"version":"0.5.7"}'))
    link = links.reaches(make_runtime(), "webui", "ollama")
    assert link.ok is True
    assert execs(pow_calls) == [["curl", "-sS", "-f", "-m", "5", "http://ollama:11434/api/version"]]


@pytest.mark.parametrize(
    "route",
    [
        json_route(404, {"detail": "Not Found"}),  # a release without the route
        json_route(200, {"version": False}),  # its Ollama API is turned off
        json_route(200, {"status": True}),  # not Ollama's answer
        json_route(401, {"detail": "Not authenticated"}),
        Route(502, b"<html>bad gateway</html>", content_type="text/html"),  # a proxy in front
    ],
)
def test_any_other_answer_is_left_to_the_exec(make_runtime, pow_calls, http_service, route):
    webui = webui_answering(http_service, route)
    pow_calls.on_run = answers((7, "curl: (7) Failed to connect to ollama port 11434"))
    link = links.reaches(make_runtime(ports={"webui": webui.port}), "webui", "ollama")
    assert (link.ok, link.detail) == (False, "curl: (7) Failed to connect to ollama port 11434")
    assert webui.requests == [ASKED] and len(execs(pow_calls)) == 1


def test_on_a_box_it_is_asked_through_the_targets_dialer(make_runtime, pow_calls, http_service):
    # A remote box's published port is its own loopback: reached over SSH, as probes are.
    webui = webui_answering(http_service, json_route(200, {"version": "0.5.7"}))
    dialed: list[tuple[str, int]] = []

    class Box(Target):
        def dial(self, host: str, port: int, timeout: float) -> socket.socket:
            dialed.append((host, port))
            return socket.create_connection(("127.0.0.1", webui.port), timeout=timeout)

    rt = make_runtime(target=Box("box", _shell=linux_shell(2)), ports={"webui": 18080})
    assert links.reaches(rt, "webui", "ollama").ok is True
    assert dialed == [("127.0.0.1", 18080)]
    assert pow_calls.calls == []
