"""Model export and push speed and memory, measured as ratios in one run on this machine.

    .venv/bin/python bench/models.py [--sizes 256,1024] [--rounds 3] [--what export,push]

For each size (MiB of one model blob, random bytes as GGUF weights look to a
reader), a model is written into the Ollama stand-in's store in Ollama's own
layout, then:
  * export: `models.export NAME FILE` (the manifest, every blob read out with
    `docker cp` and hashed as it streams, into one file) as a throughput
    ratio to `docker cp` of the same blob into a file (goal: near 1), and
    the peak RSS of the export (goal <= 150 MiB, flat across sizes);
  * push: `models.push NAME --remote HOST` to the second host of
    scripts/testhost.sh (a network namespace with its own sshd and dockerd,
    brought up here and taken down at the end) as a throughput ratio to
    `ssh HOST 'cat > FILE'` of the same bytes, from a file (goal >= 0.85).
    The box's copy is deleted between rounds, so every round sends every
    blob; a push that sends nothing (the box has it) shows the fixed cost,
    and `docker cp` of the blob out of the volume piped into the same ssh
    shows what reading the volume through docker leaves of the baseline.
    The "box" shares this machine's cores: its sshd, dockerd and Ollama
    work on the same 2 CPUs as ours, which a real box would not.
Ours and the baseline take turns; medians are printed, with the load average.
Uses stand-in images and a temporary OLLAMA_STACK_HOME; removes what it made.
Not part of the test run. The push part needs root (the second host).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import yaml
from backup import measured, shell, uptime

from bench import CLI, compose_argv, installation_env, timed

ROOT = Path(__file__).resolve().parents[1]
SSH_SHIM = ROOT / "tests" / "support" / "bin"
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
    parser.add_argument("--what", default="export,push", help="export, push or both")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    what = set(args.what.split(","))

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
        digests = {size: seed(ollama, f"bench{size}", size) for size in sizes}
        if "export" in what:
            exports(sizes, digests, args.rounds, home, env, ollama)
        if "push" in what:
            images = yaml.safe_load((home / "config.yaml").read_text())["images"]
            with second_host(images, home, env) as (host, ssh):
                pushes(sizes, digests, args.rounds, home, env, ollama, host, ssh)
    finally:
        if compose:
            subprocess.run([*compose, "down", "--volumes"], env=env, capture_output=True)
        subprocess.run(["rm", "-rf", str(home)])


def seed(ollama: str, name: str, size: int) -> str:
    """A model of ``size`` MiB in the stand-in's store; its big blob's hex digest."""
    return subprocess.run(
        ["docker", "exec", ollama, "python3", "-c", SEED, name, str(size)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def exports(
    sizes: list[int], digests: dict[int, str], rounds: int, home: Path, env: dict, ollama: str
) -> None:
    print(f"models.export: load average {uptime()} (2 cores), {rounds} rounds, medians")
    print(f"{'MiB':>6} {'export':>9} {'docker cp':>10} {'ratio':>6} {'peak RSS':>9}")
    for size in sizes:
        name, ours, base, rss = f"bench{size}", [], [], 0
        for _ in range(rounds):
            target = home / f"{name}.model"
            seconds, peak, _ = measured([CLI, "models.export", name, str(target)], env)
            ours.append(seconds)
            rss = max(rss, peak)
            target.unlink()
            blob = f"{ollama}:/root/.ollama/models/blobs/sha256-{digests[size]}"
            base.append(shell(f"docker cp {blob} - > {home}/blob.tar"))
            (home / "blob.tar").unlink()
        mine, floor = statistics.median(ours), statistics.median(base)
        print(f"{size:>6} {mine:>8.2f}s {floor:>9.2f}s {floor / mine:>6.2f} {rss >> 10:>6} MiB")
    print(f"load average at the end: {uptime()}")


def pushes(
    sizes: list[int],
    digests: dict[int, str],
    rounds: int,
    home: Path,
    env: dict,
    ollama: str,
    host: str,
    ssh: list[str],
) -> None:
    # The box's installation lives under the same home (by host) with its own
    # config: it is told the stand-in images, as the tests do.
    images = yaml.safe_load((home / "config.yaml").read_text())["images"]
    there = env | {f"OLLAMA_STACK_IMAGES_{svc.upper()}": image for svc, image in images.items()}
    remote = ["--remote", host]
    timed([CLI, "stack.install", *remote], there)
    timed([CLI, "stack.start", "--pull", "never", *remote], there)
    print(f"models.push: load average {uptime()} (2 cores), {rounds} rounds, medians")
    columns = f"{'push':>9} {'ssh cat':>9} {'ratio':>6} {'peak RSS':>9} {'nothing sent':>13}"
    print(f"{'MiB':>6} {columns} {'docker cp | ssh cat':>20} {'ratio':>6}")
    for size in sizes:
        name, ours, base, rss, again, piped = f"bench{size}", [], [], 0, [], []
        blob = home / "blob"
        out_of_volume = f"docker cp {ollama}:/root/.ollama/models/blobs/sha256-{digests[size]} -"
        subprocess.run(f"{out_of_volume} | tar -xO > {blob}", shell=True, check=True)
        sink = f"{' '.join(ssh)} 'cat > /var/tmp/bench-blob'"
        for _ in range(rounds):
            seconds, peak, _ = measured([CLI, "models.push", name, *remote], there)
            ours.append(seconds)
            rss = max(rss, peak)
            again.append(timed([CLI, "models.push", name, *remote], there))
            timed([CLI, "models.rm", name, "--yes", *remote], there)  # every round sends it all
            base.append(shell(f"{sink} < {blob}"))
            # What reading the volume through docker leaves of that (no hashing):
            piped.append(shell(f"{out_of_volume} | tar -xO | {sink}"))
            subprocess.run([*ssh, "rm -f /var/tmp/bench-blob"], check=True)
        blob.unlink()
        mine, floor = statistics.median(ours), statistics.median(base)
        fixed, through = statistics.median(again), statistics.median(piped)
        print(
            f"{size:>6} {mine:>8.2f}s {floor:>8.2f}s {floor / mine:>6.2f} {rss >> 10:>6} MiB"
            f" {fixed:>12.2f}s {through:>19.2f}s {through / mine:>6.2f}"
        )
    print(f"load average at the end: {uptime()}")


@contextlib.contextmanager
def second_host(
    images: dict[str, str], home: Path, env: dict[str, str]
) -> Iterator[tuple[str, list[str]]]:
    """scripts/testhost.sh up with a unique name and a temporary folder, the
    stand-in images loaded there over ssh (it reaches no registry), and the
    installation's HOME set to reach it as the tests do; down at the end."""
    name = f"bm{uuid.uuid4().hex[:5]}"
    folder = Path(tempfile.mkdtemp(prefix="ollama-stack-bench-host-", dir="/var/tmp"))
    script = ROOT / "scripts" / "testhost.sh"
    try:
        subprocess.run(["bash", str(script), "up", name, str(folder)], check=True, timeout=300)
        ssh = ["/usr/bin/ssh", "-F", str(folder / "ssh_config"), name]
        save = subprocess.Popen(["docker", "save", *images.values()], stdout=subprocess.PIPE)
        subprocess.run(
            [*ssh, "docker", "load"],
            stdin=save.stdout,
            check=True,
            timeout=300,
            capture_output=True,
        )
        assert save.wait(timeout=300) == 0
        user = home / "user"
        (user / ".ssh").mkdir(parents=True)
        block = (folder / "ssh_config").read_text().splitlines()
        (user / ".ssh" / "config").write_text(
            "\n".join(line for line in block if "UserKnownHostsFile" not in line) + "\n"
        )
        shutil.copy(folder / "known_hosts", user / ".ssh" / "known_hosts")
        plugins = user / ".docker" / "cli-plugins"
        plugins.mkdir(parents=True)
        plugin = compose_plugin()
        if plugin:
            (plugins / "docker-compose").symlink_to(plugin)
        env["HOME"] = str(user)
        env["PATH"] = f"{SSH_SHIM}{os.pathsep}{env['PATH']}"
        yield name, ssh
    finally:
        subprocess.run(["bash", str(script), "down", name, str(folder)], capture_output=True)
        subprocess.run(["rm", "-rf", str(folder)])


def compose_plugin() -> Path | None:
    home = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
    for candidate in (
        home / "cli-plugins" / "docker-compose",
        Path("/usr/libexec/docker/cli-plugins/docker-compose"),
        Path("/usr/lib/docker/cli-plugins/docker-compose"),
    ):
        if candidate.exists():
            return candidate.resolve()
    return None


if __name__ == "__main__":
    main()
