"""Progress events: how long-running library code reports without printing.

The library calls ``progress(Event(...))``; the task layer passes the
display's renderer (terminal), a stderr-only renderer (``--json``), or a
fleet host's display, which feeds that host's live line. ``None`` means
nobody is listening.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

# "transfer": bytes moved of one item (a model layer): ``total`` and ``done``.
EventKind = Literal["step", "output", "service", "warn", "done", "transfer"]


@dataclass(frozen=True)
class Event:
    kind: EventKind
    message: str
    service: str | None = None
    state: str | None = None
    total: int | None = None
    done: int | None = None


Progress = Callable[[Event], None]


def emit(
    progress: Progress | None, kind: EventKind, message: str, **extra: str | int | None
) -> None:
    if progress is not None:
        progress(Event(kind, message, **extra))
