"""The `notes` extension: an MCP server that keeps notes as files in a volume.

Run in its own container (streamable HTTP on port 8000, path /mcp, plus a
GET /health route), built on the proxy's image, which has Python and the
`mcp` SDK. Each note is one JSON file under NOTES_DIR (default /data) holding
its exact title and text; the file's name is derived from the title, so no
title can name a path outside the folder.

The storage helpers need only the standard library (the tests import them on
a host without the SDK); the SDK is imported when the server is built.
"""

import hashlib
import json
import os
import re
import tempfile
import time
import unicodedata
import warnings
from pathlib import Path
from typing import Any

MAX_TITLE = 200  # characters
MAX_TEXT = 100_000  # characters: a note, not a file store
SUFFIX = ".json"
_SLUG_DROP = re.compile(r"[^a-z0-9]+")


class NoteError(ValueError):
    """A refused title or text, or a note that is not there (the tool's error message)."""


def clean_title(title: str) -> str:
    """The title as stored: NFC-normalised and trimmed; refused if empty or odd."""
    if not isinstance(title, str):
        raise NoteError("a note's title must be text")
    # NFC so that the same visible title always maps to the same file.
    cleaned = unicodedata.normalize("NFC", title).strip()
    if not cleaned:
        raise NoteError("a note needs a title")
    if len(cleaned) > MAX_TITLE:
        raise NoteError(f"a title has at most {MAX_TITLE} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in cleaned):
        raise NoteError("a title cannot hold control characters (line breaks, tabs)")
    return cleaned


def note_filename(title: str) -> str:
    """A file name for the title: a readable ASCII slug plus a hash of the whole title.

    Only [a-z0-9-] reach the name, so "/", "..", a leading "." or "-" never
    do; the hash keeps titles apart that slug alike ("Ünïcode" and "Unicode",
    or two titles in a script with no ASCII letters at all).
    """
    cleaned = clean_title(title)
    ascii_form = unicodedata.normalize("NFKD", cleaned).encode("ascii", "ignore").decode()
    slug = _SLUG_DROP.sub("-", ascii_form.lower()).strip("-")[:40].rstrip("-") or "note"
    digest = hashlib.sha256(cleaned.encode("utf-8")).hexdigest()[:16]
    return f"{slug}-{digest}{SUFFIX}"


def note_path(folder: Path, title: str) -> Path:
    path = folder / note_filename(title)
    # The name is built from [a-z0-9-] only; say so again where it matters.
    if path.parent != folder:
        raise NoteError("that title cannot be stored")
    return path


def _write_atomically(path: Path, content: str) -> None:
    """Write beside the target, flush to disk, then rename over it: a reader
    (or a backup) sees the old note or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


class Notes:
    """The notes in one folder: one JSON file each, holding the exact title and text."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def add(self, title: str, text: str) -> dict[str, Any]:
        """Save the note under its title (replacing one with the same title)."""
        if not isinstance(text, str):
            raise NoteError("a note's text must be text")
        if len(text) > MAX_TEXT:
            raise NoteError(f"a note has at most {MAX_TEXT} characters")
        cleaned = clean_title(title)
        path = note_path(self.folder, cleaned)
        replaced = path.exists()
        record = {"title": cleaned, "text": text, "updated": _now()}
        _write_atomically(path, json.dumps(record, ensure_ascii=False, indent=1) + "\n")
        return {"title": cleaned, "saved": True, "replaced": replaced}

    def list(self) -> dict[str, Any]:
        """Every note's title, length and last change, sorted by title."""
        notes = []
        for path in self.folder.glob(f"*{SUFFIX}"):
            if path.name.startswith("."):  # an unfinished write
                continue
            record = _load(path)
            if record is not None:
                notes.append(
                    {
                        "title": record["title"],
                        "chars": len(record["text"]),
                        "updated": record.get("updated"),
                    }
                )
        notes.sort(key=lambda note: note["title"].casefold())
        return {"notes": notes, "count": len(notes)}

    def read(self, title: str) -> dict[str, Any]:
        cleaned = clean_title(title)
        record = _load(note_path(self.folder, cleaned))
        if record is None:
            raise NoteError(f"no note titled {cleaned!r}")
        return {"title": record["title"], "text": record["text"], "updated": record.get("updated")}

    def delete(self, title: str) -> dict[str, Any]:
        cleaned = clean_title(title)
        try:
            note_path(self.folder, cleaned).unlink()
        except FileNotFoundError:
            raise NoteError(f"no note titled {cleaned!r}") from None
        return {"title": cleaned, "deleted": True}


def _load(path: Path) -> dict[str, Any] | None:
    """The note in the file, or None if it is missing or not one of ours."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if not isinstance(record.get("title"), str) or not isinstance(record.get("text"), str):
        return None
    return record


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def notes_dir() -> Path:
    return Path(os.environ.get("NOTES_DIR", "/data"))


def build_server(notes: Notes) -> Any:
    """The FastMCP server with the four tools and the health route."""
    # mcp 1.26 with pydantic-settings 2.16 warns at import about a field of
    # FastMCP's own settings model: noise in every start's log, nothing we can fix.
    warnings.filterwarnings("ignore", message=r"Field 'lifespan' has an incomplete definition")
    from mcp.server.fastmcp import FastMCP
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    # host 0.0.0.0: reached as http://notes:8000/mcp on the stack's network
    # (FastMCP would turn on DNS-rebinding checks for a loopback host and
    # refuse the proxy's Host header).
    mcp = FastMCP("notes", host="0.0.0.0", port=8000)

    # Each tool answers one JSON object: mcpo turns a list into one item per
    # element and unwraps a single one, so a list would change shape.
    @mcp.tool()
    def add_note(title: str, text: str) -> dict:
        """Save a note under a title; a note with the same title is replaced."""
        return notes.add(title, text)

    @mcp.tool()
    def list_notes() -> dict:
        """The titles of all notes, with their length and when they last changed."""
        return notes.list()

    @mcp.tool()
    def read_note(title: str) -> dict:
        """The text of the note with this title."""
        return notes.read(title)

    @mcp.tool()
    def delete_note(title: str) -> dict:
        """Delete the note with this title."""
        return notes.delete(title)

    @mcp.custom_route("/health", methods=["GET"])
    async def health(request: Request) -> JSONResponse:
        # Serving means the notes folder can be written to.
        ok = notes.folder.is_dir() and os.access(notes.folder, os.W_OK)
        return JSONResponse(
            {"status": "ok" if ok else "notes folder not writable"}, 200 if ok else 503
        )

    return mcp


def main() -> None:
    folder = notes_dir()
    folder.mkdir(parents=True, exist_ok=True)
    build_server(Notes(folder)).run(transport="streamable-http")


if __name__ == "__main__":
    main()
