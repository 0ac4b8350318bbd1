"""What an extension is: the manifest in its folder, validated.

An extension folder holds ``extension.yaml`` and, for a server in its own
container, ``compose.yml`` (plus ``compose.<platform>.yml`` where a platform
needs more). The manifest says how the proxy reaches its MCP server: a stdio
command run inside the proxy's container, or a container of its own speaking
streamable HTTP or SSE on the stack's network. Its model is in ``schema``
(pydantic, loaded only to judge a manifest not judged before); what it
accepted reads as a ``Manifest`` document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ollama_stack.common.errors import ConfigError
from ollama_stack.stack.config import Frozen, Memo, read_yaml

# One name everywhere: the compose service, the config key, the proxy's
# /<name>/ path and the folder. Checked before it reaches a shell, a path or
# compose: no "/", no "..", no option-like leading "-".
NAME = r"^[a-z][a-z0-9_]{0,30}$"
MANIFEST = "extension.yaml"


class Manifest(Frozen):
    """A manifest as its model accepted it (see ``schema.ExtensionManifest``)."""

    @property
    def in_container(self) -> bool:
        """Its server runs in a container of its own (else: stdio, in the proxy's)."""
        return self.kind == "container"


def read_manifest(folder: Path, memo: Memo | None = None) -> Manifest:
    """The folder's manifest, or one line naming the file and the first bad
    field. ``memo``: judged once for the same bytes (see config.memo)."""
    path = folder / MANIFEST
    try:
        content: bytes | None = path.read_bytes()
    except OSError:
        content = None  # judging it says why, in one line
    if memo is None or content is None:
        document = _judged(path, content)
    else:
        document = memo.document("manifest", content, lambda: _judged(path, content))
    manifest = Manifest(document)
    if manifest.name != folder.name:
        raise ConfigError(
            f"{path}: name: {manifest.name!r} is not the folder's name {folder.name!r}",
            "name the folder after the extension",
        )
    return manifest


def _judged(path: Path, content: bytes | None) -> dict[str, Any]:
    from pydantic import ValidationError

    from .schema import ExtensionManifest

    try:  # one line for an unreadable file or bad YAML, duplicate keys too
        data = read_yaml(path, _text(content))
    except ConfigError as unreadable:
        raise ConfigError(unreadable.message, "fix the extension's manifest") from None
    try:
        return ExtensionManifest.model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {field}: {first['msg']}", "fix that field") from None


def _text(content: bytes | None) -> str | None:
    """The file's text; None (read it again, to say why) when it is not UTF-8."""
    try:
        return None if content is None else content.decode()
    except UnicodeDecodeError:
        return None
