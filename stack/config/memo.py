"""Documents pydantic accepted before, kept so the queries need not load it.

Judging settings and extension manifests takes pydantic, and loading pydantic
is about 100 ms of a 350 ms `stack.status`. A judgement is a pure function of
what was judged and of the code that judged it, so it is kept by the hash of
both, as a build cache keeps its outputs: ``state/validated.json`` holds the
documents the last recording task used (`stack.start`, `stack.stop`,
`ext.enable`, ...), with a fingerprint of the code. A task finds a document
there only when exactly the same input is judged by exactly the same code;
anything else is judged again. Read-only tasks read the memo and never write
it. A memo that is missing, unreadable or from other code is simply empty:
it holds nothing that cannot be made again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# The code whose judgement is kept: the settings model, the service catalog
# and what they import, and the extension manifests' model.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_JUDGING_CODE = ("stack", "extensions", "compose", "common")
Document = dict[str, Any]


class Memo:
    """Judged documents by the hash of their input (``kind``, ``content``),
    as ``code`` (its fingerprint) judged them."""

    def __init__(self, code: str, known: Mapping[str, Document] | None = None) -> None:
        self.code = code
        self.read = dict(known or {})  # as the file held them
        self.known = dict(self.read)
        self.used: dict[str, Document] = {}  # what this run asked for: what is kept

    def document(self, kind: str, content: bytes, judge: Callable[[], Document]) -> Document:
        """The document ``judge`` makes of ``content``: kept, or made now."""
        key = hashlib.sha256(kind.encode() + b"\0" + content).hexdigest()
        found = self.known.get(key)
        if found is None:
            found = self.known[key] = judge()
        self.used[key] = found
        return found

    @property
    def changed(self) -> bool:
        """Would writing it keep other documents than the file holds?"""
        return self.used != self.read

    def text(self) -> str:
        # In the documents' own order: it reaches mcpo's config (and its hash).
        return json.dumps({"code": self.code, "documents": self.used})


def canonical(value: Any) -> bytes:
    """One byte string per value, keys in their own order: that order is kept
    in the document (it reaches mcpo's config), so a reordered file is
    judged again. A value JSON does not hold exactly (a YAML date, a key that
    is not text) raises ValueError: it is judged every time, never found
    under another's hash."""
    _refuse_inexact(value)
    return json.dumps(value, separators=(",", ":")).encode()


def _refuse_inexact(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"key {key!r} is not text")
            _refuse_inexact(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_inexact(item)
    elif value is not None and not isinstance(value, (str, int, float)):  # bool is an int
        raise ValueError(f"{type(value).__name__} is not JSON")


@functools.cache  # once a process: the code it runs does not change under it
def code_fingerprint() -> str:
    """The judging code as it is on disk: each file's path, size and time of
    change (as Python's bytecode cache checks a source), and pydantic's version."""
    digest = hashlib.sha256()
    for folder in _JUDGING_CODE:
        for path, stat in _python_files(_PACKAGE_ROOT / folder):
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    spec = importlib.util.find_spec("pydantic")
    if spec is not None and spec.origin:
        version = Path(spec.origin).with_name("version.py")
        digest.update(version.read_bytes() if version.is_file() else b"?")
    return digest.hexdigest()


def _python_files(folder: Path) -> list[tuple[str, os.stat_result]]:
    found: list[tuple[str, os.stat_result]] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:  # not there (a trimmed install): nothing of it to judge with
        return found
    for entry in entries:
        if entry.is_dir() and entry.name != "__pycache__":
            found += _python_files(Path(entry.path))
        elif entry.name.endswith(".py"):
            found.append((entry.path, entry.stat()))
    return found


def memo_of(text: str | None) -> Memo:
    """The memo a file holds; empty when there is none, it does not parse, or
    other code made it."""
    code = code_fingerprint()
    try:
        document = json.loads(text) if text is not None else None
    except (ValueError, RecursionError):  # not JSON, or nested past any document of ours
        document = None
    if not isinstance(document, dict) or document.get("code") != code:
        return Memo(code)
    documents = document.get("documents")
    if not isinstance(documents, dict):
        return Memo(code)
    return Memo(code, {k: doc for k, doc in documents.items() if isinstance(doc, dict)})
