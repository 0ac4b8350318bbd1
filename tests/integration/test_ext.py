"""ext.* against the live engine, with the real mcpo and real MCP servers.

An extension counts only when a person chatting in Open WebUI could call its
tools: the proxy serves them under /<name>/ with the stack's API key, and
Open WebUI's container is given the tool server.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import Installation, docker


def secrets(inst: Installation) -> dict[str, str]:
    text = (Path(inst.env["OLLAMA_STACK_HOME"]) / "secrets.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def call(inst: Installation, path: str, body: dict | None = None, key: str | None = None):
    """POST (or GET without a body) to the proxy; (status, JSON answer)."""
    url = f"http://127.0.0.1:{inst.ports['mcp_proxy']}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as failure:
        return failure.code, None


def connections(inst: Installation) -> list[dict]:
    """TOOL_SERVER_CONNECTIONS as Open WebUI's container was given it."""
    webui = f"{inst.project}-webui-1"
    env = json.loads(docker("inspect", webui, "--format", "{{json .Config.Env}}"))
    value = next(e.split("=", 1)[1] for e in env if e.startswith("TOOL_SERVER_CONNECTIONS="))
    return json.loads(value)


def extensions(inst: Installation) -> dict[str, dict]:
    listed = json.loads(inst.ok("ext.list", "--json").stdout)
    return {e["name"]: e for e in listed["extensions"]}


def add_config(inst: Installation, text: str) -> None:
    config = Path(inst.env["OLLAMA_STACK_HOME"]) / "config.yaml"
    config.write_text(config.read_text() + text)


@pytest.fixture
def running(make_installation) -> Installation:
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    return inst


def test_a_stdio_extension_reaches_the_proxy_and_open_webui_then_goes(running):
    inst, key = running, secrets(running)["MCPO_API_KEY"]
    before = extensions(inst)
    assert before["time"]["enabled"] is False and before["time"]["supported"] == ""
    assert call(inst, "/time/openapi.json", key=key)[0] == 404

    inst.ok("ext.enable", "time")
    status, answer = call(inst, "/time/get_current_time", {"timezone": "Europe/Paris"}, key)
    assert status == 200 and answer["timezone"] == "Europe/Paris"  # mcp-server-time answered
    assert call(inst, "/time/get_current_time", {"timezone": "UTC"})[0] == 401  # no key
    (webui,) = [c for c in connections(inst) if c["info"]["id"] == "time"]
    assert webui["url"] == "http://mcp_proxy:8000/time" and webui["key"] == key
    assert webui["type"] == "openapi" and webui["auth_type"] == "bearer"
    info = json.loads(inst.ok("ext.info", "time", "--json").stdout)
    assert info["running"] and "get_current_time" in info["tools"]
    assert extensions(inst)["time"]["running"] is True

    inst.ok("ext.disable", "time")
    assert call(inst, "/time/openapi.json", key=key)[0] == 404
    assert not [c for c in connections(inst) if c["info"]["id"] == "time"]
    assert {s["health"] for s in inst.status()["services"]} == {"healthy"}


def test_a_container_extension_keeps_its_data_through_disable_and_backup(running):
    inst, key = running, secrets(running)["MCPO_API_KEY"]
    # Enabled while the stack is stopped, on an engine without its image: the
    # next stack.start builds it (on the proxy's image) instead of pulling it.
    docker("rmi", "--force", "ollama-stack-ext/notes:1.0.0", check=False)
    inst.ok("stack.stop")
    inst.ok("ext.enable", "notes")
    inst.ok("stack.start", "--pull", "never")
    status, _ = call(inst, "/notes/add_note", {"title": "plan", "text": "ship it"}, key)
    assert status == 200
    status, listed = call(inst, "/notes/list_notes", {}, key)
    assert status == 200 and "plan" in json.dumps(listed)
    services = {s["name"]: s for s in inst.status()["services"]}
    assert services["notes"]["health"] == "healthy"  # status covers it with no code of its own
    volume = f"{inst.project}_notes_data"
    assert volume in inst.volumes()
    made = json.loads(inst.ok("backup.create", "--json").stdout)
    assert "notes:notes_data" in made["volumes"]

    inst.ok("ext.disable", "notes")
    assert not [c for c in inst.containers() if "-notes-" in c]
    assert volume in inst.volumes()  # its data stays, and backups still take it
    disabled = json.loads(inst.ok("backup.create", "--json").stdout)
    assert "notes:notes_data" in disabled["volumes"]
    assert not [c for c in inst.containers() if "-scratch-" in c]
    refused = inst.cli("backup.restore", disabled["id"], "--yes")
    assert refused.returncode == 2 and "ext.enable notes" in refused.stderr
    inst.ok("ext.enable", "notes")
    status, answer = call(inst, "/notes/read_note", {"title": "plan"}, key)
    assert status == 200 and "ship it" in json.dumps(answer)

    inst.ok("stack.uninstall", "--yes", "--remove-volumes", "--no-backup")
    assert volume not in inst.volumes()


def test_what_cannot_run_here_is_refused_in_one_line_and_changes_nothing(running, tmp_path):
    inst = running
    unknown = inst.cli("ext.enable", "nosuch")
    assert unknown.returncode == 2 and "time" in unknown.stderr and "notes" in unknown.stderr
    gpu = inst.cli("ext.enable", "dia_tts")
    assert gpu.returncode == 2 and "runs on nvidia" in gpu.stderr
    assert "runs on nvidia" in extensions(inst)["dia_tts"]["supported"]

    # The user's own folders: one needing a token, one needing notes, one broken.
    mine = tmp_path / "mine"
    (mine / "tokened").mkdir(parents=True)
    (mine / "tokened" / "extension.yaml").write_text(
        "name: tokened\ndescription: needs a token\nversion: '1'\nkind: stdio\n"
        "requires: {secrets: [TOKENED_KEY]}\n"
        "server: {transport: stdio, command: python3, args: ['-m', 'mcp_server_time']}\n"
    )
    (mine / "needsnotes").mkdir()
    (mine / "needsnotes" / "extension.yaml").write_text(
        "name: needsnotes\ndescription: needs notes\nversion: '1'\nkind: stdio\n"
        "depends_on: [notes]\n"
        "server: {transport: stdio, command: python3, args: ['-m', 'mcp_server_time']}\n"
    )
    (mine / "broken").mkdir()
    (mine / "broken" / "extension.yaml").write_text(
        "name: broken\ndescription: x\nversion: '1'\nkind: container\n"
        "server: {transport: sse, image: x, port: 99999, host_port: 1}\n"
    )
    add_config(inst, f"extensions:\n  paths: [{mine}]\n")
    listed = json.loads(inst.ok("ext.list", "--json").stdout)
    (problem,) = listed["problems"]
    assert "broken/extension.yaml" in problem and "server.sse.port" in problem
    assert len(problem.splitlines()) == 1

    token = inst.cli("ext.enable", "tokened")
    assert token.returncode == 2 and "TOKENED_KEY" in token.stderr
    deps = inst.cli("ext.enable", "needsnotes")
    assert deps.returncode == 2 and "notes" in deps.stderr and "--with-deps" in deps.stderr
    assert not any(e["enabled"] for e in extensions(inst).values())  # nothing changed

    inst.env["TOKENED_KEY"] = "s3cret-token"
    inst.ok("ext.enable", "tokened")
    assert secrets(inst)["TOKENED_KEY"] == "s3cret-token"
    assert "s3cret-token" not in inst.ok("stack.config").stdout
    # An enabled extension whose folder breaks later is skipped, said, and never
    # stops the core stack.
    (mine / "tokened" / "extension.yaml").write_text("name: tokened\nkind: [broken\n")
    started = inst.ok("stack.start", "--pull", "never")
    assert "extension skipped" in started.stderr and "tokened" in started.stderr
    assert {s["health"] for s in inst.status()["services"]} == {"healthy"}


@pytest.mark.remote
def test_an_extension_on_the_second_host(make_installation, remote_host):
    remote = make_installation(remote=remote_host.name, docker_host=remote_host.docker_host)
    remote.ok("stack.start", "--pull", "never")
    remote.ok("ext.enable", "time")
    info = json.loads(remote.ok("ext.info", "time", "--json").stdout)
    assert info["enabled"] and info["running"] and "get_current_time" in info["tools"]


@pytest.fixture(scope="session")
def webui_sqlite(standin_images: dict[str, str]) -> str:
    from .conftest import ROOT
    from .registry import build_image

    tag = "ollama-stack-standin/webui-sqlite:test"
    build_image(tag, ROOT / "tests" / "support" / "webui-sqlite")
    return tag


def saved_list(inst: Installation, key: str) -> list[dict]:
    url = f"http://127.0.0.1:{inst.ports['webui']}/api/v1/configs/tool_servers"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["TOOL_SERVER_CONNECTIONS"]


def save_list(inst: Installation, key: str, servers: list[dict]) -> None:
    url = f"http://127.0.0.1:{inst.ports['webui']}/api/v1/configs/tool_servers"
    body = json.dumps({"TOOL_SERVER_CONNECTIONS": servers}).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    urllib.request.urlopen(request, timeout=10).close()


def test_open_webuis_saved_list_is_edited_only_with_an_admin_key_and_the_users_entries_kept(
    make_installation, webui_sqlite
):
    """Once Open WebUI has started, its saved tool-server list wins over the
    environment: without an admin key ext.enable says what to add; with one it
    adds ours and takes them out again, and never touches the user's own."""
    inst = make_installation(images={"webui": webui_sqlite})
    inst.ok("stack.start", "--pull", "never")
    webui = f"{inst.project}-webui-1"
    docker("exec", webui, "sh", "-c", "echo sk-admin > /app/backend/data/admin_api_key")
    seeded = saved_list(inst, "sk-admin")
    assert [c["info"]["id"] for c in seeded] == ["stack"]  # from the env, at its first start
    users_own = {"type": "openapi", "url": "http://tools.lan:9000", "path": "openapi.json"}
    save_list(inst, "sk-admin", [*seeded, users_own])

    by_hand = inst.ok("ext.enable", "time")
    assert "External Tools" in by_hand.stdout + by_hand.stderr
    assert saved_list(inst, "sk-admin") == [*seeded, users_own]  # the env no longer counts

    secrets_file = Path(inst.env["OLLAMA_STACK_HOME"]) / "secrets.env"
    secrets_file.write_text(secrets_file.read_text() + "WEBUI_ADMIN_API_KEY=sk-admin\n")
    inst.ok("ext.disable", "time")
    inst.ok("ext.enable", "time")
    listed = saved_list(inst, "sk-admin")
    assert listed[:2] == [*seeded, users_own]
    assert listed[2]["url"] == "http://mcp_proxy:8000/time"
    inst.ok("ext.disable", "time")
    assert saved_list(inst, "sk-admin") == [*seeded, users_own]
