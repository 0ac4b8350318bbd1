"""The stack against the real mcpo (built from PyPI by dev.standins) on a live engine:
what broke with the real software, each with a test that failed before its fix."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from .conftest import STANDIN_TAG, docker

OTHERS = ("ollama", "webui")  # the ones that must not be blamed for mcp_proxy's crash

pytestmark = pytest.mark.docker

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
BASE_IMAGE = "ollama-stack-base/debian-python:bookworm"  # made by dev.standins


def secrets_of(inst) -> dict[str, str]:
    path = Path(inst.env["OLLAMA_STACK_HOME"]) / "secrets.env"
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs}


def proxy(inst, path: str, key: str | None, body: dict | None = None) -> tuple[int, object]:
    """GET (or POST ``body``) on the proxy, with the key as a bearer token if given."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{inst.ports['mcp_proxy']}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with DIRECT.open(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def container_of(inst, service: str) -> str:
    return next(c for c in inst.containers() if f"-{service}-" in c)


def container_id(inst, service: str) -> str:
    return docker("inspect", "--format", "{{.Id}}", container_of(inst, service)).strip()


def write_config(inst, document: dict) -> None:
    path = Path(inst.env["OLLAMA_STACK_HOME"]) / "config.yaml"
    current = yaml.safe_load(path.read_text()) or {}
    path.write_text(yaml.safe_dump(current | document))


def every_command_line() -> list[str]:
    """What `ps -eo args` shows any user of this host: every process's argv."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue  # the process ended while we looked
    return lines


# -- the real proxy starts, and keeps its key to itself ---------------------------------------


def test_real_mcpo_starts_healthy_from_a_fresh_installation(make_installation, standin_images):
    image = docker("image", "inspect", standin_images["mcp_proxy"])
    assert json.loads(image)[0]["Config"]["Entrypoint"] == ["mcpo"]  # the upstream image's
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    status = inst.status()
    assert status["healthy"], status
    key = secrets_of(inst)["MCPO_API_KEY"]

    # strict auth: not even the OpenAPI document without the key
    assert proxy(inst, "/openapi.json", None)[0] == 401
    assert proxy(inst, "/openapi.json", "wrong-key")[0] == 403
    code, document = proxy(inst, "/stack/openapi.json", key)
    assert code == 200 and "/list_models" in document["paths"]

    # the built-in tools reach this stack's Ollama over the stack's network
    ollama = container_of(inst, "ollama")
    manifest = "/root/.ollama/models/manifests/registry.ollama.ai/library/tiny/latest"
    docker(
        "exec", ollama, "sh", "-c",
        f"mkdir -p {Path(manifest).parent} && echo '{{\"layers\":[{{\"size\":42}}]}}' > {manifest}",
    )  # fmt: skip
    code, models = proxy(inst, "/stack/list_models", key, {})
    assert code == 200, models
    assert [(m["name"], m["size"]) for m in models["models"]] == [("tiny:latest", 42)]

    # health reads every version, the proxy's through its key
    checked = json.loads(inst.ok("health.check", "--json").stdout)
    versions = {s["service"]: s["version"] for s in checked["services"]}
    assert versions["webui"] == "test" and versions["ollama"] == "test"
    assert versions["mcp_proxy"]


def test_the_proxy_key_is_in_no_argv_environment_or_inspect(make_installation):
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    key = secrets_of(inst)["MCPO_API_KEY"]
    assert len(key) > 20
    assert not [line for line in every_command_line() if key in line]
    proxy_container = container_of(inst, "mcp_proxy")
    assert key not in docker("inspect", proxy_container)
    # ... but mcpo has it: a call with it works, without it does not
    assert proxy(inst, "/stack/running_models", key, {})[0] == 200
    assert proxy(inst, "/stack/running_models", None, {})[0] == 401


def test_open_webui_is_started_private(make_installation):
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    webui = container_of(inst, "webui")
    env = docker("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", webui)
    for line in (
        "ENABLE_OPENAI_API=false",
        "OFFLINE_MODE=true",
        "ENABLE_VERSION_UPDATE_CHECK=false",
    ):
        assert line in env.splitlines()


# -- a changed config reaches the running proxy -------------------------------------------------


def test_a_changed_mcp_config_reaches_the_running_proxy(make_installation):
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    key = secrets_of(inst)["MCPO_API_KEY"]
    before = {s: container_id(inst, s) for s in ("ollama", "webui", "mcp_proxy")}
    assert proxy(inst, "/time/openapi.json", key)[0] == 404

    time_server = {"command": "mcp-server-time", "args": ["--local-timezone=UTC"]}
    write_config(inst, {"mcp_servers": {"time": time_server}})
    started = inst.ok("stack.start", "--pull", "never")
    assert "already running" not in started.stdout + started.stderr
    after = {s: container_id(inst, s) for s in before}
    assert after["mcp_proxy"] != before["mcp_proxy"]  # recreated with the new config ...
    assert (after["ollama"], after["webui"]) == (before["ollama"], before["webui"])  # alone
    code, answer = proxy(inst, "/time/get_current_time", key, {"timezone": "Europe/Paris"})
    assert code == 200 and answer["timezone"] == "Europe/Paris", answer

    inst.ok("stack.restart", "--pull", "never")  # a restart keeps it
    assert proxy(inst, "/time/get_current_time", key, {"timezone": "UTC"})[0] == 200

    write_config(inst, {"mcp_servers": {}})
    inst.ok("stack.start", "--pull", "never")
    assert proxy(inst, "/time/get_current_time", key, {"timezone": "UTC"})[0] == 404


# -- a crash loop fails the wait at once ---------------------------------------------------------


def test_a_crash_loop_fails_the_wait_within_a_few_restarts(make_installation, standin_images):
    # An image without mcpo (here: the bare Python base) crashes at once, every time,
    # as the real mcpo did on an empty server list.
    inst = make_installation(images={"mcp_proxy": BASE_IMAGE})
    began = time.monotonic()
    result = inst.cli("stack.start", "--pull", "never", "--timeout", "120")
    took = time.monotonic() - began
    assert result.returncode == 15, result.stderr
    assert took < 40, f"waited {took:.0f} s for a crash loop"
    error = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert "mcp_proxy keeps restarting (exit code 1, restarted" in error
    assert "No module named 'mcpo'" in error
    assert error.startswith("error: not healthy: mcp_proxy keeps restarting")
    assert not any(f"{other} keeps" in error or f"{other} exited" in error for other in OTHERS)

    doctor = inst.cli("health.doctor", "--json")
    assert doctor.returncode == 1
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["container mcp_proxy"]["verdict"] == "fail"
    assert "restarted" in checks["container mcp_proxy"]["detail"]  # caught up or down
    assert checks["container ollama"]["verdict"] == "pass"


# -- Open WebUI → Ollama, checked from where Open WebUI runs -----------------------------------


PROJECT_LABEL = "com.docker.compose.project"
ASKED = "/ollama/api/version"  # Open WebUI asks its own OLLAMA_BASE_URL there, no login
NO_OLLAMA = "WebUI could not connect to Ollama"  # the real one's 500 detail


def webui_asked(inst) -> tuple[int, object]:
    try:
        with DIRECT.open(f"http://127.0.0.1:{inst.ports['webui']}{ASKED}", timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def execs_during(inst, command: list[str]) -> tuple[str, list[str]]:
    """Run a command; the execs into this installation's containers it caused."""
    since = int(time.time())
    out = inst.ok(*command).stdout
    until = int(time.time()) + 1
    filters = ["type=container", "event=exec_create", f"label={PROJECT_LABEL}={inst.project}"]
    window = ["--since", str(since), "--until", str(until)]
    events = docker("events", *window, *(f"--filter={f}" for f in filters), "--format={{.Action}}")
    return out, events.splitlines()


def test_status_asks_open_webui_itself_whether_it_reaches_ollama(make_installation):
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    out, execs = execs_during(inst, ["stack.status", "--json"])
    health = {s["name"]: s["health"] for s in json.loads(out)["services"]}
    assert health == {"ollama": "healthy", "webui": "healthy", "mcp_proxy": "healthy"}
    assert execs == []  # asked over HTTP, not from inside its container
    assert webui_asked(inst) == (200, {"version": STANDIN_TAG})  # Ollama's, through Open WebUI

    # Ollama stops: Open WebUI answers 500 there, as the real one does. Status
    # reports Ollama itself; the link is its echo and is not asked about.
    docker("stop", container_of(inst, "ollama"))
    assert webui_asked(inst) == (500, {"detail": NO_OLLAMA})
    rows = {s["name"]: s for s in inst.status()["services"]}
    assert (rows["ollama"]["state"], rows["webui"]["health"]) == ("exited", "healthy")


def test_webui_that_cannot_reach_ollama_is_not_healthy(make_installation):
    # Nothing listens on port 9 inside the webui container: the URL points nowhere.
    inst = make_installation(services_ollama_container_url="http://127.0.0.1:9")
    result = inst.cli("stack.start", "--pull", "never", "--timeout", "4")
    assert result.returncode == 7, result.stderr
    assert "webui (cannot reach Ollama at http://127.0.0.1:9 from its container" in result.stderr
    checked = inst.cli("health.check", "--json")
    assert checked.returncode == 1
    health = {s["service"]: s["health"] for s in json.loads(checked.stdout)["services"]}
    assert health == {"ollama": "healthy", "webui": "reachable", "mcp_proxy": "healthy"}
    # Open WebUI's own answer says so: no exec into its container is needed.
    out, execs = execs_during(inst, ["stack.status", "--json"])
    webui = next(s for s in json.loads(out)["services"] if s["name"] == "webui")
    assert webui["health"] == "reachable" and execs == []
    assert webui["detail"].endswith(f"Open WebUI answers 500 on {ASKED}: {NO_OLLAMA}")


# -- the Ollama stand-in, read the way Open WebUI reads it -----------------------------------


async def _read_like_open_webui(url: str) -> object:
    import aiohttp

    async with aiohttp.ClientSession(trust_env=False) as session, session.get(url) as response:
        return await response.json()  # refuses a body not sent as application/json


def test_ollama_standin_answers_like_ollama_to_open_webuis_client(make_installation):
    import aiohttp

    # The client is strict: JSON without its content type is refused.
    class NoContentType(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"version": "1"}')

        def log_message(self, *args: object) -> None:
            pass

    loose = ThreadingHTTPServer(("127.0.0.1", 0), NoContentType)
    threading.Thread(target=loose.serve_forever, daemon=True).start()
    try:
        with pytest.raises(aiohttp.ContentTypeError):
            asyncio.run(_read_like_open_webui(f"http://127.0.0.1:{loose.server_address[1]}/"))
    finally:
        loose.shutdown()
        loose.server_close()

    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    base = f"http://127.0.0.1:{inst.ports['ollama']}"
    assert asyncio.run(_read_like_open_webui(f"{base}/api/version")) == {"version": "test"}
    assert asyncio.run(_read_like_open_webui(f"{base}/api/tags")) == {"models": []}
    assert asyncio.run(_read_like_open_webui(f"{base}/api/ps")) == {"models": []}
