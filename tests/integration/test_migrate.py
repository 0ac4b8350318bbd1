"""Schema versions on a live engine: an installation from before them is refused,
then migrated after a real backup; a config from a newer release is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from .conftest import Installation

pytestmark = pytest.mark.docker


def files_under(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file with its bytes and modification time."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def as_before_schema_versions(inst: Installation) -> tuple[Path, Path]:
    """config.yaml and state.json as the releases before schema versions wrote them."""
    home = Path(inst.env["OLLAMA_STACK_HOME"])
    config, state = home / "config.yaml", home / "state" / "state.json"
    text = config.read_text()
    assert "schema: 2\n" in text  # what this release writes
    config.write_text(
        text.replace("schema: 2\n", "") + "start_timeout: 120.5  # the user's own note\n"
    )
    document = json.loads(state.read_text())
    del document["schema"]
    state.write_text(json.dumps(document, indent=2, sort_keys=True))
    return config, state


def one_error_line(result, code: int = 2) -> str:
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_an_old_installation_is_refused_then_migrated_after_a_backup(make_installation) -> None:
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    config, state = as_before_schema_versions(inst)
    settings = yaml.safe_load(config.read_text())
    home = Path(inst.env["OLLAMA_STACK_HOME"])

    line = one_error_line(inst.cli("stack.status"))
    assert f"{config} has schema 1, older than this ollama-stack's (schema 2)" in line
    assert "stack.migrate" in line

    before = files_under(home)
    dry = inst.ok("stack.migrate", "--dry-run")
    assert f"{config}: schema 1 → 2" in dry.stdout and f"{state}: schema 1 → 2" in dry.stdout
    assert files_under(home) == before  # bytes and modification times
    assert not (home / "backups").exists()  # no backup either

    done = inst.ok("stack.migrate", "--yes")
    (backup,) = json.loads(inst.ok("backup.list", "--json").stdout)
    assert backup["complete"] and backup["description"] == "before stack.migrate"
    assert f"backup first: {backup['id']}" in done.stdout
    inst.ok("backup.verify", backup["id"])
    # the backup holds config.yaml as it was; the installation has it migrated
    manifest = json.loads(
        (home / "backups" / "snapshots" / backup["id"] / "manifest.json").read_text()
    )
    taken = {f["name"]: f["sha256"] for f in manifest["files"]}
    assert taken["config.yaml"] == hashlib.sha256(before["config.yaml"][0]).hexdigest()

    migrated = yaml.safe_load(config.read_text())
    assert migrated == {**settings, "schema": 2}
    assert "start_timeout: 120.5  # the user's own note" in config.read_text()
    assert json.loads(state.read_text())["schema"] == 2
    assert {s["health"] for s in inst.status()["services"]} == {"healthy"}
    again = inst.ok("stack.migrate")
    assert "nothing to migrate" in again.stdout


def test_a_config_from_a_newer_release_is_refused_naming_both_versions(make_installation) -> None:
    inst = make_installation()
    config = Path(inst.env["OLLAMA_STACK_HOME"]) / "config.yaml"
    config.write_text(config.read_text().replace("schema: 2\n", "schema: 99\n"))
    before = config.read_bytes()
    for task in (("stack.status",), ("stack.start",), ("stack.migrate", "--dry-run")):
        line = one_error_line(inst.cli(*task))
        assert f"{config} has schema 99, newer than this ollama-stack understands" in line, task
        assert "(schema 2)" in line and "upgrade ollama-stack" in line, task
    assert config.read_bytes() == before
    assert inst.containers() == []  # nothing was started
