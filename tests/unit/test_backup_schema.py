"""backups/schema.py: the schema revision a backup's data is at, and what an image ships."""

from __future__ import annotations

import contextlib
import io
import shutil
import sqlite3
import tarfile
from pathlib import Path

import pytest

from ollama_stack.backups import schema
from ollama_stack.backups.manifest import Entry, VolumeRecord
from ollama_stack.backups.store import Store
from ollama_stack.common.errors import DockerFailed
from ollama_stack.compose.client import ComposeProject
from ollama_stack.stack.services import CATALOG

WEBUI = CATALOG["webui"]
SCHEMA = WEBUI.data_schema
assert SCHEMA is not None


@pytest.fixture
def store(tmp_path: Path) -> Store:
    made = Store(tmp_path / "store")
    made.prepare()
    return made


def busy_database(folder: Path, revision: str) -> sqlite3.Connection:
    """A database whose every row is still in its write-ahead log, as Open
    WebUI leaves it; the connection is returned open (closing checkpoints)."""
    db = sqlite3.connect(folder / "webui.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
    db.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
    return db


def stored(store: Store, path: Path, name: str) -> Entry:
    with path.open("rb") as content:
        digest, size, _ = store.put(content)
    return Entry(path=name, type="file", mode=0o644, uid=0, gid=0, size=size, sha256=digest)


def webui_volume(*entries: Entry) -> VolumeRecord:
    return VolumeRecord(service="webui", name="webui_data", mount="/data", entries=list(entries))


def test_the_revision_is_read_from_the_database_and_its_write_ahead_log(store, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    db = busy_database(live, "4ace53fd72c8")
    try:
        database = stored(store, live / "webui.db", "webui.db")
        log = stored(store, live / "webui.db-wal", "webui.db-wal")
    finally:
        db.close()
    assert schema.data_revision(store, webui_volume(database, log), SCHEMA) == "4ace53fd72c8"
    # The .db alone does not have it yet: the log is what holds the commits.
    assert schema.data_revision(store, webui_volume(database), SCHEMA) == ""
    assert list((store.root / "tmp").iterdir()) == []  # the scratch copy is gone


def test_no_database_or_not_an_alembic_one_says_nothing(store, tmp_path):
    assert schema.data_revision(store, webui_volume(), SCHEMA) == ""
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    assert schema.data_revision(store, webui_volume(stored(store, other, "webui.db")), SCHEMA) == ""
    text = tmp_path / "text"
    text.write_text("not sqlite at all")
    assert schema.data_revision(store, webui_volume(stored(store, text, "webui.db")), SCHEMA) == ""
    assert list((store.root / "tmp").iterdir()) == []


def tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def opener_of(paths: dict[str, dict[str, bytes]]):
    """Stands in for docker cp: a path's tar, or the error docker cp gives."""

    @contextlib.contextmanager
    def opener(path: str):
        if path not in paths:
            raise DockerFailed(f"Could not find the file {path} in container")
        yield io.BytesIO(tar_of(paths[path]))

    return opener


def test_an_image_says_its_version_and_the_revisions_it_ships():
    opener = opener_of(
        {
            "/app/package.json": {"package.json": b'{"name": "open-webui", "version": "0.6.5"}'},
            SCHEMA.migrations: {
                "versions/7e5b5dc7342b_init.py": b'"""init"""\nrevision = "7e5b5dc7342b"\n',
                "versions/ca81bd47c050_add.py": b"revision: str = 'ca81bd47c050'\n",
                "versions/__pycache__/x.pyc": b'revision = "notthis"',
                "versions/README": b'revision = "northis"',
            },
        }
    )
    facts = schema._facts(WEBUI, opener)
    assert facts == schema.ImageFacts("0.6.5", frozenset({"7e5b5dc7342b", "ca81bd47c050"}))


def test_an_image_that_does_not_say_gives_unknown_not_an_error():
    assert schema._facts(WEBUI, opener_of({})) == schema.ImageFacts()
    broken = opener_of({"/app/package.json": {"package.json": b"{not json"}})
    assert schema._facts(WEBUI, broken).version == ""
    assert schema._facts(CATALOG["ollama"], opener_of({})) == schema.ImageFacts()


def test_an_image_is_read_through_a_container_never_started_and_always_removed(monkeypatch):
    project = ComposeProject(project="p", files=[])
    ran: list[list[str]] = []
    monkeypatch.setattr(ComposeProject, "_docker_argv", lambda self: ["docker"])
    monkeypatch.setattr(ComposeProject, "_run", lambda self, argv: ran.append(argv) or "")

    @contextlib.contextmanager
    def copy_out(self, container: str, path: str, *, contents: bool = True):
        assert (path, contents) == ("/app/package.json", False)
        ran.append(["cp", container])
        yield io.BytesIO()

    monkeypatch.setattr(ComposeProject, "copy_out", copy_out)
    with pytest.raises(RuntimeError), project.copy_out_of_image("w/w:1", "/app/package.json"):
        raise RuntimeError("the reader failed")
    create, cp, remove = ran
    name = create[create.index("--name") + 1]
    assert name.startswith("p-scratch-")
    assert create == [
        "docker",
        *("create", "--pull", "never", "--name", name, "--network", "none"),
        *("--label", "io.ollama-stack.scratch=p"),
        *("--entrypoint", "/ollama-stack-never-started", "--", "w/w:1"),
    ]
    assert cp == ["cp", name]
    assert remove == ["docker", "rm", "--force", name]


def test_the_scratch_copy_lives_in_the_store_tmp_named_for_the_dead_writer_sweep(store):
    with schema._scratch(store) as copy:
        assert copy.parent == store.root / "tmp"
        assert copy.name.split("-", 1)[0].isdigit()
        copy.write_bytes(b"x")
        Path(f"{copy}-wal").write_bytes(b"y")
    assert list((store.root / "tmp").iterdir()) == []
    shutil.rmtree(store.root)
