"""A fourth service, registered through the catalog alone, on a live engine.

The test writes a small launcher that registers a service description (its
own compose fragment, probe and volume) and then runs the real console
entry point. No other line of ollama-stack knows the service; status,
health, config and uninstall must all see it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Installation, docker, free_ports

FRAGMENT = """\
services:
  echo:
    image: ${ECHO_IMAGE:-none}
    restart: unless-stopped
    ports:
      - "${OLLAMA_STACK_BIND:-127.0.0.1}:${ECHO_PORT:-1}:11434"
    volumes:
      - echo_data:/data
    labels:
      io.ollama-stack.installation: ${OLLAMA_STACK_INSTALLATION:-unmanaged}
      io.ollama-stack.service: echo
volumes:
  echo_data:
    labels:
      io.ollama-stack.installation: ${OLLAMA_STACK_VOLUMES_INSTALLATION:-unmanaged}
      io.ollama-stack.data: "true"
"""

LAUNCHER = """\
import sys
from pathlib import Path

from ollama_stack.stack.health import ProbeSpec
from ollama_stack.stack.services import CATALOG, ServiceSpec, Volume
from ollama_stack.stack.services.core import check_ollama

CATALOG.register(
    ServiceSpec(
        name="echo",
        title="Echo",
        env_prefix="ECHO",
        image="example.invalid/echo:1",
        port=1,
        container_port=11434,
        probe=ProbeSpec("/api/version", check_ollama),
        fragment=Path({fragment!r}),
        volumes=(Volume("echo_data", "/data", cache=("cache",)),),
    )
)

from ollama_stack.tasks.program import main

sys.exit(main())
"""


@pytest.fixture
def fourth(make_installation, standin_images, tmp_path: Path):
    fragment = tmp_path / "echo.yml"
    fragment.write_text(FRAGMENT)
    launcher = tmp_path / "with_echo.py"
    launcher.write_text(LAUNCHER.format(fragment=str(fragment)))
    inst: Installation = make_installation(install=False)
    inst.env["OLLAMA_STACK_IMAGES_ECHO"] = standin_images["ollama"]  # any HTTP server will do
    inst.env["OLLAMA_STACK_PORTS_ECHO"] = str(free_ports(1)[0])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(launcher), *args],
            capture_output=True,
            text=True,
            timeout=240,
            env=inst.env,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
        )

    return inst, run


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def test_a_service_registered_in_the_catalog_is_seen_by_every_namespace(fourth):
    inst, run = fourth
    ok(run("stack.install"))
    ok(run("stack.start", "--timeout", "120"))
    echo_container = f"{inst.project}-echo-1"
    assert echo_container in inst.containers()

    status = json.loads(ok(run("stack.status", "--json")).stdout)
    rows = {s["name"]: s for s in status["services"]}
    assert list(rows) == ["ollama", "webui", "mcp_proxy", "echo"]
    port = inst.env["OLLAMA_STACK_PORTS_ECHO"]
    assert rows["echo"]["state"] == "running" and rows["echo"]["health"] == "healthy"
    assert rows["echo"]["url"] == f"http://127.0.0.1:{port}"

    health = json.loads(ok(run("health.check", "--json")).stdout)
    assert any(s["service"] == "echo" and s["health"] == "healthy" for s in health["services"])

    printed = ok(run("stack.config")).stdout
    assert "  echo:\n" in printed and f'published: "{port}"' in printed
    assert "echo.yml" in printed.splitlines()[1]  # the command a user can run by hand

    uninstall = ok(run("stack.uninstall", "--yes", "--remove-volumes", "--json"))
    plan = json.loads(uninstall.stdout)
    assert echo_container in plan["containers"]
    assert f"{inst.project}_echo_data" in plan["volumes"]
    assert inst.containers() == [] and inst.volumes() == []
    assert docker("ps", "-a", "--filter", f"name={echo_container}", "--format", "{{.Names}}") == ""
