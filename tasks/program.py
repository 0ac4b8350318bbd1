"""The `ollama-stack` console script: an invoke Program over the same tasks."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

from invoke import Config, Exit, Program

from . import ns


class StackProgram(Program):
    def create_config(self) -> None:
        # A Program with a fixed namespace loads no project invoke.yaml; load the
        # one in the working directory so Makefile-style project dirs work alike.
        super().create_config()
        self.config.set_project_location(os.getcwd())
        try:
            self.config.load_project()
        except Exception as exc:  # yaml errors and unreadable files
            raise Exit(f"error: cannot read ./invoke.yaml: {exc}", code=2) from None


def _version() -> str:
    try:
        return version("ollama-stack")
    except PackageNotFoundError:
        return "unknown"


program = StackProgram(
    name="ollama-stack",
    binary="ollama-stack",
    namespace=ns,
    version=_version(),
    config_class=Config,
)


def main() -> None:
    program.run()
