"""`models.*`: list, show, pull, rm, export, import."""

from __future__ import annotations

from invoke import Context

from ._base import confirmer, display, guarded, positional, runtime, stack_task

NAME_HELP = "the model's name, as Ollama names it (llama3.2, me/tiny:q4)"
JSON_HELP = "print one JSON document on stdout"


def _name(given: str | None, task: str) -> str:
    return positional(given, task, "a model's name", "`inv models.list` shows them")


@stack_task(name="list", help={"json": JSON_HELP})
@guarded
def list_(c: Context, json: bool = False) -> None:
    """The models the stack's Ollama holds, and which are loaded now."""
    from ollama_stack.stack import models

    found = models.list_models(runtime(c))
    out = display(json_mode=json)
    if json:
        out.json({"models": [m.to_json() for m in found]})
    else:
        out.model_table(found)


@stack_task(positional=["name"], help={"name": NAME_HELP, "json": JSON_HELP})
@guarded
def show(c: Context, name: str | None = None, json: bool = False) -> None:
    """A model: family, parameters, quantization, and its layers with sizes and digests."""
    from ollama_stack.stack import models

    document = models.show(runtime(c), _name(name, "models.show"))
    out = display(json_mode=json)
    if json:
        out.json(document)
    else:
        out.model_details(document)


@stack_task(positional=["name"], help={"name": NAME_HELP, "json": JSON_HELP})
@guarded
def pull(c: Context, name: str | None = None, json: bool = False) -> None:
    """Pull a model into the stack's Ollama, a progress bar per layer (Ctrl-C: resume later)."""
    from ollama_stack.stack import models

    out = display(json_mode=json)
    pulled = models.pull(runtime(c), _name(name, "models.pull"), out.progress)
    if json:
        out.json(pulled.to_json())
    else:
        out.success(f"pulled {pulled.name}: {pulled.layers} layers")


@stack_task(positional=["name"], help={"name": NAME_HELP, "yes": "do not ask first"})
@guarded
def rm(c: Context, name: str | None = None, yes: bool = False) -> None:
    """Delete a model from the stack's Ollama (asks first)."""
    from ollama_stack.stack import models

    out = display()
    chosen = _name(name, "models.rm")
    models.remove(runtime(c), chosen, confirmer(yes, out))
    out.success(f"deleted {chosen}")


def _file(given: str | None, task: str) -> str:
    return positional(given, task, "a FILE (- for stdin/stdout)", f"`inv --help {task}`", "there")


@stack_task(
    positional=["name", "file"],
    help={"name": NAME_HELP, "file": "where to write it (- for stdout)", "json": JSON_HELP},
)
@guarded
def export(
    c: Context, name: str | None = None, file: str | None = None, json: bool = False
) -> None:
    """One model in one file: its manifest and exactly the blobs it names, checked."""
    import sys
    from pathlib import Path

    from ollama_stack.common.errors import ConfigError
    from ollama_stack.common.files import new_file
    from ollama_stack.stack import models

    chosen, target = _name(name, "models.export"), _file(file, "models.export")
    out = display(json_mode=json or target == "-")
    rt = runtime(c)
    if target == "-":
        if json or sys.stdout.isatty():
            raise ConfigError(
                "models.export - writes the file to stdout", "pipe it, without --json"
            )
        done = models.export_model(rt, chosen, sys.stdout.buffer, out.progress)
    else:
        with new_file(Path(target), 0o644) as handle:
            done = models.export_model(rt, chosen, handle, out.progress)
    if json:
        out.json(done.to_json())
    else:
        out.success(f"exported {done.name}: {done.blobs} blobs, {done.bytes} bytes, to {target}")


@stack_task(
    name="import",
    positional=["file"],
    help={"file": "a models.export file (- for stdin)", "json": JSON_HELP},
)
@guarded
def import_(c: Context, file: str | None = None, json: bool = False) -> None:
    """Take in a models.export file: blobs checked and sent, the manifest last, then listed."""
    import sys

    from ollama_stack.stack import models

    source = _file(file, "models.import")
    out = display(json_mode=json)
    rt = runtime(c)
    if source == "-":
        done = models.import_model(rt, sys.stdin.buffer, out.progress)
    else:
        with open(source, "rb") as handle:
            done = models.import_model(rt, handle, out.progress)
    if json:
        out.json(done.to_json())
    else:
        out.success(
            f"imported {done.name}: {done.moved} of {done.blobs} blobs sent ({done.bytes} bytes)"
        )


@stack_task(positional=["name"], help={"name": NAME_HELP, "json": JSON_HELP})
@guarded
def push(c: Context, name: str | None = None, json: bool = False) -> None:
    """Send a model to the box named by --remote: only the blobs it lacks travel."""
    from ollama_stack.common.errors import ConfigError
    from ollama_stack.stack import models

    from ._base import current_remote

    chosen = _name(name, "models.push")
    if not current_remote():
        raise ConfigError(
            "models.push sends a model to a box", f"`inv models.push {chosen} --remote HOST`"
        )
    out = display(json_mode=json)
    here = runtime(c, local=True)
    done = models.push(here, runtime(c), chosen, out.progress)
    if json:
        out.json(done.to_json())
    else:
        out.success(
            f"pushed {done.name}: {done.moved} of {done.blobs} blobs sent ({done.bytes} bytes)"
        )
