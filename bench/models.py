"""Model export speed and memory, measured as ratios in one run on this machine.

    .venv/bin/python bench/models.py [--sizes 256,1024] [--rounds 3]

For each size (MiB of one model blob, random bytes as GGUF weights look to a
reader), a model is written into the Ollama stand-in's store in Ollama's own
layout, then:
  * `models.export NAME FILE` (the manifest, every blob read out with
    `docker cp` and hashed as it streams, into one file) as a throughput
    ratio to `docker cp` of the same blob into a file (goal: near 1);
  * the peak RSS of the export (goal <= 150 MiB, flat across sizes).
Ours and the baseline take turns; medians are printed. Uses stand-in images
and a temporary OLLAMA_STACK_HOME; removes what it made. Not part of the
test run. (`models.push` to a box needs the second host of scripts/testhost.sh:
tests/integration/test_models.py prints its time.)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import uuid
from pathlib import Path

from backup import measured, shell, uptime

from bench import CLI, compose_argv, installation_env, timed

SEED = r"""
import hashlib, json, os, sys
models = "/root/.ollama/models"
name, size = sys.argv[1], int(sys.argv[2]) << 20
os.makedirs(f"{models}/blobs", exist_ok=True)
def blob(data=None, size=0):
    digest, tmp = hashlib.sha256(), f"{models}/blobs/incoming"
    with open(tmp, "wb") as out:
        if data is not None:
            digest.update(data); out.write(data); size = len(data)
        else:
            out.write(b"GGUF"); digest.update(b"GGUF")
            for _ in range(size >> 20):
                chunk = os.urandom(1 << 20); digest.update(chunk); out.write(chunk)
            size += 4
    os.rename(tmp, f"{models}/blobs/sha256-{digest.hexdigest()}")
    return {"digest": "sha256:" + digest.hexdigest(), "size": size}
config = blob(json.dumps({"model_format": "gguf", "model_family": "llama"}).encode())
layer = blob(size=size)
kind = "application/vnd.docker.container.image.v1+json"
manifest = {"schemaVersion": 2, "config": {"mediaType": kind, **config},
            "layers": [{"mediaType": "application/vnd.ollama.image.model", **layer}]}
path = f"{models}/manifests/registry.ollama.ai/library/{name}/latest"
os.makedirs(os.path.dirname(path), exist_ok=True)
open(path, "w").write(json.dumps(manifest))
print(layer["digest"][7:])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024", help="MiB of model data, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="turns of ours and the baseline")
    args = parser.parse_args()

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
        print(f"load average at the start: {uptime()} (2 cores), {args.rounds} rounds, medians")
        print(f"{'MiB':>6} {'export':>9} {'docker cp':>10} {'ratio':>6} {'peak RSS':>9}")
        for size in (int(s) for s in args.sizes.split(",")):
            name = f"bench{size}"
            digest = subprocess.run(
                ["docker", "exec", ollama, "python3", "-c", SEED, name, str(size)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            ours, base, rss = [], [], 0
            for _ in range(args.rounds):
                target = home / f"{name}.model"
                seconds, peak, _ = measured([CLI, "models.export", name, str(target)], env)
                ours.append(seconds)
                rss = max(rss, peak)
                target.unlink()
                blob = f"{ollama}:/root/.ollama/models/blobs/sha256-{digest}"
                base.append(shell(f"docker cp {blob} - > {home}/blob.tar"))
                (home / "blob.tar").unlink()
            mine, floor = statistics.median(ours), statistics.median(base)
            print(f"{size:>6} {mine:>8.2f}s {floor:>9.2f}s {floor / mine:>6.2f} {rss >> 10:>6} MiB")
        print(f"load average at the end: {uptime()}")
    finally:
        if compose:
            subprocess.run([*compose, "down", "--volumes"], env=env, capture_output=True)
        subprocess.run(["rm", "-rf", str(home)])


if __name__ == "__main__":
    main()
