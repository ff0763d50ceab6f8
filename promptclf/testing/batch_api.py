"""The provider batch API (files + batches) as a fake-server backend whose lines another backend answers.

:class:`BatchAPI` implements what ``promptclf label --batch-api`` talks to, in OpenAI's dialect or
Together's (``dialect="together"``: ``/files/upload``, ``purpose=batch-api``, the created batch
wrapped in ``job``, statuses in capitals, ``progress`` instead of ``request_counts``):

* ``POST /v1/files`` (``/v1/files/upload``), ``GET /v1/files/{id}/content``;
* ``POST /v1/batches``, ``GET /v1/batches/{id}``, ``GET /v1/batches``;
* ``POST /v1/chat/completions`` and ``GET /v1/models``, passed to the inner backend (the
  synchronous path for re-asks and leftovers).

Each batch runs in a worker thread that sends every line's body, unchanged, to the inner backend
(a real model behind :class:`~promptclf.testing.fake_server.Upstream`, or an in-process
:class:`~promptclf.testing.fake_server.Responder`) and writes the answers to an output file, the
way a provider does. Faults, set on ``api.faults`` before a batch is created:

* ``fail``: the batch fails validation (``status=failed`` with an error list, no output);
* ``expire_after=N``: the batch expires after answering N lines; the rest are written to the
  error file with code ``batch_expired`` (OpenAI's behaviour);
* ``line_errors={i, ...}``: those lines (0-based, input order) come back as HTTP 500 errors;
* ``shuffle``: output lines are written in another order than the input's;
* ``hold``: an Event the worker waits for before answering anything (the batch stays
  ``in_progress``): a test kills the client while it polls, then releases the batch;
* ``report_cached=N``: every answer reports ``usage.prompt_tokens_details.cached_tokens =
  min(N, prompt_tokens)``, as a provider with a prompt cache does.

Everything is recorded (``uploads``, ``creates``, ``retrieves``, ``chat_posts``, ``answered``: the
sha256 of the messages of every request answered) so a test can assert nothing was sent twice.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any
from urllib.parse import urlsplit

from .answers import PromptAnswers, gold_answer
from .fake_server import Backend, FakeServer, Reply, Responder, Upstream


@dataclass
class Faults:
    fail: bool = False
    expire_after: int | None = None
    line_errors: set[int] = field(default_factory=set)
    shuffle: bool = False
    hold: threading.Event | None = None
    report_cached: int = 0  # add usage.prompt_tokens_details.cached_tokens = min(this, prompt_tokens)


@dataclass
class _Batch:
    obj: dict[str, Any]
    lines: list[dict[str, Any]]
    faults: Faults


class BatchAPI:
    """The batch endpoints in front of ``inner`` (see the module docstring)."""

    def __init__(self, inner: Backend, dialect: str = "openai", seed: int = 0) -> None:
        self.inner = inner
        self.dialect = dialect
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, _Batch] = {}
        self.uploads: list[str] = []
        self.creates: list[str] = []
        self.retrieves: list[str] = []
        self.chat_posts = 0
        self.answered: list[str] = []
        self._threads: list[threading.Thread] = []

    def wait_idle(self, timeout: float = 600.0) -> None:
        """Wait for every batch worker to finish (a test's last step before it checks records)."""
        for t in list(self._threads):
            t.join(timeout)

    def close(self) -> None:
        """Release held batches, so their workers end with the server."""
        if self.faults.hold is not None:
            self.faults.hold.set()
        self.inner.close()

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        try:
            code, payload = self._handle(method, urlsplit(path).path, headers.get("content-type", ""), raw)
        except Exception as exc:  # a bug here must show up in the test, not hang it
            code, payload = 500, {"error": {"message": f"{type(exc).__name__}: {exc}"}}
        if isinstance(payload, bytes):
            return code, [("Content-Type", "application/octet-stream")], payload
        return code, [("Content-Type", "application/json")], json.dumps(payload).encode()

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raw = json.dumps(body).encode()
        # The identity of a request: its messages (a batch line and its synchronous twin differ
        # only in transport fields), so "answered twice" means the same prompt paid twice.
        ident = json.dumps(body.get("messages"), sort_keys=True).encode()
        with self.lock:
            self.answered.append(hashlib.sha256(ident).hexdigest())
        status, _, out = self.inner.handle("POST", "/v1/chat/completions", {"content-type": "application/json"}, raw)
        resp = json.loads(out)
        usage = resp.get("usage") if isinstance(resp, dict) else None
        if self.faults.report_cached and isinstance(usage, dict):
            cached = min(self.faults.report_cached, int(usage.get("prompt_tokens") or 0))
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return status, resp

    # -- objects ----------------------------------------------------------------------------
    def _status(self, s: str) -> str:
        return s.upper() if self.dialect == "together" else s

    def _public(self, b: _Batch) -> dict[str, Any]:
        obj = dict(b.obj)
        counts = obj.pop("request_counts")
        obj["status"] = self._status(obj["status"])
        if self.dialect == "together":
            done = counts["completed"] + counts["failed"]
            obj["progress"] = 100.0 * done / counts["total"] if counts["total"] else 0.0
        else:
            obj["request_counts"] = dict(counts)
        return obj

    def _new_file(self, data: bytes, purpose: str, name: str) -> dict[str, Any]:
        fid = f"file-{uuid.uuid4().hex[:12]}"
        with self.lock:
            self.files[fid] = data
        return {"id": fid, "object": "file", "bytes": len(data), "purpose": purpose, "filename": name}

    def _run_batch(self, b: _Batch) -> None:
        try:
            self._process(b)
        except Exception as exc:  # a bug here must fail the batch (and the test), not leave it running
            with self.lock:
                b.obj["status"] = "failed"
                b.obj["errors"] = {"data": [{"code": "server_bug", "message": f"{type(exc).__name__}: {exc}"}]}

    def _process(self, b: _Batch) -> None:
        f, obj = b.faults, b.obj
        if f.fail:
            time.sleep(0.2)
            with self.lock:
                obj["status"] = "failed"
                obj["errors"] = {
                    "object": "list",
                    "data": [{"code": "invalid_request", "message": "enqueued token limit reached"}],
                }
            return
        with self.lock:
            obj["status"] = "in_progress"
        if f.hold is not None:
            f.hold.wait()
        out: list[dict[str, Any]] = []
        err: list[dict[str, Any]] = []
        for i, line in enumerate(b.lines):
            cid = line["custom_id"]
            if f.expire_after is not None and i >= f.expire_after:
                err.append({"id": f"br-{i}", "custom_id": cid, "response": None,
                            "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}})  # fmt: skip
                continue
            if i in f.line_errors:
                err.append({"id": f"br-{i}", "custom_id": cid, "error": None,
                            "response": {"status_code": 500, "request_id": f"req-{i}", "body": {"error": {"message": "internal error", "type": "server_error"}}}})  # fmt: skip
                with self.lock:
                    obj["request_counts"]["failed"] += 1
                continue
            status, body = self._answer(line["body"])
            rec = {"id": f"br-{i}", "custom_id": cid, "error": None,
                   "response": {"status_code": status, "request_id": f"req-{i}", "body": body}}  # fmt: skip
            (out if status == 200 else err).append(rec)
            with self.lock:
                obj["request_counts"]["completed" if status == 200 else "failed"] += 1
        if f.shuffle:
            out.reverse()
            self.rng.shuffle(out)
        with self.lock:
            obj["status"] = "finalizing"
        time.sleep(0.1)
        enc = lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()  # noqa: E731
        with self.lock:
            if out:
                obj["output_file_id"] = self._new_file(enc(out), "batch_output", "output.jsonl")["id"]
            if err:
                obj["error_file_id"] = self._new_file(enc(err), "batch_output", "errors.jsonl")["id"]
            obj["status"] = "expired" if f.expire_after is not None and f.expire_after < len(b.lines) else "completed"

    def _handle(self, method: str, path: str, ctype: str, body: bytes) -> tuple[int, Any]:
        upload = "/v1/files/upload" if self.dialect == "together" else "/v1/files"
        if method == "POST" and path == upload:
            msg = BytesParser(policy=default_policy).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
            fields: dict[str, bytes] = {}
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                fields[str(name)] = payload if isinstance(payload, bytes) else b""
            want = "batch-api" if self.dialect == "together" else "batch"
            if fields.get("purpose", b"").decode() != want or "file" not in fields:
                return 400, {"error": {"message": f"purpose must be {want!r} and a file is required"}}
            info = self._new_file(fields["file"], want, "input.jsonl")
            with self.lock:
                self.uploads.append(info["id"])
            return 200, info
        m = re.fullmatch(r"/v1/files/([^/]+)/content", path)
        if method == "GET" and m:
            data = self.files.get(m.group(1))
            return (200, data) if data is not None else (404, {"error": {"message": "no such file"}})
        if method == "POST" and path == "/v1/batches":
            req = json.loads(body)
            data = self.files.get(req.get("input_file_id", ""))
            if data is None:
                return 404, {"error": {"message": "no such input file"}}
            lines = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
            bid = f"batch_{uuid.uuid4().hex[:12]}"
            obj = {
                "id": bid, "object": "batch", "endpoint": req["endpoint"], "input_file_id": req["input_file_id"],
                "completion_window": req.get("completion_window", "24h"), "status": "validating",
                "output_file_id": None, "error_file_id": None, "errors": None, "metadata": req.get("metadata"),
                "created_at": int(time.time()), "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            }  # fmt: skip
            b = _Batch(obj, lines, self.faults)
            with self.lock:
                self.batches[bid] = b
                self.creates.append(bid)
            t = threading.Thread(target=self._run_batch, args=(b,), daemon=True)
            self._threads.append(t)
            t.start()
            with self.lock:
                pub = self._public(b)
            return 200, ({"job": pub} if self.dialect == "together" else pub)
        m = re.fullmatch(r"/v1/batches/([^/]+)", path)
        if method == "GET" and m:
            with self.lock:
                self.retrieves.append(m.group(1))
                b2 = self.batches.get(m.group(1))
                return (200, self._public(b2)) if b2 else (404, {"error": {"message": "no such batch"}})
        if method == "GET" and path == "/v1/batches":
            with self.lock:
                data_ = [self._public(b) for b in self.batches.values()]
            return 200, (data_ if self.dialect == "together" else {"object": "list", "data": data_})
        if method == "POST" and path == "/v1/chat/completions":
            with self.lock:
                self.chat_posts += 1
            status, out = self._answer(json.loads(body))
            return status, out
        if method == "GET" and path == "/v1/models":
            status, _, raw = self.inner.handle("GET", "/v1/models", {}, b"")
            return status, json.loads(raw)
        return 404, {"error": {"message": f"no route {method} {path}"}}


class BatchServer(FakeServer):
    """A fake server whose backend is a :class:`BatchAPI`: its lines answered by the real server at
    ``upstream_root`` or, without one, by a perfect annotator of ``gold`` (in process, for when a
    real model is too slow). The API's faults and records are read and set through ``api``."""

    def __init__(
        self,
        upstream_root: str | None = None,
        *,
        gold: dict[str, str] | None = None,
        dialect: str = "openai",
        seed: int = 0,
    ) -> None:
        if upstream_root is None and gold is None:
            raise ValueError("give an upstream server or the gold labels")
        inner: Backend = (
            Upstream(upstream_root, timeout_s=600)
            if upstream_root
            else Responder(PromptAnswers(gold_answer(gold or {})))
        )
        self.api = BatchAPI(inner, dialect, seed)
        super().__init__(self.api)
