"""What every task shares: the error choke point and building a Runtime.

Heavy libraries (pydantic, python-on-whales, rich, fabric) are imported inside
task bodies so `--help` and `--list` stay fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from invoke import Exit

from ollama_stack.stack.errors import ExitCode, StackError

if TYPE_CHECKING:
    from invoke import Context

    from ollama_stack.stack.display import Display
    from ollama_stack.stack.runtime import Runtime

F = TypeVar("F", bound=Callable[..., Any])


def guarded(func: F) -> F:
    """Turn every expected failure into one line on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(c, *args, **kwargs)
        except StackError as exc:
            display().error(exc.message, exc.remedy)
            raise Exit(code=int(exc.code)) from None
        except OSError as exc:  # a full disk, a read-only home: say which file
            where = f" ({exc.filename})" if exc.filename else ""
            display().error(f"{exc.strerror or exc}{where}", "check the path and free space")
            raise Exit(code=int(ExitCode.FAILED)) from None
        except KeyboardInterrupt:
            display().error("interrupted", "see `inv stack.status` for what runs now")
            raise Exit(code=int(ExitCode.INTERRUPTED)) from None

    return wrapper  # type: ignore[return-value]


def display(json_mode: bool = False) -> Display:
    from ollama_stack.stack.display import Display

    return Display(json_mode=json_mode)


def plain(value: Any) -> Any:
    """invoke's DataProxy → plain dicts, for pydantic."""
    if isinstance(value, Mapping) or hasattr(value, "_config"):
        return {k: plain(value[k]) for k in value}
    return value


def runtime(c: Context, remote: str | None = None, **flags: Any) -> Runtime:
    from ollama_stack.stack.runtime import Runtime

    invoke_layer = plain(c.config.get("ollama_stack", {}) or {})
    if not isinstance(invoke_layer, dict):
        from ollama_stack.stack.errors import ConfigError

        raise ConfigError(
            f"invoke.yaml: ollama_stack must be a mapping of settings, not {invoke_layer!r}"
        )
    return Runtime.open(remote=remote or None, invoke_layer=invoke_layer, flags=flags)


def confirmer(yes: bool, out: Display) -> Callable[[str], bool]:
    """Ask on a terminal; without one, refuse unless --yes was given (never hang)."""
    import sys

    def confirm(question: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            from ollama_stack.stack.errors import ConfigError

            raise ConfigError(f"not asking without a terminal: {question}", "add --yes to proceed")
        return out.confirm(question)

    return confirm


def split_names(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").replace(" ", ",").split(",") if n.strip()]
