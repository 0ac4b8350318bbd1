"""`dev.*`: helpers for working offline and on the project itself."""

from __future__ import annotations

from invoke import Context

from ._base import display, guarded, runtime, stack_task


@stack_task(
    help={
        "version": "tag for the images (default latest)",
        "mirror": "Debian mirror for the base image (default http://deb.debian.org/debian)",
    }
)
@guarded
def standins(c: Context, version: str = "latest", mirror: str = "") -> None:
    """Build the offline images (the real mcpo, Ollama and Open WebUI stand-ins); use them."""
    from ollama_stack.stack import config
    from ollama_stack.stack import standins as builder

    rt = runtime(c)
    out = display()
    images = builder.build(rt, version, out.progress, mirror or builder.DEFAULT_MIRROR)
    path = config.update_user_config(rt.paths, {"images": images})
    out.success(f"built {len(images)} stand-in images; images.* set in {path}")
