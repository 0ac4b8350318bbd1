"""`health.doctor`: is this host ready to run the stack, and if not, what to do."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

from ollama_stack.common.errors import StackError
from ollama_stack.compose.client import ContainerRun, EngineInfo

from . import config
from .hosts import hostcheck
from .lifecycle import CRASH_RESTARTS, STOPPED_CODES
from .runtime import Runtime
from .services import CATALOG
from .services.kinds import LOOPBACK_HOSTS

Verdict = Literal["pass", "warn", "fail"]
GIB = 1 << 30
MIN_COMPOSE = (2, 23)  # inline `configs: content:` (2.23.1) carries mcpo's config


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str
    remedy: str = ""


def _compose_version_tuple(text: str) -> tuple[int, ...]:
    match = re.search(r"v?(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def check_docker(rt: Runtime) -> tuple[Check, EngineInfo | None]:
    try:
        engine = rt.compose.engine_info()
    except StackError as exc:
        return Check("docker", "fail", exc.message, exc.remedy), None
    return Check("docker", "pass", f"engine {engine.server_version} on {rt.target.label}"), engine


def check_compose(rt: Runtime) -> Check:
    try:
        version = rt.compose.compose_version()
    except StackError as exc:
        return Check("compose", "fail", exc.message, exc.remedy)
    if _compose_version_tuple(version) < MIN_COMPOSE:
        return Check("compose", "fail", f"{version} is too old", "install Compose v2.23.1 or newer")
    return Check("compose", "pass", version)


def check_ports(rt: Runtime) -> list[Check]:
    found = hostcheck.listeners(rt.target.shell())
    if found is None:
        return [
            Check("ports", "warn", "cannot list listening ports (`ss` missing)", "install iproute2")
        ]
    ours: set[int] = set()
    with contextlib.suppress(StackError):  # Docker down is reported by its own check
        ours = set().union(*(c.published_ports for c in rt.compose.ps() if c.state == "running"))
    checks = []
    for service in rt.docker_services():
        port = rt.settings.ports[service]
        taken = hostcheck.conflicts(rt.settings.bind, port, found)
        if not taken or port in ours:
            note = " (ours)" if port in ours else ""
            checks.append(
                Check(f"port {port}", "pass", f"{service} can bind {rt.settings.bind}:{port}{note}")
            )
        else:
            who = next((t.process for t in taken if t.process), "another process")
            checks.append(
                Check(
                    f"port {port}",
                    "fail",
                    f"{service}: {rt.settings.bind}:{port} is held by {who}",
                    f"free it or set OLLAMA_STACK_PORTS_{service.upper()}",
                )
            )
    return checks


def check_disk(rt: Runtime, engine: EngineInfo | None) -> Check:
    path = engine.docker_root_dir if engine and engine.docker_root_dir else "/"
    free = hostcheck.free_disk_bytes(rt.target.shell(), path)
    if free is None:
        return Check("disk", "warn", f"cannot read free space of {path}")
    text = f"{free / GIB:.1f} GiB free under {path}"
    if free < 5 * GIB:
        return Check("disk", "fail", text, "images and one model need 5 to 10 GiB; free some space")
    if free < 20 * GIB:
        return Check("disk", "warn", text, "larger models need 20 GiB or more")
    return Check("disk", "pass", text)


def check_gpu(rt: Runtime, engine: EngineInfo | None) -> Check:
    shell = rt.target.shell()
    if not hostcheck.nvidia_gpu_present(shell):
        return Check("gpu", "pass", "no NVIDIA GPU; Ollama runs on CPU")
    if engine and "nvidia" in engine.runtimes:
        return Check("gpu", "pass", "NVIDIA GPU and the nvidia runtime")
    if hostcheck.nvidia_cdi_present(shell):
        return Check("gpu", "pass", "NVIDIA GPU with CDI specs")
    return Check(
        "gpu",
        "fail",
        "NVIDIA GPU present but Docker cannot use it",
        "install the NVIDIA Container Toolkit, then "
        "`nvidia-ctk runtime configure --runtime=docker`",
    )


def check_native_reach(rt: Runtime) -> list[Check]:
    """Containers reach a native service through the docker bridge, not loopback
    (on Linux; Docker Desktop forwards it). The host is asked only when needed."""
    checks = []
    for spec in CATALOG:
        if not spec.native or not rt.kind(spec.name).on_host:
            continue
        url = str(rt.settings.services[spec.name].url)
        if urlsplit(url).hostname not in LOOPBACK_HOSTS:
            continue
        if hostcheck.host_facts(rt.target.shell()).system != "Linux":
            continue
        checks.append(
            Check(
                "native",
                "warn",
                f"{spec.title} at {config.redact_url(url)} listens on loopback; "
                "the stack's containers cannot reach it",
                f"run it with {spec.native.listen_hint} so host.docker.internal reaches it",
            )
        )
    return checks


RECENT_START = timedelta(seconds=60)


def check_containers(rt: Runtime, now: datetime | None = None) -> list[Check]:
    """When the stack runs: each container's state and restarts (a crash loop fails)."""
    try:
        runs = rt.compose.container_runs()
    except StackError:
        return []  # Docker's own check says why
    checks = []
    for service, run in sorted(runs.items()):
        verdict, detail = _container_verdict(run, now or datetime.now(UTC))
        remedy = f"see `inv stack.logs -s {service}`" if verdict != "pass" else ""
        checks.append(Check(f"container {service}", verdict, detail, remedy))
    return checks


def _container_verdict(run: ContainerRun, now: datetime) -> tuple[Verdict, str]:
    restarts = f"restarted {run.restart_count} times"
    if run.status != "running":  # a running container reports 0, not its last exit
        restarts += f", last exit code {run.exit_code}"
    if run.status == "restarting":
        return "fail", f"crash-looping: {restarts}"
    if run.status in ("exited", "dead"):
        stopped = run.exit_code in STOPPED_CODES  # a clean exit, or stopped by a signal
        verdict: Verdict = "warn" if stopped else "fail"
        return verdict, f"{run.status} with code {run.exit_code}"
    if run.status != "running":
        return "warn", run.status
    if run.restart_count == 0:
        return "pass", "running"
    looping = run.restart_count >= CRASH_RESTARTS and now - _started(run) < RECENT_START
    return ("fail" if looping else "warn"), f"running, {restarts}"


def _started(run: ContainerRun) -> datetime:
    # The engine writes nanoseconds; Python reads up to microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", run.started_at).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def check_exposure(rt: Runtime) -> Check:
    exposed = rt.settings.exposure(rt.docker_services())
    if exposed:
        return Check(
            "bind",
            "warn",
            exposed,
            "bind 127.0.0.1 (the default) and reach it over SSH, or firewall it",
        )
    return Check("bind", "pass", f"ports published on {rt.settings.bind} only")


def check_secrets_file(rt: Runtime) -> Check | None:
    """The secrets log users in and unlock the proxy: a private regular file, ours alone."""
    path = rt.paths.secrets_file
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None  # not installed: the install check says so
    problems = []
    if not stat.S_ISREG(info.st_mode):
        problems.append("is not a regular file (a link?)")
    if info.st_mode & 0o077:
        problems.append(f"has mode {stat.S_IMODE(info.st_mode):04o}, readable by others")
    if info.st_uid != os.getuid():
        problems.append(f"is owned by uid {info.st_uid}, not by you")
    if problems:
        return Check(
            "secrets",
            "fail",
            f"{path} {'; '.join(problems)}",
            f"make it yours and private: chmod 600 {shlex.quote(str(path))} "
            "(`inv stack.install --force` rewrites it, keeping the keys)",
        )
    return Check("secrets", "pass", f"{path} is private (0600)")


def check_install(rt: Runtime) -> Check:
    if rt.paths.installed:
        return Check("install", "pass", f"config and secrets in {rt.paths.root}")
    return Check("install", "warn", f"not installed at {rt.paths.root}", "run `inv stack.install`")


def run_doctor(rt: Runtime | None, config_problem: StackError | None = None) -> list[Check]:
    """All checks; a bad config is itself a failed check, not a crash."""
    if rt is None:
        assert config_problem is not None
        return [Check("config", "fail", config_problem.message, config_problem.remedy)]
    checks = [Check("config", "pass", "settings valid")]
    docker, engine = check_docker(rt)
    checks.append(docker)
    steps: list[Callable[[], Check | list[Check]]] = [
        lambda: check_compose(rt),
        lambda: check_disk(rt, engine),
        lambda: check_gpu(rt, engine),
        lambda: check_install(rt),
        lambda: [c for c in [check_secrets_file(rt)] if c],
        lambda: check_exposure(rt),
        lambda: check_containers(rt),
        lambda: check_native_reach(rt),
    ]
    if engine:
        steps.insert(1, lambda: check_ports(rt))
    for step in steps:
        result = step()
        checks.extend(result if isinstance(result, list) else [result])
    return checks
