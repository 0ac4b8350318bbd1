"""Ollama stand-in server: the model API the stack and Open WebUI use, with no model run.

Answers like the real Ollama: HTTP/1.1, ``Content-Type: application/json``
(Open WebUI's aiohttp client refuses JSON without it), NDJSON streams, and
the real status codes and error texts:
  GET/HEAD /               -> "Ollama is running"
  GET /api/version         -> {"version": STANDIN_VERSION}
  GET /api/tags            -> the models on disk, most recently changed first
  GET /api/ps              -> {"models": []}
  POST /api/show           -> modelfile, template, parameters, details, model_info
  POST /api/pull           -> copies a model from $STANDIN_MODEL_SOURCE, NDJSON progress
  DELETE /api/delete       -> removes a manifest and the blobs no other manifest names
  HEAD/POST /api/blobs/sha256:<hex> -> is the blob there / upload it (hash checked)
  POST /api/create         -> a model from uploaded GGUF blobs ("files"), template, ...
The store is Ollama's layout under $OLLAMA_MODELS (default /root/.ollama/models):
``manifests/<host>/<namespace>/<model>/<tag>`` and ``blobs/sha256-<hex>``, read
on every request, so a manifest copied in later shows up at once. The model
source for pulls has the same layout. OLLAMA_HOST picks the address (default
0.0.0.0:11434, as the real image sets); STANDIN_PULL_BYTES_PER_SEC slows pulls
so a test can interrupt one. STANDIN_BROKEN=1, or a version containing
"broken", keeps the process alive without serving (for rollback tests).
SIGTERM stops it at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

VERSION = os.environ.get("STANDIN_VERSION", "0.0.0-standin")
MODELS = Path(os.environ.get("OLLAMA_MODELS") or "/root/.ollama/models")
SOURCE = os.environ.get("STANDIN_MODEL_SOURCE", "")
PULL_RATE = int(os.environ.get("STANDIN_PULL_BYTES_PER_SEC") or 0)
NO_PRUNE = bool(os.environ.get("OLLAMA_NOPRUNE"))
DEFAULT_LISTEN = "0.0.0.0:11434"
DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"
CHUNK = 1 << 20
MAX_DOCUMENT = 16 << 20  # a JSON request; the real server has no limit, none comes near
MAX_TEXT_LAYER = 4 << 20  # template, system, license, params, messages
DRAIN_LIMIT = 256 << 10  # Go's net/http reads this much of a body a handler left, then hangs up
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MEDIA = "application/vnd.ollama.image."
DIGEST = re.compile(r"sha256[:-][0-9a-fA-F]{64}")
PARTS = {  # what each part of a model name may hold (Ollama's types/model)
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
}
FILE_TYPES = {  # general.file_type of a GGUF, as Ollama names it
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
}  # fmt: skip

STORE_LOCK = threading.Lock()  # manifests written or removed, blobs pruned
_BLOB_LOCKS: dict[str, threading.Lock] = {}
_BLOB_LOCKS_GUARD = threading.Lock()


class Refusal(Exception):
    """An answer of the real server's: its text, HTTP status when not
    streaming; a streamed error line carries the status unless it is 500."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message, self.status = message, status

    def line(self) -> dict[str, Any]:
        return {"error": self.message, **({"status": self.status} if self.status != 500 else {})}


# -- names and the store -------------------------------------------------------------


@dataclass(frozen=True)
class Name:
    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> Name | None:
        """``tiny`` = registry.ollama.ai/library/tiny:latest; ``me/tiny:q4``;
        ``host/ns/model:tag``; None when Ollama would call it invalid."""
        rest = text.split("@", 1)[0]
        tag = DEFAULT_TAG
        if rest.rfind(":") > rest.rfind("/"):
            rest, tag = rest.rsplit(":", 1)
        segments = rest.rsplit("/", 2)
        host = segments[0].split("://", 1)[-1] if len(segments) == 3 else DEFAULT_HOST
        namespace = segments[-2] if len(segments) > 1 else DEFAULT_NAMESPACE
        name = cls(host, namespace, segments[-1], tag)
        return name if name.valid() else None

    def valid(self) -> bool:
        return all(PARTS[part].fullmatch(getattr(self, part)) for part in PARTS)

    def key(self) -> tuple[str, ...]:
        return tuple(getattr(self, part).lower() for part in PARTS)

    def display(self) -> str:
        """The shortest form, as /api/tags names models."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    def manifest(self, root: Path) -> Path:
        return root / "manifests" / self.host / self.namespace / self.model / self.tag


def stored(root: Path) -> Iterator[tuple[Name, Path]]:
    """Every manifest file under ``root`` whose path is a valid name (so a
    temporary file, which starts with a dot, is never one)."""
    base = root / "manifests"
    for path in sorted(base.glob("*/*/*/*")):
        name = Name(*path.relative_to(base).parts)
        if path.is_file() and name.valid():
            yield name, path


def resolve(root: Path, name: Name) -> Name:
    """The stored spelling of a name; Ollama matches names without regard to case."""
    return next((n for n, _ in stored(root) if n.key() == name.key()), name)


def blob_path(digest: str, root: Path = MODELS) -> Path | None:
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        return None
    return root / "blobs" / digest.replace(":", "-")


def known_blob(digest: str) -> Path:
    """The blob path of a digest, refused the way Ollama refuses a bad one."""
    path = blob_path(digest)
    if path is None:
        raise Refusal("invalid digest format", 400)
    return path


def load_manifest(path: Path) -> tuple[bytes, dict[str, Any]] | None:
    try:
        raw = path.read_bytes()
        document = json.loads(raw)
    except (OSError, ValueError):
        return None
    return (raw, document) if isinstance(document, dict) else None


def parts_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The layers, then the config (the order a pull fetches them in)."""
    layers = [p for p in document.get("layers") or [] if isinstance(p, dict)]
    config = document.get("config")
    return layers + ([config] if isinstance(config, dict) and config.get("digest") else [])


def digests_of(document: dict[str, Any]) -> set[str]:
    return {str(p.get("digest")) for p in parts_of(document) if p.get("digest")}


def read_config(document: dict[str, Any]) -> dict[str, Any] | None:
    """The config blob's JSON: {} without one; None when it is named but unreadable."""
    config = document.get("config")
    if not isinstance(config, dict) or not config.get("digest"):
        return {}
    path = blob_path(str(config["digest"]))
    try:
        value = json.loads(path.read_bytes()) if path else None
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def timestamp(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def prune(candidates: set[str]) -> None:
    """Remove the blobs among ``candidates`` that no manifest names (hold STORE_LOCK)."""
    if NO_PRUNE:
        return
    used = set().union(*(digests_of(m[1]) for _, p in stored(MODELS) if (m := load_manifest(p))))
    for digest in candidates - used:
        path = blob_path(digest)
        if path is not None:
            path.unlink(missing_ok=True)


def remove_empty_dirs(directory: Path) -> None:
    top = MODELS / "manifests"
    while directory != top and top in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def blob_lock(digest: str) -> threading.Lock:
    with _BLOB_LOCKS_GUARD:
        return _BLOB_LOCKS.setdefault(digest, threading.Lock())


# -- GGUF metadata (what Ollama reads for details and model_info) ---------------------

GGUF_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}  # fmt: skip
GGUF_STRING, GGUF_ARRAY = 8, 9


class _GGUFReader:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self.handle.read(size)
        if len(data) != size:
            raise ValueError("GGUF cut short")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        size = self.take("<Q")
        if size > MAX_TEXT_LAYER:
            raise ValueError("GGUF string too long")
        data = self.handle.read(size)
        if len(data) != size:
            raise ValueError("GGUF cut short")
        return data.decode("utf-8", "replace")

    def value(self, kind: int) -> Any:
        if kind == GGUF_STRING:
            return self.string()
        if kind == GGUF_ARRAY:
            inner, count = self.take("<I"), self.take("<Q")
            if count > 1 << 20:  # a vocabulary is a few hundred thousand tokens
                raise ValueError("GGUF array too long")
            return [self.value(inner) for _ in range(count)]
        if kind not in GGUF_SCALARS:
            raise ValueError(f"GGUF value type {kind}")
        return self.take(GGUF_SCALARS[kind])


def read_gguf(path: Path) -> tuple[dict[str, Any], int] | None:
    """(key/values, parameter count) of a GGUF file; None when it is not one."""
    try:
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                return None
            reader = _GGUFReader(handle)
            if reader.take("<I") < 2:
                return None
            tensors, count = reader.take("<Q"), reader.take("<Q")
            if tensors > 1 << 24 or count > 1 << 20:
                return None
            kv = {reader.string(): reader.value(reader.take("<I")) for _ in range(count)}
            parameters = 0
            for _ in range(tensors):
                reader.string()
                dims = reader.take("<I")
                if dims > 8:
                    return None
                parameters += math.prod(reader.take("<Q") for _ in range(dims))
                reader.take("<I"), reader.take("<Q")  # type, offset
            return kv, parameters
    except (OSError, ValueError, struct.error):
        return None


def human_number(count: int) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            value = count / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return str(count)


def is_projector(kv: dict[str, Any]) -> bool:
    return kv.get("general.type") in ("projector", "mmproj") or (
        kv.get("general.architecture") == "clip" and not kv.get("clip.block_count")
    )


# -- /api/tags and /api/show ---------------------------------------------------------


def details(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": config.get("model_format", "" if config else "gguf"),
        "family": config.get("model_family", ""),
        "families": config.get("model_families"),
        "parameter_size": config.get("model_type", ""),
        "quantization_level": config.get("file_type", ""),
    }


def list_models() -> list[dict[str, Any]]:
    """Like Ollama: a manifest whose config blob is missing is not listed."""
    found = []
    for name, path in stored(MODELS):
        loaded = load_manifest(path)
        config = read_config(loaded[1]) if loaded else None
        if loaded is None or config is None:
            continue
        raw, document = loaded
        size = sum(int(p.get("size") or 0) for p in parts_of(document) + layerless(document))
        entry = {
            "name": name.display(),
            "model": name.display(),
            "modified_at": timestamp(path),
            "size": size,
            "digest": hashlib.sha256(raw).hexdigest(),
            "details": details(config),
        }
        found.append((path.stat().st_mtime, entry))
    found.sort(key=lambda pair: pair[0], reverse=True)  # stable: same mtime keeps name order
    return [entry for _, entry in found]


def layerless(document: dict[str, Any]) -> list[dict[str, Any]]:
    """A config without a digest still counts its size (hand-made manifests)."""
    config = document.get("config")
    return [config] if isinstance(config, dict) and not config.get("digest") else []


def text_layers(document: dict[str, Any]) -> dict[str, list[str]]:
    """Media type suffix (template, system, license, params, messages) -> contents."""
    found: dict[str, list[str]] = {}
    for part in parts_of(document):
        kind = str(part.get("mediaType", "")).removeprefix(MEDIA)
        path = blob_path(str(part.get("digest", "")))
        if kind in ("template", "system", "license", "params", "messages") and path:
            try:
                with path.open("rb") as handle:
                    text = handle.read(MAX_TEXT_LAYER).decode("utf-8", "replace")
            except OSError:
                continue
            found.setdefault(kind, []).append(text)
    return found


def go_value(value: Any) -> str:
    """A parameter value as Go's %#v prints what JSON decoding gave it."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parameter_lines(params: dict[str, Any]) -> list[tuple[str, Any]]:
    pairs = []
    for key, value in params.items():
        pairs.extend((key, v) for v in (value if isinstance(value, list) else [value]))
    return pairs


def show(text: str, verbose: bool) -> dict[str, Any]:
    name = Name.parse(text)
    if name is None:
        raise Refusal("invalid model name", 400)
    name = resolve(MODELS, name)
    path = name.manifest(MODELS)
    loaded = load_manifest(path)
    if loaded is None:
        raise Refusal(f"model '{text}' not found", 404)
    document = loaded[1]
    config = read_config(document) or {}
    texts = text_layers(document)
    model = next((p for p in parts_of(document) if p.get("mediaType") == MEDIA + "model"), None)
    model_file = blob_path(str(model.get("digest", ""))) if model else None
    params = _json_text(texts.get("params"), {})
    template = "".join(texts.get("template", []))
    answer = {
        "license": "\n".join(texts.get("license", [])),
        "modelfile": modelfile(name, model_file, texts, params),
        "parameters": "\n".join(f"{k:<30} {go_value(v)}" for k, v in parameter_lines(params)),
        "template": template,
        "system": "".join(texts.get("system", [])),
        "details": details(config),
        "model_info": model_info(model_file, verbose),
        "capabilities": capabilities(template, document),
        "modified_at": timestamp(path),
    }
    # Ollama leaves out what is empty (Go's omitempty).
    return {k: v for k, v in answer.items() if v != "" or k in ("modelfile", "modified_at")}


def _json_text(texts: list[str] | None, default: Any) -> Any:
    try:
        value = json.loads(texts[0]) if texts else default
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def modelfile(
    name: Name, model: Path | None, texts: dict[str, list[str]], params: dict[str, Any]
) -> str:
    lines = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {name.display()}",
        "",
        f"FROM {model or name.display()}",
    ]
    lines += [f'TEMPLATE """{t}"""' for t in texts.get("template", [])]
    lines += [f'SYSTEM """{s}"""' for s in texts.get("system", [])]
    lines += [f"PARAMETER {k} {v}" for k, v in parameter_lines(params)]
    lines += [f'LICENSE """{text}"""' for text in texts.get("license", [])]
    for message in _json_text(texts.get("messages"), []):
        if isinstance(message, dict):
            lines.append(f"MESSAGE {message.get('role', '')} {message.get('content', '')}")
    return "\n".join(lines) + "\n"


def model_info(model: Path | None, verbose: bool) -> dict[str, Any]:
    read = read_gguf(model) if model else None
    if read is None:
        return {}
    kv, parameters = read
    info = {
        k: ([] if isinstance(v, list) and len(v) > 5 and not verbose else v) for k, v in kv.items()
    }
    info.pop("general.name", None)
    info.pop("tokenizer.chat_template", None)
    info["general.parameter_count"] = parameters
    return info


def capabilities(template: str, document: dict[str, Any]) -> list[str]:
    found = ["completion"]
    if ".Tools" in template:
        found.append("tools")
    if ".Suffix" in template:
        found.append("insert")
    if any(p.get("mediaType") == MEDIA + "projector" for p in parts_of(document)):
        found.append("vision")
    return found


# -- /api/pull -------------------------------------------------------------------------


def pull_steps(text: str, announce: bool = True) -> Iterator[dict[str, Any]]:
    """What Ollama streams while pulling, read from the local model source."""
    name = Name.parse(text)
    if name is None:
        raise Refusal("invalid model name", 400)
    name = resolve(MODELS, name)
    yield {"status": "pulling manifest"}
    source_root = Path(SOURCE) if SOURCE else None
    source = (
        load_manifest(resolve(source_root, name).manifest(source_root)) if source_root else None
    )
    if source_root is None or source is None:
        raise Refusal("pull model manifest: file does not exist")
    raw, document = source
    for part in parts_of(document):
        yield from fetch_blob(str(part.get("digest", "")), source_root)
    yield {"status": "verifying sha256 digest"}  # each blob was checked as it was copied
    yield {"status": "writing manifest"}
    with STORE_LOCK:
        path = name.manifest(MODELS)
        old = load_manifest(path)
        write_atomic(path, raw)
        unused = (digests_of(old[1]) if old else set()) - digests_of(document)
        prune(unused)
    if unused and not NO_PRUNE:
        yield {"status": "removing unused layers"}
    if announce:
        yield {"status": "success"}


def progress(digest: str, total: int, completed: int) -> dict[str, Any]:
    line = {"status": f"pulling {digest[7:19]}", "digest": digest}
    # Go's omitempty: a zero total or completed is left out, as Ollama sends it.
    return (
        line | ({"total": total} if total else {}) | ({"completed": completed} if completed else {})
    )


def fetch_blob(digest: str, source_root: Path) -> Iterator[dict[str, Any]]:
    target, source = blob_path(digest), blob_path(digest, source_root)
    if target is None or source is None:
        raise Refusal("invalid digest format")
    lock = blob_lock(digest)
    while not lock.acquire(timeout=0.5):  # another pull copies it: report its progress
        total = source.stat().st_size if source.is_file() else 0
        yield progress(digest, total, size_of(target.with_name(target.name + "-partial")))
    try:
        if target.is_file():
            size = target.stat().st_size
            yield progress(digest, size, size)
            return
        if not source.is_file():
            raise Refusal("file does not exist")
        yield from copy_resumed(digest, source, target)
    finally:
        lock.release()


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def copy_resumed(digest: str, source: Path, target: Path) -> Iterator[dict[str, Any]]:
    """Copy into ``<blob>-partial`` from where an earlier pull stopped; rename
    it to the blob once whole and hashing to its name."""
    partial = target.with_name(target.name + "-partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    total = source.stat().st_size
    start = size_of(partial)
    start = start if start <= total else 0
    hashed = hashlib.sha256()
    chunk = min(CHUNK, max(PULL_RATE // 10, 1)) if PULL_RATE else CHUNK
    done = start
    try:
        with partial.open("r+b" if start else "w+b") as out, source.open("rb") as inp:
            for block in iter(lambda: out.read(min(CHUNK, start - out.tell())), b""):
                hashed.update(block)  # what an earlier pull wrote, read back
            out.truncate(start)
            inp.seek(start)
            began = time.monotonic()
            yield progress(digest, total, done)
            while block := inp.read(chunk):
                out.write(block)
                out.flush()  # an interrupted pull leaves what it copied
                hashed.update(block)
                done += len(block)
                if PULL_RATE:
                    time.sleep(max(0.0, (done - start) / PULL_RATE - (time.monotonic() - began)))
                yield progress(digest, total, done)
    finally:  # what a registry's access log would show: the bytes it served
        log(f"pull {digest}: {done - start} bytes from the source, from byte {start} of {total}")
    got = f"sha256:{hashed.hexdigest()}"
    if got != digest:
        partial.unlink(missing_ok=True)
        raise Refusal(f"digest mismatch, file must be downloaded again: want {digest}, got {got}")
    os.replace(partial, target)


# -- /api/delete -------------------------------------------------------------------------


def delete(text: str) -> None:
    name = Name.parse(text)
    if name is None:
        raise Refusal(f"name {json.dumps(text)} is invalid", 400)
    with STORE_LOCK:
        path = resolve(MODELS, name).manifest(MODELS)
        if not path.is_file():
            raise Refusal(f"model '{text}' not found", 404)
        loaded = load_manifest(path)
        if loaded is None:
            raise Refusal(f"{path.name}: invalid manifest", 500)
        path.unlink()
        remove_empty_dirs(path.parent)
        prune(digests_of(loaded[1]))


# -- /api/create -------------------------------------------------------------------------


Built = tuple[list[dict[str, Any]], dict[str, Any]]  # a model's layers and config


@dataclass
class CreateRequest:
    name: Name
    files: dict[str, str] | None
    base: str
    document: dict[str, Any]


def check_create(document: dict[str, Any]) -> CreateRequest:
    """What the real server refuses before it starts (always a plain answer)."""
    files = document.get("files")
    if files is not None and not (
        isinstance(files, dict) and all(isinstance(v, str) for v in files.values())
    ):
        raise Refusal("json: cannot unmarshal files into map[string]string", 400)
    for path, digest in (files or {}).items():
        if any(e in ("", ".", "..") for e in path.split("/")) or set(path) & set("\\:"):
            raise Refusal(f"file path must be relative: {path}", 400)
        if blob_path(digest) is None:
            raise Refusal(f"invalid digest for {path}: invalid digest format", 400)
    if document.get("adapters"):
        raise Refusal("LoRA adapters are no longer supported", 400)
    name = Name.parse(str(document.get("model") or document.get("name") or ""))
    if name is None:
        raise Refusal("invalid model name", 400)
    for path, digest in (files or {}).items():
        if not known_blob(digest).is_file():
            raise Refusal(f"blob not found for {path} (digest {digest}): file does not exist", 400)
    if any(p.endswith(".safetensors") for p in files or {}):
        raise Refusal("the Ollama stand-in imports GGUF files only", 400)
    base = document.get("from") or ""
    return CreateRequest(resolve(MODELS, name), files, str(base), document)


def create_steps(request: CreateRequest) -> Iterator[dict[str, Any]]:
    if request.base:
        layers, config = yield from base_model(request.base)
    elif request.files is not None:
        layers, config = yield from gguf_layers(request.files)
    else:
        raise Refusal("neither 'from' or 'files' was specified", 400)
    config |= {k: v for k, v in info_overrides(request.document).items() if v}
    layers = yield from modelfile_layers(layers, request.document)
    config_blob = json.dumps(config | {"rootfs": rootfs(layers)}, separators=(",", ":"))
    config_part, _ = put_blob((config_blob + "\n").encode(), CONFIG_TYPE)
    yield {"status": "writing manifest"}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config_part,
        "layers": layers,
    }
    with STORE_LOCK:
        path = request.name.manifest(MODELS)
        old = load_manifest(path)
        write_atomic(path, json.dumps(manifest, separators=(",", ":")).encode())
        prune((digests_of(old[1]) if old else set()) - digests_of(manifest))
    yield {"status": "success"}


def base_model(text: str) -> Generator[dict[str, Any], None, Built]:
    """FROM another model: the local one, pulled from the source first if missing."""
    name = Name.parse(text)
    if name is None:
        raise Refusal("invalid model name", 400)
    path = resolve(MODELS, name).manifest(MODELS)
    if not path.is_file():
        yield from pull_steps(text, announce=False)
    loaded = load_manifest(path)
    if loaded is None:
        raise Refusal(f"model '{text}' not found", 404)
    layers = [dict(p) for p in loaded[1].get("layers") or [] if isinstance(p, dict)]
    return layers, read_config(loaded[1]) or {}


def gguf_layers(files: dict[str, str]) -> Generator[dict[str, Any], None, Built]:
    """Each file a GGUF model (or projector) layer, as Ollama's create makes them."""
    if not any(f.endswith(".gguf") or gguf_magic(d) for f, d in files.items()):
        raise Refusal("unknown type", 400)
    layers: list[dict[str, Any]] = []
    config: dict[str, Any] = {"model_format": "gguf"}
    for path in sorted(files):
        digest = files[path]
        yield {"status": "parsing GGUF"}
        read = read_gguf(known_blob(digest)) if gguf_magic(digest) else None
        if read is None:
            raise Refusal("invalid file magic")
        kv, parameters = read
        kind = "projector" if is_projector(kv) else "model"
        size = known_blob(digest).stat().st_size
        layers.append({"mediaType": MEDIA + kind, "digest": digest, "size": size})
        yield {"status": f"using existing layer {digest}"}
        if kind == "model":
            config = model_config(config, kv, parameters)
    return layers, config


def gguf_magic(digest: str) -> bool:
    try:
        with known_blob(digest).open("rb") as handle:
            return handle.read(4) == b"GGUF"
    except OSError:
        return False


def model_config(config: dict[str, Any], kv: dict[str, Any], parameters: int) -> dict[str, Any]:
    family = str(kv.get("general.architecture", ""))
    return config | {
        "model_family": config.get("model_family") or family,
        "model_families": [family] if family else None,
        "model_type": config.get("model_type") or human_number(parameters),
        "file_type": config.get("file_type") or FILE_TYPES.get(kv.get("general.file_type"), ""),
    }


def info_overrides(document: dict[str, Any]) -> dict[str, Any]:
    info = document.get("info") if isinstance(document.get("info"), dict) else {}
    return {
        "model_family": info.get("model_family"),
        "model_type": info.get("parameter_size"),
        "file_type": info.get("quantization_level"),
    }


def modelfile_layers(
    layers: list[dict[str, Any]], document: dict[str, Any]
) -> Generator[dict[str, Any], None, list[dict[str, Any]]]:
    """Template, system, license, parameters and messages, each a layer that
    replaces any of its kind the base model had."""
    given = {
        "template": document.get("template") or "",
        "system": document.get("system") or "",
        "license": document.get("license") or "",
        "params": document.get("parameters") or {},
        "messages": document.get("messages") or [],
    }
    for kind, value in given.items():
        if not value:
            continue
        texts = value if kind == "license" and isinstance(value, list) else [value]
        layers = [p for p in layers if p.get("mediaType") != MEDIA + kind]
        for text in texts:
            data = text if isinstance(text, str) else json.dumps(text, sort_keys=True)
            part, existed = put_blob(data.encode(), MEDIA + kind)
            verb = "using existing" if existed else "creating new"
            yield {"status": f"{verb} layer {part['digest']}"}
            layers.append(part)
    return layers


def put_blob(data: bytes, media_type: str) -> tuple[dict[str, Any], bool]:
    """The layer for ``data``, and whether its blob was there already."""
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    path = known_blob(digest)
    existed = path.is_file()
    if not existed:
        write_atomic(path, data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}, existed


def rootfs(layers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "layers", "diff_ids": [p["digest"] for p in layers]}


# -- blobs ---------------------------------------------------------------------------


def receive_blob(digest: str, chunks: Iterator[bytes]) -> None:
    """Stream an upload to a temporary file, keep it only if it hashes to its name."""
    target = known_blob(digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".upload-{uuid.uuid4().hex}")
    hashed = hashlib.sha256()
    try:
        with temporary.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
                hashed.update(chunk)
        got = f"sha256:{hashed.hexdigest()}"
        if got != digest:
            raise Refusal(
                f"digest mismatch, expected {json.dumps(digest)}, got {json.dumps(got)}", 400
            )
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


# -- HTTP ----------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server_version = "ollama-standin"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._consumed = False
        path = unquote(urlsplit(self.path).path).rstrip("/") or "/"
        try:
            self._route(self.command, path)()
        except Refusal as refusal:
            self._json({"error": refusal.message}, refusal.status)
        finally:
            self._leave_body()

    do_HEAD = do_POST = do_DELETE = do_GET

    def _route(self, method: str, path: str) -> Callable[[], None]:
        reading = method in ("GET", "HEAD")
        routes: dict[tuple[bool, str], Callable[[], None]] = {
            (True, "/"): lambda: self._send(200, b"Ollama is running", "text/plain; charset=utf-8"),
            (True, "/api/version"): lambda: self._json({"version": VERSION}),
            (True, "/api/tags"): lambda: self._json({"models": list_models()}),
            (True, "/api/ps"): lambda: self._json({"models": []}),
        }
        if (reading, path) in routes:
            return routes[(reading, path)]
        if path.startswith("/api/blobs/") and method in ("HEAD", "POST"):
            return lambda: self._blob(method, path.removeprefix("/api/blobs/"))
        calls = {
            ("POST", "/api/show"): self._show,
            ("POST", "/api/pull"): self._pull,
            ("DELETE", "/api/delete"): self._delete,
            ("POST", "/api/create"): self._create,
        }
        return calls.get((method, path), self._not_found)

    # -- the calls

    def _show(self) -> None:
        document = self._document()
        text = document.get("model") or document.get("name")
        if not text:
            raise Refusal("model is required", 400)
        self._json(show(str(text), document.get("verbose") is True))

    def _pull(self) -> None:
        document = self._document()
        text = str(document.get("model") or document.get("name") or "")
        if Name.parse(text) is None:
            raise Refusal("invalid model name", 400)
        self._steps(pull_steps(text), document.get("stream") is not False)

    def _delete(self) -> None:
        document = self._document()
        delete(str(document.get("model") or document.get("name") or ""))
        self._send(200, b"", "text/plain; charset=utf-8")

    def _create(self) -> None:
        document = self._document()
        request = check_create(document)
        self._steps(create_steps(request), document.get("stream") is not False)

    def _blob(self, method: str, digest: str) -> None:
        target = known_blob(digest)
        if method == "HEAD" and not target.is_file():
            self._json({"error": f"blob {json.dumps(digest)} not found"}, 404)
        elif target.is_file():
            self._send(200, b"", "text/plain; charset=utf-8")  # the body is not read, as in Ollama
        else:
            try:
                receive_blob(digest, self._body())
            except (OSError, ValueError):
                self.close_connection = True
                raise Refusal("the upload ended early", 400) from None
            self._send(201, b"", "text/plain; charset=utf-8")

    def _not_found(self) -> None:
        self._send(404, b"404 page not found", "text/plain; charset=utf-8")

    # -- answers

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: object, status: int = 200) -> None:
        body = json.dumps(value, separators=(",", ":")).encode()  # compact, as Go writes it
        self._send(status, body, "application/json; charset=utf-8")

    def _steps(self, steps: Iterator[dict[str, Any]], stream: bool) -> None:
        """Stream NDJSON, or (``"stream": false``) wait for success or the first error."""
        with closing(_refusals_as_lines(steps)) as lines:
            if stream:
                self._stream(lines)
                return
            for line in lines:
                if "error" in line:
                    self._json({"error": line["error"]}, line.get("status", 500))
                    return
                if line.get("status") == "success":
                    self._json(line)
                    return
            self._json({"error": "unexpected end of progress response"}, 500)

    def _stream(self, lines: Iterator[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for line in lines:
                self._chunk(json.dumps(line, separators=(",", ":")).encode() + b"\n")
            self._chunk(b"")
        except OSError:  # the client went away (Ctrl-C): stop, keep the partial
            self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # -- request bodies

    def _body(self) -> Iterator[bytes]:
        self._consumed = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from self._chunked_body()
            return
        yield from self._exactly(int(self.headers.get("Content-Length") or 0))

    def _chunked_body(self) -> Iterator[bytes]:
        while size := int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16):
            yield from self._exactly(size)
            self.rfile.readline(1024)
        while self.rfile.readline(1024).strip():  # trailers
            pass

    def _exactly(self, size: int) -> Iterator[bytes]:
        while size > 0:
            data = self.rfile.read(min(CHUNK, size))
            if not data:
                raise ValueError("body cut short")
            size -= len(data)
            yield data

    def _document(self) -> dict[str, Any]:
        raw = bytearray()
        try:
            for chunk in self._body():
                raw += chunk
                if len(raw) > MAX_DOCUMENT:
                    self.close_connection = True
                    raise Refusal("request body too large", 400)
        except ValueError:
            self.close_connection = True
            raise Refusal("unexpected EOF", 400) from None
        if not raw.strip():
            raise Refusal("missing request body", 400)
        try:
            document = json.loads(raw)
        except ValueError as error:
            raise Refusal(f"invalid JSON: {error}", 400) from None
        if not isinstance(document, dict):
            raise Refusal("json: cannot unmarshal a non-object into the request", 400)
        return document

    def _leave_body(self) -> None:
        """What Go's server does with a body the handler did not read: read a
        little of it, or hang up."""
        if self._consumed:
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > DRAIN_LIMIT:
            self.close_connection = True
        elif length:
            self.rfile.read(length)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the real server logs requests; nothing here needs them


def _refusals_as_lines(steps: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    with closing(steps):
        try:
            yield from steps
        except Refusal as refusal:
            yield refusal.line()
        except OSError as error:
            yield {"error": str(error)}


def listen_address(value: str) -> tuple[str, int]:
    """OLLAMA_HOST as Ollama reads it: [scheme://]host[:port], port 11434 by default."""
    value = (value.strip() or DEFAULT_LISTEN).split("://", 1)[-1].split("/", 1)[0]
    host, colon, port = value.rpartition(":")
    if not colon or "]" in port:
        host, port = value, ""
    return host.strip("[]"), int(port or 11434)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    MODELS.mkdir(parents=True, exist_ok=True)
    broken = os.environ.get("STANDIN_BROKEN") in ("1", "true", "yes") or "broken" in VERSION
    if broken:
        print(f"ollama stand-in {VERSION}: BROKEN mode, not serving", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    server = Server(listen_address(os.environ.get("OLLAMA_HOST", "")))
    host, port = server.server_address[:2]
    print(
        f"ollama stand-in {VERSION} listening on {host}:{port} (models in {MODELS})",
        file=sys.stderr,
        flush=True,
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
