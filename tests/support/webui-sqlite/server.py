"""Open WebUI stand-in for the backup tests: a real SQLite database in WAL mode.

Like the real Open WebUI it keeps /app/backend/data/webui.db in WAL mode with
an Alembic version table, answers /health (fixed) and /health/db (pings the
database), keeps its tool-server list as Open WebUI does (seeded once from
TOOL_SERVER_CONNECTIONS, then changed by an admin through
/api/v1/configs/tool_servers), and leaves committed data in webui.db-wal: it
never checkpoints, not even on SIGTERM. A writer inserts a chat row every few milliseconds while
it runs, like users chatting; GET /rows says how many are committed.
"""

import json
import os
import signal
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATA = "/app/backend/data"
DB = os.path.join(DATA, "webui.db")
REVISION = os.environ.get("ALEMBIC_REVISION", "a1b2c3d4e5f6")
committed = 0
TOOL_SERVERS = "/api/v1/configs/tool_servers"
lock = threading.Lock()


def connect() -> sqlite3.Connection:
    db = sqlite3.connect(DB, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # the data stays in the WAL
    return db


def prepare() -> None:
    global committed
    os.makedirs(DATA, exist_ok=True)
    db = connect()
    # Like Open WebUI's PersistentConfig: the environment seeds the saved
    # config on the first start only; after that the saved value wins.
    db.execute("CREATE TABLE IF NOT EXISTS config (id INTEGER PRIMARY KEY, data TEXT)")
    if db.execute("SELECT count(*) FROM config").fetchone()[0] == 0:
        seeded = json.loads(os.environ.get("TOOL_SERVER_CONNECTIONS") or "[]")
        db.execute("INSERT INTO config VALUES (1, ?)", (json.dumps({"tool_servers": seeded}),))
    db.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
    db.execute("INSERT OR IGNORE INTO alembic_version VALUES (?)", (REVISION,))
    db.execute("CREATE TABLE IF NOT EXISTS chat (id INTEGER PRIMARY KEY, created REAL, body TEXT)")
    committed = db.execute("SELECT count(*) FROM chat").fetchone()[0]
    db.close()


def chat_forever() -> None:
    global committed
    db = connect()
    while True:
        db.execute("BEGIN")
        db.execute("INSERT INTO chat (created, body) VALUES (?, ?)", (time.time(), "hi " * 50))
        db.execute("COMMIT")
        with lock:
            committed += 1
        time.sleep(0.005)


def saved_tool_servers() -> list:
    db = connect()
    row = db.execute("SELECT data FROM config WHERE id = 1").fetchone()
    db.close()
    return json.loads(row[0])["tool_servers"] if row else []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self.answer({"status": True})
        elif self.path == "/health/db":
            sqlite3.connect(DB).execute("SELECT 1").fetchone()
            self.answer({"status": True})
        elif self.path == "/api/version":
            self.answer({"version": "0.12.4-standin"})
        elif self.path == "/rows":
            with lock:
                self.answer({"rows": committed})
        elif self.path == TOOL_SERVERS:
            if self.admin():
                self.answer({"TOOL_SERVER_CONNECTIONS": saved_tool_servers()})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        if self.path != TOOL_SERVERS:
            self.send_error(404)
            return
        if not self.admin():
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        servers = body.get("TOOL_SERVER_CONNECTIONS")
        if not isinstance(servers, list):
            self.send_error(422)
            return
        db = connect()
        db.execute(
            "UPDATE config SET data = ? WHERE id = 1", (json.dumps({"tool_servers": servers}),)
        )
        db.close()
        self.answer({"TOOL_SERVER_CONNECTIONS": servers})

    def admin(self) -> bool:
        """An admin's API key: the one kept in the data folder (as if made in the UI)."""
        try:
            with open(os.path.join(DATA, "admin_api_key")) as handle:
                key = handle.read().strip()
        except OSError:
            key = ""
        if not key or self.headers.get("Authorization") != f"Bearer {key}":
            self.send_error(401)
            return False
        return True

    def answer(self, document: dict) -> None:
        body = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    prepare()
    threading.Thread(target=chat_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # no checkpoint on the way out
    ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
