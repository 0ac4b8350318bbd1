"""backup.create / list / show / verify against the live engine.

Volumes are seeded inside the running stand-ins with what a restore must put
back exactly (symlinks, a hard link, a file of uid 70 with mode 0600, an empty
directory, unicode names, an Ollama model blob named by its hash); the
manifest is compared with what Python inside the container sees.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import zstandard

from .conftest import CLI, ROOT, Installation, docker
from .registry import build_image

SEED = r"""
set -e
cd /root/.ollama
mkdir -p models/blobs models/manifests/registry/library/tiny "empty dir" "ü dir"
head -c 4000000 /dev/urandom > /tmp/blob
h=$(sha256sum /tmp/blob | cut -d' ' -f1)
mv /tmp/blob "models/blobs/sha256-$h"
printf '{"layers":[{"digest":"sha256:%s"}]}' "$h" > models/manifests/registry/library/tiny/latest
printf 'secret' > "ü dir/private"
chown 70:70 "ü dir/private"
chmod 600 "ü dir/private"
ln -s "ü dir/private" link-to-private
ln -s /etc/hostname dangling-outside
ln "ü dir/private" hard-link
"""

# What Python in the container sees: path → (type, mode, uid, gid, size, sha256, link).
WALK = r"""
import hashlib, json, os, stat
root = "/root/.ollama"
seen, out = {}, {}
for base, dirs, files in os.walk(root):
    for name in sorted(dirs + files):
        path = os.path.join(base, name)
        rel = os.path.relpath(path, root)
        st = os.lstat(path)
        kind, digest, link = "dir", None, None
        if stat.S_ISLNK(st.st_mode):
            kind, link = "symlink", os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in seen:
                kind, link = "hardlink", seen[key]
            else:
                seen[key] = rel
                kind = "file"
                digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        size = st.st_size if kind == "file" else 0
        out[rel] = [kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, digest, link]
print(json.dumps(out))
"""


def backup(inst: Installation, *args: str) -> dict:
    return json.loads(inst.ok("backup.create", "--json", *args).stdout)


def listing(inst: Installation) -> list[dict]:
    return json.loads(inst.ok("backup.list", "--json").stdout)


def manifest_of(inst: Installation, snapshot_id: str) -> dict:
    store = Path(inst.env["OLLAMA_STACK_HOME"]) / "backups"
    return json.loads((store / "snapshots" / snapshot_id / "manifest.json").read_text())


@pytest.fixture
def seeded(make_installation) -> Installation:
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    docker("exec", f"{inst.project}-ollama-1", "sh", "-c", SEED)
    return inst


def test_a_backup_records_every_entry_as_the_container_sees_it(seeded):
    made = backup(seeded, "--description", "before the upgrade")
    assert made["volumes"] == ["ollama:ollama_data", "webui:webui_data"]
    seen = json.loads(docker("exec", f"{seeded.project}-ollama-1", "python3", "-c", WALK))
    (volume,) = [v for v in manifest_of(seeded, made["id"])["volumes"] if v["service"] == "ollama"]
    recorded = {
        e["path"]: [e["type"], e["mode"], e["uid"], e["gid"], e["size"], e["sha256"], e["link"]]
        for e in volume["entries"]
        if e["path"] != "."
    }
    # A link out of the volume could never be restored: it is named, not taken.
    assert seen.pop("dangling-outside") == ["symlink", 0o777, 0, 0, 0, None, "/etc/hostname"]
    assert made["not_covered"] == [
        "ollama:ollama_data/'dangling-outside': a link out of the volume (/etc/hostname)"
    ]
    assert recorded == seen
    assert recorded["ü dir/private"][1:4] == [0o600, 70, 70]
    assert recorded["hard-link"][0] == "hardlink" or recorded["ü dir/private"][0] == "hardlink"

    (info,) = listing(seeded)
    assert info["id"] == made["id"] and info["complete"] is True
    assert info["description"] == "before the upgrade"
    assert info["size"] == made["size"] > 4_000_000
    assert "secret" not in seeded.ok("backup.show", made["id"], "--json").stdout
    verified = seeded.ok("backup.verify", made["id"], "--json")
    assert json.loads(verified.stdout)["ok"] is True

    # The stack was paused only while Open WebUI's data was copied: all run again.
    assert {s["name"]: s["state"] for s in seeded.status()["services"]} == dict.fromkeys(
        ("ollama", "webui", "mcp_proxy"), "running"
    )
    store = Path(seeded.env["OLLAMA_STACK_HOME"]) / "backups"
    assert oct(store.stat().st_mode & 0o777) == "0o700"
    secrets_blob = next(
        f for f in manifest_of(seeded, made["id"])["files"] if f["name"] == "secrets.env"
    )
    blob = store / "blobs" / secrets_blob["sha256"][:2] / secrets_blob["sha256"]
    assert oct(blob.stat().st_mode & 0o777) == "0o600"


def test_a_second_backup_of_unchanged_models_writes_no_blob_again(seeded):
    first = backup(seeded)
    assert first["written"] > 3_000_000  # 4 MB of random bytes do not compress
    second = backup(seeded)
    assert second["written"] < 10_000  # Open WebUI's tiny files at most
    assert second["size"] == first["size"]


def test_a_stopped_stack_is_backed_up_and_stays_stopped(seeded):
    seeded.ok("stack.stop")
    made = backup(seeded)
    assert not [item for item in made["not_covered"] if "no container" in item]
    assert made["volumes"] == ["ollama:ollama_data", "webui:webui_data"]
    states = {s["name"]: s["state"] for s in seeded.status()["services"]}
    assert set(states.values()) == {"exited"}


def test_cache_and_globs_are_left_out_unless_asked(seeded):
    webui = f"{seeded.project}-webui-1"
    docker(
        "exec",
        webui,
        "sh",
        "-c",
        "mkdir -p /app/backend/data/cache/embedding /app/backend/data/cache/tool "
        "&& echo m > /app/backend/data/cache/embedding/model.bin "
        "&& echo t > /app/backend/data/cache/tool/output.png "
        "&& echo x > /app/backend/data/scratch.tmp",
    )
    made = backup(seeded, "--exclude", "*.tmp")
    paths = {
        e["path"]
        for v in manifest_of(seeded, made["id"])["volumes"]
        if v["service"] == "webui"
        for e in v["entries"]
    }
    assert "cache/tool/output.png" in paths  # tool outputs chats link to are kept
    assert not any(p.startswith("cache/embedding") for p in paths)
    assert "scratch.tmp" not in paths
    assert "webui:cache/embedding" in made["excluded"] and "webui:*.tmp" in made["excluded"]
    full = backup(seeded, "--include-cache", "--models", "manifests-only")
    entries = [e["path"] for v in manifest_of(seeded, full["id"])["volumes"] for e in v["entries"]]
    assert "cache/embedding/model.bin" in entries
    assert not any(p.startswith("models/blobs/") for p in entries)


def test_a_killed_backup_is_never_listed_complete_and_the_next_one_works(seeded):
    docker(
        "exec",
        f"{seeded.project}-ollama-1",
        "sh",
        "-c",
        "head -c 300000000 /dev/urandom > /root/.ollama/big",
    )
    proc = subprocess.Popen(
        [str(CLI), "backup.create"],
        env=seeded.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=os.environ["HOME"],
    )
    tmp = Path(seeded.env["OLLAMA_STACK_HOME"]) / "backups" / "tmp"
    deadline = time.monotonic() + 60
    while not (tmp.is_dir() and any(tmp.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the backup ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (killed,) = listing(seeded)
    assert killed["complete"] is False and "incomplete" in killed.get("problem", "")
    assert seeded.cli("backup.verify", killed["id"]).returncode == 16
    made = backup(seeded)
    assert [b["complete"] for b in listing(seeded)] == [False, True]
    assert not any(tmp.iterdir())  # the dead writer's half blob was cleared
    seeded.ok("backup.verify", made["id"])


def test_verify_names_a_flipped_byte_and_a_missing_blob(seeded):
    made = backup(seeded)
    manifest = manifest_of(seeded, made["id"])
    store = Path(seeded.env["OLLAMA_STACK_HOME"]) / "backups"
    entry = next(
        e
        for v in manifest["volumes"]
        for e in v["entries"]
        if e["path"].startswith("models/blobs/")
    )
    blob = store / "blobs" / entry["sha256"][:2] / entry["sha256"]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    result = seeded.cli("backup.verify", made["id"])
    assert result.returncode == 16
    assert f"ollama:ollama_data/{entry['path']}" in result.stderr
    # A restore checks the whole backup first: refused, the volume untouched.
    ollama = f"{seeded.project}-ollama-1"
    before = docker("exec", ollama, "python3", "-c", WALK)
    result = seeded.cli("backup.restore", made["id"], "--yes")
    assert result.returncode == 16 and entry["path"] in result.stderr
    assert docker("exec", ollama, "python3", "-c", WALK) == before
    assert [b["id"] for b in listing(seeded)] == [made["id"]]  # not even a safety copy
    blob.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    result = seeded.cli("backup.verify", made["id"])
    assert result.returncode == 16 and entry["path"] in result.stderr
    blob.unlink()
    result = seeded.cli("backup.verify", made["id"])
    assert result.returncode == 16 and "is missing" in result.stderr


@pytest.mark.remote
def test_a_remote_box_is_backed_up_over_ssh_into_the_local_store(make_installation, remote_host):
    remote = make_installation(remote=remote_host.name, docker_host=remote_host.docker_host)
    remote.ok("stack.start", "--pull", "never")
    ollama = next(c for c in remote.containers() if "-ollama-" in c)
    docker("exec", ollama, "sh", "-c", SEED, host=remote_host.docker_host)
    first = backup(remote)
    manifest = manifest_of(remote, first["id"])
    assert manifest["target"] == remote_host.name
    paths = {e["path"] for v in manifest["volumes"] for e in v["entries"]}
    assert "ü dir/private" in paths and any(p.startswith("models/blobs/sha256-") for p in paths)
    remote.ok("backup.verify", first["id"])
    # Blobs already in the store are not stored again.
    second = backup(remote)
    assert second["written"] < 10_000


@pytest.fixture(scope="session")
def webui_sqlite(standin_images: dict[str, str]) -> str:
    """The Open WebUI stand-in with a live SQLite database (tests/support/webui-sqlite)."""
    tag = "ollama-stack-standin/webui-sqlite:test"
    build_image(tag, ROOT / "tests" / "support" / "webui-sqlite")
    return tag


@pytest.fixture(scope="session")
def webui_sqlite_older(webui_sqlite: str) -> str:
    """The same stand-in as an older Open WebUI: it ships one revision fewer."""
    tag = "ollama-stack-standin/webui-sqlite:test-older"
    context = ROOT / "tests" / "support" / "webui-sqlite"
    build_image(tag, context, {"VERSION": "0.6.0-standin", "REVISIONS": "7e5b5dc7342b"})
    return tag


def rows(inst: Installation) -> int:
    url = f"http://127.0.0.1:{inst.ports['webui']}/rows"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)["rows"]


def stored(inst: Installation, digest: str) -> bytes:
    """A blob's content, read with zstandard directly (not through our store code)."""
    blob = Path(inst.env["OLLAMA_STACK_HOME"]) / "backups" / "blobs" / digest[:2] / digest
    with blob.open("rb") as raw:
        return zstandard.ZstdDecompressor().stream_reader(raw).read()


def test_a_busy_sqlite_database_is_backed_up_whole_with_its_wal(
    make_installation, webui_sqlite, tmp_path
):
    """Open WebUI keeps committed data in webui.db-wal: the copy must be of both
    files at one instant (webui is paused), and open as a whole database."""
    inst = make_installation(images={"webui": webui_sqlite})
    inst.ok("stack.start", "--pull", "never")
    time.sleep(1)  # let the chat writer commit a few hundred rows
    before = rows(inst)
    made = backup(inst)
    after = rows(inst)
    assert 0 < before < after  # the writer ran before and after the copy
    manifest = manifest_of(inst, made["id"])
    files = {
        e["path"]: e
        for v in manifest["volumes"]
        if v["service"] == "webui"
        for e in v["entries"]
        if e["type"] == "file"
    }
    assert files["webui.db-wal"]["size"] > 0  # the rows live in the WAL, as in the real one
    (tmp_path / "webui.db").write_bytes(stored(inst, files["webui.db"]["sha256"]))
    alone = sqlite3.connect(tmp_path / "webui.db")
    assert (
        alone.execute("SELECT count(*) FROM chat").fetchone()[0] < before
    )  # the .db alone is not it
    alone.close()
    (tmp_path / "webui.db-wal").write_bytes(stored(inst, files["webui.db-wal"]["sha256"]))
    db = sqlite3.connect(tmp_path / "webui.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert before <= db.execute("SELECT count(*) FROM chat").fetchone()[0] <= after
    assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "a1b2c3d4e5f6"
    status = {s["name"]: s for s in inst.status()["services"]}
    assert status["webui"]["state"] == "running" and status["webui"]["health"] == "healthy"


# -- restore ----------------------------------------------------------------------------

# SEED with its link pointing inside the volume: a restore refuses one that does not.
SAFE_SEED = SEED.replace(
    "ln -s /etc/hostname dangling-outside\n", "ln -s models/manifests inward\n"
)


# A model blob of a few hundred MB, named by its hash as Ollama names them.
BIG_BLOB = r"""
set -e
cd /root/.ollama/models/blobs
head -c 300000000 /dev/urandom > /tmp/big
h=$(sha256sum /tmp/big | cut -d' ' -f1)
mv /tmp/big "sha256-$h"
"""


def walk(inst: Installation) -> dict:
    out = docker("exec", f"{inst.project}-ollama-1", "python3", "-c", WALK)
    return json.loads(out)


def test_a_restore_puts_every_entry_back_exactly_and_starts_the_stack(make_installation):
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    ollama, webui = f"{inst.project}-ollama-1", f"{inst.project}-webui-1"
    docker("exec", ollama, "sh", "-c", SAFE_SEED)
    docker("exec", ollama, "sh", "-c", BIG_BLOB)
    docker("exec", webui, "sh", "-c", "echo 'chat 1' > /app/backend/data/chats.txt")
    original = walk(inst)
    assert max(entry[4] for entry in original.values() if entry[4]) == 300_000_000
    made = backup(inst)

    # What happens after the backup: data changed, added and lost.
    docker(
        "exec", ollama, "sh", "-c", "rm -rf /root/.ollama/models && echo new > /root/.ollama/extra"
    )
    docker("exec", webui, "sh", "-c", "echo 'chat 2' > /app/backend/data/chats.txt")
    assert inst.cli("backup.restore", made["id"]).returncode == 2  # no terminal, no --yes
    done = json.loads(inst.ok("backup.restore", made["id"], "--yes", "--json").stdout)
    assert done["volumes"] == ["ollama:ollama_data", "webui:webui_data"]
    assert sorted(done["started"]) == ["ollama", "webui"]

    assert walk(inst) == original  # replaced, never merged: `extra` is gone
    assert docker("exec", webui, "cat", "/app/backend/data/chats.txt") == "chat 1\n"
    assert {s["health"] for s in inst.status()["services"]} == {"healthy"}
    # the safety copy holds what was there just before
    safety = next(b for b in listing(inst) if b["id"] == done["safety_backup"])
    assert safety["complete"] and "safety copy" in safety["description"]


def test_a_restore_keeps_what_the_backup_left_out(make_installation):
    """Model caches are not in a default backup: a restore must not wipe them."""
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    webui = f"{inst.project}-webui-1"
    cache = "/app/backend/data/cache/embedding"
    docker("exec", webui, "sh", "-c", f"mkdir -p {cache} && echo weights > {cache}/model.bin")
    docker("exec", webui, "sh", "-c", "echo 'chat 1' > /app/backend/data/chats.txt")
    made = backup(inst)
    assert "webui:cache/embedding" in made["excluded"]
    docker("exec", webui, "sh", "-c", "echo 'chat 2' > /app/backend/data/chats.txt")
    inst.ok("backup.restore", made["id"], "--services", "webui", "--yes")
    assert docker("exec", webui, "cat", "/app/backend/data/chats.txt") == "chat 1\n"
    assert docker("exec", webui, "cat", f"{cache}/model.bin") == "weights\n"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"path": "../escape"}, "leaves the volume"),
        ({"path": "a/../../x"}, "leaves the volume"),
        ({"path": "evil", "type": "symlink", "link": "/etc", "sha256": None}, "points outside"),
        ({"path": "/etc/cron.d/evil"}, "leaves the volume"),
        ({"path": "evil", "type": "symlink", "link": "../../..", "sha256": None}, "points outside"),
        ({"path": "evil", "type": "hardlink", "link": "/etc/shadow", "sha256": None}, "hard link"),
        ({"path": "evil", "type": "chardev", "sha256": None}, "manifest is damaged"),
        ({"path": "evil\x1b[2J"}, "control character"),
        ({"path": "evil", "mode": 0o170000}, "manifest is damaged"),
    ],
)
def test_a_crafted_manifest_writes_nothing(seeded, change, why):
    made = backup(seeded)
    store = Path(seeded.env["OLLAMA_STACK_HOME"]) / "backups"
    manifest_path = store / "snapshots" / made["id"] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    volume = next(v for v in manifest["volumes"] if v["service"] == "webui")
    volume["entries"].append({**volume["entries"][-1], **change})
    manifest_path.write_text(json.dumps(manifest))
    before = docker("exec", f"{seeded.project}-webui-1", "ls", "-la", "/app/backend/data")
    result = seeded.cli("backup.restore", made["id"], "--services", "webui", "--yes")
    assert result.returncode == 16 and why in result.stderr
    assert docker("exec", f"{seeded.project}-webui-1", "ls", "-la", "/app/backend/data") == before


def test_a_manifest_naming_a_volume_not_ours_writes_nothing(seeded):
    made = backup(seeded)
    store = Path(seeded.env["OLLAMA_STACK_HOME"]) / "backups"
    manifest_path = store / "snapshots" / made["id"] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    next(v for v in manifest["volumes"] if v["service"] == "webui")["name"] = "other_data"
    manifest_path.write_text(json.dumps(manifest))
    result = seeded.cli("backup.restore", made["id"], "--yes")
    assert result.returncode == 16 and "webui:other_data" in result.stderr
    assert [b["id"] for b in listing(seeded)] == [made["id"]]


def test_a_restore_onto_kept_volumes_without_containers_copies_them_first(make_installation):
    """uninstall (volumes and config kept), then restore: the kept data has no
    container to be read through, and must still be in the safety copy."""
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    webui = f"{inst.project}-webui-1"
    docker("exec", webui, "sh", "-c", "echo 'old chat' > /app/backend/data/chats.txt")
    made = backup(inst)
    docker("exec", webui, "sh", "-c", "echo 'newer chat' > /app/backend/data/chats.txt")
    inst.ok("stack.uninstall", "--yes")  # keeps the volumes
    assert inst.containers() == [] and len(inst.volumes()) == 2
    # A backup now reads the kept volumes without their containers (and makes none).
    kept = backup(inst)
    assert kept["volumes"] == ["ollama:ollama_data", "webui:webui_data"]
    assert inst.containers() == []
    # An image the engine lacks: refused before anything is removed.
    image, inst.env["OLLAMA_STACK_IMAGES_WEBUI"] = (
        inst.env["OLLAMA_STACK_IMAGES_WEBUI"],
        "x/nosuch:1",
    )
    missing = inst.cli("backup.restore", made["id"], "--yes")
    assert missing.returncode == 2 and "not on the engine" in missing.stderr
    assert len(inst.volumes()) == 2 and len(listing(inst)) == 2
    inst.env["OLLAMA_STACK_IMAGES_WEBUI"] = image
    done = json.loads(inst.ok("backup.restore", made["id"], "--yes", "--json").stdout)
    safety = manifest_of(inst, done["safety_backup"])
    files = {
        e["path"]: e for v in safety["volumes"] if v["service"] == "webui" for e in v["entries"]
    }
    assert stored(inst, files["chats.txt"]["sha256"]) == b"newer chat\n"
    assert done["started"] == []  # nothing ran before: nothing is started
    inst.ok("stack.start", "--pull", "never")
    assert docker("exec", webui, "cat", "/app/backend/data/chats.txt") == "old chat\n"


@pytest.mark.remote
def test_a_remote_box_round_trips_alone_over_ssh(make_installation, remote_host):
    """Back up the second host, lose its model volume, restore it there: identical."""
    remote = make_installation(remote=remote_host.name, docker_host=remote_host.docker_host)
    remote.ok("stack.start", "--pull", "never")
    there = remote_host.docker_host

    def walk_there() -> dict:
        ollama = next(c for c in remote.containers() if "-ollama-" in c)
        return json.loads(docker("exec", ollama, "python3", "-c", WALK, host=there))

    ollama = next(c for c in remote.containers() if "-ollama-" in c)
    docker("exec", ollama, "sh", "-c", SAFE_SEED, host=there)
    original = walk_there()
    made = backup(remote)
    docker("rm", "--force", ollama, host=there)
    docker("volume", "rm", f"{remote.project}_ollama_data", host=there)
    done = json.loads(remote.ok("backup.restore", made["id"], "--yes", "--json").stdout)
    assert "ollama:ollama_data" in done["volumes"]
    remote.ok("stack.start", "--pull", "never")
    assert walk_there() == original
    assert {s["health"] for s in remote.status()["services"]} == {"healthy"}


@pytest.mark.remote
def test_a_backup_of_this_machine_restores_on_the_second_host(make_installation, remote_host):
    """Moving the stack to a bigger box: back up here, restore there over SSH."""
    here = make_installation()
    here.ok("stack.start", "--pull", "never")
    docker("exec", f"{here.project}-ollama-1", "sh", "-c", SAFE_SEED)
    docker(
        "exec",
        f"{here.project}-webui-1",
        "sh",
        "-c",
        "echo 'moved chat' > /app/backend/data/chats.txt",
    )
    original = walk(here)
    made = backup(here)

    there = make_installation(remote=remote_host.name, docker_host=remote_host.docker_host)
    # One home, one store: the remote installation lives below the same OLLAMA_STACK_HOME.
    there.env["OLLAMA_STACK_HOME"] = here.env["OLLAMA_STACK_HOME"]
    there.ok("stack.install", "--force")
    there.ok("stack.start", "--pull", "never")
    done = json.loads(there.ok("backup.restore", made["id"], "--yes", "--secrets", "--json").stdout)
    # --secrets: the box now has this machine's keys (logins and the proxy's key
    # move with the data), and every running service took them up.
    assert sorted(done["started"]) == ["mcp_proxy", "ollama", "webui"]
    home = Path(here.env["OLLAMA_STACK_HOME"])
    keys_there = next((home / "remotes").glob("*/secrets.env")).read_text()
    assert keys_there == (home / "secrets.env").read_text()
    ollama = next(c for c in there.containers() if "-ollama-" in c)
    webui = next(c for c in there.containers() if "-webui-" in c)
    moved = json.loads(docker("exec", ollama, "python3", "-c", WALK, host=remote_host.docker_host))
    assert moved == original
    chats = docker(
        "exec", webui, "cat", "/app/backend/data/chats.txt", host=remote_host.docker_host
    )
    assert chats == "moved chat\n"
    assert {s["health"] for s in there.status()["services"]} == {"healthy"}


def test_data_from_a_newer_open_webui_is_restored_only_with_force(
    make_installation, webui_sqlite, webui_sqlite_older
):
    """Alembic migrations are one-way: an older Open WebUI exits on a newer
    database. The backup records the revision; the restore reads the
    revisions the configured image ships and refuses, offering the image."""
    inst = make_installation(images={"webui": webui_sqlite})
    inst.ok("stack.start", "--pull", "never")
    made = backup(inst)
    webui = next(s for s in manifest_of(inst, made["id"])["services"] if s["name"] == "webui")
    assert (webui["version"], webui["schema_revision"]) == ("0.12.4-standin", "a1b2c3d4e5f6")
    inst.env["OLLAMA_STACK_IMAGES_WEBUI"] = webui_sqlite_older  # an older Open WebUI here now
    refused = inst.cli("backup.restore", made["id"], "--yes")
    assert refused.returncode == 2, refused.stderr
    assert "a1b2c3d4e5f6" in refused.stderr and "0.6.0-standin" in refused.stderr
    assert f"images.webui: {webui_sqlite}" in refused.stderr and "--force" in refused.stderr
    assert [b["id"] for b in listing(inst)] == [made["id"]]  # no safety copy: nothing done
    assert manifest_of(inst, made["id"])["config_schema"] == 2
    scratch = f"label=io.ollama-stack.scratch={inst.project}"
    assert docker("ps", "-a", "--filter", scratch, "--format", "{{.Names}}").strip() == ""
    # The image it was taken with is fine; so is --force.
    inst.env["OLLAMA_STACK_IMAGES_WEBUI"] = webui_sqlite
    assert "a1b2c3d4e5f6" not in inst.ok("backup.restore", made["id"], "--yes").stderr
    inst.env["OLLAMA_STACK_IMAGES_WEBUI"] = webui_sqlite_older
    inst.ok("backup.restore", made["id"], "--yes", "--force")
    assert rows(inst) > 0


# -- test-restore ------------------------------------------------------------------------


def trial_resources(inst: Installation) -> list[str]:
    label = f"label=com.docker.compose.project={inst.project}-trial"
    found = []
    for *listing, name in (["ps", "-a", "{{.Names}}"], ["volume", "ls", "{{.Name}}"]):
        found += docker(*listing, "--filter", label, "--format", name).split()
    found += docker("network", "ls", "--filter", label, "--format", "{{.Name}}").split()
    return found


def test_a_test_restore_proves_a_backup_in_a_throwaway_copy_and_removes_it(
    make_installation, webui_sqlite
):
    inst = make_installation(images={"webui": webui_sqlite})
    inst.ok("stack.start", "--pull", "never")
    docker("exec", f"{inst.project}-ollama-1", "sh", "-c", SEED)
    made = backup(inst)
    report = json.loads(inst.ok("backup.test-restore", made["id"], "--json").stdout)
    assert report["project"] == f"{inst.project}-trial"
    assert set(report["services"]) == {"ollama", "webui"}
    assert report["models"] == ["registry/library/tiny:latest"]  # listed by the trial's Ollama
    assert trial_resources(inst) == []
    # The installation itself was not touched: same containers, still healthy.
    assert {s["health"] for s in inst.status()["services"]} == {"healthy"}
    assert [b["id"] for b in listing(inst)] == [made["id"]]


def test_a_test_restore_that_does_not_come_up_fails_and_leaves_nothing(
    make_installation, standin_images
):
    inst = make_installation()
    inst.ok("stack.start", "--pull", "never")
    made = backup(inst)
    # The image the trial would run never answers: the backup is not proven.
    inst.env["OLLAMA_STACK_IMAGES_WEBUI"] = standin_images["webui"].replace(":test", ":test-broken")
    failed = inst.cli("backup.test-restore", made["id"], "--services", "webui", "--timeout", "4")
    assert failed.returncode == 7, failed.stderr  # HEALTH_TIMEOUT
    assert "webui" in failed.stderr
    assert trial_resources(inst) == []


def test_prune_keeps_the_newest_and_an_export_carries_it_to_another_store(seeded, tmp_path):
    chats = f"{seeded.project}-webui-1"
    docker("exec", chats, "sh", "-c", "echo 'chat 1' > /app/backend/data/chats.txt")
    first = backup(seeded)
    docker("exec", chats, "sh", "-c", "echo 'chat 2' > /app/backend/data/chats.txt")
    second = backup(seeded)
    pruned = json.loads(seeded.ok("backup.prune", "--keep-last", "1", "--json").stdout)
    assert (pruned["kept"], pruned["removed"]) == ([second["id"]], [first["id"]])
    assert pruned["blobs_removed"] >= 1  # chat 1 was only in the first; the model is shared
    assert [b["id"] for b in listing(seeded)] == [second["id"]]
    seeded.ok("backup.verify", second["id"])

    carried = tmp_path / "carry.tar"
    seeded.ok("backup.export", second["id"], str(carried))
    assert oct(carried.stat().st_mode & 0o777) == "0o600"
    other = tmp_path / "other-store"
    seeded.ok("backup.import", str(carried), "--to", str(other))
    seeded.ok("backup.verify", second["id"], "--to", str(other))
    assert manifest_of(seeded, second["id"]) == json.loads(
        (other / "snapshots" / second["id"] / "manifest.json").read_text()
    )
    # The same through a pipe, as `| ssh box ollama-stack backup.import -` would take it.
    third = tmp_path / "third-store"
    piped = subprocess.run(
        f"{CLI} backup.export {second['id']} - | {CLI} backup.import - --to {third} --json",
        shell=True,
        env=seeded.env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["id"] == second["id"]
    seeded.ok("backup.verify", second["id"], "--to", str(third))
