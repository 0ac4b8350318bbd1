"""Expected failures, each with a remedy and a documented exit code.

Every error a user can cause or meet (Docker down, bad config, a port taken,
SSH refused) is one of these. The task layer turns them into a single line on
stderr and the exit code below; anything else reaching the user is a bug.
The table is mirrored in the README ("Exit codes").
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import TypeVar

T = TypeVar("T")


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # a check failed (unhealthy service, doctor failure)
    CONFIG = 2  # bad config value, bad flag, unknown service name
    DOCKER_UNAVAILABLE = 3
    COMPOSE_MISSING = 4
    PORT_IN_USE = 5
    IMAGE_UNAVAILABLE = 6
    HEALTH_TIMEOUT = 7
    SSH = 8
    NOT_INSTALLED = 9
    ALREADY_INSTALLED = 10
    DOCKER_FAILED = 11  # docker/compose refused for a reason we do not recognise
    ROLLED_BACK = 12  # an update was unhealthy and the previous images are back
    PARTLY_UPDATED = 13  # some services updated, others failed or need a hand
    REGISTRY_UNREACHABLE = 14
    CRASHED = 15  # a container keeps exiting or restarting while we wait for health
    BAD_BACKUP = 16  # a backup is incomplete, damaged or not there
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    TERMINATED = 143  # SIGTERM, handled like Ctrl-C


class StackError(Exception):
    """Base of every expected failure: what happened, what to do, which code."""

    code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, remedy: str = "", *, code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        self.remedy = remedy
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message} — {self.remedy}" if self.remedy else self.message


class ConfigError(StackError):
    code = ExitCode.CONFIG


class DockerUnavailable(StackError):
    code = ExitCode.DOCKER_UNAVAILABLE


class ComposeMissing(StackError):
    code = ExitCode.COMPOSE_MISSING


class PortInUse(StackError):
    code = ExitCode.PORT_IN_USE


class ImageUnavailable(StackError):
    code = ExitCode.IMAGE_UNAVAILABLE


class HealthTimeout(StackError):
    code = ExitCode.HEALTH_TIMEOUT


class ServiceCrashed(HealthTimeout):
    """Not worth waiting for: the container keeps exiting. A HealthTimeout
    too, so an update rolls back on it as on any failed wait."""

    code = ExitCode.CRASHED


class SSHError(StackError):
    code = ExitCode.SSH


class NotInstalled(StackError):
    code = ExitCode.NOT_INSTALLED


class AlreadyInstalled(StackError):
    code = ExitCode.ALREADY_INSTALLED


class DockerFailed(StackError):
    code = ExitCode.DOCKER_FAILED


class Interrupted(StackError):
    code = ExitCode.INTERRUPTED


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so both stop work the same way."""


def interruption_code(stop: KeyboardInterrupt) -> ExitCode:
    """143 for SIGTERM, 130 for Ctrl-C."""
    return ExitCode.TERMINATED if isinstance(stop, Terminated) else ExitCode.INTERRUPTED


def backed_up_first(take: Callable[[], T], before: str, unchanged: str) -> T:
    """The backup a change begins with. If it fails, the change does not happen
    either, and the one line says so (``before``: "the update", ``unchanged``:
    "updated")."""
    try:
        return take()
    except StackError as failure:
        raise StackError(
            f"the backup before {before} failed, so nothing was {unchanged}: {failure.message}",
            # Skipping it is always a way on (a store that is full, volumes
            # another installation holds): said even where the failure has its own.
            f"{failure.remedy or 'fix that'}; or go on with --no-backup at your own risk",
            code=failure.code,
        ) from None
