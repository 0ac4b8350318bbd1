"""What a registry says an image reference points to, without pulling layers.

``update.check`` compares the digest a tag has in its registry now with the
digest the local image was pulled by (its RepoDigests). Asking costs one
``HEAD`` on the manifest (plus a token round trip on Docker Hub and ghcr.io);
no layer is downloaded. A registry that asks for a login gets the one
``docker login`` stored (``config.docker_auth``): HTTP Basic, or a Bearer token
asked for with the user's password or identity token, as the docker CLI does.

Stdlib only: one HTTP exchange does not justify a client library, and this
runs on the operator's machine, not on the boxes.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPException, HTTPResponse
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from ollama_stack.common.errors import ConfigError, ExitCode, StackError

from .reference import Reference, parse_reference

if TYPE_CHECKING:
    from ..config.docker_auth import Login


# All four, because a registry answers with the stored manifest only if its
# type is accepted; otherwise distribution 2.x converts it to schema1 on the
# fly, whose digest matches nothing on the engine (measured: a Docker v2
# manifest asked for with only the OCI types gets a schema1 digest). Indexes
# count too: RepoDigests of a multi-platform image hold the index digest.
ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
MAX_MANIFEST = 4 << 20  # distribution refuses manifests above 4 MiB; so do we
UNREACHABLE_REMEDY = "check the network or a proxy; `--pull never` to skip updates"

_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryUnreachable(StackError):
    code = ExitCode.REGISTRY_UNREACHABLE


class ImageNotInRegistry(StackError):
    code = ExitCode.IMAGE_UNAVAILABLE


# -- asking the registry ----------------------------------------------------------


def is_loopback(registry: str) -> bool:
    """localhost, 127.0.0.0/8 and ::1: registries Docker lets us reach over plain http."""
    host = urlsplit(f"//{registry}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def manifest_url(ref: Reference) -> str:
    scheme = "http" if is_loopback(ref.registry) else "https"
    return f"{scheme}://{ref.registry}/v2/{ref.repository}/manifests/{ref.manifest}"


def remote_digest(image: str, timeout: float = 10.0) -> str:
    """The digest the registry serves for ``image`` now (``sha256:…``).

    Raises ImageNotInRegistry (404) or RegistryUnreachable (network, TLS,
    authentication, any other answer).
    """
    ref = parse_reference(image)
    try:
        return _fetch_digest(ref, timeout)
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        raise RegistryUnreachable(
            f"cannot reach registry {ref.registry} for {ref}: {_describe(exc, timeout)}",
            UNREACHABLE_REMEDY,
        ) from exc


def _fetch_digest(ref: Reference, timeout: float) -> str:
    url = manifest_url(ref)
    headers = {"Accept": ACCEPT}
    answer = _request("HEAD", url, headers, timeout)
    authorization = None
    if answer.status == 401:
        from ..config.docker_auth import login_for  # read only when a registry asks

        login = login_for(ref.registry)
        challenge = answer.headers.get("WWW-Authenticate", "")
        authorization = _authorization(ref, challenge, login, timeout)
        answer = _request("HEAD", url, headers, timeout, authorization=authorization)
        if answer.status in (401, 403):
            raise _auth_required(ref, login)
    _check(ref, answer)
    digest = _digest_header(answer)
    if digest:
        return digest
    # Some registries (and proxies in front of them) drop the header on HEAD;
    # the digest is by definition the sha256 of the manifest bytes.
    answer = _request("GET", url, headers, timeout, read_body=True, authorization=authorization)
    _check(ref, answer)
    return "sha256:" + hashlib.sha256(answer.body).hexdigest()


def _authorization(ref: Reference, challenge: str, login: Login | None, timeout: float) -> str:
    """The Authorization header that answers the registry's challenge, as docker would.

    Basic: the login's user and password (a registry:2 with htpasswd). Bearer:
    a token from the challenge's realm, asked for with the login, or
    anonymously without one (a public image on Docker Hub or ghcr.io).
    """
    scheme, _, params = challenge.strip().partition(" ")
    fields = dict(_CHALLENGE_PARAM.findall(params))
    if scheme.lower() == "basic" and login is not None and login.password:
        return _basic(login)
    if scheme.lower() == "bearer" and _acceptable_realm(fields.get("realm", "")):
        return f"Bearer {_token(ref, fields, login, timeout)}"
    raise _auth_required(ref, login)


def _token(ref: Reference, fields: dict[str, str], login: Login | None, timeout: float) -> str:
    """A pull token from the realm: docker's OAuth2 refresh-token grant for an
    identity token, else a GET with the user's password, else anonymous."""
    query = {"scope": fields.get("scope") or f"repository:{ref.repository}:pull"}
    if fields.get("service"):
        query["service"] = fields["service"]
    realm = fields["realm"]
    if login is not None and login.identity_token:
        grant = {
            "grant_type": "refresh_token",
            "refresh_token": login.identity_token,
            "client_id": "ollama-stack",
            **query,
        }
        form = urlencode(grant).encode()
        answer = _request("POST", realm, {}, timeout, read_body=True, data=form)
    else:
        separator = "&" if "?" in realm else "?"
        url = realm + separator + urlencode(query)
        basic = _basic(login) if login is not None and login.password else None
        answer = _request("GET", url, {}, timeout, read_body=True, authorization=basic)
    token = _token_from(answer) if answer.status == 200 else None
    if not token:
        raise _auth_required(ref, login)
    return token


def _basic(login: Login) -> str:
    pair = f"{login.username}:{login.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _acceptable_realm(realm: str) -> bool:
    # The realm comes from the registry's answer: never follow it to file:// or
    # to plain http on another machine.
    parts = urlsplit(realm)
    return parts.scheme == "https" or (
        parts.scheme == "http" and is_loopback(parts.netloc.rpartition("@")[2])
    )


def _token_from(answer: _Answer) -> str | None:
    try:
        document = json.loads(answer.body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    token = document.get("token") or document.get("access_token")  # both are in the spec
    return token if isinstance(token, str) and token else None


def _check(ref: Reference, answer: _Answer) -> None:
    if answer.status == 200:
        return
    if answer.status == 404:
        raise ImageNotInRegistry(
            f"{ref} is not in registry {ref.registry}",
            "check the image name and tag (images.* in the config)",
        )
    if answer.status in (401, 403):
        raise _auth_required(ref)
    raise RegistryUnreachable(
        f"registry {ref.registry} answered HTTP {answer.status} for {ref}", UNREACHABLE_REMEDY
    )


def _auth_required(ref: Reference, login: Login | None = None) -> RegistryUnreachable:
    """One line naming the registry and the login that would help; never a credential."""
    from ..config.docker_auth import login_command

    command = login_command(ref.registry)
    if login is None:
        # Docker Hub answers 401, not 404, for a repository that does not exist.
        message = (
            f"registry {ref.registry} requires authentication for {ref.repository}"
            f" (private, or it does not exist) and docker has no login for it: `{command}`"
        )
    else:
        message = (
            f"registry {ref.registry} refused the login from {login.where}"
            f" for {ref.repository} (wrong or expired, or no access): `{command}` again"
        )
    return RegistryUnreachable(message, "or `--pull never` to skip updates")


def _digest_header(answer: _Answer) -> str | None:
    digest = answer.headers.get("Docker-Content-Digest", "").strip()
    return digest if _SHA256.fullmatch(digest) else None


def _describe(exc: BaseException, timeout: float) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, ssl.SSLError):  # before OSError: it is one
        return f"TLS failed ({getattr(reason, 'verify_message', '') or reason})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.errno is not None and reason.errno < 0:
        return f"name lookup failed ({reason.strerror})"  # socket.gaierror
    return str(reason) or type(reason).__name__


# -- HTTP -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Message
    body: bytes = b""


def _request(
    method: str,
    url: str,
    headers: dict[str, str],
    timeout: float,
    *,
    read_body: bool = False,
    authorization: str | None = None,
    data: bytes | None = None,
) -> _Answer:
    """One exchange; an HTTP error status is an answer here, not an exception.

    ``authorization`` is never carried along a redirect (to a CDN, another host).
    """
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    if authorization:
        request.add_unredirected_header("Authorization", authorization)
    try:
        with _opener(url).open(request, timeout=timeout) as response:
            body = _read_limited(response) if read_body else b""
            return _Answer(response.status, response.headers, body)
    except urllib.error.HTTPError as err:
        with err:
            return _Answer(err.code, err.headers)


def _opener(url: str) -> urllib.request.OpenerDirector:
    # Proxies from the environment apply, except to loopback: a proxy cannot
    # reach this machine's 127.0.0.1, and no_proxy often forgets it.
    host = urlsplit(url).netloc.rpartition("@")[2]
    proxies = urllib.request.ProxyHandler({} if is_loopback(host) else None)
    return urllib.request.build_opener(proxies)


def _read_limited(response: HTTPResponse) -> bytes:
    body = response.read(MAX_MANIFEST + 1)
    if len(body) > MAX_MANIFEST:
        raise HTTPException(f"answer larger than {MAX_MANIFEST >> 20} MiB")
    return body


def local_repo_digest(repo_digests: list[str], image: str) -> str | None:
    """The digest in an image's RepoDigests that belongs to ``image``'s repository.

    Docker records Hub images without a registry (``ollama/ollama@…``) or as
    ``docker.io/…``; both normalise to the same name as the reference does.
    """
    wanted = parse_reference(image).name
    for entry in repo_digests:
        try:
            ref = parse_reference(entry)
        except ConfigError:
            continue  # not ours to judge; another entry may match
        if ref.digest and ref.name == wanted:
            return ref.digest
    return None
