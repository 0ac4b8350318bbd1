"""The `ollama-stack` console script: an invoke Program over the same tasks."""

from __future__ import annotations

import os
import sys

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

    def parse_tasks(self) -> None:
        # With no task on the command line (`--help`, `--list`, nothing), invoke
        # would still build and deep-copy a parser context for every task (about
        # a fifth of `--help`'s time) to parse nothing; `--help TASK` needs them.
        if self.core.unparsed or isinstance(self.args.help.value, str):
            super().parse_tasks()
            return
        from invoke.parser import ParseResult, ParserContext

        self.core_via_tasks = ParserContext()
        self.tasks = ParseResult()

    # Looking the version up costs ~20 ms (importlib.metadata scans site-packages);
    # only `--version` needs it, so --help and --list do not pay for it.
    @property
    def version(self) -> str:
        from importlib import metadata

        try:
            return metadata.version("ollama-stack")
        except metadata.PackageNotFoundError:
            return "unknown"

    @version.setter
    def version(self, _value: str | None) -> None:
        pass  # Program.__init__ assigns one; ours is looked up on demand


program = StackProgram(
    name="ollama-stack", binary="ollama-stack", namespace=ns, config_class=Config
)


def main() -> None:
    try:
        program.run()
    except BrokenPipeError:
        # `ollama-stack --help | head`: the reader left; exit quietly like coreutils do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
