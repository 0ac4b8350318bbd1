"""`health.*`: check, wait, doctor."""

from __future__ import annotations

from invoke import Context, Exit

from ._base import display, guarded, runtime, seconds, stack_task

PROBE_TIMEOUT = seconds("--timeout", 2.0)
WAIT_TIMEOUT = seconds("--timeout", 120.0)


@stack_task(
    help={
        "json": "print one JSON document on stdout",
        "timeout": "seconds per probe (default 2)",
    }
)
@guarded
def check(c: Context, json: bool = False, timeout: float = PROBE_TIMEOUT) -> None:
    """Probe every service's health endpoint now; exit 1 if any is unhealthy."""
    from ollama_stack.stack.lifecycle import check_health

    rt = runtime(c)
    results = check_health(rt, timeout)
    out = display(json_mode=json)
    if json:
        out.json(
            {
                "target": rt.target.label,
                "healthy": all(r.ok for r in results.values()),
                "services": [r.__dict__ for r in results.values()],
            }
        )
    else:
        out.health(results)
    if not all(r.ok for r in results.values()):
        raise Exit(code=1)


@stack_task(help={"timeout": "seconds to wait (default 120)"})
@guarded
def wait(c: Context, timeout: float = WAIT_TIMEOUT) -> None:
    """Wait until every service is healthy; exit 7 on timeout."""
    from ollama_stack.stack import lifecycle

    out = display()
    lifecycle.wait_healthy(runtime(c), timeout, out.progress)
    out.success("all services healthy")


@stack_task(help={"json": "print one JSON document on stdout"})
@guarded
def doctor(c: Context, json: bool = False) -> None:
    """Check Docker, Compose, ports, disk, GPU and config; exit 1 on a failure."""
    from ollama_stack.common.errors import ConfigError
    from ollama_stack.stack.doctor import run_doctor

    try:
        rt, problem = runtime(c), None
    except ConfigError as exc:
        rt, problem = None, exc
    checks = run_doctor(rt, problem)
    out = display(json_mode=json)
    failed = any(ch.verdict == "fail" for ch in checks)
    if json:
        out.json({"ok": not failed, "checks": [ch.__dict__ for ch in checks]})
    else:
        out.doctor(checks)
    if failed:
        raise Exit(code=1)
