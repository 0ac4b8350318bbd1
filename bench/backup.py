"""Backup speed and memory, measured as ratios in one run on this machine.

    .venv/bin/python bench/backup.py [--sizes 512,2048]

For each size (MiB of model blobs in Ollama's volume, random bytes: what
models look like to a compressor), prints:
  * backup.create throughput as a ratio to `docker cp … - | zstd -1` on the
    same volume (the tar stream of the same data, compressed; goal >= 0.9);
  * the peak RSS of the backup process (goal <= 150 MiB, flat across sizes);
  * a second backup of unchanged models: bytes written and time as fractions
    of the first's (goals <= 2% and <= 15%).
Uses stand-in images (`dev.standins --version bench`) and a temporary
OLLAMA_STACK_HOME; removes what it made. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
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


def measured(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,2048", help="MiB of model data, comma-separated")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]

    home = Path(tempfile.mkdtemp(prefix="ollama-stack-bench-", dir="/var/tmp"))
    project = f"bench{uuid.uuid4().hex[:6]}"
    env = installation_env(home, project)
    timed([CLI, "dev.standins", "--version", "bench"], env)
    timed([CLI, "stack.install"], env)
    compose = None
    try:
        timed([CLI, "stack.start", "--pull", "never"], env)
        compose = compose_argv(env)
        ollama = f"{project}-ollama-1"
        print(
            f"{'MiB':>6} {'ours':>8} {'cp|zstd':>8} {'ratio':>6} {'peak RSS':>9} "
            f"{'2nd bytes':>10} {'2nd time':>9}"
        )
        seeded = 0
        for size in sizes:
            subprocess.run(
                ["docker", "exec", ollama, "python3", "-c", SEED, str(size - seeded)], check=True
            )
            seeded = size
            store = home / f"store-{size}"
            ours, rss, out = measured([CLI, "backup.create", "--to", str(store), "--json"], env)
            first = json.loads(out)
            base = baseline(ollama, home / "baseline.tar.zst")
            again, _, out = measured([CLI, "backup.create", "--to", str(store), "--json"], env)
            second = json.loads(out)
            print(
                f"{size:>6} {ours:>7.2f}s {base:>7.2f}s {base / ours:>6.2f} "
                f"{rss / 1024:>6.0f} MiB {second['written'] / first['written']:>9.2%} "
                f"{again / ours:>8.1%}"
            )
    finally:
        if compose:
            subprocess.run([*compose, "down", "--volumes"], env=env, capture_output=True)
        subprocess.run(["rm", "-rf", str(home)])


def baseline(container: str, target: Path) -> float:
    """`docker cp` of the volume piped through `zstd -1`: the tar-and-compress floor."""
    began = time.perf_counter()
    subprocess.run(
        f"docker cp {container}:/root/.ollama/. - | zstd -1 -q -T1 -o {target} -f",
        shell=True,
        check=True,
    )
    elapsed = time.perf_counter() - began
    target.unlink()
    return elapsed


if __name__ == "__main__":
    main()
