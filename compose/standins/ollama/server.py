"""Ollama stand-in server: the read-only API the stack and Open WebUI use.

Answers like the real Ollama, including ``Content-Type: application/json``
(Open WebUI's aiohttp client refuses JSON without it):
  GET/HEAD /             -> "Ollama is running"
  GET /api/version       -> {"version": STANDIN_VERSION}
  GET /api/tags          -> {"models": [...]} read from the manifests on disk
  GET /api/ps            -> {"models": []}
Models are read on every request from
``$OLLAMA_MODELS/manifests/<host>/<namespace>/<model>/<tag>`` (``size`` = sum
of the manifest's sizes, ``digest`` = sha256 of the manifest file), so a
manifest copied in later shows up at once.
STANDIN_BROKEN=1, or a version containing "broken", keeps the process alive
without serving (for rollback tests). SIGTERM stops it at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PORT = 11434
VERSION = os.environ.get("STANDIN_VERSION", "0.0.0-standin")
MODELS = Path(os.environ.get("OLLAMA_MODELS", "/root/.ollama/models"))
DEFAULT_HOST = "registry.ollama.ai"


def model_name(host: str, namespace: str, model: str, tag: str) -> str:
    if host != DEFAULT_HOST:
        return f"{host}/{namespace}/{model}:{tag}"
    return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"


def manifest_size(data: object) -> int:
    if not isinstance(data, dict):
        return 0
    parts = [data.get("config") or {}, *(data.get("layers") or [])]
    return sum(int(p.get("size") or 0) for p in parts if isinstance(p, dict))


def list_models() -> list[dict]:
    root = MODELS / "manifests"
    models = []
    for path in sorted(root.glob("*/*/*/*")):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        name = model_name(*path.relative_to(root).parts)
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        models.append(
            {
                "name": name,
                "model": name,
                "modified_at": modified.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "size": manifest_size(data),
                "digest": hashlib.sha256(raw).hexdigest(),
                "details": {"format": "gguf", "family": "", "parameter_size": ""},
            }
        )
    return models


class Handler(BaseHTTPRequestHandler):
    server_version = "ollama-standin"

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: object) -> None:
        self._send(200, json.dumps(value).encode(), "application/json; charset=utf-8")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/":
            self._send(200, b"Ollama is running", "text/plain; charset=utf-8")
        elif path == "/api/version":
            self._json({"version": VERSION})
        elif path == "/api/tags":
            self._json({"models": list_models()})
        elif path == "/api/ps":
            self._json({"models": []})
        else:
            self._send(404, b"404 page not found", "text/plain; charset=utf-8")

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass  # the real server logs requests; nothing here needs them


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    MODELS.mkdir(parents=True, exist_ok=True)
    broken = os.environ.get("STANDIN_BROKEN") in ("1", "true", "yes") or "broken" in VERSION
    if broken:
        print(f"ollama stand-in {VERSION}: BROKEN mode, not serving", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    print(f"ollama stand-in {VERSION} listening on :{PORT} (models in {MODELS})", file=sys.stderr)
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
