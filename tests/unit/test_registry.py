"""stack.registry: reference parsing, and remote digests from a real HTTP server.

The fake registry is a ThreadingHTTPServer on 127.0.0.1 speaking just enough
of the distribution API: manifests by HEAD/GET, a Bearer challenge whose realm
is its own /token endpoint, 404s, and a mode that drops Docker-Content-Digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ollama_stack.common.errors import ConfigError, ExitCode
from ollama_stack.stack.update import registry
from ollama_stack.stack.update.registry import (
    ImageNotInRegistry,
    Reference,
    RegistryUnreachable,
    local_repo_digest,
    manifest_url,
    parse_reference,
    remote_digest,
)

ACCEPTED = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
MANIFEST = json.dumps({"schemaVersion": 2, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
OTHER = "sha256:" + "1" * 64
TOKEN = "anon-token-42"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: str = ""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Behaviour:
    manifests: dict[str, bytes] = field(default_factory=dict)  # "repo/manifests/ref" → body
    digest_header: str | None = DIGEST  # None: answer without Docker-Content-Digest
    challenge: dict[str, str] = field(default_factory=dict)  # repo → WWW-Authenticate
    accepted_token: str = TOKEN
    status: int | None = None  # force this status on every manifest request
    accepted_basic: str | None = None  # "user:password" a Basic challenge accepts
    token_basic: str | None = None  # "user:password" GET /token requires, when set
    refresh_token: str | None = None  # what POST /token accepts (docker's OAuth2 grant)
    redirect: str | None = None  # an accepted manifest request is sent on to this base URL


class FakeRegistry(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = Behaviour()
        self.seen: list[Seen] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    @property
    def realm(self) -> str:
        return f"http://{self.address}/token"

    def methods(self, prefix: str = "/v2/") -> list[str]:
        return [s.method for s in self.seen if s.path.startswith(prefix)]


class _Handler(BaseHTTPRequestHandler):
    server: FakeRegistry

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def _answer(self, with_body: bool) -> None:
        server = self.server
        server.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
        behaviour = server.behaviour
        if self.path.startswith("/token"):
            wanted = behaviour.token_basic and f"Basic {_b64(behaviour.token_basic)}"
            if wanted and self.headers.get("Authorization") != wanted:
                self._send(401, b'{"details":"incorrect username or password"}', {}, with_body)
                return
            self._send(200, json.dumps({"token": TOKEN}).encode(), {}, with_body)
            return
        repo, _, ref = self.path.removeprefix("/v2/").partition("/manifests/")
        challenge = behaviour.challenge.get(repo)
        accepted = {f"Bearer {behaviour.accepted_token}"}
        if behaviour.accepted_basic:
            accepted.add(f"Basic {_b64(behaviour.accepted_basic)}")
        if challenge and self.headers.get("Authorization") not in accepted:
            self._send(401, b"{}", {"WWW-Authenticate": challenge}, with_body)
            return
        if behaviour.redirect:
            self._send(307, b"", {"Location": behaviour.redirect + self.path}, with_body)
            return
        body = behaviour.manifests.get(f"{repo}/manifests/{ref}")
        if behaviour.status or body is None:
            self._send(behaviour.status or 404, b'{"errors":[]}', {}, with_body)
            return
        headers = {"Content-Type": ACCEPTED[3]}
        if behaviour.digest_header:
            headers["Docker-Content-Digest"] = behaviour.digest_header
        self._send(200, body, headers, with_body)

    def do_POST(self) -> None:
        """The token endpoint's OAuth2 refresh-token grant."""
        form = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.server.seen.append(Seen("POST", self.path, dict(self.headers.items()), form))
        fields = {k: v[0] for k, v in parse_qs(form).items()}
        good = fields.get("grant_type") == "refresh_token" and fields.get("refresh_token") == (
            self.server.behaviour.refresh_token or object()
        )
        body = json.dumps({"access_token": TOKEN}).encode() if good else b"{}"
        self._send(200 if good else 401, body, {}, True)

    def _send(self, status: int, body: bytes, headers: dict[str, str], with_body: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# -- parse_reference ---------------------------------------------------------------

HUB = "registry-1.docker.io"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("ollama/ollama:latest", Reference(HUB, "ollama/ollama", "latest")),
        ("ollama/ollama", Reference(HUB, "ollama/ollama", "latest")),
        ("busybox", Reference(HUB, "library/busybox", "latest")),
        ("busybox:1.36", Reference(HUB, "library/busybox", "1.36")),
        ("docker.io/busybox", Reference(HUB, "library/busybox", "latest")),
        ("docker.io/library/busybox:musl", Reference(HUB, "library/busybox", "musl")),
        ("index.docker.io/ollama/ollama:0.5", Reference(HUB, "ollama/ollama", "0.5")),
        (
            "ghcr.io/open-webui/open-webui:main",
            Reference("ghcr.io", "open-webui/open-webui", "main"),
        ),
        ("127.0.0.1:5000/ost/ollama:v1", Reference("127.0.0.1:5000", "ost/ollama", "v1")),
        ("127.0.0.1:5000/ost/ollama", Reference("127.0.0.1:5000", "ost/ollama", "latest")),
        ("localhost/app", Reference("localhost", "app", "latest")),
        ("localhost:5000/a/b/c:1.0-rc_1", Reference("localhost:5000", "a/b/c", "1.0-rc_1")),
        ("[::1]:5000/app:v2", Reference("[::1]:5000", "app", "v2")),
        ("registry.example.com/team/app", Reference("registry.example.com", "team/app", "latest")),
        # no dot, no port, not localhost: a Hub namespace, not a registry
        ("myhost/app:v1", Reference(HUB, "myhost/app", "v1")),
        ("my-org/sub/app", Reference(HUB, "my-org/sub/app", "latest")),
        (
            f"busybox@{DIGEST}",
            Reference(HUB, "library/busybox", "", DIGEST),
        ),
        (
            f"127.0.0.1:5000/ost/app:v1@{DIGEST}",
            Reference("127.0.0.1:5000", "ost/app", "v1", DIGEST),
        ),
    ],
)
def test_parse_reference_follows_docker_normalisation(image: str, expected: Reference) -> None:
    assert parse_reference(image) == expected


@pytest.mark.parametrize(
    "image",
    ["", "Ollama/Ollama", "busybox:", "busybox:bad tag", "a//b", "busybox@sha256:xyz", "-x/y"],
)
def test_parse_reference_rejects_what_docker_rejects(image: str) -> None:
    with pytest.raises(ConfigError, match="invalid image reference"):
        parse_reference(image)


def test_reference_str_is_the_fully_qualified_name() -> None:
    assert str(parse_reference("busybox")) == "registry-1.docker.io/library/busybox:latest"
    assert str(parse_reference(f"x.io/a@{DIGEST}")) == f"x.io/a@{DIGEST}"


@pytest.mark.parametrize(
    ("image", "url"),
    [
        ("127.0.0.1:5000/a:t", "http://127.0.0.1:5000/v2/a/manifests/t"),
        ("127.8.9.10:5000/a:t", "http://127.8.9.10:5000/v2/a/manifests/t"),
        ("localhost:5000/a:t", "http://localhost:5000/v2/a/manifests/t"),
        ("[::1]:5000/a:t", "http://[::1]:5000/v2/a/manifests/t"),
        ("busybox", "https://registry-1.docker.io/v2/library/busybox/manifests/latest"),
        ("10.0.0.1:5000/a:t", "https://10.0.0.1:5000/v2/a/manifests/t"),
        ("localhost.example.com/a:t", "https://localhost.example.com/v2/a/manifests/t"),
        (f"ghcr.io/o/a:t@{DIGEST}", f"https://ghcr.io/v2/o/a/manifests/{DIGEST}"),
    ],
)
def test_plain_http_only_for_loopback_registries(image: str, url: str) -> None:
    assert manifest_url(parse_reference(image)) == url


# -- remote_digest against the fake registry ------------------------------------------


def test_head_answer_gives_the_digest_without_a_get(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.digest_header = OTHER  # not the body's hash: proves the header is used

    assert remote_digest(f"{fake.address}/ost/app:v1") == OTHER

    assert fake.methods() == ["HEAD"]
    head = fake.seen[0]
    assert head.path == "/v2/ost/app/manifests/v1"
    accept = [part.strip() for part in head.headers["Accept"].split(",")]
    assert sorted(accept) == sorted(ACCEPTED)
    assert "Authorization" not in head.headers


def test_pinned_digest_is_asked_for_by_digest(fake: FakeRegistry) -> None:
    fake.behaviour.manifests[f"ost/app/manifests/{DIGEST}"] = MANIFEST

    assert remote_digest(f"{fake.address}/ost/app:ignored@{DIGEST}") == DIGEST
    assert fake.seen[0].path == f"/v2/ost/app/manifests/{DIGEST}"


def test_head_without_digest_header_falls_back_to_sha256_of_get(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.digest_header = None

    assert remote_digest(f"{fake.address}/ost/app:v1") == DIGEST
    assert fake.methods() == ["HEAD", "GET"]
    assert fake.seen[1].headers["Accept"] == fake.seen[0].headers["Accept"]


def test_malformed_digest_header_is_not_trusted(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.digest_header = "sha256:not-a-digest"

    assert remote_digest(f"{fake.address}/ost/app:v1") == DIGEST
    assert fake.methods() == ["HEAD", "GET"]


def test_oversized_manifest_is_refused(fake: FakeRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "MAX_MANIFEST", len(MANIFEST) - 1)
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.digest_header = None

    with pytest.raises(RegistryUnreachable, match="larger than"):
        remote_digest(f"{fake.address}/ost/app:v1")


def test_anonymous_bearer_token_from_the_realm(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.challenge["ost/app"] = (
        f'Bearer realm="{fake.realm}",service="fake.registry",scope="repository:ost/app:pull,push"'
    )

    assert remote_digest(f"{fake.address}/ost/app:v1") == DIGEST

    assert [(s.method, urlsplit(s.path).path) for s in fake.seen] == [
        ("HEAD", "/v2/ost/app/manifests/v1"),
        ("GET", "/token"),
        ("HEAD", "/v2/ost/app/manifests/v1"),
    ]
    query = parse_qs(urlsplit(fake.seen[1].path).query)
    assert query == {"service": ["fake.registry"], "scope": ["repository:ost/app:pull,push"]}
    assert "Authorization" not in fake.seen[1].headers  # nothing to send: anonymous
    assert fake.seen[2].headers["Authorization"] == f"Bearer {TOKEN}"


def test_token_scope_defaults_to_pull_on_the_repository(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.challenge["ost/app"] = f'Bearer realm="{fake.realm}"'

    assert remote_digest(f"{fake.address}/ost/app:v1") == DIGEST
    query = parse_qs(urlsplit(fake.seen[1].path).query)
    assert query == {"scope": ["repository:ost/app:pull"]}


def test_token_that_is_refused_means_authentication_required(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.challenge["ost/app"] = f'Bearer realm="{fake.realm}",service="s"'
    fake.behaviour.accepted_token = "only-for-logged-in-users"

    with pytest.raises(RegistryUnreachable, match="requires authentication") as caught:
        remote_digest(f"{fake.address}/ost/app:v1")

    assert caught.value.code == ExitCode.REGISTRY_UNREACHABLE
    assert "ost/app" in caught.value.message
    assert fake.methods() == ["HEAD", "HEAD"]  # one retry with the token, no loop


def test_basic_challenge_without_a_login_names_docker_login(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    # a realm that would hand out a working token: Basic must still not be tried
    fake.behaviour.challenge["ost/app"] = f'Basic realm="{fake.realm}"'

    with pytest.raises(RegistryUnreachable) as caught:
        remote_digest(f"{fake.address}/ost/app:v1")
    assert caught.value.message == (
        f"registry {fake.address} requires authentication for ost/app (private, or it does"
        f" not exist) and docker has no login for it: `docker login {fake.address}`"
    )
    assert [s.method for s in fake.seen] == ["HEAD"]


# -- logins from docker's config ---------------------------------------------------------


def docker_login(registry: str, **entry: str) -> None:
    """What `docker login` leaves in the (temporary) home's ~/.docker/config.json."""
    path = Path(os.environ["HOME"]) / ".docker" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {registry: entry}}))


def test_basic_challenge_is_answered_with_the_login(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.challenge["ost/app"] = 'Basic realm="Registry Realm"'
    fake.behaviour.accepted_basic = "alice:s3cret"
    docker_login(fake.address, auth=_b64("alice:s3cret"))

    assert remote_digest(f"{fake.address}/ost/app:v1") == DIGEST
    assert fake.methods() == ["HEAD", "HEAD"]
    assert fake.seen[1].headers["Authorization"] == f"Basic {_b64('alice:s3cret')}"


def test_a_wrong_password_is_one_line_without_it(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.challenge["ost/app"] = 'Basic realm="Registry Realm"'
    fake.behaviour.accepted_basic = "alice:s3cret"
    docker_login(fake.address, auth=_b64("alice:wrong-pass"))

    with pytest.raises(RegistryUnreachable) as caught:
        remote_digest(f"{fake.address}/ost/app:v1")
    error = str(caught.value)
    assert f"registry {fake.address} refused the login from docker's config" in error
    assert f"`docker login {fake.address}` again" in error
    assert "wrong-pass" not in error and _b64("alice:wrong-pass") not in error
    assert "\n" not in error
    assert fake.methods() == ["HEAD", "HEAD"]  # one try with the login, no loop


def test_bearer_token_is_asked_for_with_the_password(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.challenge["ost/app"] = f'Bearer realm="{fake.realm}",service="fake"'
    fake.behaviour.token_basic = "bob:pat-1"
    docker_login(fake.address, auth=_b64("bob:pat-1"))

    assert remote_digest(f"{fake.address}/ost/app:v1") == DIGEST
    token_request = fake.seen[1]
    assert (token_request.method, urlsplit(token_request.path).path) == ("GET", "/token")
    assert token_request.headers["Authorization"] == f"Basic {_b64('bob:pat-1')}"
    assert fake.seen[2].headers["Authorization"] == f"Bearer {TOKEN}"


def test_bearer_token_refused_for_the_password_is_a_refused_login(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.challenge["ost/app"] = f'Bearer realm="{fake.realm}",service="fake"'
    fake.behaviour.token_basic = "bob:pat-1"
    docker_login(fake.address, auth=_b64("bob:expired"))

    with pytest.raises(RegistryUnreachable, match="refused the login") as caught:
        remote_digest(f"{fake.address}/ost/app:v1")
    assert "expired" not in str(caught.value).replace("or expired", "")
    assert fake.methods() == ["HEAD"]  # the token was refused: the manifest is not asked again


def test_identity_token_is_traded_for_a_token_with_a_refresh_grant(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.challenge["ost/app"] = (
        f'Bearer realm="{fake.realm}",service="fake",scope="repository:ost/app:pull"'
    )
    fake.behaviour.refresh_token = "idtoken-7"
    docker_login(fake.address, auth=_b64("alice:"), identitytoken="idtoken-7")

    assert remote_digest(f"{fake.address}/ost/app:v1") == DIGEST
    grant = next(s for s in fake.seen if s.method == "POST")
    assert parse_qs(grant.body) == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["idtoken-7"],
        "client_id": ["ollama-stack"],
        "service": ["fake"],
        "scope": ["repository:ost/app:pull"],
    }
    assert fake.seen[-1].headers["Authorization"] == f"Bearer {TOKEN}"


def test_login_from_a_credential_helper(
    fake: FakeRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.challenge["ost/app"] = 'Basic realm="Registry Realm"'
    fake.behaviour.accepted_basic = "carol:from-keyring"
    answer = json.dumps({"ServerURL": fake.address, "Username": "carol", "Secret": "from-keyring"})
    script = tmp_path / "bin" / "docker-credential-test"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\necho '{answer}'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    config = Path(os.environ["HOME"]) / ".docker" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"credHelpers": {fake.address: "test"}}))

    assert remote_digest(f"{fake.address}/ost/app:v1") == DIGEST


def test_a_public_image_never_reads_docker_config(fake: FakeRegistry) -> None:
    """No challenge, no login asked for: a damaged config.json does not matter."""
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    config = Path(os.environ["HOME"]) / ".docker" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("{damaged")

    assert remote_digest(f"{fake.address}/ost/app:v1") == DIGEST
    assert "Authorization" not in fake.seen[0].headers


def test_the_login_does_not_follow_a_redirect(fake: FakeRegistry) -> None:
    other = FakeRegistry()
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        other.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
        fake.behaviour.challenge["ost/app"] = 'Basic realm="Registry Realm"'
        fake.behaviour.accepted_basic = "alice:s3cret"
        fake.behaviour.redirect = f"http://{other.address}"
        docker_login(fake.address, auth=_b64("alice:s3cret"))

        assert remote_digest(f"{fake.address}/ost/app:v1") == DIGEST
        assert other.seen and all("Authorization" not in s.headers for s in other.seen)
    finally:
        other.shutdown()
        other.server_close()


def test_realm_outside_http_or_https_is_not_followed(fake: FakeRegistry, tmp_path: Path) -> None:
    # A realm the registry names is untrusted input: a file:// one that would
    # "work" must still be refused.
    token_file = tmp_path / "token.json"
    token_file.write_text(json.dumps({"token": TOKEN}))
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.challenge["ost/app"] = f'Bearer realm="{token_file.as_uri()}"'

    with pytest.raises(RegistryUnreachable, match="requires authentication"):
        remote_digest(f"{fake.address}/ost/app:v1")


def test_unknown_tag_is_image_not_in_registry(fake: FakeRegistry) -> None:
    with pytest.raises(ImageNotInRegistry) as caught:
        remote_digest(f"{fake.address}/ost/app:nope")

    assert caught.value.code == ExitCode.IMAGE_UNAVAILABLE
    assert f"{fake.address}/ost/app:nope" in caught.value.message


def test_server_error_is_unreachable_with_the_status(fake: FakeRegistry) -> None:
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST
    fake.behaviour.status = 503

    with pytest.raises(RegistryUnreachable, match="HTTP 503"):
        remote_digest(f"{fake.address}/ost/app:v1")


def test_closed_port_is_unreachable_with_a_remedy(closed_port: int) -> None:
    address = f"127.0.0.1:{closed_port}"

    with pytest.raises(RegistryUnreachable) as caught:
        remote_digest(f"{address}/ost/app:v1", timeout=2)

    error = caught.value
    assert error.code == ExitCode.REGISTRY_UNREACHABLE == 14
    assert address in error.message and "connection refused" in error.message
    assert "proxy" in error.remedy and "--pull never" in error.remedy


def test_silent_registry_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(RegistryUnreachable, match=r"no answer within 0\.3 s"):
            remote_digest(f"{address}/ost/app:v1", timeout=0.3)
        assert time.monotonic() - started < 5


def test_loopback_registry_bypasses_proxy_settings(
    fake: FakeRegistry, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port}")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    fake.behaviour.manifests["ost/app/manifests/v1"] = MANIFEST

    assert remote_digest(f"{fake.address}/ost/app:v1") == DIGEST


# -- local_repo_digest ------------------------------------------------------------------

LOCAL = "sha256:" + "a" * 64
HUBD = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("repo_digests", "image", "expected"),
    [
        ([f"127.0.0.1:5000/ost/ollama@{LOCAL}"], "127.0.0.1:5000/ost/ollama:v1", LOCAL),
        ([f"ollama/ollama@{HUBD}"], "ollama/ollama:latest", HUBD),
        ([f"docker.io/ollama/ollama@{HUBD}"], "ollama/ollama", HUBD),
        ([f"ollama/ollama@{HUBD}"], "docker.io/ollama/ollama:0.5", HUBD),
        ([f"busybox@{HUBD}"], "docker.io/library/busybox", HUBD),
        ([f"docker.io/library/busybox@{HUBD}"], "busybox:musl", HUBD),
        # several repositories: the one of the reference, wherever it is in the list
        (
            [f"ollama/ollama@{HUBD}", f"127.0.0.1:5000/ost/ollama@{LOCAL}"],
            "127.0.0.1:5000/ost/ollama:v1",
            LOCAL,
        ),
        (
            [f"127.0.0.1:5000/ost/ollama@{LOCAL}", f"ollama/ollama@{HUBD}"],
            "ollama/ollama",
            HUBD,
        ),
        # same repository path on another registry is another image
        ([f"127.0.0.1:5000/ollama/ollama@{LOCAL}"], "ollama/ollama", None),
        ([f"127.0.0.1:5001/ost/ollama@{LOCAL}"], "127.0.0.1:5000/ost/ollama", None),
        ([f"ost/ollama@{LOCAL}"], "127.0.0.1:5000/ost/ollama", None),
        ([], "ollama/ollama", None),
        # garbage entries are skipped, not fatal
        (["<none>@<none>", "ollama/ollama", f"ollama/ollama@{HUBD}"], "ollama/ollama", HUBD),
    ],
)
def test_local_repo_digest(repo_digests: list[str], image: str, expected: str | None) -> None:
    assert local_repo_digest(repo_digests, image) == expected
