"""https probes on a remote box travel through the SSH connection: a TLS server
listening only on the second host's loopback is probed by `health.check --remote`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.tls import self_signed

pytestmark = [pytest.mark.docker, pytest.mark.remote]

# An Ollama's /api/version in TLS on 127.0.0.1 and a port the kernel picks,
# printed first; every path asked is printed after it.
SERVER = """
import http.server, ssl, sys
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print(self.path, flush=True)
        body = b'{"version": "0.9.1"}'
        self.send_response(200 if self.path == "/api/version" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextmanager
def tls_server_on(namespace: str, cert: Path, key: Path) -> Iterator[tuple[int, list[str]]]:
    """(port, paths asked so far) of a TLS server inside the box's network namespace."""
    server = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{namespace}", sys.executable, "-c", SERVER, cert, key],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        yield port, _paths_read_later(server)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _paths_read_later(server: subprocess.Popen[str]) -> list[str]:
    import threading

    paths: list[str] = []

    def collect() -> None:
        assert server.stdout is not None
        paths.extend(line.strip() for line in server.stdout)

    threading.Thread(target=collect, daemon=True).start()
    return paths


def _ollama(result: subprocess.CompletedProcess[str]) -> dict:
    report = json.loads(result.stdout)
    return next(s for s in report["services"] if s["service"] == "ollama")


def test_https_on_the_box_loopback_is_probed_through_ssh(
    make_installation, remote_host, tmp_path
) -> None:
    good_cert, good_key = self_signed(tmp_path, "127.0.0.1", "good")
    wrong_cert, wrong_key = self_signed(tmp_path, "wrong.example", "wrong")
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(good_cert.read_bytes() + wrong_cert.read_bytes())
    inst = make_installation(remote=remote_host.name, docker_host=remote_host.docker_host)
    inst.env["SSL_CERT_FILE"] = str(trusted)  # both are trusted: only the name differs
    inst.env["OLLAMA_STACK_SERVICES_OLLAMA_TYPE"] = "remote-api"

    with tls_server_on(remote_host.name, good_cert, good_key) as (port, paths):
        inst.env["OLLAMA_STACK_SERVICES_OLLAMA_URL"] = f"https://127.0.0.1:{port}"
        ollama = _ollama(inst.cli("health.check", "--json", "--timeout", "5"))
        assert ollama["health"] == "healthy", ollama
        assert ollama["version"] == "0.9.1"
        assert "/api/version" in paths  # it reached the server that only the box's loopback has

    with tls_server_on(remote_host.name, wrong_cert, wrong_key) as (port, paths):
        inst.env["OLLAMA_STACK_SERVICES_OLLAMA_URL"] = f"https://127.0.0.1:{port}"
        result = inst.cli("health.check", "--json", "--timeout", "5")
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        ollama = _ollama(result)
        assert ollama["health"] == "reachable"
        assert ollama["detail"] == (
            "port open, TLS certificate verify failed: "
            "IP address mismatch, certificate is not valid for '127.0.0.1'."
        )
        assert paths == []  # no request went to a server whose name did not verify
