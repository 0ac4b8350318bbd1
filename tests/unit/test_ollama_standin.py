"""compose/standins/ollama/server.py, the offline Ollama, run as its own process.

Each test starts the server on a free loopback port (OLLAMA_HOST=127.0.0.1:0)
with a private OLLAMA_MODELS and a private model source (STANDIN_MODEL_SOURCE,
Ollama's layout), and talks HTTP to it as the stack does. No Docker.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SERVER = Path(__file__).resolve().parents[2] / "compose" / "standins" / "ollama" / "server.py"
MIB = 1 << 20
TEMPLATE = "{{ .System }} {{ .Prompt }}"
PARAMS = {"stop": ["<|end|>"], "temperature": 0.7}


# -- models on disk, in Ollama's layout ---------------------------------------------


def gguf(kv: dict[str, Any], tensors: dict[str, list[int]], pad: int = 0, seed: int = 1) -> bytes:
    """A GGUF v3 file: header, key/values, tensor infos, then ``pad`` random bytes."""

    def text(value: str) -> bytes:
        data = value.encode()
        return struct.pack("<Q", len(data)) + data

    def value(item: Any) -> bytes:
        if isinstance(item, str):
            return struct.pack("<I", 8) + text(item)
        if isinstance(item, list):
            return struct.pack("<IIQ", 9, 8, len(item)) + b"".join(text(v) for v in item)
        return struct.pack("<II", 4, item)

    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)))
    for key, item in kv.items():
        out += text(key) + value(item)
    for name, dims in tensors.items():
        out += text(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, 0)
    return bytes(out) + random.Random(seed).randbytes(pad)


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def put_blob(root: Path, data: bytes) -> dict[str, Any]:
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    digest = digest_of(data)
    (root / "blobs" / digest.replace(":", "-")).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def write_model(root: Path, where: str, layers: list[tuple[str, bytes]], config: Any) -> bytes:
    """A manifest at manifests/<where> naming blobs written under blobs/; its bytes."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            **put_blob(root, json.dumps(config).encode()),
        },
        "layers": [
            {"mediaType": f"application/vnd.ollama.image.{kind}", **put_blob(root, data)}
            for kind, data in layers
        ],
    }
    raw = json.dumps(manifest).encode()
    path = root / "manifests" / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return raw


def tiny_model(pad: int = 3 * MIB, seed: int = 1) -> bytes:
    kv = {
        "general.architecture": "llama",
        "general.name": "tiny",
        "general.file_type": 15,
        "llama.context_length": 2048,
        "tokenizer.ggml.tokens": [f"t{i}" for i in range(10)],
    }
    return gguf(kv, {"w": [1000, 1000], "v": [500, 1000]}, pad, seed)


TINY_CONFIG = {
    "model_format": "gguf",
    "model_family": "llama",
    "model_families": ["llama"],
    "model_type": "1.5M",
    "file_type": "Q4_K_M",
}


def write_tiny(root: Path, where: str = "registry.ollama.ai/library/tiny/latest") -> bytes:
    layers = [
        ("model", tiny_model()),
        ("template", TEMPLATE.encode()),
        ("params", json.dumps(PARAMS).encode()),
    ]
    return write_model(root, where, layers, TINY_CONFIG)


def blob_file(root: Path, digest: str) -> Path:
    return root / "blobs" / digest.replace(":", "-")


def leftovers(root: Path) -> list[str]:
    """Partial downloads and temporary uploads left in a store."""
    names = [p.name for p in (root / "blobs").glob("*")] if (root / "blobs").is_dir() else []
    return sorted(n for n in names if n.endswith("-partial") or n.startswith("."))


# -- the server --------------------------------------------------------------------


@dataclass
class Standin:
    process: subprocess.Popen[bytes]
    port: int
    models: Path
    source: Path
    connections: list[http.client.HTTPConnection] = field(default_factory=list)

    def connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.connections.append(conn)
        return conn

    def call(
        self, method: str, path: str, document: Any = None, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self.connect()
        if document is not None:
            body = json.dumps(document).encode()
        conn.request(method, path, body=body)
        response = conn.getresponse()
        answer = response.read()
        conn.close()
        return response.status, dict(response.getheaders()), answer

    def json(self, method: str, path: str, document: Any = None) -> tuple[int, Any]:
        status, _, body = self.call(method, path, document)
        return status, json.loads(body) if body else None

    def lines(self, path: str, document: Any) -> tuple[int, list[dict[str, Any]]]:
        """A streamed NDJSON answer, every line."""
        status, headers, body = self.call("POST", path, document)
        assert headers.get("Content-Type") == "application/x-ndjson"
        return status, [json.loads(line) for line in body.splitlines() if line.strip()]


def start(tmp_path: Path, **env: str) -> Standin:
    models, source = tmp_path / "models", tmp_path / "source"
    source.mkdir(exist_ok=True)
    log = tmp_path / f"standin-{len(list(tmp_path.glob('standin-*.log')))}.log"
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "OLLAMA_HOST": "127.0.0.1:0",
        "OLLAMA_MODELS": str(models),
        "STANDIN_MODEL_SOURCE": str(source),
        "STANDIN_VERSION": "9.9.9-standin",
        **env,
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(SERVER)], env=environment, stdout=sink, stderr=sink
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        first = log.read_text().split("\n", 1)[0]
        if " listening on " in first:
            port = int(first.split(" listening on ", 1)[1].split()[0].rsplit(":", 1)[1])
            return Standin(process, port, models, source)
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"the stand-in did not start: {log.read_text()}")


@pytest.fixture
def standins(tmp_path: Path) -> Iterator[Any]:
    started: list[Standin] = []

    def make(**env: str) -> Standin:
        started.append(start(tmp_path, **env))
        return started[-1]

    yield make
    for standin in started:
        for conn in standin.connections:
            conn.close()
        standin.process.kill()  # only the processes this test started, by their handle
        standin.process.wait(timeout=10)


@pytest.fixture
def standin(standins: Any) -> Standin:
    return standins()


# -- the answers that were there before -------------------------------------------------


def test_root_version_ps_and_unknown_paths_answer_as_before(standin: Standin) -> None:
    status, headers, body = standin.call("GET", "/")
    assert (status, body) == (200, b"Ollama is running")
    assert standin.call("HEAD", "/")[0] == 200
    status, headers, body = standin.call("GET", "/api/version")
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(body) == {"version": "9.9.9-standin"}
    assert standin.json("GET", "/api/ps") == (200, {"models": []})
    assert standin.json("GET", "/api/tags") == (200, {"models": []})
    assert standin.call("GET", "/api/nothing")[::2] == (404, b"404 page not found")
    assert standin.call("GET", "/api/show")[0] == 404  # only POST, as in Ollama


def test_one_connection_carries_several_requests(standin: Standin) -> None:
    """HTTP/1.1 keep-alive, as the real server (aiohttp pools connections)."""
    conn = standin.connect()
    sockets = []
    for path in ("/api/version", "/api/tags", "/"):
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        sockets.append(conn.sock)
    assert sockets[0] is not None and sockets == [sockets[0]] * 3  # never reconnected


# -- /api/tags and /api/show --------------------------------------------------------------


def test_tags_lists_the_disk_layout_with_ollama_names_newest_first(standin: Standin) -> None:
    raw = write_tiny(standin.models)
    write_tiny(standin.models, "registry.ollama.ai/me/tiny/q4")
    write_tiny(standin.models, "host.example:5000/ns/model/tag")
    hand_made = standin.models / "manifests/registry.ollama.ai/library/bare/latest"
    hand_made.parent.mkdir(parents=True)
    hand_made.write_text('{"layers":[{"size":42}]}')  # no config: listed, as before
    orphan = standin.models / "manifests/registry.ollama.ai/library/orphan/latest"
    orphan.parent.mkdir(parents=True)
    orphan.write_text(json.dumps({"config": {"digest": "sha256:" + "0" * 64, "size": 2}}))
    older = [standin.models / "manifests/host.example:5000/ns/model/tag", hand_made]
    for age, path in enumerate(older, start=1):
        os.utime(path, (time.time() - 100 * age,) * 2)

    status, answer = standin.json("GET", "/api/tags")
    assert status == 200
    names = [m["name"] for m in answer["models"]]
    # the config blob of "orphan" is missing: Ollama does not list it
    assert names[-2:] == ["host.example:5000/ns/model:tag", "bare:latest"]
    assert sorted(names[:2]) == ["me/tiny:q4", "tiny:latest"]
    tiny = next(m for m in answer["models"] if m["name"] == "tiny:latest")
    manifest = json.loads(raw)
    assert tiny["model"] == "tiny:latest"
    assert tiny["digest"] == hashlib.sha256(raw).hexdigest()
    assert tiny["size"] == manifest["config"]["size"] + sum(p["size"] for p in manifest["layers"])
    assert tiny["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "1.5M",
        "quantization_level": "Q4_K_M",
    }
    assert tiny["modified_at"].endswith("Z")
    bare = next(m for m in answer["models"] if m["name"] == "bare:latest")
    assert (bare["size"], bare["details"]["format"]) == (42, "gguf")


def test_show_answers_like_ollama(standin: Standin) -> None:
    raw = write_tiny(standin.models)
    model_blob = json.loads(raw)["layers"][0]["digest"]
    status, answer = standin.json("POST", "/api/show", {"model": "TINY"})  # any case, as Ollama
    assert status == 200
    assert answer["template"] == TEMPLATE
    assert answer["parameters"].splitlines() == [
        'stop                           "<|end|>"',
        "temperature                    0.7",
    ]
    assert answer["details"]["family"] == "llama"
    assert answer["details"]["quantization_level"] == "Q4_K_M"
    assert answer["model_info"]["general.architecture"] == "llama"
    assert answer["model_info"]["llama.context_length"] == 2048
    assert answer["model_info"]["general.parameter_count"] == 1_500_000
    assert answer["model_info"]["tokenizer.ggml.tokens"] == []  # long arrays, unless verbose
    assert "general.name" not in answer["model_info"]
    modelfile = answer["modelfile"].splitlines()
    assert modelfile[2] == "# FROM tiny:latest"
    assert f"FROM {blob_file(standin.models, model_blob)}" in modelfile
    assert f'TEMPLATE """{TEMPLATE}"""' in modelfile
    assert "PARAMETER stop <|end|>" in modelfile
    assert answer["capabilities"] == ["completion"]
    assert answer["modified_at"].endswith("Z")
    assert "system" not in answer and "license" not in answer  # empty: left out, as Ollama

    verbose = standin.json("POST", "/api/show", {"model": "tiny", "verbose": True})[1]
    assert len(verbose["model_info"]["tokenizer.ggml.tokens"]) == 10


def test_show_refuses_as_ollama(standin: Standin) -> None:
    assert standin.json("POST", "/api/show", {"model": "nope"}) == (
        404,
        {"error": "model 'nope' not found"},
    )
    assert standin.json("POST", "/api/show", {}) == (400, {"error": "model is required"})
    assert standin.json("POST", "/api/show", {"model": "../x"}) == (
        400,
        {"error": "invalid model name"},
    )
    status, _, body = standin.call("POST", "/api/show", body=b"")
    assert (status, json.loads(body)) == (400, {"error": "missing request body"})


# -- /api/pull --------------------------------------------------------------------------


def test_pull_streams_progress_per_layer_and_fills_the_store(standin: Standin) -> None:
    raw = write_tiny(standin.source)
    manifest = json.loads(raw)
    status, lines = standin.lines("/api/pull", {"model": "tiny"})
    assert status == 200
    assert lines[0] == {"status": "pulling manifest"}
    assert [line["status"] for line in lines[-3:]] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    parts = [*manifest["layers"], manifest["config"]]  # Ollama fetches the config last
    seen = [line["digest"] for line in lines if "digest" in line]
    assert list(dict.fromkeys(seen)) == [p["digest"] for p in parts]
    big = parts[0]
    steps = [line for line in lines if line.get("digest") == big["digest"]]
    assert len(steps) >= 4  # 1 MiB at a time
    assert all(s["status"] == f"pulling {big['digest'][7:19]}" for s in steps)
    assert all(s["total"] == big["size"] for s in steps)
    done = [s.get("completed", 0) for s in steps]  # 0 is left out, as Go's omitempty does
    assert done == sorted(done) and done[-1] == big["size"] and "completed" not in steps[0]

    stored = standin.models / "manifests/registry.ollama.ai/library/tiny/latest"
    assert stored.read_bytes() == raw
    for part in parts:
        assert blob_file(standin.models, part["digest"]).read_bytes() == (
            blob_file(standin.source, part["digest"]).read_bytes()
        )
    assert leftovers(standin.models) == []
    assert [m["name"] for m in standin.json("GET", "/api/tags")[1]["models"]] == ["tiny:latest"]


def test_a_second_pull_copies_nothing(standin: Standin) -> None:
    manifest = json.loads(write_tiny(standin.source, "registry.ollama.ai/me/tiny/q4"))
    assert standin.lines("/api/pull", {"model": "me/tiny:q4"})[1][-1] == {"status": "success"}
    big = blob_file(standin.models, manifest["layers"][0]["digest"])
    before = big.stat()

    lines = standin.lines("/api/pull", {"model": "me/tiny:q4"})[1]
    assert lines[-1] == {"status": "success"}
    per_layer = [line for line in lines if "digest" in line]
    assert len(per_layer) == 4  # one line each: already there
    assert all(line["completed"] == line["total"] for line in per_layer)
    assert (big.stat().st_ino, big.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_pull_without_streaming_answers_once(standin: Standin) -> None:
    write_tiny(standin.source, "host.example:5000/ns/model/tag")
    answer = standin.json(
        "POST", "/api/pull", {"model": "host.example:5000/ns/model:tag", "stream": False}
    )
    assert answer == (200, {"status": "success"})
    assert (standin.models / "manifests/host.example:5000/ns/model/tag").is_file()


def test_pull_of_an_unknown_model_fails_as_ollama_does(standin: Standin) -> None:
    status, lines = standin.lines("/api/pull", {"model": "nope"})
    error = "pull model manifest: file does not exist"
    assert (status, lines) == (200, [{"status": "pulling manifest"}, {"error": error}])
    assert standin.json("POST", "/api/pull", {"model": "nope", "stream": False}) == (
        500,
        {"error": error},
    )
    assert standin.json("POST", "/api/pull", {"model": "a b"}) == (
        400,
        {"error": "invalid model name"},
    )
    assert not (standin.models / "manifests").exists() or not any(
        (standin.models / "manifests").rglob("*")
    )


def test_pull_resumes_a_partial_download(standin: Standin) -> None:
    manifest = json.loads(write_tiny(standin.source))
    big = manifest["layers"][0]
    source = blob_file(standin.source, big["digest"]).read_bytes()
    partial = blob_file(standin.models, big["digest"]).with_name(
        big["digest"].replace(":", "-") + "-partial"
    )
    partial.parent.mkdir(parents=True)
    partial.write_bytes(source[: 3 * MIB // 2])

    lines = standin.lines("/api/pull", {"model": "tiny"})[1]
    steps = [line for line in lines if line.get("digest") == big["digest"]]
    assert steps[0]["completed"] == 3 * MIB // 2  # goes on from there
    assert len(steps) == 2 + (big["size"] - 3 * MIB // 2) // MIB
    assert blob_file(standin.models, big["digest"]).read_bytes() == source
    assert leftovers(standin.models) == []


def test_an_interrupted_pull_leaves_a_partial_the_next_pull_resumes(
    standins: Any, tmp_path: Path
) -> None:
    standin = standins(STANDIN_PULL_BYTES_PER_SEC=str(4 * MIB))
    manifest = json.loads(write_tiny(standin.source))
    big = manifest["layers"][0]
    partial = standin.models / "blobs" / (big["digest"].replace(":", "-") + "-partial")

    conn = standin.connect()
    conn.request("POST", "/api/pull", body=json.dumps({"model": "tiny"}).encode())
    response = conn.getresponse()
    while (line := json.loads(response.readline())).get("completed", 0) < MIB:
        assert "error" not in line
    conn.sock.shutdown(socket.SHUT_RDWR)  # as Ctrl-C does to the client's connection
    conn.close()
    sizes = [0, -1]
    while sizes[-1] != sizes[-2]:  # the server notices at its next line, then stops
        time.sleep(0.3)
        sizes.append(partial.stat().st_size)
    assert MIB <= sizes[-1] < big["size"]
    assert not blob_file(standin.models, big["digest"]).exists()

    lines = standin.lines("/api/pull", {"model": "tiny"})[1]
    steps = [line for line in lines if line.get("digest") == big["digest"]]
    assert steps[0]["completed"] == sizes[-1]
    assert lines[-1] == {"status": "success"}
    data = blob_file(standin.models, big["digest"]).read_bytes()
    assert digest_of(data) == big["digest"]
    assert leftovers(standin.models) == []
    served = [
        line
        for line in (tmp_path / "standin-0.log").read_text().splitlines()
        if big["digest"] in line
    ]
    assert served == [  # what the source served: the partial, then only the rest
        f"pull {big['digest']}: {sizes[-1]} bytes from the source, from byte 0 of {big['size']}",
        f"pull {big['digest']}: {big['size'] - sizes[-1]} bytes from the source, "
        f"from byte {sizes[-1]} of {big['size']}",
    ]


def test_two_pulls_at_once_copy_a_blob_once_and_both_see_progress(standins: Any) -> None:
    standin = standins(STANDIN_PULL_BYTES_PER_SEC=str(4 * MIB))
    manifest = json.loads(write_tiny(standin.source))
    big = manifest["layers"][0]
    first = standin.connect()
    first.request("POST", "/api/pull", body=json.dumps({"model": "tiny"}).encode())
    response = first.getresponse()
    while "completed" not in json.loads(response.readline()):
        pass  # the first pull has begun copying the big blob

    second = standin.lines("/api/pull", {"model": "tiny"})[1]  # waits for the first
    rest = [json.loads(line) for line in response.read().splitlines()]
    assert second[-1] == rest[-1] == {"status": "success"}
    waiting = [line for line in second if line.get("digest") == big["digest"]]
    assert len(waiting) >= 2 and waiting[-1]["completed"] == big["size"]
    data = blob_file(standin.models, big["digest"]).read_bytes()
    assert digest_of(data) == big["digest"]


def test_a_blob_that_does_not_hash_to_its_name_is_not_kept(standin: Standin) -> None:
    manifest = json.loads(write_tiny(standin.source))
    big = manifest["layers"][0]
    damaged = blob_file(standin.source, big["digest"])
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))

    lines = standin.lines("/api/pull", {"model": "tiny"})[1]
    got = digest_of(bytes(data))
    error = f"digest mismatch, file must be downloaded again: want {big['digest']}, got {got}"
    assert lines[-1] == {"error": error}
    assert not blob_file(standin.models, big["digest"]).exists()
    assert leftovers(standin.models) == []
    assert not (standin.models / "manifests/registry.ollama.ai/library/tiny/latest").exists()


# -- /api/delete --------------------------------------------------------------------------


def test_delete_removes_the_manifest_and_the_blobs_no_other_model_uses(standin: Standin) -> None:
    first = json.loads(write_tiny(standin.models))
    other = [("model", tiny_model(pad=1000, seed=2)), ("template", TEMPLATE.encode())]
    second = json.loads(write_model(standin.models, "registry.ollama.ai/me/other/v1", other, {}))
    shared = {p["digest"] for p in second["layers"]} & {p["digest"] for p in first["layers"]}
    assert len(shared) == 1  # the template

    status, _, body = standin.call("DELETE", "/api/delete", {"model": "tiny"})
    assert (status, body) == (200, b"")
    assert not (standin.models / "manifests/registry.ollama.ai/library").exists()
    for part in [*first["layers"], first["config"]]:
        assert blob_file(standin.models, part["digest"]).exists() == (part["digest"] in shared)
    assert [m["name"] for m in standin.json("GET", "/api/tags")[1]["models"]] == ["me/other:v1"]

    assert standin.json("DELETE", "/api/delete", {"model": "tiny"}) == (
        404,
        {"error": "model 'tiny' not found"},
    )
    assert standin.json("DELETE", "/api/delete", {"model": "x/../y"}) == (
        400,
        {"error": 'name "x/../y" is invalid'},
    )


# -- /api/blobs -------------------------------------------------------------------------


def test_blob_upload_is_checked_against_its_name(standin: Standin) -> None:
    data = os.urandom(300_000)
    digest = digest_of(data)
    assert standin.call("HEAD", f"/api/blobs/{digest}")[0] == 404
    assert standin.call("POST", f"/api/blobs/{digest}", body=data)[:1] == (201,)
    assert standin.call("HEAD", f"/api/blobs/{digest}")[0] == 200
    assert blob_file(standin.models, digest).read_bytes() == data
    assert standin.call("POST", f"/api/blobs/{digest}", body=data)[0] == 200  # already there

    wrong = digest_of(b"something else")
    status, _, body = standin.call("POST", f"/api/blobs/{wrong}", body=data)
    assert status == 400
    assert json.loads(body) == {"error": f'digest mismatch, expected "{wrong}", got "{digest}"'}
    assert not blob_file(standin.models, wrong).exists()
    assert sorted(p.name for p in (standin.models / "blobs").iterdir()) == [
        digest.replace(":", "-")
    ]
    assert standin.json("HEAD", "/api/blobs/sha256:abc")[0] == 400
    assert standin.json("POST", "/api/blobs/sha256:abc")[1] == {"error": "invalid digest format"}


def test_blob_upload_in_chunks_streams_to_disk(standin: Standin) -> None:
    """Chunked transfer (a client streaming a file); memory stays flat."""
    size = 64 * MIB
    block = os.urandom(MIB)
    hashed = hashlib.sha256()
    for _ in range(size // MIB):
        hashed.update(block)
    digest = f"sha256:{hashed.hexdigest()}"
    before = peak_rss(standin.process.pid)
    conn = standin.connect()
    conn.request(
        "POST",
        f"/api/blobs/{digest}",
        body=(block for _ in range(size // MIB)),
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert (response.status, response.read()) == (201, b"")
    assert blob_file(standin.models, digest).stat().st_size == size
    assert peak_rss(standin.process.pid) - before < 16 * MIB


def peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


# -- /api/create ------------------------------------------------------------------------


def test_create_from_uploaded_files_writes_a_model_ollama_lists(standin: Standin) -> None:
    data = tiny_model(pad=1000)
    digest = digest_of(data)
    assert standin.call("POST", f"/api/blobs/{digest}", body=data)[0] == 201
    request = {
        "model": "me/made:v1",
        "files": {"tiny.gguf": digest},
        "template": TEMPLATE,
        "system": "be brief",
        "parameters": PARAMS,
        "stream": False,
    }
    assert standin.json("POST", "/api/create", request) == (200, {"status": "success"})

    path = standin.models / "manifests/registry.ollama.ai/me/made/v1"
    manifest = json.loads(path.read_bytes())
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    kinds = {p["mediaType"].rsplit(".", 1)[1]: p for p in manifest["layers"]}
    assert kinds["model"] == {
        "mediaType": "application/vnd.ollama.image.model",
        "digest": digest,
        "size": len(data),
    }
    assert blob_file(standin.models, kinds["system"]["digest"]).read_text() == "be brief"
    config = json.loads(blob_file(standin.models, manifest["config"]["digest"]).read_bytes())
    assert (config["model_format"], config["model_family"]) == ("gguf", "llama")
    assert (config["model_type"], config["file_type"]) == ("1.5M", "Q4_K_M")

    models = standin.json("GET", "/api/tags")[1]["models"]
    assert [(m["name"], m["details"]["family"]) for m in models] == [("me/made:v1", "llama")]
    shown = standin.json("POST", "/api/show", {"model": "me/made:v1"})[1]
    assert (shown["template"], shown["system"]) == (TEMPLATE, "be brief")
    assert shown["parameters"].splitlines()[0] == 'stop                           "<|end|>"'


def test_create_streams_and_replacing_a_model_prunes_its_old_layers(standin: Standin) -> None:
    data = tiny_model(pad=1000)
    digest = digest_of(data)
    standin.call("POST", f"/api/blobs/{digest}", body=data)
    request = {"model": "made", "files": {"model": digest}, "template": "first"}
    status, lines = standin.lines("/api/create", request)
    assert status == 200
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "parsing GGUF"
    assert f"using existing layer {digest}" in statuses
    assert f"creating new layer {digest_of(b'first')}" in statuses
    assert statuses[-2:] == ["writing manifest", "success"]

    lines = standin.lines("/api/create", {**request, "template": "second"})[1]
    assert lines[-1] == {"status": "success"}
    assert not blob_file(standin.models, digest_of(b"first")).exists()
    assert blob_file(standin.models, digest_of(b"second")).exists()
    assert blob_file(standin.models, digest).exists()


def test_create_refuses_as_ollama(standin: Standin) -> None:
    missing = digest_of(b"never uploaded")
    answer = standin.json("POST", "/api/create", {"model": "m", "files": {"m.gguf": missing}})
    error = f"blob not found for m.gguf (digest {missing}): file does not exist"
    assert answer == (400, {"error": error})
    text = standin.call("POST", f"/api/blobs/{digest_of(b'plain text')}", body=b"plain text")
    assert text[0] == 201
    plain = {"model": "m", "files": {"notes": digest_of(b"plain text")}, "stream": False}
    assert standin.json("POST", "/api/create", plain) == (400, {"error": "unknown type"})
    neither = {"model": "m", "stream": False}
    assert standin.json("POST", "/api/create", neither) == (
        400,
        {"error": "neither 'from' or 'files' was specified"},
    )
    assert standin.lines("/api/create", {"model": "m"})[1] == [
        {"error": "neither 'from' or 'files' was specified", "status": 400}
    ]
    outside = {"model": "m", "files": {"../m.gguf": missing}}
    assert standin.json("POST", "/api/create", outside)[0] == 400
    assert not (standin.models / "manifests").exists() or not any(
        p.is_file() for p in (standin.models / "manifests").rglob("*")
    )


def test_create_from_a_model_the_source_has_pulls_it_first(standin: Standin) -> None:
    write_tiny(standin.source)
    request = {"model": "mine", "from": "tiny", "system": "terse", "stream": False}
    assert standin.json("POST", "/api/create", request) == (200, {"status": "success"})
    shown = standin.json("POST", "/api/show", {"model": "mine"})[1]
    assert (shown["system"], shown["template"]) == ("terse", TEMPLATE)
    assert shown["details"]["family"] == "llama"
    names = sorted(m["name"] for m in standin.json("GET", "/api/tags")[1]["models"])
    assert names == ["mine:latest", "tiny:latest"]


# -- the process ----------------------------------------------------------------------


def test_sigterm_stops_it_at_once_even_during_a_pull(standins: Any) -> None:
    standin = standins(STANDIN_PULL_BYTES_PER_SEC=str(MIB))
    write_tiny(standin.source)
    conn = standin.connect()
    conn.request("POST", "/api/pull", body=json.dumps({"model": "tiny"}).encode())
    response = conn.getresponse()
    response.readline()
    began = time.monotonic()
    standin.process.send_signal(signal.SIGTERM)
    assert standin.process.wait(timeout=5) == 0
    assert time.monotonic() - began < 2


def test_broken_mode_stays_up_without_serving(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "STANDIN_BROKEN": "1", "OLLAMA_HOST": "127.0.0.1:0"}
    with (tmp_path / "log").open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(SERVER)], env={**env, "OLLAMA_MODELS": str(tmp_path)}, stderr=sink
        )
    try:
        time.sleep(0.5)
        assert process.poll() is None
        assert "BROKEN mode, not serving" in (tmp_path / "log").read_text()
    finally:
        process.kill()
        process.wait(timeout=10)


# -- names and addresses, read as Ollama reads them ---------------------------------------


@pytest.fixture(scope="module")
def server_module() -> Iterator[Any]:
    """The server file imported (it is no package module: the image runs it alone)."""
    spec = importlib.util.spec_from_file_location("ollama_standin_server", SERVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.mark.parametrize(
    ("text", "parts", "shortest"),
    [
        ("tiny", ("registry.ollama.ai", "library", "tiny", "latest"), "tiny:latest"),
        ("me/tiny:q4", ("registry.ollama.ai", "me", "tiny", "q4"), "me/tiny:q4"),
        ("h.io:5000/ns/m:t", ("h.io:5000", "ns", "m", "t"), "h.io:5000/ns/m:t"),
        ("http://h.io/ns/m", ("h.io", "ns", "m", "latest"), "h.io/ns/m:latest"),
        (
            "library/tiny:1.5b-q4_K_M",
            ("registry.ollama.ai", "library", "tiny", "1.5b-q4_K_M"),
            None,
        ),
    ],
)
def test_names_resolve_as_ollama_does(
    server_module: Any, text: str, parts: tuple[str, ...], shortest: str | None
) -> None:
    name = server_module.Name.parse(text)
    assert (name.host, name.namespace, name.model, name.tag) == parts
    assert name.display() == (shortest or "tiny:1.5b-q4_K_M")


@pytest.mark.parametrize("text", ["", "../x", "a/b/c/d/e", "tiny:", ":x", "a b", "x/../y", ".x"])
def test_invalid_names_are_refused(server_module: Any, text: str) -> None:
    assert server_module.Name.parse(text) is None


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("", ("0.0.0.0", 11434)),
        ("0.0.0.0:11434", ("0.0.0.0", 11434)),
        ("127.0.0.1", ("127.0.0.1", 11434)),
        ("http://127.0.0.1:8080/", ("127.0.0.1", 8080)),
        (":9999", ("", 9999)),
        ("[::1]:1234", ("::1", 1234)),
    ],
)
def test_listen_address_reads_ollama_host(
    server_module: Any, value: str, address: tuple[str, int]
) -> None:
    assert server_module.listen_address(value) == address
