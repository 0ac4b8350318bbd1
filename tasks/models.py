"""`models.*`: list, show, pull, rm."""

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
