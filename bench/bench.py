"""Speed targets, measured as ratios in one run on this machine.

    .venv/bin/python bench/bench.py [--rounds N]

Prints, for each target, our median time, the baseline's median time and the
median of the ratios of runs taken in turns (lower is better):
  * `ollama-stack --list` and `--help` vs `python -c "import invoke"` (goal <= 1.2)
  * `stack.status --json` on a running stack vs `docker compose ps --format json` (goal <= 3.0)
  * the floor the goal names, a Python program that loads invoke and pydantic's
    BaseModel and asks the engine once over its socket, vs the same `compose ps`
    (reported), and `stack.status` against that floor (reported)
  * `health.check`, `update.check` and `backup.list` (one backup), `--json`, vs the same
    `compose ps` (reported)
  * `ext.list --json` on the same stack, one extension enabled, vs the same `compose ps`
    (goal <= 3.0)
  * `stack.start` to healthy vs `docker compose up -d --wait` on the same files (goal <= 1.10)
  * with --fleet-host HOST: `stack.status --json --hosts local,HOST` vs one host (goal <= 1.5)
Uses stand-in images and a temporary OLLAMA_STACK_HOME; removes what it made.
Python may write bytecode (PYTHONDONTWRITEBYTECODE is dropped): an installed
package has its .pyc files, as invoke, the baseline, has. The load average is
printed before and after: other work on the machine skews every figure.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent
CLI = str(BIN / "ollama-stack")


def timed(argv: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return elapsed


def paired(
    name: str,
    rounds: int,
    ours: list[str],
    base: list[str],
    env: dict[str, str],
    goal: float | None,
) -> None:
    """Ours and the baseline run in turns, and the ratio is the median of each
    pair's: load that comes and goes (other work on the machine) hits both."""
    timed(ours, env)
    timed(base, env)
    pairs = [(timed(ours, env), timed(base, env)) for _ in range(rounds)]
    ratio = statistics.median(o / b for o, b in pairs)
    ours_median = statistics.median(o for o, _ in pairs)
    base_median = statistics.median(b for _, b in pairs)
    row(name, ours_median, base_median, goal, ratio)


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def row(name: str, ours: float, base: float, goal: float | None, ratio: float = 0.0) -> None:
    ratio = ratio or ours / base
    verdict = "reported" if goal is None else f"{'meets' if ratio <= goal else 'misses'} <= {goal}"
    times = f"{ours * 1000:8.0f} ms {base * 1000:8.0f} ms"
    print(f"{name:<34} {times} {ratio:6.2f}  ({verdict})")


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--fleet-host", action="append", default=[], help=FLEET_HELP)
    args = parser.parse_args()
    rounds = args.rounds

    home = Path(tempfile.mkdtemp(prefix="ollama-stack-bench-"))
    project = f"bench{uuid.uuid4().hex[:6]}"
    env = installation_env(home, project)

    print(load())
    print(f"{'target':<34} {'ours':>11} {'baseline':>11} {'ratio':>6}")
    invoke_import = [sys.executable, "-c", "import invoke"]
    paired("--list vs import invoke", rounds, [CLI, "--list"], invoke_import, env, 1.2)
    paired("--help vs import invoke", rounds, [CLI, "--help"], invoke_import, env, 1.2)

    timed([CLI, "dev.standins", "--version", "bench"], env)
    timed([CLI, "stack.install"], env)
    compose = None
    try:
        timed([CLI, "stack.start", "--pull", "never"], env)
        compose = compose_argv(env)
        compose_ps = [*compose, "ps", "--format", "json"]
        status = [CLI, "stack.status", "--json"]
        paired("stack.status vs compose ps", rounds, status, compose_ps, env, 3.0)
        floor = [sys.executable, "-c", FLOOR, env["OLLAMA_STACK_PROJECT"]]
        paired("floor program vs compose ps", rounds, floor, compose_ps, env, None)
        paired("stack.status vs floor program", rounds, status, floor, env, None)
        timed([CLI, "backup.create"], env)
        for query in ("health.check", "update.check", "backup.list"):
            paired(f"{query} vs compose ps", rounds, [CLI, query, "--json"], compose_ps, env, None)
        # ext.list answers from files and one Docker query (asked only when one is enabled).
        timed([CLI, "ext.enable", "time"], env)
        ext_list = [CLI, "ext.list", "--json"]
        paired("ext.list vs compose ps", rounds, ext_list, compose_ps, env, 3.0)
        if args.fleet_host:
            fleet_status(rounds, env, args.fleet_host)
        ours, wait, nowait = [], [], []
        for _ in range(max(3, rounds // 2)):
            subprocess.run([*compose, "down"], env=env, capture_output=True)
            ours.append(timed([CLI, "stack.start", "--pull", "never"], env))
            subprocess.run([*compose, "down"], env=env, capture_output=True)
            wait.append(timed([*compose, "up", "-d", "--wait", "--pull", "never"], env))
            subprocess.run([*compose, "down"], env=env, capture_output=True)
            nowait.append(timed([*compose, "up", "-d", "--pull", "never"], env))
        row("stack.start vs up -d --wait", statistics.median(ours), statistics.median(wait), 1.10)
        # --wait waits for Docker's HEALTHCHECK schedule (webui: every 10 s);
        # plain `up -d` does not wait for health at all: the floor, not a target.
        row(
            "stack.start vs up -d (no wait)",
            statistics.median(ours),
            statistics.median(nowait),
            None,
        )
        print(load())
    finally:
        if compose:
            subprocess.run([*compose, "down", "--volumes"], env=env, capture_output=True)
        subprocess.run(["rm", "-rf", str(home)])


FLEET_HELP = (
    "also time `stack.status --json --hosts local,HOST...` (repeat for more hosts): an SSH "
    "alias with its own Docker engine (scripts/testhost.sh makes one)"
)


def fleet_status(rounds: int, env: dict[str, str], hosts: list[str]) -> None:
    """Fleet status on this machine and ``hosts`` at once, as a ratio to the
    slowest of them alone (a fleet cannot answer before its slowest host; a
    box over SSH is slower than this machine). Each host runs the same
    installation, started first."""
    here = subprocess.run([CLI, "stack.status", "--json"], env=env, capture_output=True).stdout
    services = json.loads(here)["services"]
    env = env | {f"OLLAMA_STACK_IMAGES_{s['name'].upper()}": s["image"] for s in services}
    for host in hosts:  # the same images as here, sent by images.push (skipped where present)
        timed([CLI, "stack.install", "--remote", host], env)
        timed([CLI, "images.push", "--remote", host], env)
        timed([CLI, "stack.start", "--pull", "never", "--remote", host], env)
    try:
        status = [CLI, "stack.status", "--json"]
        alone = {host: timed([*status, "--remote", host], env) for host in hosts}
        slowest = max(alone, key=alone.__getitem__)
        fleet = [*status, "--hosts", ",".join(["local", *hosts])]
        name = f"fleet status, {len(hosts) + 1} hosts vs {slowest}"
        paired(name, rounds, fleet, [*status, "--remote", slowest], env, 1.5)
    finally:
        for host in hosts:
            remove = ["stack.uninstall", "--yes", "--remove-volumes", "--remove-config"]
            subprocess.run([CLI, *remove, "--remote", host], env=env, capture_output=True)


# What the status goal calls the floor of a Python program: invoke and pydantic's
# models loaded, and one question to the engine (this project's containers).
FLOOR = """
import http.client, json, os, socket, sys, urllib.parse
import invoke
from pydantic import BaseModel

host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(urllib.parse.urlsplit(host).path)


label = json.dumps({"label": [f"com.docker.compose.project={sys.argv[1]}"]})
engine = Unix("localhost")
engine.request("GET", "/containers/json?all=1&filters=" + urllib.parse.quote(label))
print(engine.getresponse().read().decode())
"""


def installation_env(home: Path, project: str) -> dict[str, str]:
    """The environment of a throwaway installation: its own home, project and free ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_STACK_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env |= {"OLLAMA_STACK_HOME": str(home), "OLLAMA_STACK_PROJECT": project}
    for service, port in zip(("OLLAMA", "WEBUI", "MCP_PROXY"), free_ports(3), strict=True):
        env[f"OLLAMA_STACK_PORTS_{service}"] = str(port)
    return env


def compose_argv(env: dict[str, str]) -> list[str]:
    """The exact compose command the tool runs, read from `stack.config`'s header."""
    out = subprocess.run([CLI, "stack.config"], env=env, capture_output=True, text=True).stdout
    header = out.splitlines()[1].lstrip("# ").split()
    return header[: header.index("up")]


if __name__ == "__main__":
    main()
