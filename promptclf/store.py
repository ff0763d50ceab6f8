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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

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
CREATE TABLE IF NOT EXISTS embeddings (  -- promptclf.embeddings: one vector per (model, text)
    model TEXT NOT NULL,
    key TEXT NOT NULL,            -- sha256 of the text
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,         -- float32, little-endian
    created REAL NOT NULL,
    PRIMARY KEY (model, key)
);
"""


def request_key(payload: dict[str, Any]) -> str:
    """Stable hash of a request description (sorted JSON)."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# Columns added after a store's first release: (table, column, declaration). ``_setup`` adds
# the missing ones, so a store written by an older version still opens.
_ADDED_COLUMNS = [
    # prompt tokens served from the provider's prompt cache (Usage.cached_prompt_tokens)
    ("responses", "cached_prompt_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("attempts", "cached_prompt_tokens", "INTEGER NOT NULL DEFAULT 0"),
    # promptclf.label.confidence: the answer's token logprobs (JSON list, compacted), so a cached or
    # resumed run gets the same label probabilities; NULL when the provider gave none.
    ("responses", "logprobs", "TEXT"),
]


@dataclass
class CachedResponse:
    key: str
    response: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost_usd: float
    cached_prompt_tokens: int = 0
    logprobs: list[dict[str, Any]] | None = None  # the answer's token logprobs, when stored


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
                for table, column, decl in _ADDED_COLUMNS:
                    have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                    if column not in have:
                        try:
                            self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                        except sqlite3.OperationalError as exc:
                            # Another connection opening the same store added it a moment ago.
                            if "duplicate column" not in str(exc):
                                raise
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
                "SELECT response, prompt_tokens, completion_tokens, latency_s, cost_usd, cached_prompt_tokens, "
                "logprobs FROM responses WHERE key=?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        logprobs = json.loads(row[6]) if row[6] else None
        return CachedResponse(
            key, row[0], int(row[1]), int(row[2]), float(row[3]), float(row[4]), int(row[5] or 0), logprobs
        )

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
        cached_prompt_tokens: int = 0,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> None:
        """Cache a successful response. Call only for responses worth serving again.

        ``logprobs``: the answer's token log-probabilities (kept so a cached answer gets the
        same label probabilities as the fresh one)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, provider, model, request, response, prompt_tokens, "
                "completion_tokens, latency_s, cost_usd, created, cached_prompt_tokens, logprobs) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
                    cached_prompt_tokens,
                    json.dumps(logprobs, ensure_ascii=False, separators=(",", ":")) if logprobs else None,
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
        cached_prompt_tokens: int = 0,
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO attempts (key, run_id, provider, model, outcome, error, prompt_tokens, "
                "completion_tokens, latency_s, cost_usd, created, cached_prompt_tokens) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
                    cached_prompt_tokens,
                ),
            )
            self._db.commit()

    def attempts(self, run_id: str | None = None) -> list[dict[str, Any]]:
        q = (
            "SELECT key, run_id, outcome, error, prompt_tokens, completion_tokens, latency_s, cost_usd, "
            "cached_prompt_tokens FROM attempts"
        )
        args: tuple[Any, ...] = ()
        if run_id is not None:
            q += " WHERE run_id=?"
            args = (run_id,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        cols = ["key", "run_id", "outcome", "error", "prompt_tokens", "completion_tokens", "latency_s", "cost_usd"]
        cols.append("cached_prompt_tokens")
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def get_embeddings(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors of ``model`` for the text keys that have one (float32, shape ``(dim,)``)."""
        import numpy as np

        found: dict[str, np.ndarray] = {}
        keys = list(keys)
        for s in range(0, len(keys), 500):  # under SQLite's bound-variable limit
            chunk = keys[s : s + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT key, dim, vector FROM embeddings WHERE model=? AND key IN ({marks})", (model, *chunk)
                ).fetchall()
            for key, dim, blob in rows:
                vec = np.frombuffer(blob, dtype="<f4")
                if vec.shape[0] == int(dim):  # a short blob would be a corrupt row: recompute it
                    found[key] = vec.astype(np.float32)
        return found

    def put_embeddings(self, model: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Cache vectors of ``model`` by text key (one transaction)."""
        import numpy as np

        now = time.time()
        rows = [
            (model, key, int(v.shape[0]), np.ascontiguousarray(v, dtype="<f4").tobytes(), now)
            for key, v in vectors.items()
        ]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?,?,?,?,?)", rows)
            self._db.commit()

    def execute(self, query: str, args: Sequence[Any] = (), many: bool = False) -> list[tuple[Any, ...]]:
        """Run one statement under the store's lock and commit; the rows it returns.

        For modules that keep their own tables in the store (:mod:`promptclf.label.batch_store`);
        ``many``: ``args`` is a sequence of parameter tuples (``executemany``).
        """
        with self._lock:
            cur = self._db.executemany(query, args) if many else self._db.execute(query, args)
            rows = cur.fetchall()
            self._db.commit()
        return rows

    def close(self) -> None:
        with self._lock:
            self._db.close()
