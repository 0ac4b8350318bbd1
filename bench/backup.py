"""Backup and restore speed and memory, measured as ratios in one run on this machine.

    .venv/bin/python bench/backup.py [--sizes 512,2048] [--rounds 3]

For each size (MiB of model blobs in Ollama's volume, random bytes: what
models look like to a compressor), ours and the baseline take turns for
``--rounds`` rounds (who goes first alternating, the disk given time to settle
before each) and medians are printed, so a busy neighbour slows both.

Backup:
  * backup.create throughput as a ratio to `docker cp … - | zstd -1` on the
    same volume (the tar stream of the same data, compressed; goal >= 0.9);
  * the peak RSS of the backup process (goal <= 150 MiB, flat across sizes);
  * a second backup of unchanged models (once): bytes written and time as
    fractions of the first's (goals <= 2% and <= 15%).
Restore:
  * writing the volume back as backup.restore does (restore.write_tar streamed
    into `docker cp --archive -` of a stopped container with an empty volume)
    as a throughput ratio to `zstd -dc … | docker cp --archive -` of the
    baseline's archive (the same floor, into a volume) and to
    `zstd -dc … | tar -x` into a directory; the peak RSS of that writer;
  * the whole `backup.restore` (verify every blob, take a safety backup, write,
    start and wait healthy), once, for scale.
Uses stand-in images (`dev.standins --version bench`) and a temporary
OLLAMA_STACK_HOME; removes what it made. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench import CLI, compose_argv, installation_env, timed

SEED = r"""
import hashlib, os, sys
blobs = "/root/.ollama/models/blobs"
os.makedirs(blobs, exist_ok=True)
left = int(sys.argv[1]) << 20
while left > 0:
    size = min(left, 256 << 20)
    tmp = os.path.join(blobs, "incoming")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for _ in range(size >> 20):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            out.write(chunk)
    os.rename(tmp, os.path.join(blobs, "sha256-" + digest.hexdigest()))
    left -= size
"""

# The write step of backup.restore: the library's tar of the manifest's entries,
# contents from the store, into the argv compose's copy_in runs.
WRITER = r"""
import subprocess, sys
from pathlib import Path
from ollama_stack.backups.restore import write_tar
from ollama_stack.backups.store import Store
store = Store(Path(sys.argv[1]))
volume = next(v for v in store.manifest(sys.argv[2]).volumes if v.service == "ollama")
argv = ["docker", "cp", "--archive", "-", sys.argv[3] + ":/root/.ollama"]
with subprocess.Popen(argv, stdin=subprocess.PIPE) as process:
    write_tar(store, volume, process.stdin)
    process.stdin.close()
sys.exit(process.wait())
"""

MOUNT = "/root/.ollama"


def measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Seconds, peak RSS in KiB (GNU time) and stdout of one run."""
    began = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "maxrss=%M", *argv], env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {result.stderr.strip()[-400:]}")
    rss = int(re.findall(r"maxrss=(\d+)", result.stderr)[-1])
    return elapsed, rss, result.stdout


def shell(command: str) -> float:
    began = time.perf_counter()
    subprocess.run(command, shell=True, check=True)
    return time.perf_counter() - began


def uptime() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,2048", help="MiB of model data, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="turns of ours and the baseline")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    home = Path(tempfile.mkdtemp(prefix="ollama-stack-bench-", dir="/var/tmp"))
    project = f"bench{uuid.uuid4().hex[:6]}"
    env = installation_env(home, project)
    timed([CLI, "dev.standins", "--version", "bench"], env)
    timed([CLI, "stack.install"], env)
    compose = None
    targets = Targets(project)
    try:
        timed([CLI, "stack.start", "--pull", "never"], env)
        compose = compose_argv(env)
        ollama = f"{project}-ollama-1"
        image = subprocess.run(
            ["docker", "inspect", "--format", "{{.Image}}", ollama],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"load average at the start: {uptime()} (2 cores), {args.rounds} rounds, medians")
        rows = []
        seeded = 0
        for size in sizes:
            subprocess.run(
                ["docker", "exec", ollama, "python3", "-c", SEED, str(size - seeded)], check=True
            )
            seeded = size
            rows.append(one_size(size, args.rounds, home, env, ollama, image, targets))
        print(f"load average at the end: {uptime()}")
        report(rows)
    finally:
        targets.remove_all()
        if compose:
            subprocess.run([*compose, "down", "--volumes"], env=env, capture_output=True)
        subprocess.run(["rm", "-rf", str(home)])


def one_size(
    size: int,
    rounds: int,
    home: Path,
    env: dict[str, str],
    ollama: str,
    image: str,
    targets: Targets,
) -> dict[str, float]:
    store, archive = home / "store", home / "baseline.tar.zst"
    row, first = backups(rounds, store, archive, env, ollama)
    row |= restores(rounds, store, archive, first, image, targets, home)
    settle()
    whole, whole_rss, _ = measured(
        [CLI, "backup.restore", first, "--to", str(store), "--services", "ollama", "--yes"],
        env,
    )
    shutil.rmtree(store, ignore_errors=True)
    return row | {"size": size, "whole": whole, "whole_rss": whole_rss / 1024}


def backups(
    rounds: int, store: Path, archive: Path, env: dict[str, str], ollama: str
) -> tuple[dict[str, float], str]:
    """First backups into fresh stores and the baseline, taking turns; then a
    second backup into the last store. Returns the figures and that store's id."""
    ours, base, rss, first = [], [], [], {}
    for turn in range(rounds):
        shutil.rmtree(store, ignore_errors=True)
        archive.unlink(missing_ok=True)
        for side in sides(turn):
            settle()
            if side == "base":
                base.append(shell(f"docker cp {ollama}:{MOUNT}/. - | zstd -1 -q -T1 -o {archive}"))
                continue
            elapsed, peak, out = measured([CLI, "backup.create", "--to", str(store), "--json"], env)
            ours.append(elapsed)
            rss.append(peak)
            first = json.loads(out)
    settle()
    again, _, out = measured([CLI, "backup.create", "--to", str(store), "--json"], env)
    median = statistics.median(ours)
    return {
        "ours": median,
        "base": statistics.median(base),
        "rss": max(rss) / 1024,
        "bytes": json.loads(out)["written"] / first["written"],
        "again": again / median,
    }, first["id"]


def restores(
    rounds: int,
    store: Path,
    archive: Path,
    snapshot: str,
    image: str,
    targets: Targets,
    home: Path,
) -> dict[str, float]:
    """The write step of a restore and its floors, taking turns, each into a fresh volume."""
    writes, floors, untars, rss = [], [], [], []
    for turn in range(rounds):
        for side in sides(turn):
            container = targets.fresh(image)
            settle()
            if side == "base":
                floors.append(
                    shell(f"zstd -dc -q {archive} | docker cp --archive - {container}:{MOUNT}")
                )
                continue
            elapsed, peak, _ = measured(
                [sys.executable, "-c", WRITER, str(store), snapshot, container]
            )
            writes.append(elapsed)
            rss.append(peak)
        targets.remove_all()
        folder = home / "untarred"
        folder.mkdir()
        settle()
        untars.append(shell(f"zstd -dc -q {archive} | tar -x -C {folder}"))
        shutil.rmtree(folder)
    median = statistics.median
    return {
        "write": median(writes),
        "floor": median(floors),
        "untar": median(untars),
        "write_rss": max(rss) / 1024,
    }


def sides(turn: int) -> tuple[str, str]:
    """Who goes first alternates, so neither always runs after the other's deletes."""
    return ("base", "ours") if turn % 2 == 0 else ("ours", "base")


def settle() -> None:
    """Let the disk catch up (deleted stores and volumes, dirty pages) before a
    timed run, so neither side pays for what the one before left behind."""
    os.sync()
    time.sleep(2)


def report(rows: list[dict[str, float]]) -> None:
    print("\nbackup")
    print(
        f"{'MiB':>6} {'ours':>8} {'cp|zstd':>8} {'ratio':>6} {'peak RSS':>9} "
        f"{'2nd bytes':>10} {'2nd time':>9}"
    )
    for r in rows:
        print(
            f"{r['size']:>6} {r['ours']:>7.2f}s {r['base']:>7.2f}s {r['base'] / r['ours']:>6.2f} "
            f"{r['rss']:>6.0f} MiB {r['bytes']:>9.2%} {r['again']:>8.1%}"
        )
    print("\nrestore (write step: write_tar into docker cp --archive)")
    print(
        f"{'MiB':>6} {'ours':>8} {'zstd|cp':>8} {'ratio':>6} {'zstd|tar':>9} {'ratio':>6} "
        f"{'peak RSS':>9} {'backup.restore':>15} {'its RSS':>8}"
    )
    for r in rows:
        write = r["write"]
        print(
            f"{r['size']:>6} {write:>7.2f}s {r['floor']:>7.2f}s {r['floor'] / write:>6.2f} "
            f"{r['untar']:>8.2f}s {r['untar'] / write:>6.2f} {r['write_rss']:>6.0f} MiB "
            f"{r['whole']:>14.2f}s {r['whole_rss']:>4.0f} MiB"
        )


class Targets:
    """Stopped containers on fresh empty volumes, to restore into (as a restore's are)."""

    def __init__(self, project: str) -> None:
        self.project, self.made = project, list[str]()

    def fresh(self, image: str) -> str:
        name = f"{self.project}-target-{len(self.made)}"
        subprocess.run(
            [
                *("docker", "create", "--name", name, "--network", "none"),
                *("--mount", f"type=volume,src={name},dst={MOUNT}"),
                *("--entrypoint", "/never-started", image),
            ],
            check=True,
            capture_output=True,
        )
        self.made.append(name)
        return name

    def remove_all(self) -> None:
        for name in self.made:
            subprocess.run(["docker", "rm", "--force", name], capture_output=True)
            subprocess.run(["docker", "volume", "rm", name], capture_output=True)
        self.made.clear()


if __name__ == "__main__":
    main()
