"""A fault-injecting HTTP proxy in front of a real OpenAI-compatible server (llama.cpp).

Tests point promptclf's ``--base-url`` at :class:`FaultProxy` instead of the server; the
proxy forwards every request and, per a programmable schedule, breaks some of them the
way hosted APIs break in practice: rate limits with ``Retry-After``, 5xx, requests that
hang past the client's timeout, dropped connections, truncated JSON, answers with
missing / duplicated / out-of-range / off-list items, and a fixed added latency.

Faults come from two places, checked in order for each chat-completion request:

1. ``proxy.enqueue(Fault(...), ...)``: a queue consumed one fault per request;
2. ``proxy.rule``: a function ``(ProxyRequest) -> Fault | None`` (stateful rules are fine:
   it is called under a lock).

Every request is recorded (:class:`Record`: path, sha256 of the body, the fault applied,
the status sent back) so tests can assert "no request body was answered twice".

The proxy uses only the standard library (``ThreadingHTTPServer`` + ``http.client``) so it
cannot share a bug with the httpx/openai client under test.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import http.client
import json
import re
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

FaultKind = Literal[
    "status",  # answer `status` (429 adds Retry-After when retry_after is set) without forwarding
    "timeout",  # hold the connection `hold_s` seconds, then close it without a response
    "drop",  # close the socket at once without a response (RST)
    "truncate",  # forward, then cut the model's JSON inside its second item (at most one item stays whole)
    "drop_items",  # forward, then remove the entries whose id is in `ids`
    "dup_items",  # forward, then answer each id in `ids` once per label in `labels` (or repeat its entry)
    "bad_id",  # forward, then renumber the entries with an id in `ids` to id+1000 (out of range)
    "off_label",  # forward, then make the answer for each id in `ids` the off-list `label`
    "latency",  # forward after sleeping `hold_s` seconds (on top of proxy.latency_s)
    "reorder",  # forward, then list the answer's items in reverse order, moving their token logprobs along
]

CONTENT_FAULTS = {"truncate", "drop_items", "dup_items", "bad_id", "off_label", "reorder"}

# Headers that describe one hop's framing, not the message: never copied across the proxy.
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host", "te", "upgrade"}


@dataclass
class Fault:
    """One injected fault; see :data:`FaultKind` for what each kind does.

    Content faults name the items they break by ``ids`` (the 1-based item ids of the batch
    request), so a test knows exactly which rows must be re-asked whatever the model said.
    """

    kind: FaultKind
    status: int = 500
    retry_after: float | None = None
    hold_s: float = 30.0
    ids: tuple[int, ...] = (1,)
    label: str = "not-a-real-label"
    labels: tuple[str, ...] = ()
    body: dict[str, Any] | None = None  # error body for kind="status" (OpenAI-style default)


@dataclass
class ProxyRequest:
    """What a rule sees: method, path, parsed JSON body (or None), raw-body hash, arrival index."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any] | None
    body_hash: str
    index: int  # 0-based index among chat-completion requests


@dataclass
class Record:
    """What happened to one request."""

    path: str
    body_hash: str
    fault: str | None  # fault kind applied, or None
    body: dict[str, Any] | None = None  # the parsed request body
    forwarded: bool = False  # reached the upstream server
    status: int | None = None  # status sent back (None: connection dropped / held / client gone)
    delivered: bool = False  # a complete response was written to a client that was still connected
    applied: bool = True  # content faults: False when the content could not be edited (not JSON)
    content: str | None = None  # the model's answer as sent back (after any edit)
    upstream: dict[str, Any] | None = None  # chat 200s: the upstream's response body, before any edit
    started: float = 0.0
    finished: float = 0.0
    upstream_s: float = 0.0  # time the upstream took

    def text(self) -> str:
        """The request's message contents joined (to find which item texts a request carried)."""
        msgs = (self.body or {}).get("messages") or []
        return "\n".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))


@dataclass
class _Stats:
    received: int = 0
    forwarded: int = 0
    records: list[Record] = field(default_factory=list)


def body_hash(raw: bytes) -> str:
    """sha256 of a request body: the identity used for "was this request sent twice"."""
    return hashlib.sha256(raw).hexdigest()


def _error_body(status: int) -> dict[str, Any]:
    kinds = {
        401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    }
    msg, typ, code = kinds.get(status, (f"injected upstream error {status}", "server_error", None))
    return {"error": {"message": msg, "type": typ, "param": None, "code": code}}


def _content_ref(payload: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The (object, key) holding the model's answer text: message.content or a tool call's arguments."""
    try:
        msg = payload["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None
    calls = msg.get("tool_calls") or []
    if calls and isinstance(calls[0].get("function", {}).get("arguments"), str):
        return calls[0]["function"], "arguments"
    if isinstance(msg.get("content"), str):
        return msg, "content"
    return None


def _id_of(entry: Any) -> Any:
    return entry.get("id") if isinstance(entry, dict) else None


def edit_content(text: str, fault: Fault) -> str | None:
    """Apply a content fault to the model's JSON answer ``{"items": [{"id", "label"}, ...]}``.

    Returns None when it cannot be applied (the answer is not such JSON and the fault needs it).
    """
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    items = data.get("items") if isinstance(data, dict) else None
    if fault.kind == "truncate":
        if isinstance(items, list) and len(items) >= 2:
            # Keep one whole item, cut the second in its middle: valid JSON never results.
            second = json.dumps(items[1])
            return '{"items": [' + json.dumps(items[0]) + ", " + second[: len(second) // 2]
        return text[: len(text) // 2] if len(text) >= 2 else None
    if not isinstance(items, list):
        return None
    ids = set(fault.ids)
    if fault.kind == "drop_items":
        items[:] = [e for e in items if _id_of(e) not in ids]
    elif fault.kind == "dup_items":
        for i in fault.ids:
            same = [e for e in items if _id_of(e) == i]
            if fault.labels:  # conflicting answers for the same item
                items[:] = [e for e in items if _id_of(e) != i]
                items.extend({"id": i, "label": lab} for lab in fault.labels)
            elif same:  # an exact repeat
                items.append(copy.deepcopy(same[0]))
            else:
                return None
    elif fault.kind == "bad_id":
        for e in items:
            if _id_of(e) in ids:
                e["id"] = e["id"] + 1000
        some = next((e.get("label") for e in items if isinstance(e, dict)), fault.label)
        items.extend({"id": i + 1000, "label": some} for i in fault.ids if all(_id_of(e) != i + 1000 for e in items))
    elif fault.kind == "off_label":
        items[:] = [e for e in items if _id_of(e) not in ids]
        items.extend({"id": i, "label": fault.label} for i in fault.ids)
    return json.dumps(data)


_ITEM_OBJ = re.compile(rb"\{[^{}]*\}")


def reorder_answer(text: str, logprobs: list[dict[str, Any]] | None) -> tuple[str, list[dict[str, Any]] | None] | None:
    """The answer with its item objects in reverse order, the separators between them kept.

    The text is edited byte for byte (never re-serialised), and the token logprobs move with
    the bytes they cover: tokens inside an item object travel with it whole (with their
    ``top_logprobs``); a token that straddles an object's edge is cut there, its first piece
    keeping its logprob and the others 0, neither keeping alternatives. So the new tokens still
    spell the new text, and each item's label tokens keep their probabilities. None when the
    answer has fewer than two item objects.
    """
    raw = text.encode("utf-8")
    head = raw.find(b'"items"')
    objs = [(m.start(), m.end()) for m in _ITEM_OBJ.finditer(raw, max(head, 0))]
    if len(objs) < 2:
        return None
    # Regions of the old text in their new order: prefix, objects reversed with the old separators.
    regions = [(0, objs[0][0])]
    for j, (_, _end) in enumerate(objs):
        regions.append(objs[len(objs) - 1 - j])
        nxt = objs[j + 1][0] if j + 1 < len(objs) else len(raw)
        regions.append((objs[j][1], nxt))
    new_text = b"".join(raw[a:b] for a, b in regions).decode("utf-8")
    if not logprobs:
        return new_text, logprobs
    spans, pos = [], 0
    for tok in logprobs:
        b = bytes(tok["bytes"]) if tok.get("bytes") else str(tok.get("token", "")).encode("utf-8")
        spans.append((pos, pos + len(b), b))
        pos += len(b)
    if pos != len(raw):
        return new_text, None  # tokens do not spell the text: nothing consistent to move
    out: list[dict[str, Any]] = []
    for a, b in regions:
        for (s, e, blob), tok in zip(spans, logprobs, strict=True):
            lo, hi = max(a, s), min(b, e)
            if lo >= hi:
                continue
            piece = blob[lo - s : hi - s]
            if (lo, hi) == (s, e):
                out.append(copy.deepcopy(tok))
            else:
                out.append(
                    {
                        "token": piece.decode("utf-8", errors="replace"),
                        "bytes": list(piece),
                        "logprob": tok["logprob"] if lo == s else 0.0,
                        "top_logprobs": [],
                    }
                )
    return new_text, out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The stdlib default backlog (5) makes bursts of concurrent connects wait for SYN
    # retransmits (1 s): that would be measured as latency by the benchmark.
    request_queue_size = 256


class FaultProxy:
    """A threaded HTTP proxy to ``upstream`` (e.g. ``http://127.0.0.1:8080``) that injects faults.

    Use as a context manager; ``proxy.base_url`` is the OpenAI base URL (``.../v1``) to hand to
    the client. ``require_key``: answer 401 unless ``Authorization: Bearer <require_key>``.
    ``replay``: serve an identical request body from a cache of the upstream's earlier answer
    (the benchmark uses this to take the single-threaded model server out of the measurement).
    """

    def __init__(
        self,
        upstream: str,
        *,
        latency_s: float = 0.0,
        require_key: str | None = None,
        replay: bool = False,
        upstream_timeout_s: float = 300.0,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.latency_s = latency_s
        self.require_key = require_key
        self.replay = replay
        self.upstream_timeout_s = upstream_timeout_s
        self.rule: Callable[[ProxyRequest], Fault | None] | None = None
        self._queue: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._stats = _Stats()
        self._chat_index = 0
        self._replay_cache: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {}
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- schedule -------------------------------------------------------------------------
    def enqueue(self, *faults: Fault) -> None:
        """Apply these faults to the next chat-completion requests, one per request, in order."""
        with self._lock:
            self._queue.extend(faults)

    def reset(self) -> None:
        """Forget faults, rule and records (the server keeps running)."""
        with self._lock:
            self._queue.clear()
            self.rule = None
            self._stats = _Stats()
            self._chat_index = 0

    # --- observations ---------------------------------------------------------------------
    @property
    def received(self) -> int:
        return self._stats.received

    @property
    def forwarded(self) -> int:
        return self._stats.forwarded

    @property
    def records(self) -> list[Record]:
        with self._lock:
            return list(self._stats.records)

    def chat_records(self) -> list[Record]:
        return [r for r in self.records if r.path.endswith("/chat/completions")]

    def answered_hashes(self) -> list[str]:
        """Body hashes of chat requests whose 200 answer reached the client (in arrival order)."""
        return [r.body_hash for r in self.chat_records() if r.status == 200 and r.delivered]

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._queue)

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # release held ("timeout") connections
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- internals ------------------------------------------------------------------------
    def _next_fault(self, req: ProxyRequest) -> Fault | None:
        if self._queue:
            return self._queue.popleft()
        if self.rule is not None:
            return self.rule(req)
        return None

    def _forward(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=self.upstream_timeout_s)
        try:
            fwd = {k: v for k, v in headers.items() if k.lower() not in _HOP and k.lower() != "accept-encoding"}
            fwd["Accept-Encoding"] = "identity"  # the proxy edits bodies, so it must see them plain
            fwd["Content-Length"] = str(len(raw))
            conn.request(method, path, body=raw if raw else None, headers=fwd)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP], data
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep pytest output clean

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def _client_gone(self) -> bool:
        """True when the client has closed its end (killed, or gave up after its timeout)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _send(self, rec: Record, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        rec.status = status
        if self._client_gone():
            rec.status = None
            self.close_connection = True
            return
        try:
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            rec.delivered = True
        except OSError:
            self.close_connection = True

    def _drop(self) -> None:
        # SO_LINGER 0 makes close() send RST: the client sees a reset, not a clean EOF.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _handle(self) -> None:
        p = self.owner
        started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        h = body_hash(raw)
        is_chat = self.path.rstrip("/").endswith("/chat/completions")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}  # HTTP header names are case-insensitive

        with p._lock:
            p._stats.received += 1
            fault = None
            if is_chat:
                req = ProxyRequest(self.command, self.path, headers, body, h, p._chat_index)
                p._chat_index += 1
                fault = p._next_fault(req)
            rec = Record(self.path, h, fault.kind if fault else None, body if isinstance(body, dict) else None)
            rec.started = started
            p._stats.records.append(rec)
        try:
            self._serve(p, rec, fault, raw, headers, is_chat, body)
        finally:
            rec.finished = time.monotonic()

    def _serve(
        self,
        p: FaultProxy,
        rec: Record,
        fault: Fault | None,
        raw: bytes,
        headers: dict[str, str],
        is_chat: bool,
        body: Any,
    ) -> None:
        json_type = [("Content-Type", "application/json")]
        if p.require_key is not None and headers.get("authorization") != f"Bearer {p.require_key}":
            rec.fault = "auth"
            self._send(rec, 401, json_type, json.dumps(_error_body(401)).encode())
            return
        if fault is not None and fault.kind == "status":
            hdrs = list(json_type)
            if fault.retry_after is not None:
                ra = fault.retry_after
                hdrs.append(("Retry-After", str(int(ra)) if float(ra).is_integer() else str(ra)))
            self._send(rec, fault.status, hdrs, json.dumps(fault.body or _error_body(fault.status)).encode())
            return
        if fault is not None and fault.kind == "timeout":
            p._stop.wait(fault.hold_s)
            self._drop()
            return
        if fault is not None and fault.kind == "drop":
            self._drop()
            return

        delay = p.latency_s + (fault.hold_s if fault is not None and fault.kind == "latency" else 0.0)
        if delay > 0 and is_chat:
            p._stop.wait(delay)
        if self._client_gone():  # killed or timed out while we waited: do not spend upstream time
            self.close_connection = True
            return

        cached = p._replay_cache.get(rec.body_hash) if (p.replay and is_chat) else None
        if cached is not None:
            status, resp_headers, data = cached
        else:
            t0 = time.monotonic()
            try:
                status, resp_headers, data = p._forward(self.command, self.path, headers, raw)
            except OSError as exc:
                msg = {"error": {"message": f"faultproxy: upstream unreachable: {exc}", "type": "server_error"}}
                self._send(rec, 502, json_type, json.dumps(msg).encode())
                return
            rec.upstream_s = time.monotonic() - t0
            with p._lock:
                p._stats.forwarded += 1
            if p.replay and is_chat and status == 200:
                p._replay_cache[rec.body_hash] = (status, resp_headers, data)
        rec.forwarded = True

        if is_chat and status == 200:
            try:
                payload = json.loads(data)
            except ValueError:
                payload = None
            rec.upstream = copy.deepcopy(payload) if isinstance(payload, dict) else None
            ref = _content_ref(payload) if isinstance(payload, dict) else None
            if ref is not None:
                obj, key = ref
                streaming = isinstance(body, dict) and body.get("stream")
                if fault is not None and fault.kind == "reorder" and not streaming:
                    choice = payload["choices"][0]
                    lp = choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else None
                    moved = reorder_answer(obj[key], lp.get("content") if lp else None)
                    rec.applied = moved is not None
                    if moved is not None:
                        obj[key] = moved[0]
                        if lp is not None:
                            lp["content"] = moved[1]
                        data = json.dumps(payload).encode()
                elif fault is not None and fault.kind in CONTENT_FAULTS and not streaming:
                    edited = edit_content(obj[key], fault)
                    rec.applied = edited is not None
                    if edited is not None:
                        obj[key] = edited
                        data = json.dumps(payload).encode()
                rec.content = obj[key]
            elif fault is not None and fault.kind in CONTENT_FAULTS:
                rec.applied = False
        self._send(rec, status, resp_headers, data)
