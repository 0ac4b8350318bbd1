"""The `ollama-stack` console script: an invoke Program over the same tasks."""

from __future__ import annotations

import os
import sys

from invoke import Config, Exit, Program
from invoke.parser import Parser, ParserContext

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

    def parse_core(self, argv: list[str] | None) -> None:
        super().parse_core(argv)
        # invoke turns bytecode writing off unless --write-pyc (for a project's
        # tasks.py). Ours is an installed package whose modules are imported
        # after this point: off, an editable install or a changed module was
        # compiled from source on every run (~70 ms of each status). Python's
        # own -B and PYTHONDONTWRITEBYTECODE still apply.
        sys.dont_write_bytecode = bool(sys.flags.dont_write_bytecode)

    def _make_parser(self) -> Parser:
        # invoke builds a parser context for every task (inspecting each one's
        # signature), then deep-copies them all, on every run: a fifth of
        # `--help`'s time. Only the tasks named on the command line (or after
        # --help) can be parsed; completion offers them all.
        if self.args.complete.value:
            return super()._make_parser()
        words = {*self.core.unparsed, self.args.help.value}
        unknown_help = self.config.tasks.ignore_unknown_help
        contexts = [
            ParserContext(
                name=name,
                aliases=aliases,
                args=self.collection[name].get_arguments(ignore_unknown_help=unknown_help),
            )
            for name, aliases in self.collection.task_names.items()
            if name in words or words.intersection(aliases)
        ]
        return Parser(initial=self.initial_context, contexts=contexts)

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
    # pydantic scans every installed distribution's entry points for plugins
    # when it builds its first model (~5-10 ms of each command that opens the
    # installation); ollama-stack uses none. A user's own setting wins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        program.run()
    except BrokenPipeError:
        # `ollama-stack --help | head`: the reader left; exit quietly like coreutils do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
