"""`images.*`: list, export, import, push — the stack's images for boxes with no registry."""

from __future__ import annotations

from invoke import Context

from ._base import current_remote, display, guarded, positional, runtime, stack_task

JSON_HELP = "print one JSON document on stdout"


def _file(given: str | None, task: str) -> str:
    return positional(given, task, "a FILE (- for stdin/stdout)", f"`inv --help {task}`")


@stack_task(name="list", help={"json": JSON_HELP})
@guarded
def list_(c: Context, json: bool = False) -> None:
    """The stack's images on this engine: id, and where each came from."""
    from ollama_stack.stack import images

    rows = images.listing(runtime(c))
    out = display(json_mode=json)
    if json:
        out.json({"images": [r.to_json() for r in rows]})
    else:
        out.image_rows(rows)


@stack_task(positional=["file"], help={"file": "where to write them (- for stdout)"})
@guarded
def export(c: Context, file: str | None = None) -> None:
    """Every image the stack runs, in one `docker save` file (to carry to a box)."""
    import sys
    from pathlib import Path

    from ollama_stack.common.errors import ConfigError
    from ollama_stack.common.files import new_file
    from ollama_stack.stack import images

    target = _file(file, "images.export")
    out = display(json_mode=target == "-")
    rt = runtime(c)
    if target == "-":
        if sys.stdout.isatty():
            raise ConfigError("images.export - writes the file to stdout", "pipe it")
        done = images.export_images(rt, sys.stdout.buffer, out.progress)
    else:
        with new_file(Path(target), 0o644) as handle:
            done = images.export_images(rt, handle, out.progress)
    out.success(f"exported {', '.join(done.images)} to {target}")


@stack_task(
    name="import", positional=["file"], help={"file": "an images.export file (- for stdin)"}
)
@guarded
def import_(c: Context, file: str | None = None) -> None:
    """Load an images.export file into the engine (it checks every layer)."""
    import sys

    from ollama_stack.stack import images

    source = _file(file, "images.import")
    out = display()
    rt = runtime(c)
    if source == "-":
        done = images.import_images(rt, sys.stdin.buffer, out.progress)
    else:
        with open(source, "rb") as handle:
            done = images.import_images(rt, handle, out.progress)
    out.success(f"loaded; the stack's images here now: {', '.join(done.images)}")


@stack_task(help={"json": JSON_HELP})
@guarded
def push(c: Context, json: bool = False) -> None:
    """Send the stack's images to the box named by --remote (skips what it has)."""
    from ollama_stack.common.errors import ConfigError
    from ollama_stack.stack import images

    if not current_remote():
        raise ConfigError(
            "images.push sends the images to a box", "`inv images.push --remote HOST`"
        )
    out = display(json_mode=json)
    # The box's installation first: the catalog then holds this machine's
    # extensions, whose images are the ones sent.
    box = runtime(c)
    done = images.push(runtime(c, local=True), box, out.progress)
    if json:
        out.json(done.to_json())
    elif done.images:
        out.success(f"sent {', '.join(done.images)}; the box had {len(done.skipped)} already")
    else:
        out.success(f"the box has every image already ({len(done.skipped)})")
