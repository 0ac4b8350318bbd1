"""The `notes` extension's MCP server for real: its image built on the proxy's
image (the real mcpo with the `mcp` SDK), run on a network of its own under
the name the proxy uses, and called with the SDK's streamable-HTTP client from
a second container of the same image.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .conftest import ROOT, docker, free_ports

pytestmark = pytest.mark.docker

# Runs in a client container: one MCP session, the calls given as JSON in
# argv[2], every result printed as one JSON document.
CLIENT = r"""
import asyncio, json, sys
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

async def main():
    out = {}
    async with streamable_http_client(sys.argv[1]) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server"] = init.serverInfo.name
            out["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
            out["calls"] = []
            for name, args in json.loads(sys.argv[2]):
                result = await session.call_tool(name, args)
                text = "".join(c.text for c in result.content if c.type == "text")
                out["calls"].append({"error": result.isError, "text": text})
    print(json.dumps(out))

asyncio.run(main())
"""


@dataclass
class NotesServer:
    image: str
    network: str
    volume: str
    container: str
    port: int
    label: str

    def call(self, *calls: tuple[str, dict]) -> dict:
        """One MCP session from a container on the server's network: as mcpo reaches it."""
        out = docker(
            "run", "--rm", "--label", self.label, "--network", self.network,
            "--entrypoint", "python3", self.image,
            "-c", CLIENT, "http://notes:8000/mcp", json.dumps(calls),
        )  # fmt: skip
        return json.loads(out)

    def health(self) -> tuple[int, dict]:
        url = f"http://127.0.0.1:{self.port}/health"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())

    def files(self) -> list[str]:
        return docker("exec", self.container, "ls", "-A", "/data").split()


def _wait_healthy(server: NotesServer, deadline: float = 30) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            if server.health()[0] == 200:
                return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > end:
            logs = docker("logs", server.container, check=False)
            pytest.fail(f"the notes server never answered /health:\n{logs}")
        time.sleep(0.2)


def _cleanup(label: str, image: str, network: str, volume: str) -> None:
    # By label and name with the plain docker CLI, whatever state a test left.
    containers = docker("ps", "-aq", "--filter", f"label={label}", check=False).split()
    if containers:
        docker("rm", "-f", *containers, check=False)
    docker("network", "rm", network, check=False)
    docker("volume", "rm", "-f", volume, check=False)
    docker("rmi", "-f", image, check=False)


@pytest.fixture(scope="module")
def notes_server(standin_images: dict[str, str]) -> Iterator[NotesServer]:
    run = uuid.uuid4().hex[:8]
    label = f"io.ollama-stack.test=notes-{run}"
    server = NotesServer(
        image=f"ollama-stack-ext/notes:test-{run}",
        network=f"ostnotes{run}",
        volume=f"ostnotes{run}_data",
        container=f"ostnotes{run}",
        port=free_ports(1)[0],
        label=label,
    )
    try:
        # The classic builder, as ComposeProject.build_image uses it.
        build = subprocess.run(
            ["docker", "build", "--quiet", "--label", label, "--tag", server.image,
             "--build-arg", f"BASE={standin_images['mcp_proxy']}",
             str(ROOT / "extensions" / "notes")],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )  # fmt: skip
        assert build.returncode == 0, build.stderr
        docker("network", "create", "--label", label, server.network)
        docker("volume", "create", "--label", label, server.volume)
        docker(
            "run", "-d", "--name", server.container, "--label", label,
            "--network", server.network, "--network-alias", "notes",
            "-v", f"{server.volume}:/data", "-p", f"127.0.0.1:{server.port}:8000",
            server.image,
        )  # fmt: skip
        _wait_healthy(server)
        yield server
    finally:
        _cleanup(label, server.image, server.network, server.volume)


def test_health_answers_json(notes_server: NotesServer) -> None:
    assert notes_server.health() == (200, {"status": "ok"})


def test_add_list_read_delete_over_mcp(notes_server: NotesServer) -> None:
    title = "Ünïcode ☃ shopping"
    out = notes_server.call(
        ("add_note", {"title": title, "text": "eggs, milk"}),
        ("list_notes", {}),
        ("read_note", {"title": title}),
    )
    assert out["server"] == "notes"
    assert out["tools"] == ["add_note", "delete_note", "list_notes", "read_note"]
    added, listed, read = out["calls"]
    assert not added["error"] and json.loads(added["text"])["saved"] is True
    assert [n["title"] for n in json.loads(listed["text"])["notes"]] == [title]
    assert json.loads(read["text"])["text"] == "eggs, milk"
    assert len(notes_server.files()) == 1

    out = notes_server.call(("delete_note", {"title": title}), ("read_note", {"title": title}))
    deleted, missing = out["calls"]
    assert json.loads(deleted["text"])["deleted"] is True
    assert missing["error"] and "no note titled" in missing["text"]
    assert notes_server.files() == []


def test_bad_titles_over_mcp(notes_server: NotesServer) -> None:
    out = notes_server.call(
        ("add_note", {"title": "   ", "text": "x"}),
        ("add_note", {"title": "../../etc/x", "text": "stays in /data"}),
    )
    empty, climbing = out["calls"]
    assert empty["error"] and "needs a title" in empty["text"]
    assert not climbing["error"]
    assert [name.startswith("etc-x-") for name in notes_server.files()] == [True]
    notes_server.call(("delete_note", {"title": "../../etc/x"}))


def test_notes_outlive_the_container(notes_server: NotesServer) -> None:
    notes_server.call(("add_note", {"title": "kept", "text": "in the volume"}))
    docker("rm", "-f", notes_server.container)
    docker(
        "run", "-d", "--name", notes_server.container, "--label", notes_server.label,
        "--network", notes_server.network, "--network-alias", "notes",
        "-v", f"{notes_server.volume}:/data", "-p", f"127.0.0.1:{notes_server.port}:8000",
        notes_server.image,
    )  # fmt: skip
    _wait_healthy(notes_server)
    (read,) = notes_server.call(("read_note", {"title": "kept"}))["calls"]
    assert json.loads(read["text"])["text"] == "in the volume"


def test_stops_promptly(notes_server: NotesServer) -> None:
    """PID 1 is the server itself: it must act on SIGTERM, not wait for the kill."""
    started = time.monotonic()
    docker("stop", "--time", "10", notes_server.container)
    assert time.monotonic() - started < 5
