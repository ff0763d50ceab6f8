"""A local provider batch API (files + batches endpoints) whose lines a real model answers.

:class:`BatchServer` implements what ``promptclf label --batch-api`` talks to, in OpenAI's
dialect or Together's (``dialect="together"``: ``/files/upload``, ``purpose=batch-api``, the
created batch wrapped in ``job``, statuses in capitals, ``progress`` instead of
``request_counts``):

* ``POST /v1/files`` (``/v1/files/upload``), ``GET /v1/files/{id}/content``;
* ``POST /v1/batches``, ``GET /v1/batches/{id}``, ``GET /v1/batches``;
* ``POST /v1/chat/completions`` and ``GET /v1/models``, forwarded to the upstream server
  (the synchronous path for re-asks and leftovers).

Each batch runs in a worker thread that sends every line's body, unchanged, to the upstream
server (llama.cpp on SmolLM2, ``tests/servers.py``) and writes the answers to an output file,
the way a provider does. Faults, set on ``server.faults`` before a batch is created:

* ``fail``: the batch fails validation (``status=failed`` with an error list, no output);
* ``expire_after=N``: the batch expires after answering N lines; the rest are written to the
  error file with code ``batch_expired`` (OpenAI's behaviour);
* ``line_errors={i, ...}``: those lines (0-based, input order) come back as HTTP 500 errors
  in the error file;
* ``shuffle``: output lines are written in another order than the input's;
* ``hold``: an Event the worker waits for before answering anything (the batch stays
  ``in_progress``): a test kills the client while it polls, then releases the batch;
* ``report_cached=N``: every answer (batch line or synchronous) reports
  ``usage.prompt_tokens_details.cached_tokens = min(N, prompt_tokens)``, as a provider with a
  prompt cache does (llama.cpp reports none), so a test can check how it is read and priced.

Everything is recorded (``uploads``, ``creates``, ``retrieves``, ``chat_posts``, ``answered``:
the sha256 of the messages of every request sent upstream) so a test can assert nothing was sent twice.
Standard library only, like ``tests/faultproxy.py``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


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


_ITEM = re.compile(r"^\[(\d+)\] (.+)$", re.M)


class Oracle:
    """A deterministic answerer for when a real model is too slow for a test (2 loaded cores).

    It answers a batched prompt the way a perfect annotator would: each numbered item
    ``[k] text`` gets the gold label of the known text its first line starts (30 characters,
    whitespace normalised), in the response shape the prompt asks for; usage counts ~4 characters a
    token. The real-model path (``upstream_root``) is the default and the one the happy-path
    test uses.
    """

    def __init__(self, gold: dict[str, str]) -> None:
        self.gold = [(" ".join(t.split()), lab) for t, lab in gold.items()]
        self.index = {t[:30]: lab for t, lab in self.gold}

    def label(self, first_line: str) -> str:
        head = " ".join(first_line.split())[:30]
        if head in self.index:
            return self.index[head]
        return next((lab for t, lab in self.gold if t.startswith(head)), "unknown")  # a first line under 30 chars

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        user = body["messages"][-1]["content"]
        items = [{"id": int(k), "label": self.label(text)} for k, text in _ITEM.findall(user)]
        content = json.dumps({"items": items})
        prompt = sum(len(m["content"]) for m in body["messages"]) // 4
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": len(content) // 4, "total_tokens": prompt + len(content) // 4},
        }  # fmt: skip


class BatchServer:
    """The batch API on 127.0.0.1, as a context manager; ``base_url`` ends in ``/v1``.

    Lines are answered by the real server at ``upstream_root`` or, when it is None, by
    ``oracle`` (:class:`Oracle`)."""

    def __init__(
        self, upstream_root: str | None, dialect: str = "openai", seed: int = 0, oracle: Oracle | None = None
    ) -> None:
        if upstream_root is None and oracle is None:
            raise ValueError("give an upstream server or an oracle")
        self.upstream = urlsplit(upstream_root) if upstream_root else None
        self.oracle = oracle
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
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> BatchServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._route(self, "GET")

            def do_POST(self) -> None:
                server._route(self, "POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.faults.hold is not None:
            self.faults.hold.set()
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    def wait_idle(self, timeout: float = 600.0) -> None:
        """Wait for every batch worker to finish (a test's last step before it checks records)."""
        for t in list(self._threads):
            t.join(timeout)

    # -- upstream ---------------------------------------------------------------------------
    def _upstream(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        if self.upstream is None:
            assert self.oracle is not None
            if method == "GET":
                return 200, json.dumps({"object": "list", "data": [{"id": "oracle", "object": "model"}]}).encode()
            return 200, json.dumps(self.oracle(json.loads(body or b"{}"))).encode()
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=600)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raw = json.dumps(body).encode()
        # The identity of a request: its messages (a batch line and its synchronous twin differ
        # only in transport fields), so "answered twice" means the same prompt paid twice.
        ident = json.dumps(body.get("messages"), sort_keys=True).encode()
        with self.lock:
            self.answered.append(hashlib.sha256(ident).hexdigest())
        status, out = self._upstream("POST", "/v1/chat/completions", raw)
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
        out, err = [], []
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

    # -- routing ----------------------------------------------------------------------------
    def _route(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(h.path).path
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        try:
            code, payload = self._handle(method, path, h.headers.get("Content-Type", ""), body)
        except Exception as exc:  # a bug here must show up in the test, not hang it
            code, payload = 500, {"error": {"message": f"{type(exc).__name__}: {exc}"}}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/octet-stream" if isinstance(payload, bytes) else "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, method: str, path: str, ctype: str, body: bytes) -> tuple[int, Any]:
        upload = "/v1/files/upload" if self.dialect == "together" else "/v1/files"
        if method == "POST" and path == upload:
            msg = BytesParser(policy=default_policy).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
            fields: dict[str, bytes] = {}
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                fields[str(name)] = part.get_payload(decode=True) or b""
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
            status, raw = self._upstream("GET", "/v1/models", None)
            return status, json.loads(raw)
        return 404, {"error": {"message": f"no route {method} {path}"}}
