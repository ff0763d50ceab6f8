"""SQLite store: every request attempt is logged; successful responses are cached.

The cache key is a hash of everything that decides a response (provider, model, base
URL, messages or scoring prompt, schema, mode, parameters), never of a secret. A rerun
of an interrupted job finds its finished requests here and pays nothing twice. Failed
attempts go to the ``attempts`` log only, so an error is never served from cache.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    cost_usd REAL NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    run_id TEXT,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    outcome TEXT NOT NULL,       -- ok | cached | error
    error TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_s REAL,
    cost_usd REAL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_run ON attempts(run_id);
"""


def request_key(payload: dict[str, Any]) -> str:
    """Stable hash of a request description (sorted JSON)."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class CachedResponse:
    key: str
    response: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost_usd: float


class Store:
    """Thread-safe SQLite store (one connection, WAL, a lock around writes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._setup()

    def _setup(self, wait_s: float = 30.0) -> None:
        """WAL mode and tables, retried while another connection holds the new file.

        Switching a file to WAL needs it to itself, and SQLite reports "database is locked" at
        once instead of waiting when another connection (a worker thread, a second run) is
        creating the tables at that moment, so retry here for up to ``wait_s`` seconds.
        """
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                self._db.commit()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                self._db.rollback()
                time.sleep(0.05)

    def get(self, key: str) -> CachedResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response, prompt_tokens, completion_tokens, latency_s, cost_usd FROM responses WHERE key=?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return CachedResponse(key, row[0], int(row[1]), int(row[2]), float(row[3]), float(row[4]))

    def put(
        self,
        key: str,
        provider: str,
        model: str,
        request: dict[str, Any],
        response: str,
        prompt_tokens: int,
        completion_tokens: int,
        latency_s: float,
        cost_usd: float,
    ) -> None:
        """Cache a successful response. Call only for responses worth serving again."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    key,
                    provider,
                    model,
                    json.dumps(request, ensure_ascii=False),
                    response,
                    prompt_tokens,
                    completion_tokens,
                    latency_s,
                    cost_usd,
                    time.time(),
                ),
            )
            self._db.commit()

    def forget(self, key: str) -> None:
        """Drop a cached response (it turned out unusable)."""
        with self._lock:
            self._db.execute("DELETE FROM responses WHERE key=?", (key,))
            self._db.commit()

    def log(
        self,
        key: str,
        run_id: str | None,
        provider: str,
        model: str,
        outcome: str,
        error: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        latency_s: float = 0.0,
        cost_usd: float = 0.0,
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO attempts (key, run_id, provider, model, outcome, error, prompt_tokens, "
                "completion_tokens, latency_s, cost_usd, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    key,
                    run_id,
                    provider,
                    model,
                    outcome,
                    error,
                    prompt_tokens,
                    completion_tokens,
                    latency_s,
                    cost_usd,
                    time.time(),
                ),
            )
            self._db.commit()

    def attempts(self, run_id: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT key, run_id, outcome, error, prompt_tokens, completion_tokens, latency_s, cost_usd FROM attempts"
        args: tuple[Any, ...] = ()
        if run_id is not None:
            q += " WHERE run_id=?"
            args = (run_id,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        cols = ["key", "run_id", "outcome", "error", "prompt_tokens", "completion_tokens", "latency_s", "cost_usd"]
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
