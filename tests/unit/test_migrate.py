"""stack/config/migrate.py: schema versions, the steps between them, refusals, the migration."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from ollama_stack.common.errors import ConfigError, ExitCode, StackError
from ollama_stack.stack import config
from ollama_stack.stack.config import CONFIG_SCHEMA, InstallPaths, load_settings, migrate

# A first-release config.yaml as a user keeps it: comments, every kind of value.
V1_CONFIG = """\
# ollama-stack settings chosen for this installation (README: Configuration)
# my own note: the GPU box
project: lab
bind: 0.0.0.0
platform: cpu
ports:
  webui: 3000
images:
  webui: mine/webui:1.2
services:
  ollama:
    type: native-api
    url: http://127.0.0.1:11434
limits:
  webui:
    cpus: 1.5
start_timeout: 120.5
webui:
  openai_api: true
  offline: false
backup:
  store: /mnt/nas/backups
mcp_servers:
  time:
    command: mcp-server-time
    args: [--local-timezone, Europe/Berlin]
    env: {TZ: Europe/Berlin}
  search:
    type: streamable-http
    url: https://search.example/mcp/
    headers: {Authorization: Bearer t0ken}
"""
V1_STATE = {
    "platform": "cpu",
    "platform_reason": "set by --platform",
    "updates": [{"id": "20260101T000000", "status": "applied", "services": {}}],
}


def old_installation(paths: InstallPaths, config_text: str = V1_CONFIG) -> None:
    """An installation as the releases before schema versions left it."""
    if not paths.installed:
        config.install(paths, {})
    paths.config_file.write_text(config_text)
    paths.state_file.parent.mkdir(parents=True, exist_ok=True)
    paths.state_file.write_text(json.dumps(V1_STATE, indent=2, sort_keys=True))


def files_of(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file with its bytes, mtime and mode."""
    return {
        str(p.relative_to(root)): (
            p.read_bytes(),
            p.stat().st_mtime_ns,
            stat.S_IMODE(p.stat().st_mode),
        )
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def refusal(action) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        action()
    assert info.value.code == ExitCode.CONFIG == 2
    assert "\n" not in str(info.value)
    return info.value


# -- the steps ------------------------------------------------------------------------------


def test_there_is_one_step_per_version_for_each_file():
    assert CONFIG_SCHEMA == 2
    assert len(migrate.CONFIG_STEPS) == len(migrate.STATE_STEPS) == CONFIG_SCHEMA - 1


@pytest.mark.parametrize("steps", [migrate.CONFIG_STEPS, migrate.STATE_STEPS])
def test_upgrade_from_1_adds_the_schema_and_keeps_every_value(steps):
    document = yaml.safe_load(V1_CONFIG) if steps is migrate.CONFIG_STEPS else V1_STATE
    before = json.dumps(document, sort_keys=True)
    upgraded, notes = migrate.upgrade(document, steps)
    assert upgraded == {**document, "schema": 2}
    assert notes == ["add schema: 2"]
    assert json.dumps(document, sort_keys=True) == before  # the input is left alone


def test_upgrade_of_a_current_document_changes_nothing():
    upgraded, notes = migrate.upgrade({"schema": 2, "project": "lab"}, migrate.CONFIG_STEPS)
    assert (upgraded, notes) == ({"schema": 2, "project": "lab"}, [])


def test_a_step_that_forgets_the_version_is_a_bug_not_the_users(monkeypatch):
    monkeypatch.setattr(migrate, "CONFIG_STEPS", (lambda document: ["did nothing"],))
    with pytest.raises(RuntimeError, match="did not set schema 2"):
        migrate.upgrade({}, migrate.CONFIG_STEPS)


@pytest.mark.parametrize(
    ("document", "version"), [({}, 1), ({"schema": 1}, 1), ({"schema": 2}, 2), ({"schema": 7}, 7)]
)
def test_schema_of(document, version):
    assert migrate.schema_of(Path("config.yaml"), document) == version


@pytest.mark.parametrize("value", ["two", True, 0, -1, 1.5, None, [2]])
def test_a_schema_that_is_not_a_version_is_one_line(value):
    error = refusal(lambda: migrate.schema_of(Path("/h/config.yaml"), {"schema": value}))
    assert error.message == f"/h/config.yaml: schema {value!r} is not a version number"


# -- every reader refuses another schema ------------------------------------------------------


def write_config(paths: InstallPaths, text: str) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text(text)


def test_a_newer_config_is_refused_naming_the_file_both_versions_and_the_remedy(local_paths):
    write_config(local_paths, "schema: 99\nproject: lab\n")
    error = refusal(lambda: load_settings(local_paths, environ={}))
    assert error.message == (
        f"{local_paths.config_file} has schema 99, newer than this ollama-stack understands "
        "(schema 2)"
    )
    assert error.remedy.startswith("upgrade ollama-stack")
    # neither migrating nor uninstalling reads it
    refusal(lambda: config.read_config(local_paths, older_ok=True))
    refusal(lambda: migrate.plan(local_paths))


def test_a_newer_state_file_is_refused_too(local_paths):
    config.write_state(local_paths, {"platform": "cpu"})
    local_paths.state_file.write_text('{"schema": 3, "platform": "cpu"}')
    error = refusal(lambda: config.read_state(local_paths))
    assert error.message.startswith(f"{local_paths.state_file} has schema 3, newer")
    refusal(lambda: config.read_state(local_paths, older_ok=True))
    refusal(lambda: config.write_state(local_paths, {"platform": "nvidia"}))


def test_an_older_config_is_refused_with_the_migration_as_remedy(local_paths):
    write_config(local_paths, "project: lab\n")  # no schema: the first releases
    error = refusal(lambda: load_settings(local_paths, environ={}))
    assert error.message == (
        f"{local_paths.config_file} has schema 1, older than this ollama-stack's (schema 2)"
    )
    assert error.remedy == "run `inv stack.migrate` (add --dry-run to see the changes first)"


def test_an_older_state_file_is_refused_unless_the_caller_migrates(local_paths):
    local_paths.state_file.parent.mkdir(parents=True)
    local_paths.state_file.write_text(json.dumps(V1_STATE))
    error = refusal(lambda: config.read_state(local_paths))
    assert "inv stack.migrate" in error.remedy
    assert config.read_state(local_paths, older_ok=True) == V1_STATE  # as migrated, in memory


def test_a_remote_installations_remedy_names_the_remote_flag(stack_home):
    remote = InstallPaths.for_target("ops@box:2222")
    write_config(remote, "project: lab\n")
    assert (
        "stack.migrate --remote HOST`" in refusal(lambda: load_settings(remote, environ={})).remedy
    )
    write_config(InstallPaths(stack_home / "remotes"), "project: lab\n")  # not a host's directory
    local = refusal(lambda: load_settings(InstallPaths(stack_home / "remotes"), environ={}))
    assert "--remote" not in local.remedy


def test_an_older_config_is_read_as_migrated_where_that_is_allowed(local_paths):
    old_installation(local_paths)
    layered = config.stack_config(local_paths, environ={}, older_ok=True)
    settings = layered.settings()
    assert (settings.project, settings.ports["webui"], settings.limits["webui"].cpus) == (
        "lab",
        3000,
        1.5,
    )


def test_what_this_release_writes_carries_the_schema(local_paths):
    config.install(local_paths, {"project": "lab"})
    assert yaml.safe_load(local_paths.config_file.read_text())["schema"] == CONFIG_SCHEMA
    config.update_user_config(local_paths, {"bind": "::1"})
    assert yaml.safe_load(local_paths.config_file.read_text())["schema"] == CONFIG_SCHEMA
    config.write_state(local_paths, {"platform": "cpu"})
    assert json.loads(local_paths.state_file.read_text())["schema"] == CONFIG_SCHEMA
    # ...and readers hand out the settings and the state without it
    assert "schema" not in config.read_config(local_paths)
    assert config.read_state(local_paths) == {"platform": "cpu"}
    assert load_settings(local_paths, environ={}).bind == "::1"


def test_schema_is_not_a_setting_anywhere_else(local_paths):
    with pytest.raises(ConfigError, match="unknown setting schema"):
        load_settings(local_paths, invoke_layer={"schema": 2}, environ={})
    assert "schema" not in config.env_layer({"OLLAMA_STACK_SCHEMA": "2"})


def test_install_over_an_older_config_is_refused(local_paths):
    old_installation(local_paths)
    error = refusal(lambda: config.install(local_paths, {}, force=True))
    assert "inv stack.migrate" in error.remedy


# -- planning: reads only ---------------------------------------------------------------------


def test_plan_lists_both_files_and_writes_nothing(local_paths):
    old_installation(local_paths)
    before = files_of(local_paths.root)
    plan = migrate.plan(local_paths)
    assert plan.needed
    assert [(f.path, f.schema, f.changes) for f in plan.files] == [
        (local_paths.config_file, 1, ["add schema: 2"]),
        (local_paths.state_file, 1, ["add schema: 2"]),
    ]
    assert files_of(local_paths.root) == before
    document = plan.to_json()
    assert document["files"][0] == {
        "path": str(local_paths.config_file),
        "from": 1,
        "to": 2,
        "changes": ["add schema: 2"],
    }
    assert "t0ken" not in json.dumps(document)  # what changes, never the values


def test_plan_of_a_current_installation_is_empty(local_paths):
    config.install(local_paths, {})
    config.write_state(local_paths, {"platform": "cpu"})
    assert not migrate.plan(local_paths).needed
    assert not migrate.plan(InstallPaths(local_paths.root / "nothing-here")).needed


# -- applying --------------------------------------------------------------------------------


def test_migrate_keeps_every_value_the_comments_and_each_files_mode(local_paths):
    old_installation(local_paths)
    local_paths.config_file.chmod(0o600)  # the user keeps MCP tokens in it
    secrets = files_of(local_paths.root)["secrets.env"]
    settings_before = yaml.safe_load(V1_CONFIG)
    migrated = migrate.apply(local_paths, migrate.plan(local_paths), backup=None)
    assert migrated.backup == "skipped (--no-backup)"
    assert yaml.safe_load(local_paths.config_file.read_text()) == {**settings_before, "schema": 2}
    assert json.loads(local_paths.state_file.read_text()) == {**V1_STATE, "schema": 2}
    assert "# my own note: the GPU box" in local_paths.config_file.read_text()
    after = files_of(local_paths.root)
    assert after["secrets.env"] == secrets  # never rewritten: same bytes, time and 0600
    assert secrets[2] == 0o600
    assert after["config.yaml"][2] == 0o600
    assert not list(local_paths.root.rglob(".*.tmp"))
    # ...and it reads as before, now without any allowance
    settings = load_settings(local_paths, environ={})
    assert settings.mcp_servers["search"].headers == {"Authorization": "Bearer t0ken"}
    assert config.read_state(local_paths) == V1_STATE
    assert not migrate.plan(local_paths).needed


@pytest.mark.parametrize("text", ["{}\n", "---\nproject: lab\n", "%YAML 1.1\n---\nproject: lab\n"])
def test_a_config_the_version_line_cannot_be_added_to_is_written_anew(local_paths, text):
    old_installation(local_paths, text)
    before = yaml.safe_load(text) or {}
    migrate.apply(local_paths, migrate.plan(local_paths), backup=None)
    assert yaml.safe_load(local_paths.config_file.read_text()) == {**before, "schema": 2}
    assert local_paths.config_file.read_text().startswith("# ollama-stack settings")


def test_the_backup_comes_first_and_a_failed_one_changes_nothing(local_paths):
    old_installation(local_paths)
    seen = []

    def back_up() -> str:
        seen.append(local_paths.config_file.read_text())  # as it was when the backup ran
        return "20261203T120000Z-abcdef"

    migrated = migrate.apply(local_paths, migrate.plan(local_paths), backup=back_up)
    assert migrated.backup == "20261203T120000Z-abcdef"
    assert seen == [V1_CONFIG]

    old_installation(local_paths)
    before = files_of(local_paths.root)

    def failing() -> str:
        raise StackError("the store is full", "free space", code=ExitCode.BAD_BACKUP)

    with pytest.raises(StackError) as info:
        migrate.apply(local_paths, migrate.plan(local_paths), backup=failing)
    assert info.value.message == (
        "the backup before the migration failed, so nothing was changed: the store is full"
    )
    assert info.value.code == ExitCode.BAD_BACKUP
    assert info.value.remedy == "free space; or go on with --no-backup at your own risk"
    assert files_of(local_paths.root) == before

    def refused() -> str:  # a failure with no remedy of its own
        raise StackError("the engine went away")

    with pytest.raises(StackError) as info:
        migrate.apply(local_paths, migrate.plan(local_paths), backup=refused)
    assert info.value.remedy == "fix that; or go on with --no-backup at your own risk"
    assert files_of(local_paths.root) == before


def test_no_backup_is_asked_of_a_home_that_is_not_installed(local_paths):
    write_config(local_paths, "images:\n  webui: mine/webui:1\n")  # dev.standins' config only

    def back_up() -> str:
        raise AssertionError("nothing to back up: no secrets, no volumes")

    migrated = migrate.apply(local_paths, migrate.plan(local_paths), backup=back_up)
    assert migrated.backup.startswith("none: not installed")
    assert config.read_config(local_paths) == {"images": {"webui": "mine/webui:1"}}


def test_a_file_changed_after_the_plan_is_not_overwritten(local_paths):
    old_installation(local_paths)
    plan = migrate.plan(local_paths)
    local_paths.config_file.write_text(V1_CONFIG + "bind: ::1\n")
    error = refusal(lambda: migrate.apply(local_paths, plan, backup=None))
    assert "changed while the migration was being planned" in error.message
    assert local_paths.config_file.read_text().endswith("bind: ::1\n")


def test_installed_schema_is_what_is_on_disk(local_paths):
    assert config.installed_schema(local_paths) == CONFIG_SCHEMA  # nothing yet
    old_installation(local_paths)
    assert config.installed_schema(local_paths) == 1
    migrate.apply(local_paths, migrate.plan(local_paths), backup=None)
    assert config.installed_schema(local_paths) == CONFIG_SCHEMA
