"""What an update found and did, per service: shared by the kinds and the engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from ollama_stack.common.errors import ExitCode

Status = Literal[
    "up-to-date", "update-available", "not-pulled", "local-build", "unknown", "ok", "unreachable"
]
Outcome = Literal[
    "updated",
    "up-to-date",
    "rolled-back",
    "failed",
    "needs-sudo",
    "manual",
    "unchanged",
    "validated",
    "unreachable",
    "skipped",
]


@dataclass
class ServiceCheck:
    service: str
    type: str
    image: str = ""
    image_id: str | None = None
    local_digest: str | None = None
    registry_digest: str | None = None
    version: str | None = None
    status: Status = "unknown"
    detail: str = ""


@dataclass
class ServiceOutcome:
    service: str
    type: str
    outcome: Outcome
    detail: str = ""
    previous: str | None = None
    current: str | None = None


@dataclass
class UpdateReport:
    outcomes: list[ServiceOutcome] = field(default_factory=list)
    backup: str = ""

    @property
    def exit_code(self) -> ExitCode:
        kinds = {o.outcome for o in self.outcomes}
        bad = kinds & {"failed", "needs-sudo", "manual", "unreachable"}
        if "rolled-back" in kinds:
            return ExitCode.ROLLED_BACK
        if bad and kinds & {"updated"}:
            return ExitCode.PARTLY_UPDATED
        return ExitCode.FAILED if bad else ExitCode.OK

    def to_json(self) -> dict:
        return {
            "exit_code": int(self.exit_code),
            "backup": self.backup,
            "services": [asdict(o) for o in self.outcomes],
        }
