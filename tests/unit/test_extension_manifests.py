"""The shipped extension folders, the manifest reader's one-line refusals, and
the notes server's storage (imported without the `mcp` SDK)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

import ollama_stack.extensions
from ollama_stack.common.errors import ConfigError
from ollama_stack.extensions.manifest import MANIFEST, read_manifest

EXTENSIONS = Path(ollama_stack.extensions.__file__).parent
SHIPPED = sorted(p.parent.name for p in EXTENSIONS.glob(f"*/{MANIFEST}"))


def test_the_three_planned_extensions_ship() -> None:
    assert {"time", "notes", "dia_tts"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_manifest_reads_and_is_named_after_its_folder(name: str) -> None:
    manifest = read_manifest(EXTENSIONS / name)
    assert manifest.name == name


@pytest.mark.parametrize("name", SHIPPED)
def test_container_extension_compose_matches_its_manifest(name: str) -> None:
    """What the runtime relies on: service = name, the labels, the port and the
    volumes the manifest declares, each labelled as this installation's data."""
    manifest = read_manifest(EXTENSIONS / name)
    server = manifest.server
    if not manifest.in_container:
        assert not (EXTENSIONS / name / "compose.yml").exists()
        return
    compose = yaml.safe_load((EXTENSIONS / name / "compose.yml").read_text())
    service = compose["services"][name]
    assert service["labels"]["io.ollama-stack.service"] == name
    assert "io.ollama-stack.installation" in service["labels"]
    prefix = name.upper()
    assert service["image"].startswith(f"${{{prefix}_IMAGE")
    assert service["ports"] == [
        f"${{OLLAMA_STACK_BIND:-127.0.0.1}}:${{{prefix}_PORT:-{server.host_port}}}:{server.port}"
    ]
    mounts = {f"{v.name}:{v.mount}" for v in server.volumes}
    assert set(service["volumes"]) == mounts
    for volume in server.volumes:
        labels = compose["volumes"][volume.name]["labels"]
        assert labels["io.ollama-stack.data"] == "true"
        assert "io.ollama-stack.installation" in labels
    assert service["deploy"]["resources"]["limits"]["cpus"].startswith(f"${{{prefix}_CPUS")


def test_notes_is_built_and_time_runs_in_the_proxy() -> None:
    notes = read_manifest(EXTENSIONS / "notes")
    assert notes.in_container and notes.server.build
    assert (EXTENSIONS / "notes" / "Dockerfile").read_text().count("FROM ${BASE}") == 1
    time = read_manifest(EXTENSIONS / "time")
    assert time.kind == "stdio"
    assert time.server.args[:2] == ["-m", "mcp_server_time"]


def test_dia_tts_needs_nvidia_and_a_token_kept_out_of_its_environment() -> None:
    manifest = read_manifest(EXTENSIONS / "dia_tts")
    assert manifest.platforms == ["nvidia"]
    assert manifest.requires.gpu == "nvidia"
    assert manifest.requires.memory_mb >= 8192
    assert manifest.requires.secrets == ["HF_TOKEN"]
    compose = yaml.safe_load((EXTENSIONS / "dia_tts" / "compose.yml").read_text())
    service = compose["services"]["dia_tts"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    # The token travels as a compose secret, never as an environment value.
    assert "HF_TOKEN" not in service["environment"]
    assert compose["secrets"]["hf_token"] == {"environment": "HF_TOKEN"}


# -- read_manifest's refusals: one line naming the file and the field ---------------

GOOD = {
    "name": "demo",
    "description": "a demo",
    "version": "1",
    "kind": "container",
    "server": {"transport": "streamable-http", "image": "demo:1", "port": 8000, "host_port": 9000},
}


def _folder(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / MANIFEST).write_text(text)
    return folder


def _refusal(folder: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        read_manifest(folder)
    line = str(caught.value)
    assert "\n" not in line
    assert str(folder / MANIFEST) in line
    return line


def test_a_good_manifest_reads(tmp_path: Path) -> None:
    assert read_manifest(_folder(tmp_path, "demo", yaml.safe_dump(GOOD))).name == "demo"


def test_bad_field_names_the_file_and_the_field(tmp_path: Path) -> None:
    bad = {**GOOD, "server": {**GOOD["server"], "port": "high"}}
    line = _refusal(_folder(tmp_path, "demo", yaml.safe_dump(bad)))
    assert "server." in line and "port" in line


def test_unknown_field_is_named(tmp_path: Path) -> None:
    line = _refusal(_folder(tmp_path, "demo", yaml.safe_dump({**GOOD, "colour": "red"})))
    assert "colour" in line


def test_kind_must_match_the_transport(tmp_path: Path) -> None:
    line = _refusal(_folder(tmp_path, "demo", yaml.safe_dump({**GOOD, "kind": "stdio"})))
    assert "kind stdio" in line and "streamable-http" in line


def test_name_must_be_the_folder_name(tmp_path: Path) -> None:
    line = _refusal(_folder(tmp_path, "other", yaml.safe_dump(GOOD)))
    assert "'demo'" in line and "'other'" in line


@pytest.mark.parametrize("name", ["../x", "Demo", "x/y", "-rf", ""])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    line = _refusal(_folder(tmp_path, "demo", yaml.safe_dump({**GOOD, "name": name})))
    assert "name" in line


def test_bad_yaml_gives_the_line(tmp_path: Path) -> None:
    line = _refusal(_folder(tmp_path, "demo", "name: demo\nserver: [unclosed\n"))
    assert "malformed YAML" in line and " line 3" in line


def test_missing_manifest(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    _refusal(tmp_path / "demo")


# -- the notes server's storage -------------------------------------------------------


@pytest.fixture(scope="module")
def notes_server() -> ModuleType:
    """extensions/notes/server.py, imported as a file: it needs no `mcp` SDK to load."""
    spec = importlib.util.spec_from_file_location(
        "notes_server", EXTENSIONS / "notes" / "server.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    had_mcp = "mcp" in sys.modules
    spec.loader.exec_module(module)
    assert had_mcp or "mcp" not in sys.modules
    return module


@pytest.fixture
def notes_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    "title", ["../x", "../../etc/passwd", "/etc/passwd", "..", ".", ".hidden", "-rf", "a\\b"]
)
def test_a_title_never_names_a_path_outside_the_folder(
    notes_server: ModuleType, notes_dir: Path, title: str
) -> None:
    name = notes_server.note_filename(title)
    assert "/" not in name and "\\" not in name and ".." not in name
    assert not name.startswith((".", "-"))
    notes = notes_server.Notes(notes_dir)
    notes.add(title, "text")
    assert [p.name for p in notes_dir.parent.rglob("*.json")] == [name]
    assert notes.read(title)["title"] == title
    assert notes.list()["notes"][0]["title"] == title


@pytest.mark.parametrize("title", ["", "   ", "\t\n", "a\nb", "x" * 201])
def test_empty_or_odd_titles_are_refused(
    notes_server: ModuleType, notes_dir: Path, title: str
) -> None:
    with pytest.raises(notes_server.NoteError):
        notes_server.Notes(notes_dir).add(title, "text")
    assert list(notes_dir.iterdir()) == []


def test_unicode_titles_are_kept_exactly(notes_server: ModuleType, notes_dir: Path) -> None:
    notes = notes_server.Notes(notes_dir)
    notes.add("Ünïcode ☃ list", "eggs")
    notes.add("Unicode list", "milk")  # slugs alike, stays apart
    notes.add("日本語", "three")  # no ASCII at all
    titles = [n["title"] for n in notes.list()["notes"]]
    assert sorted(titles) == sorted(["Ünïcode ☃ list", "Unicode list", "日本語"])
    assert notes.read("Ünïcode ☃ list")["text"] == "eggs"
    assert notes.read("Unicode list")["text"] == "milk"
    # The same title typed decomposed (NFD) is the same note.
    assert notes.read("U\u0308ni\u0308code ☃ list")["text"] == "eggs"


def test_add_replaces_read_and_delete(notes_server: ModuleType, notes_dir: Path) -> None:
    notes = notes_server.Notes(notes_dir)
    assert notes.add(" shopping ", "eggs") == {
        "title": "shopping",
        "saved": True,
        "replaced": False,
    }
    assert notes.add("shopping", "milk")["replaced"] is True
    assert notes.read("shopping")["text"] == "milk"
    assert notes.list()["count"] == 1
    assert notes.delete("shopping") == {"title": "shopping", "deleted": True}
    assert notes.list() == {"notes": [], "count": 0}
    with pytest.raises(notes_server.NoteError, match="no note titled"):
        notes.read("shopping")
    with pytest.raises(notes_server.NoteError, match="no note titled"):
        notes.delete("shopping")


def test_too_long_text_is_refused(notes_server: ModuleType, notes_dir: Path) -> None:
    with pytest.raises(notes_server.NoteError):
        notes_server.Notes(notes_dir).add("big", "x" * (notes_server.MAX_TEXT + 1))


def test_a_failed_write_keeps_the_old_note_and_leaves_no_temp_file(
    notes_server: ModuleType, notes_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = notes_server.Notes(notes_dir)
    notes.add("plan", "old")
    before = sorted(notes_dir.iterdir())

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(notes_server.os, "replace", broken_replace)
    with pytest.raises(OSError):
        notes.add("plan", "new")
    monkeypatch.setattr(notes_server.os, "replace", os.replace)
    assert sorted(notes_dir.iterdir()) == before
    assert notes.read("plan")["text"] == "old"


def test_list_skips_unfinished_writes_and_foreign_files(
    notes_server: ModuleType, notes_dir: Path
) -> None:
    notes = notes_server.Notes(notes_dir)
    notes.add("kept", "text")
    (notes_dir / ".tmp-abc.json").write_text('{"title": "half", "text": "x"}')
    (notes_dir / "junk.json").write_text("not json")
    (notes_dir / "list.json").write_text("[1, 2]")
    assert [n["title"] for n in notes.list()["notes"]] == ["kept"]
