"""Health probes: each service's real endpoint over HTTP, falling back to TCP.

Probes dial through the target, so a remote stack published on the remote's
loopback is probed over an SSH ``direct-tcpip`` channel: the truth as seen on
the box itself, with nothing installed there.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from ollama_stack.common.errors import StackError

Health = Literal["healthy", "reachable", "unhealthy", "unknown"]
Dialer = Callable[[str, int, float], Any]
MAX_BODY = 1 << 20  # health answers are tiny; a huge one is not our service


@dataclass(frozen=True)
class Endpoint:
    service: str
    url: str  # what the user opens; also what we probe
    path: str  # health path on that URL
    check: Callable[[int, bytes], str | None]  # None = good, else why not
    fallback: str | None = None  # asked when `path` is 404 (an older release)
    version_path: str | None = None  # where the version is, when not in the health answer
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. the proxy's API key

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "https"

    @property
    def full_path(self) -> str:
        """The health path under the URL's own path (a service behind a prefix)."""
        return self.under_prefix(self.path)

    def under_prefix(self, path: str) -> str:
        return urlsplit(self.url).path.rstrip("/") + path

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        default = 443 if parts.scheme == "https" else 80
        return parts.hostname or "127.0.0.1", parts.port or default


@dataclass(frozen=True)
class ProbeResult:
    service: str
    health: Health
    detail: str
    latency_ms: float
    version: str | None = None

    @property
    def ok(self) -> bool:
        return self.health == "healthy"


def json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


@dataclass(frozen=True)
class ProbeSpec:
    path: str
    check: Callable[[int, bytes], str | None]
    fallback: str | None = None
    version_path: str | None = None


def endpoint_for(service: str, url: str, headers: Mapping[str, str] | None = None) -> Endpoint:
    from .services import CATALOG  # the catalog describes each service's probe

    spec = CATALOG[service].probe
    return Endpoint(
        service,
        url.rstrip("/"),
        spec.path,
        spec.check,
        spec.fallback,
        spec.version_path,
        dict(headers or {}),
    )


class _DialedHTTPConnection(http.client.HTTPConnection):
    """http.client over a socket we dial ourselves (plain or SSH channel)."""

    def __init__(
        self, host: str, port: int, timeout: float, dialer: Dialer, tls: bool = False
    ) -> None:
        super().__init__(host, port, timeout=timeout, blocksize=1 << 20)  # big bodies: 1 MiB sends
        self._dialer = dialer
        self._tls = tls

    def connect(self) -> None:
        raw = self._dialer(self.host, self.port, self.timeout)
        try:
            self.raw = _tls_over(raw, self.host) if self._tls else raw
        except BaseException:
            raw.close()
            raise
        self.sock = _CloseLater(self.raw)


def _tls_over(raw: Any, host: str) -> Any:
    """TLS as a local https client does it: the system's CAs (and SSL_CERT_FILE),
    the URL's host as the name the certificate must carry. Over an SSH channel
    (a remote box) as well as over a socket, so the probe sees what the box sees."""
    context = ssl.create_default_context()
    if isinstance(raw, socket.socket):
        return context.wrap_socket(raw, server_hostname=host)
    from .hosts.tls import TLSChannel

    return TLSChannel(raw, context, host)


class _CloseLater:
    """http.client closes the socket as soon as it sees "Connection: close",
    before the body is read. A real socket survives that through makefile();
    an SSH channel does not, so the close is deferred to ``_http_get``."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def close(self) -> None:
        pass


def _http_get(
    dialer: Dialer,
    host: str,
    port: int,
    path: str,
    timeout: float,
    tls: bool = False,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, bytes]:
    conn = _DialedHTTPConnection(host, port, timeout, dialer, tls)
    try:
        sent = {"Accept": "application/json", "Connection": "close", **(headers or {})}
        if body is not None:
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, _read_body(response, time.monotonic() + timeout)
    finally:
        conn.close()
        raw = getattr(conn, "raw", None)
        if raw is not None:
            raw.close()


def _read_body(response: http.client.HTTPResponse, deadline: float) -> bytes:
    """Read until the body ends, but never past MAX_BODY or the deadline.

    Loops because read(n) may return short on an SSH channel; bounded because
    a reply without Content-Length could otherwise stream forever.
    """
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY and time.monotonic() < deadline:
        chunk = response.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    return b""  # too big or too slow: not a health answer


def _tcp_open(dialer: Dialer, host: str, port: int, timeout: float) -> bool:
    try:
        dialer(host, port, timeout).close()
        return True
    except StackError:
        raise
    except Exception:
        return False


def probe(endpoint: Endpoint, dialer: Dialer, timeout: float = 2.0) -> ProbeResult:
    host, port = endpoint.host_port
    started = time.monotonic()

    def elapsed() -> float:
        return round((time.monotonic() - started) * 1000, 1)

    path = endpoint.path
    try:
        status, body = fetch(endpoint, path, dialer, timeout)
        if status == 404 and endpoint.fallback:
            path = endpoint.fallback
            status, body = fetch(endpoint, path, dialer, timeout)
    except StackError:
        raise  # e.g. SSH to the target failed: that is not the service's health
    except Exception as exc:  # refused, reset, timeout, SSH channel refused …
        if _tcp_open(dialer, host, port, timeout):
            return ProbeResult(endpoint.service, "reachable", f"port open, {_why(exc)}", elapsed())
        return ProbeResult(
            endpoint.service, "unhealthy", f"nothing answers on {host}:{port}", elapsed()
        )
    problem = endpoint.check(status, body)
    if problem:
        return ProbeResult(endpoint.service, "reachable", f"{path} {problem}", elapsed())
    version = _version_in(json_body(body))
    if version is None and endpoint.version_path:
        version = _version_in(get_json(endpoint, endpoint.version_path, dialer, timeout))
    return ProbeResult(endpoint.service, "healthy", f"{path} OK", elapsed(), version)


def _why(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):  # the reason alone, without OpenSSL's codes
        return f"TLS certificate verify failed: {exc.verify_message}"
    return f"HTTP failed: {exc}"


def _version_in(data: Any) -> str | None:
    """{"version": …} (Ollama, Open WebUI) or an OpenAPI document's info.version (mcpo)."""
    if not isinstance(data, dict):
        return None
    info = data.get("info")
    version = data.get("version") or (info.get("version") if isinstance(info, dict) else None)
    return str(version) if version is not None else None


def fetch(endpoint: Endpoint, path: str, dialer: Dialer, timeout: float) -> tuple[int, bytes]:
    """GET a path on a service's URL (under its prefix), through the dialer: status and body."""
    host, port = endpoint.host_port
    return _http_get(
        dialer, host, port, endpoint.under_prefix(path), timeout, endpoint.tls, endpoint.headers
    )


def get_json(endpoint: Endpoint, path: str, dialer: Dialer, timeout: float = 2.0) -> Any:
    """GET another path on a service's URL; None when it does not answer with JSON."""
    try:
        status, body = fetch(endpoint, path, dialer, timeout)
    except StackError:
        raise
    except Exception:
        return None
    return json_body(body) if status == 200 else None


def send_json(
    endpoint: Endpoint, method: str, path: str, document: Any, dialer: Dialer, timeout: float = 10.0
) -> tuple[int, Any]:
    """Call a service's JSON API (``document`` None: no body), through the same
    dialer as the probes (an SSH channel for a remote box); its status and answer."""
    host, port = endpoint.host_port
    status, body = _http_get(
        dialer,
        host,
        port,
        endpoint.under_prefix(path),
        timeout,
        endpoint.tls,
        endpoint.headers,
        method=method,
        body=None if document is None else json.dumps(document).encode(),
    )
    return status, json_body(body)


def send_stream(
    endpoint: Endpoint,
    path: str,
    body: Any,
    length: int,
    dialer: Dialer,
    timeout: float = 60.0,
) -> tuple[int, Any]:
    """POST ``length`` bytes read from a file-like ``body`` as they come (a model
    blob: never held in memory); the status and the JSON answer."""
    host, port = endpoint.host_port
    conn = _DialedHTTPConnection(host, port, timeout, dialer, endpoint.tls)
    try:
        headers = {"Content-Length": str(length), "Connection": "close", **endpoint.headers}
        conn.request("POST", endpoint.under_prefix(path), body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json_body(_read_body(response, time.monotonic() + timeout))
    finally:
        conn.close()
        raw = getattr(conn, "raw", None)
        if raw is not None:
            raw.close()


def stream_json_lines(
    endpoint: Endpoint, path: str, document: Any, dialer: Dialer, timeout: float = 60.0
) -> Iterator[Any]:
    """POST a JSON document and yield each line of an NDJSON answer as it
    arrives (a model pull's progress); ``timeout`` bounds each read, not the
    whole. A refusal (not 200) is yielded as its JSON body, or {"error": …}."""
    host, port = endpoint.host_port
    conn = _DialedHTTPConnection(host, port, timeout, dialer, endpoint.tls)
    try:
        sent = {"Accept": "application/x-ndjson", "Content-Type": "application/json"}
        conn.request(
            "POST",
            endpoint.under_prefix(path),
            body=json.dumps(document).encode(),
            headers={**sent, **endpoint.headers},
        )
        response = conn.getresponse()
        if response.status != 200:
            answer = json_body(_read_body(response, time.monotonic() + timeout))
            yield answer if isinstance(answer, dict) else {"error": f"HTTP {response.status}"}
            return
        while line := response.readline(MAX_BODY):
            if line.strip():
                yield json_body(line)
    finally:
        conn.close()
        raw = getattr(conn, "raw", None)
        if raw is not None:
            raw.close()


def api_version(endpoint: Endpoint, dialer: Dialer, timeout: float = 2.0) -> str | None:
    """Ollama and Open WebUI both answer GET /api/version with {"version": …}."""
    data = get_json(endpoint, "/api/version", dialer, timeout)
    return data.get("version") if isinstance(data, dict) else None


def ollama_models(
    endpoint: Endpoint, dialer: Dialer, timeout: float = 2.0
) -> tuple[int, int] | None:
    """(models available, models loaded in memory) from /api/tags and /api/ps."""
    tags = get_json(endpoint, "/api/tags", dialer, timeout)
    running = get_json(endpoint, "/api/ps", dialer, timeout)
    if not isinstance(tags, dict) or not isinstance(running, dict):
        return None
    return len(tags.get("models") or []), len(running.get("models") or [])


def probe_all(
    endpoints: list[Endpoint], dialer: Dialer, timeout: float = 2.0
) -> dict[str, ProbeResult]:
    """Probe concurrently; total time is the slowest probe, not the sum."""
    if not endpoints:
        return {}
    with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        results = pool.map(lambda e: probe(e, dialer, timeout), endpoints)
        return {r.service: r for r in results}
