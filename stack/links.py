"""Links between services, checked from inside the stack: what the containers see.

A probe from this machine proves that a service answers on its published
port. It proves nothing about ``http://ollama:11434`` as Open WebUI resolves
it on the stack's network, nor about a native Ollama that listens on the
host's loopback only. So each link a service description declares
(``depends_on``) is asked from inside that service's container, at the very
URL it was given, and answered with the dependency's own health check.

A service that asks its dependency itself on a path of its own (``link_paths``:
Open WebUI's ``/ollama/api/version`` goes to its own OLLAMA_BASE_URL) is asked
there over HTTP first, through the same dialer as the probes: a few
milliseconds instead of an exec. Anything but a clear answer (not published,
refused, another status, an answer that is not the dependency's) falls back to
the exec.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ollama_stack.common.errors import StackError

from .config import redact_url
from .health import ProbeResult, fetch, json_body
from .runtime import Runtime
from .services import CATALOG

TIMEOUT_SECONDS = 5
# Asked over HTTP first; a caller slower than this to decide is asked from inside.
HTTP_TIMEOUT_SECONDS = 2.0
# Open WebUI's image ships curl (its HEALTHCHECK uses it); python3 is the fallback.
_PYTHON_GET = (
    "import sys, urllib.request as u; "
    "r = u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=5); "
    "sys.stdout.write(r.read().decode())"
)
_NOT_FOUND = ("executable file not found", "no such file or directory", "not found in $path")

LinkKey = tuple[str, str]  # (service, the service it calls)


@dataclass(frozen=True)
class Link:
    ok: bool | None  # None: could not be checked from inside
    url: str
    detail: str


def declared_links(rt: Runtime) -> list[LinkKey]:
    """Links that can be asked: from a container of ours to what it depends on."""
    return [
        (spec.name, dependency)
        for spec in CATALOG
        if rt.kind(spec.name).in_compose
        for dependency in spec.depends_on
    ]


def reaches(rt: Runtime, service: str, dependency: str) -> Link:
    """Whether ``dependency`` answers ``service`` where it runs: asked over HTTP
    on the caller's own link path when it has one, else from inside its container."""
    caller, callee = CATALOG[service], CATALOG[dependency]
    url = rt.container_url(dependency)
    answered = _asked_over_http(rt, service, dependency, url)
    if answered is not None:
        return answered
    if rt.kind(dependency).probe_headers(rt, callee):
        # Its key would show in the container's process list: not asked.
        return Link(None, url, f"{callee.title} needs our key; not asked from inside")
    target = f"{url}{callee.probe.path}"
    attempts = (
        ["curl", "-sS", "-f", "-m", str(TIMEOUT_SECONDS), target],
        ["python3", "-c", _PYTHON_GET, target],
    )
    for argv in attempts:
        try:
            code, output = rt.compose.exec_in(service, argv)
        except StackError as lost:  # started, then the engine's answer was lost
            return Link(None, url, f"cannot check from inside: {lost.message}")
        if code in (126, 127) or any(s in output.lower() for s in _NOT_FOUND):
            continue  # this image lacks the tool; try the next
        if code == 0 and callee.probe.check(200, output.encode()) is None:
            return Link(True, url, f"{caller.title} reaches {callee.title}")
        if code == 0:
            return Link(
                False, url, f"it answers, but not as {callee.title}: {output.strip()[:80]!r}"
            )
        reason = output.strip().splitlines()[-1] if output.strip() else f"exit code {code}"
        return Link(False, url, reason)
    return Link(
        None, url, f"cannot check from inside: the {service} image has neither curl nor python3"
    )


def _asked_over_http(rt: Runtime, service: str, dependency: str, url: str) -> Link | None:
    """The caller's own answer on its link path: linked on the dependency's
    health answer, not linked on 500 (it found none answering); None on
    anything else, for the exec to decide."""
    caller, callee = CATALOG[service], CATALOG[dependency]
    path = caller.link_paths.get(dependency)
    if path is None:
        return None
    try:
        status, body = fetch(rt.endpoint(service), path, rt.target.dial, HTTP_TIMEOUT_SECONDS)
    except Exception:  # not published, refused, timed out, SSH channel refused …
        return None
    if status == 200 and callee.probe.check(200, body) is None:
        return Link(True, url, f"{caller.title} reaches {callee.title}")
    if status == 500:  # Open WebUI's word for "no Ollama answered me"
        answer = json_body(body)
        said = answer.get("detail") if isinstance(answer, dict) else None
        reason = str(said)[:120] if said else "no detail"
        return Link(False, url, f"{caller.title} answers 500 on {path}: {reason}")
    return None


def ask_links(rt: Runtime) -> dict[LinkKey, Link]:
    """Every declared link, asked ahead (status asks while it probes)."""
    return {key: reaches(rt, *key) for key in declared_links(rt)}


def with_links(
    rt: Runtime,
    results: dict[str, ProbeResult],
    asked: dict[LinkKey, Link] | None = None,
    running: set[str] | None = None,
) -> dict[str, ProbeResult]:
    """Health as users see it: a service is not healthy while it cannot reach
    what it depends on.

    Asked only where both ends were probed and answer (and, when ``running``
    is given, where the caller's container runs).
    """
    for service, dependency in declared_links(rt):
        mine, theirs = results.get(service), results.get(dependency)
        if mine is None or not mine.ok or (running is not None and service not in running):
            continue
        if theirs is None or not theirs.ok:
            # Not asked about the dependency here (an update waiting on one
            # service must not fail on one it did not touch), or it is down:
            # that is the failure to report, and the link's is its echo.
            continue
        link = (asked or {}).get((service, dependency)) or reaches(rt, service, dependency)
        if link.ok is not False:
            continue
        results = results | {
            service: replace(mine, health="reachable", detail=_why(link, dependency))
        }
    return results


def _why(link: Link, dependency: str) -> str:
    callee = CATALOG[dependency]
    url = redact_url(link.url)
    detail = (
        f"cannot reach {callee.title} at {url} from its container: "
        f"{link.detail.replace(link.url, url)}"
    )
    if "host.docker.internal" in link.url and callee.native:
        detail += (
            f"; a native {callee.title} must listen beyond loopback ({callee.native.listen_hint})"
        )
    return detail
