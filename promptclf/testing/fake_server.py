"""One OpenAI-compatible fake server for the tests and benchmarks, with fault middleware.

:class:`FakeServer` is a real HTTP server on 127.0.0.1 (standard library only, so it cannot
share a bug with the httpx/openai client under test). What answers is its *backend*:

* :class:`Upstream`: a real server, e.g. llama.cpp on SmolLM2 (the server is then a
  fault-injecting proxy in front of it);
* :class:`Responder`: an in-process function from a request body to an OpenAI chat completion:
  :class:`~promptclf.testing.answers.PromptAnswers` (a rule, an oracle, a noisy teacher) or
  the simulated teacher (:mod:`promptclf.testing.sim_teacher`);
* :class:`~promptclf.testing.batch_api.BatchAPI`: OpenAI's and Together's files + batches
  endpoints, whose lines another backend answers.

Between the client and the backend sit the faults (:mod:`promptclf.testing.faults`), taken for
each chat-completion request from ``server.enqueue(...)`` (one per request, in order), then from
``server.rule`` (a function of the request). Every request is recorded (:class:`~promptclf.
testing.faults.Record`: path, sha256 of the body, fault, status, whether the answer reached a
client still connected), so a test can assert that no request was answered twice.

    with FakeServer(Upstream(llama.root)) as srv:         # srv.base_url: "http://127.0.0.1:PORT/v1"
        srv.enqueue(Fault("status", 429, retry_after=1))
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import select
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from .faults import (
    CONTENT_FAULTS,
    Fault,
    ProxyRequest,
    Record,
    body_hash,
    content_ref,
    edit_content,
    error_body,
    reorder_answer,
)

Reply = tuple[int, list[tuple[str, str]], bytes]  # status, headers, body
JSON = [("Content-Type", "application/json")]

# Headers that describe one hop's framing, not the message: never copied across the proxy.
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host", "te", "upgrade"}


class Backend(Protocol):
    """What answers the fake server's requests once the faults have let them through."""

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply: ...

    def close(self) -> None: ...


def json_reply(status: int, payload: Any) -> Reply:
    return status, list(JSON), json.dumps(payload).encode()


def error_reply(status: int, message: str) -> Reply:
    return json_reply(status, {"error": {"message": message, "type": "invalid_request_error", "param": None}})


class Upstream:
    """Forward every request to a real server (``http://127.0.0.1:8080``), bodies uncompressed; an
    unreachable server raises OSError, which the fake server answers with a 502."""

    def __init__(self, root: str, timeout_s: float = 300.0) -> None:
        parts = urlsplit(root)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout_s = timeout_s

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            fwd = {k: v for k, v in headers.items() if k.lower() not in _HOP and k.lower() != "accept-encoding"}
            fwd["Accept-Encoding"] = "identity"  # the server edits bodies, so it must see them plain
            fwd["Content-Length"] = str(len(raw))
            conn.request(method, path, body=raw if raw else None, headers=fwd)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP], data
        finally:
            conn.close()

    def close(self) -> None:
        """Nothing held."""


class Responder:
    """Answer ``/v1/chat/completions`` in process with ``respond(body) -> chat completion``.

    ``GET /v1/models`` lists ``model``; a body that is not JSON, has no ``messages`` list or asks
    to stream gets a 400, an unknown route a 404 (each counted in ``rejected``).
    """

    def __init__(self, respond: Callable[[dict[str, Any]], dict[str, Any]], model: str = "fake-model") -> None:
        self.respond = respond
        self.model = model
        self.rejected = 0
        self._lock = threading.Lock()

    def _reject(self, status: int, message: str) -> Reply:
        with self._lock:
            self.rejected += 1
        return error_reply(status, message)

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        route = urlsplit(path).path.rstrip("/")
        if method == "GET" and route.endswith("/models"):
            return json_reply(
                200, {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "fake"}]}
            )
        if method != "POST" or not route.endswith("/chat/completions"):
            return self._reject(404, f"no route {method} {path}")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._reject(400, "request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._reject(400, "request body needs a 'messages' list")
        if body.get("stream"):
            return self._reject(400, "this server does not stream; send stream=false")
        return json_reply(200, self.respond(body))

    def close(self) -> None:
        """Nothing held."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # The stdlib default backlog (5) makes bursts of concurrent connects wait for SYN
    # retransmits (1 s): that would be measured as latency by a benchmark.
    request_queue_size = 256


class FakeServer:
    """The fake server: ``backend`` behind fault middleware, on 127.0.0.1, as a context manager.

    ``latency_s``: added before each chat answer. ``require_key``: answer 401 unless
    ``Authorization: Bearer <require_key>``. ``replay``: serve an identical chat body from the
    backend's earlier answer (takes a single-threaded model server out of a measurement).
    ``keep_alive=False``: close each connection after its answer, so a stopped server refuses the
    client's next request instead of answering it on an open connection.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        latency_s: float = 0.0,
        require_key: str | None = None,
        replay: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_alive: bool = True,
    ) -> None:
        self.backend = backend
        self.keep_alive = keep_alive
        self.latency_s = latency_s
        self.require_key = require_key
        self.replay = replay
        self.host, self._port = host, port
        self.rule: Callable[[ProxyRequest], Fault | None] | None = None
        self._queue: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self.received = 0
        self.forwarded = 0
        self._chat_index = 0
        self._replay_cache: dict[str, Reply] = {}
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None

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
            self._records = []
            self.received = self.forwarded = self._chat_index = 0

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._queue)

    # --- observations ---------------------------------------------------------------------
    @property
    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def chat_records(self) -> list[Record]:
        return [r for r in self.records if r.path.rstrip("/").endswith("/chat/completions")]

    def answered_hashes(self) -> list[str]:
        """Body hashes of chat requests whose 200 answer reached the client (in arrival order)."""
        return [r.body_hash for r in self.chat_records() if r.status == 200 and r.delivered]

    @property
    def duplicates(self) -> int:
        """Chat request bodies answered more than once (each extra answer counted)."""
        return sum(n - 1 for n in Counter(self.answered_hashes()).values() if n > 1)

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> FakeServer:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._server = _HTTPServer((self.host, self._port), Handler)
        threading.Thread(target=self._server.serve_forever, name="fake-server", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening (safe to call twice, and from a handler thread through another thread)."""
        self._stop.set()  # release held ("timeout") connections
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self.backend.close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return int(self._server.server_address[1])

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    # --- internals ------------------------------------------------------------------------
    def _next_fault(self, req: ProxyRequest) -> Fault | None:
        if self._queue:
            return self._queue.popleft()
        return self.rule(req) if self.rule is not None else None

    def _admit(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[Record, Fault | None]:
        h = body_hash(raw)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.received += 1
            fault = None
            if path.rstrip("/").endswith("/chat/completions"):
                fault = self._next_fault(ProxyRequest(method, path, headers, body, h, self._chat_index))
                self._chat_index += 1
            rec = Record(path, h, fault.kind if fault else None, body if isinstance(body, dict) else None)
            rec.started = time.monotonic()
            self._records.append(rec)
        return rec, fault

    def _call_backend(self, rec: Record, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        is_chat = path.rstrip("/").endswith("/chat/completions")
        cached = self._replay_cache.get(rec.body_hash) if (self.replay and is_chat) else None
        if cached is not None:
            return cached
        t0 = time.monotonic()
        reply = self.backend.handle(method, path, headers, raw)
        rec.upstream_s = time.monotonic() - t0
        with self._lock:
            self.forwarded += 1
        if self.replay and is_chat and reply[0] == 200:
            self._replay_cache[rec.body_hash] = reply
        return reply


def _edit_answer(rec: Record, fault: Fault | None, body: Any, data: bytes) -> bytes:
    """The chat answer ``data`` with ``fault``'s content edit applied (recorded on ``rec``)."""
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    rec.upstream = copy.deepcopy(payload) if isinstance(payload, dict) else None
    ref = content_ref(payload) if isinstance(payload, dict) else None
    if ref is None:
        if fault is not None and fault.kind in CONTENT_FAULTS:
            rec.applied = False
        return data
    assert isinstance(payload, dict)
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
    return data


class _Handler(BaseHTTPRequestHandler):
    server_owner: FakeServer
    protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connections
    # Without TCP_NODELAY a body waits behind its headers for the client's delayed ACK (~40 ms a
    # request): a benchmark would measure the kernel, not the engine.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

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
            if not self.server_owner.keep_alive:
                self.send_header("Connection", "close")
                self.close_connection = True
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
        srv = self.server_owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}  # HTTP header names are case-insensitive
        rec, fault = srv._admit(self.command, self.path, headers, raw)
        try:
            self._serve(srv, rec, fault, raw, headers)
        finally:
            rec.finished = time.monotonic()

    def _serve(self, srv: FakeServer, rec: Record, fault: Fault | None, raw: bytes, headers: dict[str, str]) -> None:
        is_chat = self.path.rstrip("/").endswith("/chat/completions")
        if srv.require_key is not None and headers.get("authorization") != f"Bearer {srv.require_key}":
            rec.fault = "auth"
            self._send(rec, 401, list(JSON), json.dumps(error_body(401)).encode())
            return
        if fault is not None and fault.kind == "status":
            hdrs = list(JSON)
            if fault.retry_after is not None:
                ra = fault.retry_after
                hdrs.append(("Retry-After", str(int(ra)) if float(ra).is_integer() else str(ra)))
            self._send(rec, fault.status, hdrs, json.dumps(fault.body or error_body(fault.status)).encode())
            return
        if fault is not None and fault.kind == "timeout":
            srv._stop.wait(fault.hold_s)
            self._drop()
            return
        if fault is not None and fault.kind == "drop":
            self._drop()
            return
        delay = srv.latency_s + (fault.hold_s if fault is not None and fault.kind == "latency" else 0.0)
        if delay > 0 and is_chat:
            srv._stop.wait(delay)
        if self._client_gone():  # killed or timed out while we waited: do not spend backend time
            self.close_connection = True
            return
        try:
            status, resp_headers, data = srv._call_backend(rec, self.command, self.path, headers, raw)
        except OSError as exc:
            self._send(rec, *error_reply(502, f"fake server: upstream unreachable: {exc}"))
            return
        rec.forwarded = True
        if is_chat and status == 200:
            data = _edit_answer(rec, fault, rec.body, data)
        self._send(rec, status, resp_headers, data)
