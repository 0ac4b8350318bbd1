"""stack/config/memo.py: judged settings and manifests kept for the queries.

A query after a recording task judges nothing (and loads no pydantic); any
change to an input of a judgement is judged again; read-only tasks write no
memo; a memo that does not read, or that other code made, is empty.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from invoke.config import Config

from ollama_stack.common.errors import ConfigError
from ollama_stack.extensions import manifest as manifests
from ollama_stack.extensions.registry import activate_from_config
from ollama_stack.stack import config
from ollama_stack.stack.config import settings as model
from ollama_stack.stack.runtime import Runtime

USER_EXTENSION = """\
name: clock
description: {description}
version: "1"
kind: stdio
server: {{transport: stdio, command: python3}}
"""


class Judgements:
    """How often pydantic judged settings and manifests (the memo's misses)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.settings = self.manifests = 0
        judge_settings, judge_manifest = model.validate_merged, manifests._judged

        def settings(*args: Any) -> Any:
            self.settings += 1
            return judge_settings(*args)

        def manifest(*args: Any) -> Any:
            self.manifests += 1
            return judge_manifest(*args)

        monkeypatch.setattr(model, "validate_merged", settings)
        monkeypatch.setattr(manifests, "_judged", manifest)

    def taken(self) -> tuple[int, int]:
        made = (self.settings, self.manifests)
        self.settings = self.manifests = 0
        return made


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch) -> Judgements:
    return Judgements(monkeypatch)


def opened(
    record: bool = False,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    base: Config | None = None,
) -> Runtime:
    return Runtime.open(
        base=base,
        flags=flags,
        environ=os.environ if environ is None else environ,
        extend=lambda raw, memo: activate_from_config(raw, memo)[1],
        record=record,
    )


def write_config(paths: config.InstallPaths, text: str) -> None:
    paths.config_file.write_text(f"schema: {config.CONFIG_SCHEMA}\n{text}")


@pytest.fixture
def installed(local_paths: config.InstallPaths) -> config.InstallPaths:
    config.install(local_paths, {"platform": "cpu", "ports": {"webui": 3000}})
    return local_paths


def test_a_query_after_a_recording_task_judges_nothing_and_reads_the_same(installed, judged):
    recorded = opened(record=True)
    assert judged.taken() == (1, 3)  # the settings and the three shipped manifests
    assert installed.memo_file.stat().st_mode & 0o777 == 0o600  # as private as secrets.env
    again = opened()
    assert judged.taken() == (0, 0)
    assert again.settings == recorded.settings and again.settings.ports["webui"] == 3000
    assert isinstance(again.settings, config.Settings)


def test_read_only_opens_write_no_memo(installed, judged):
    opened()
    assert not installed.memo_file.exists()
    opened(record=True)
    written = installed.memo_file.read_bytes()
    write_config(installed, "platform: cpu\nports: {webui: 3001}\n")
    assert opened().settings.ports["webui"] == 3001  # judged again, and not kept
    assert installed.memo_file.read_bytes() == written


def _config_yaml(paths: config.InstallPaths) -> dict[str, Any]:
    write_config(paths, "platform: cpu\nports: {webui: 3001}\n")
    return {}


CHANGES = {
    "config.yaml": _config_yaml,
    "environment": lambda paths: {"environ": {**os.environ, "OLLAMA_STACK_PORTS_WEBUI": "3001"}},
    "flags": lambda paths: {"flags": {"ports": {"webui": 3001}}},
    "invoke.yaml": lambda paths: {"base": _invoke_layer({"ports": {"webui": 3001}})},
}


def _invoke_layer(section: dict[str, Any]) -> Config:
    base = Config(overrides=None, lazy=True)
    base.load_collection({config.SECTION: section})
    return base


@pytest.mark.parametrize("where", list(CHANGES))
def test_a_setting_changed_at_any_level_is_judged_again(installed, judged, where):
    """Only that level changes between the recording and the query."""
    write_config(installed, "platform: cpu\n")  # the port from the defaults: any level may set it
    recorded = opened(record=True).settings.ports["webui"]
    judged.taken()
    rt = opened(**CHANGES[where](installed))
    assert (recorded, rt.settings.ports["webui"]) == (8080, 3001)
    assert judged.taken() == (1, 0)


def test_a_reordered_file_is_judged_again_in_its_new_order(installed, judged):
    """The order reaches mcpo's config: what a fresh judgement gives, the memo gives."""
    write_config(installed, "mcp_servers: {zeta: {command: z}, alpha: {command: a}}\n")
    assert list(opened(record=True).settings.mcp_servers) == ["zeta", "alpha"]
    write_config(installed, "mcp_servers: {alpha: {command: a}, zeta: {command: z}}\n")
    judged.taken()
    assert list(opened(record=True).settings.mcp_servers) == ["alpha", "zeta"]
    assert judged.taken() == (1, 0)


def test_a_changed_manifest_is_judged_again(installed, judged, tmp_path):
    folder = tmp_path / "mine" / "clock"
    folder.mkdir(parents=True)
    (folder / "extension.yaml").write_text(USER_EXTENSION.format(description="Old"))
    config.update_user_config(installed, {"extensions": {"paths": [str(folder.parent)]}})
    opened(record=True)
    judged.taken()
    (folder / "extension.yaml").write_text(USER_EXTENSION.format(description="New"))
    found, _ = activate_from_config(opened().configured.to_json(), config.read_memo(installed))
    assert found.extensions["clock"].manifest.description == "New"
    assert judged.taken()[1] == 2  # while opening, then here again (that open kept nothing)


def test_a_bad_setting_is_refused_whatever_the_memo_holds(installed):
    opened(record=True)
    write_config(installed, "platform: cpu\nports: {webui: 0}\n")
    with pytest.raises(ConfigError, match=r"ports\.webui=0"):
        opened()


def test_a_document_from_the_memo_keeps_the_order_of_a_fresh_one(installed):
    """Its order reaches mcpo's config and the proxy's config hash: a start
    after a start must not recreate the proxy."""
    servers = {
        "zeta": {"command": "uvx", "args": ["zeta-mcp"], "env": {"B": "1", "A": "2"}},
        "alpha": {"type": "sse", "url": "http://x:1/sse", "headers": {"Z": "1", "Y": "2"}},
    }
    config.update_user_config(installed, {"mcp_servers": servers})
    fresh = opened(record=True).settings
    kept = opened().settings
    assert json.dumps(kept.to_json()) == json.dumps(fresh.to_json())
    assert list(kept.mcp_servers) == ["zeta", "alpha"]
    assert list(kept.mcp_servers["zeta"]) == ["command", "args", "env"]


@pytest.mark.parametrize(
    "text, said",
    [
        ("hosts: {2024-01-01: [local]}", "bad config: hosts"),
        ("images: {ollama: x, 1: foo}", "bad config: images.1=1"),
        ("project: 2024-01-01", "bad config: project=datetime.date(2024, 1, 1)"),
    ],
)
def test_a_value_json_cannot_hold_exactly_is_judged_every_time(installed, text, said):
    """Never a traceback, never found under the hash of a value it only looks like."""
    write_config(installed, 'platform: cpu\nproject: "2024-01-01"\n')
    opened(record=True)  # the quoted project, kept
    write_config(installed, f"platform: cpu\n{text}\n")
    with pytest.raises(ConfigError) as refused:
        opened(record=True)
    assert refused.value.message.startswith(said)


def test_a_memo_that_cannot_be_written_does_not_stop_the_task(installed, monkeypatch):
    from ollama_stack.stack.config import files

    def full(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(files, "_write_private", full)
    assert opened(record=True).settings.ports["webui"] == 3000
    assert not installed.memo_file.exists()


@pytest.mark.parametrize(
    "memo",
    [
        b"\xff\xfe{",
        "not json",
        json.dumps({"code": "made by other code", "documents": {}}),
        json.dumps({"code": None, "documents": []}),
    ],
)
def test_a_memo_that_does_not_read_or_other_code_made_is_empty(installed, judged, memo):
    opened(record=True)
    kept = json.loads(installed.memo_file.read_text())
    if isinstance(memo, bytes):
        installed.memo_file.write_bytes(memo)
    else:
        installed.memo_file.write_text(memo)
    assert opened().settings.ports["webui"] == 3000
    assert judged.taken() == (2, 6)
    # Documents kept under another code's fingerprint are not trusted.
    if isinstance(memo, str) and memo.startswith("{"):
        kept["code"] = "another release"
        installed.memo_file.write_text(json.dumps(kept))
        opened()
        assert judged.taken() == (1, 3)


def test_a_memo_entry_that_is_no_document_is_judged_again(installed, judged):
    opened(record=True)
    kept = json.loads(installed.memo_file.read_text())
    kept["documents"] = {key: [] for key in kept["documents"]}  # this code's, but no documents
    installed.memo_file.write_text(json.dumps(kept))
    judged.taken()
    assert opened().settings.ports["webui"] == 3000
    assert judged.taken() == (1, 3)


def test_a_query_after_a_recording_task_loads_no_pydantic(installed):
    """In a fresh interpreter, as `inv stack.status` runs."""
    opened(record=True)
    program = (
        "import sys; import ollama_stack.tasks.program, ollama_stack.stack.lifecycle; "
        "import ollama_stack.stack.display, ollama_stack.extensions.manage; "
        "from ollama_stack.extensions.registry import activate_from_config; "
        "from ollama_stack.stack.runtime import Runtime; "
        "rt = Runtime.open(extend=lambda raw, memo: activate_from_config(raw, memo)[1]); "
        "print(rt.settings.ports['webui'], sorted(m for m in sys.modules if 'pydantic' in m))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=root,
        env=dict(os.environ),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(maxsplit=1) == ["3000", "[]\n"]
