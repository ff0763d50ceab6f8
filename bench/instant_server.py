"""An instant OpenAI-compatible chat server on 127.0.0.1, for measuring the labeling engine itself.

It answers each ``/v1/chat/completions`` request at once, from the prompt: it reads the label
list and the numbered items ``[n] text`` of promptclf's batch prompt and labels every item
with ``answer(text, labels)`` (default: a hash of the text), in the JSON shape the engine asks
for, with ``usage``. A real HTTP server (standard library, HTTP/1.1 keep-alive, one thread per
connection), so the engine pays its real per-request cost: HTTP client, SDK, JSON, store.

Every request body is counted by its sha256 (``server.counts``), so a benchmark can check that
no request was sent twice across a killed run and its resumption.

    with InstantServer(answer) as srv:
        srv.base_url   # "http://127.0.0.1:PORT/v1"
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ITEM = re.compile(r"^\[(\d+)\] (.*)$", re.M)
_LABELS_HEAD = "Classify each text below into one of these labels:\n"


def hash_answer(text: str, labels: list[str]) -> str:
    """A deterministic label for ``text``: its CRC32 modulo the number of labels."""
    return labels[zlib.crc32(text.encode("utf-8")) % len(labels)]


def parse_prompt(user: str) -> tuple[list[str], list[tuple[int, str]]]:
    """(label names, [(item id, item text)]) of one promptclf batch prompt."""
    labels: list[str] = []
    start = user.find(_LABELS_HEAD)
    if start >= 0:
        for line in user[start + len(_LABELS_HEAD) :].splitlines():
            if not line.startswith("- "):
                break
            labels.append(line[2:].split(":", 1)[0].strip())
    tail = user[user.find("Texts to classify:") :] if "Texts to classify:" in user else user
    items = [(int(m.group(1)), m.group(2)) for m in _ITEM.finditer(tail)]
    return labels, items


class InstantServer:
    """Serve instant answers on 127.0.0.1:``port`` (0 = a free port) in a background thread."""

    def __init__(self, answer: Callable[[str, list[str]], str] = hash_answer, port: int = 0) -> None:
        self.answer = answer
        self.counts: Counter[str] = Counter()  # sha256 of each request body -> times received
        self.items = 0  # items answered
        self.requests = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connections
            # Without TCP_NODELAY the body waits behind the headers for the client's delayed ACK
            # (~40 ms a request): the latency measured would be the kernel's, not the engine's.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                body = json.loads(raw)
                user = next((m["content"] for m in body["messages"] if m["role"] == "user"), "")
                labels, items = parse_prompt(user)
                content = json.dumps(
                    {"items": [{"id": i, "label": server.answer(t, labels)} for i, t in items]}, separators=(",", ":")
                )
                prompt_chars = sum(len(m["content"]) for m in body["messages"])
                with server.lock:
                    server.counts[hashlib.sha256(raw).hexdigest()] += 1
                    server.items += len(items)
                    server.requests += 1
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{server.requests}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "instant"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": prompt_chars // 4,
                            "completion_tokens": len(content) // 4,
                            "total_tokens": prompt_chars // 4 + len(content) // 4,
                        },
                    },
                )

            def _send(self, status: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode("utf-8")
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def duplicates(self) -> int:
        """Request bodies received more than once."""
        with self.lock:
            return sum(1 for c in self.counts.values() if c > 1)

    def __enter__(self) -> InstantServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
