"""stack/health.py against real HTTP servers on 127.0.0.1 (port 0)."""

from __future__ import annotations

import io
import socket
import threading
import time

import pytest

from ollama_stack.stack.health import Endpoint, endpoint_for, probe, probe_all, send_stream
from ollama_stack.stack.services import core

from .helpers import (
    Route,
    SocketChannel,
    channel_dialer,
    dial,
    json_route,
    mcpo_routes,
    ollama_routes,
    webui_routes,
)

# -- healthy --------------------------------------------------------------------------


def test_ollama_healthy_with_version(http_service):
    server = http_service(ollama_routes())
    result = probe(endpoint_for("ollama", server.url), dial)
    assert result.health == "healthy"
    assert result.ok
    assert result.version == "0.5.7"
    assert result.detail == "/api/version OK"
    assert result.service == "ollama"
    assert server.requests == ["/api/version"]
    assert 0 <= result.latency_ms < 2000


def test_webui_healthy_pings_its_database_and_reads_its_version(http_service):
    server = http_service(
        {
            "/health/db": json_route(200, {"status": True}),
            "/health": json_route(200, {"status": True}),
            "/api/version": json_route(200, {"version": "0.12.4"}),
        }
    )
    result = probe(endpoint_for("webui", server.url + "/"), dial)
    assert (result.health, result.version, result.detail) == ("healthy", "0.12.4", "/health/db OK")
    assert server.requests == ["/health/db", "/api/version"]


def test_webui_without_health_db_falls_back_to_health(http_service):
    # an Open WebUI older than /health/db (and the busybox stand-in)
    server = http_service(webui_routes())
    result = probe(endpoint_for("webui", server.url + "/"), dial)
    assert (result.health, result.version, result.detail) == ("healthy", None, "/health OK")
    assert server.requests == ["/health/db", "/health", "/api/version"]


def test_webui_whose_database_fails_is_not_healthy(http_service):
    # /health stays a fixed {"status": true}; only /health/db tells the truth
    server = http_service({"/health/db": json_route(503, {"status": False}), **webui_routes()})
    result = probe(endpoint_for("webui", server.url), dial)
    assert result.health == "reachable"
    assert result.detail == "/health/db answered 503, not status=true"
    assert server.requests == ["/health/db"]


def test_mcpo_with_strict_auth_is_probed_with_the_key(http_service):
    server = http_service(mcpo_routes())
    server.api_key = "k3y"
    good = probe(endpoint_for("mcp_proxy", server.url, {"Authorization": "Bearer k3y"}), dial)
    assert good.ok
    assert server.headers[-1]["Authorization"] == "Bearer k3y"
    wrong = probe(endpoint_for("mcp_proxy", server.url, {"Authorization": "Bearer nope"}), dial)
    assert (wrong.health, wrong.detail) == (
        "reachable",
        "/openapi.json answered 401: the proxy refused our API key (MCPO_API_KEY in secrets.env)",
    )


def test_mcpo_healthy_takes_the_version_from_info(http_service):
    server = http_service(mcpo_routes())
    result = probe(endpoint_for("mcp_proxy", server.url), dial)
    assert (result.health, result.version) == ("healthy", "1.0.4")
    assert server.requests == ["/openapi.json"]


# -- something answers, but not the right thing ------------------------------------------


@pytest.mark.parametrize(
    ("service", "routes", "why"),
    [
        ("ollama", {"/api/version": json_route(200, {"status": True})}, "without a version"),
        ("ollama", {"/api/version": json_route(500, {"version": "x"})}, "answered 500"),
        ("ollama", {}, "answered 404"),
        ("webui", {"/health": json_route(200, {"status": False})}, "not status=true"),
        ("webui", {"/health": json_route(200, {"status": "true"})}, "not status=true"),
        ("webui", {"/health": Route(200, b"OK", content_type="text/plain")}, "answered 200"),
        ("webui", {"/health": json_route(503, {"status": True})}, "answered 503"),
        ("mcp_proxy", {"/openapi.json": json_route(200, {"paths": {}})}, "without an OpenAPI"),
        ("mcp_proxy", {"/openapi.json": json_route(200, ["openapi"])}, "without an OpenAPI"),
    ],
)
def test_wrong_answers_are_reachable_not_healthy(http_service, service, routes, why):
    server = http_service(routes)
    result = probe(endpoint_for(service, server.url), dial)
    assert result.health == "reachable"
    assert not result.ok
    assert why in result.detail
    assert result.version is None


def test_another_service_on_the_port_is_not_healthy(http_service):
    # Open WebUI answering where Ollama should be
    server = http_service(webui_routes())
    result = probe(endpoint_for("ollama", server.url), dial)
    assert result.health == "reachable"
    assert "404" in result.detail


def test_closed_port_is_unhealthy(closed_port):
    result = probe(endpoint_for("ollama", f"http://127.0.0.1:{closed_port}"), dial, timeout=1)
    assert result.health == "unhealthy"
    assert result.detail == f"nothing answers on 127.0.0.1:{closed_port}"


def test_a_port_that_accepts_but_does_not_speak_http_is_reachable():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        result = probe(endpoint_for("webui", f"http://127.0.0.1:{port}"), dial, timeout=1)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert result.health == "reachable"
    assert result.detail.startswith("port open, HTTP failed")


def test_a_slow_answer_times_out_and_is_not_healthy(http_service):
    server = http_service(ollama_routes(delay=2.0))
    began = time.monotonic()
    result = probe(endpoint_for("ollama", server.url), dial, timeout=0.3)
    assert time.monotonic() - began < 1.5
    assert result.health == "reachable"
    assert "HTTP failed" in result.detail


# -- the dialer -------------------------------------------------------------------------


def test_probe_dials_the_endpoint_through_the_given_dialer(http_service):
    server = http_service(ollama_routes())
    dialed: list[tuple[str, int, float]] = []

    def tunnel(host: str, port: int, timeout: float) -> socket.socket:
        # like an SSH channel: the endpoint names a host we cannot reach directly
        dialed.append((host, port, timeout))
        return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)

    result = probe(endpoint_for("ollama", "http://ollama.remote:11434"), tunnel, timeout=1.5)
    assert result.health == "healthy"
    assert dialed == [("ollama.remote", 11434, 1.5)]


def test_a_dialer_that_refuses_means_unhealthy():
    def refuse(host: str, port: int, timeout: float):
        raise ConnectionRefusedError("channel refused")

    result = probe(endpoint_for("mcp_proxy", "http://127.0.0.1:8200"), refuse)
    assert result.health == "unhealthy"
    assert result.detail == "nothing answers on 127.0.0.1:8200"


class _ChannelLike:
    """Like a paramiko channel: after close() its file objects read nothing more."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.closed = False

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def settimeout(self, timeout: float) -> None:
        self._sock.settimeout(timeout)

    def makefile(self, mode: str = "rb", *args, **kwargs) -> io.BufferedReader:
        channel = self

        class Reader(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def readinto(self, buffer) -> int:
                if channel.closed:
                    return 0
                # one byte at a time: nothing is read ahead of what http.client asked for
                data = channel._sock.recv(1)
                buffer[: len(data)] = data
                return len(data)

        return io.BufferedReader(Reader(), buffer_size=1)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sock.close()


def test_a_channel_that_dies_on_close_still_delivers_the_body(http_service):
    server = http_service(mcpo_routes())
    channels: list[_ChannelLike] = []

    def channel_dialer(host: str, port: int, timeout: float) -> _ChannelLike:
        channel = _ChannelLike(socket.create_connection((host, port), timeout=timeout))
        channels.append(channel)
        return channel

    result = probe(endpoint_for("mcp_proxy", server.url), channel_dialer)
    assert result.health == "healthy"
    assert result.version == "1.0.4"
    assert len(channels) == 1
    assert channels[0].closed  # and it is closed afterwards


# -- endpoints --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host_port"),
    [
        ("http://127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("http://box.lan", ("box.lan", 80)),
        ("https://tools.example/", ("tools.example", 443)),
        ("http://[::1]:11434", ("::1", 11434)),
    ],
)
def test_endpoint_host_port(url, host_port):
    assert endpoint_for("webui", url).host_port == host_port


def test_endpoint_for_each_service():
    assert endpoint_for("ollama", "http://h:1/").url == "http://h:1"
    assert endpoint_for("ollama", "http://h:1").path == "/api/version"
    assert endpoint_for("webui", "http://h:1").path == "/health/db"
    assert endpoint_for("webui", "http://h:1").fallback == "/health"
    assert endpoint_for("mcp_proxy", "http://h:1").path == "/openapi.json"
    with pytest.raises(KeyError):
        endpoint_for("postgres", "http://h:1")


def test_checks_directly():
    assert core.check_ollama(200, b'{"version": "1"}') is None
    assert core.check_ollama(200, b"not json") is not None
    assert core.check_ollama(200, b'{"version": false}') is not None  # Open WebUI, API off
    assert core.check_webui(200, b'{"status": true}') is None
    assert core.check_openapi(200, b'{"openapi": "3.0.0"}') is None
    assert core.check_openapi(201, b'{"openapi": "3.0.0"}') is not None


# -- probe_all -------------------------------------------------------------------------


def test_probe_all_reports_each_service(http_service, closed_port):
    ollama = http_service(ollama_routes())
    webui = http_service({"/health": json_route(200, {"status": False})})
    endpoints = [
        endpoint_for("ollama", ollama.url),
        endpoint_for("webui", webui.url),
        endpoint_for("mcp_proxy", f"http://127.0.0.1:{closed_port}"),
    ]
    results = probe_all(endpoints, dial, timeout=1)
    assert list(results) == ["ollama", "webui", "mcp_proxy"]
    assert {name: r.health for name, r in results.items()} == {
        "ollama": "healthy",
        "webui": "reachable",
        "mcp_proxy": "unhealthy",
    }


def test_probe_all_runs_concurrently(http_service):
    servers = [
        ("ollama", http_service(ollama_routes(delay=0.5))),
        ("webui", http_service(webui_routes(delay=0.5))),
        ("mcp_proxy", http_service(mcpo_routes(delay=0.5))),
    ]
    endpoints = [endpoint_for(name, server.url) for name, server in servers]
    began = time.monotonic()
    results = probe_all(endpoints, dial, timeout=3)
    took = time.monotonic() - began
    assert all(r.ok for r in results.values()), results
    assert took >= 0.5
    assert took < 1.2, f"three 0.5 s probes took {took:.2f} s: not concurrent"
    for r in results.values():
        assert r.latency_ms >= 450


def test_probe_all_with_nothing_to_probe():
    assert probe_all([], dial) == {}


def test_endpoint_with_a_custom_check(http_service):
    server = http_service({"/ping": Route(204, b"")})
    endpoint = Endpoint("custom", server.url, "/ping", lambda s, b: None if s == 204 else "no")
    assert probe(endpoint, dial).health == "healthy"


def test_probe_never_raises_on_an_odd_but_healthy_document(http_service):
    server = http_service({"/health": json_route(200, {"status": True, "info": "ok"})})
    result = probe(endpoint_for("webui", server.url), dial)
    assert result.health == "healthy"


def test_an_endless_body_does_not_hold_the_probe():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def stream_for_a_while() -> None:
        conn, _ = listener.accept()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        chunk = b" " * 65536
        deadline = time.monotonic() + 2.5
        try:
            while time.monotonic() < deadline:
                conn.sendall(chunk)
                time.sleep(0.01)
        except OSError:
            pass
        finally:
            conn.close()

    server = threading.Thread(target=stream_for_a_while, daemon=True)
    server.start()
    began = time.monotonic()
    try:
        result = probe(endpoint_for("webui", f"http://127.0.0.1:{port}"), dial, timeout=0.5)
    finally:
        took = time.monotonic() - began
        server.join()
        listener.close()
    assert result.health != "healthy"
    assert took < 1.5, f"probe took {took:.1f} s reading an endless body"


# -- https ---------------------------------------------------------------------------


def _serve_tls(directory, name: str):
    import ssl

    from tests.support.tls import self_signed

    from .helpers import ServiceServer, ollama_routes

    cert, key = self_signed(directory, name)
    server = ServiceServer(ollama_routes())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, cert


@pytest.fixture
def tls_server(tmp_path, monkeypatch):
    """An https Ollama on 127.0.0.1 with a certificate for `localhost` that we trust."""
    server, cert = _serve_tls(tmp_path, "localhost")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted like a real CA would be
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def wrong_name_server(tmp_path, monkeypatch):
    """An https Ollama whose trusted certificate names another host."""
    server, cert = _serve_tls(tmp_path, "elsewhere.example")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    yield server
    server.shutdown()
    server.server_close()


def test_https_endpoint_is_probed_over_tls(tls_server):
    url = f"https://localhost:{tls_server.port}"
    result = probe(endpoint_for("ollama", url), dial, timeout=3)
    assert result.health == "healthy", result.detail
    plain = probe(endpoint_for("ollama", f"http://localhost:{tls_server.port}"), dial, timeout=3)
    assert plain.health == "reachable"  # the port answers, but not in plain HTTP


def test_https_certificate_is_verified(tls_server, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE")
    result = probe(endpoint_for("ollama", f"https://localhost:{tls_server.port}"), dial, timeout=3)
    assert result.health == "reachable"
    assert result.detail.startswith("port open, TLS certificate verify failed: ")
    assert "\n" not in result.detail


def test_https_through_an_ssh_channel_is_probed_over_tls(tls_server):
    channels: list[SocketChannel] = []
    url = f"https://localhost:{tls_server.port}"
    result = probe(endpoint_for("ollama", url), channel_dialer(channels), timeout=3)
    assert result.health == "healthy" and result.version == "0.5.7", result.detail
    assert tls_server.requests == ["/api/version"]  # one request, and it arrived in TLS
    assert channels and all(c.closed for c in channels)


def test_https_through_an_ssh_channel_checks_the_name(wrong_name_server):
    channels: list[SocketChannel] = []
    url = f"https://localhost:{wrong_name_server.port}"
    result = probe(endpoint_for("ollama", url), channel_dialer(channels), timeout=3)
    assert result.health == "reachable"
    assert result.detail == (
        "port open, TLS certificate verify failed: "
        "Hostname mismatch, certificate is not valid for 'localhost'."
    )
    assert wrong_name_server.requests == []  # nothing was sent to a server we do not trust
    assert channels and all(c.closed for c in channels)


def test_https_through_an_ssh_channel_sends_a_body(tls_server):
    """A model blob's POST travels through TLS over the channel in full."""
    channels: list[SocketChannel] = []
    endpoint = endpoint_for("ollama", f"https://localhost:{tls_server.port}")
    blob = bytes(range(256)) * 4096  # 1 MiB: many TLS records
    status, _ = send_stream(
        endpoint,
        "/api/blobs/sha256:x",
        io.BytesIO(blob),
        len(blob),
        channel_dialer(channels),
        timeout=5,
    )
    assert status == 201
    assert tls_server.bodies[-1] == blob
    assert channels and all(c.closed for c in channels)
