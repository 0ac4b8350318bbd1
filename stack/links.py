"""Links between services, checked from inside the stack: what the containers see.

A probe from this machine proves that a service answers on its published
port. It proves nothing about ``http://ollama:11434`` as Open WebUI resolves
it on the stack's network, nor about a native Ollama that listens on the
host's loopback only. So the webui → Ollama link is asked from inside the
webui container, at the very URL Open WebUI was given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from .config import redact_url
from .health import ProbeResult
from .runtime import Runtime

TIMEOUT_SECONDS = 5
# Open WebUI's image ships curl (its HEALTHCHECK uses it); python3 is the fallback.
_PYTHON_GET = (
    "import sys, urllib.request as u; "
    "r = u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=5); "
    "sys.stdout.write(r.read().decode())"
)
_NOT_FOUND = ("executable file not found", "no such file or directory", "not found in $path")


@dataclass(frozen=True)
class Link:
    ok: bool | None  # None: could not be checked from inside
    url: str
    detail: str


def webui_reaches_ollama(rt: Runtime) -> Link:
    url = rt.ollama_url_for_containers()
    target = f"{url}/api/version"
    attempts = (
        ["curl", "-sS", "-f", "-m", str(TIMEOUT_SECONDS), target],
        ["python3", "-c", _PYTHON_GET, target],
    )
    for argv in attempts:
        code, output = rt.compose.exec_in("webui", argv)
        if code in (126, 127) or any(s in output.lower() for s in _NOT_FOUND):
            continue  # this image lacks the tool; try the next
        if code == 0 and _is_version(output):
            return Link(True, url, "Open WebUI reaches Ollama")
        if code == 0:
            return Link(False, url, f"it answers, but not as Ollama: {output.strip()[:80]!r}")
        reason = output.strip().splitlines()[-1] if output.strip() else f"exit code {code}"
        return Link(False, url, reason)
    return Link(None, url, "cannot check from inside: the webui image has neither curl nor python3")


def _is_version(body: str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and "version" in data


def with_links(
    rt: Runtime, results: dict[str, ProbeResult], link: Link | None = None
) -> dict[str, ProbeResult]:
    """Health as users see it: Open WebUI is not healthy while it cannot reach Ollama.

    Asked only where Ollama was probed too, and answers.
    """
    webui, ollama = results.get("webui"), results.get("ollama")
    if webui is None or not webui.ok or rt.settings.service_type("webui") != "docker":
        return results
    if ollama is None or not ollama.ok:
        # Not asked about Ollama here (an update waiting on webui alone must not
        # fail on an Ollama it did not touch), or Ollama is down: that is the
        # failure to report, and the link's is its echo.
        return results
    link = link or webui_reaches_ollama(rt)  # asked ahead, in parallel, by `status`
    if link.ok is not False:
        return results
    url = redact_url(link.url)
    detail = (
        f"cannot reach Ollama at {url} from its container: {link.detail.replace(link.url, url)}"
    )
    if "host.docker.internal" in link.url:
        detail += "; a native Ollama must listen beyond loopback (OLLAMA_HOST=0.0.0.0, firewalled)"
    return results | {"webui": replace(webui, health="reachable", detail=detail)}
