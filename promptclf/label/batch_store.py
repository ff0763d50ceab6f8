"""The batch ledger: which requests went into which provider batch, kept in the SQLite store.

A submission is written *before* its file is uploaded, its file id before the batch is
created and its batch id as soon as the provider answers, so a run killed at any point
resumes by polling the same batch (or, killed between creating the batch and recording it,
by finding the batch made from its input file) and never submits a request twice while a
batch that holds it is still live. A batch is *collected* once its output and error files
have been read into the store (successful lines cached as responses); only then can its
requests be submitted again (the ones it did not answer).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from ..store import Store

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS batch_jobs (
        sub_id TEXT PRIMARY KEY,          -- promptclf's id for the submission, written before the upload
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        base_url TEXT,
        run_id TEXT,
        n_requests INTEGER NOT NULL,
        input_file_id TEXT,               -- set once the JSONL file is uploaded
        batch_id TEXT,                    -- set once the provider created the batch
        status TEXT NOT NULL,             -- preparing | uploaded | the provider's last status
        output_file_id TEXT,
        error_file_id TEXT,
        collected INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS batch_requests (
        sub_id TEXT NOT NULL,
        key TEXT NOT NULL,                -- the request's store key (promptclf.store.request_key)
        custom_id TEXT NOT NULL,          -- its line's custom_id in the batch
        PRIMARY KEY (sub_id, key)
    )""",
    "CREATE INDEX IF NOT EXISTS batch_requests_key ON batch_requests(key)",
]

_COLS = [
    "sub_id", "provider", "model", "base_url", "run_id", "n_requests", "input_file_id", "batch_id",
    "status", "output_file_id", "error_file_id", "collected", "error",
]  # fmt: skip


@dataclass
class Submission:
    """One batch submission as the ledger records it."""

    sub_id: str
    provider: str
    model: str
    base_url: str | None
    run_id: str | None
    n_requests: int
    input_file_id: str | None
    batch_id: str | None
    status: str
    output_file_id: str | None
    error_file_id: str | None
    collected: int
    error: str | None


class BatchLedger:
    """Batch submissions and their requests, in ``store``'s database."""

    def __init__(self, store: Store) -> None:
        self.store = store
        for stmt in _SCHEMA:
            store.execute(stmt)

    def new(self, provider: str, model: str, base_url: str | None, run_id: str, keys: dict[str, str]) -> Submission:
        """Record a submission of ``keys`` (request key -> custom_id) before anything is uploaded."""
        sub_id = uuid.uuid4().hex[:16]
        now = time.time()
        self.store.execute(
            "INSERT INTO batch_jobs (sub_id, provider, model, base_url, run_id, n_requests, status, created, updated) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (sub_id, provider, model, base_url, run_id, len(keys), "preparing", now, now),
        )
        self.store.execute(
            "INSERT INTO batch_requests (sub_id, key, custom_id) VALUES (?,?,?)",
            [(sub_id, k, c) for k, c in keys.items()],
            many=True,
        )
        return self.get(sub_id)

    def get(self, sub_id: str) -> Submission:
        rows = self.store.execute(f"SELECT {', '.join(_COLS)} FROM batch_jobs WHERE sub_id=?", (sub_id,))
        return Submission(*rows[0])

    def update(self, sub_id: str, **fields: object) -> Submission:
        bad = set(fields) - set(_COLS)
        if bad:
            raise KeyError(f"no batch_jobs column {sorted(bad)}")
        sets = ", ".join(f"{k}=?" for k in fields)
        self.store.execute(
            f"UPDATE batch_jobs SET {sets}, updated=? WHERE sub_id=?", (*fields.values(), time.time(), sub_id)
        )
        return self.get(sub_id)

    def requests(self, sub_id: str) -> dict[str, str]:
        """custom_id -> request key for every line of the submission."""
        rows = self.store.execute("SELECT custom_id, key FROM batch_requests WHERE sub_id=?", (sub_id,))
        return {c: k for c, k in rows}

    def live_for(self, keys: list[str]) -> dict[str, list[str]]:
        """Submissions not yet collected that hold any of ``keys``: sub_id -> those keys."""
        found: dict[str, list[str]] = {}
        for s in range(0, len(keys), 500):  # under SQLite's bound-variable limit
            chunk = keys[s : s + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.store.execute(
                "SELECT r.sub_id, r.key FROM batch_requests r JOIN batch_jobs j ON j.sub_id = r.sub_id "
                f"WHERE j.collected = 0 AND r.key IN ({marks})",
                tuple(chunk),
            )
            for sub_id, key in rows:
                found.setdefault(sub_id, []).append(key)
        return found

    def submissions(self) -> list[Submission]:
        """Every submission, oldest first (for inspection and tests)."""
        rows = self.store.execute(f"SELECT {', '.join(_COLS)} FROM batch_jobs ORDER BY created")
        return [Submission(*r) for r in rows]
