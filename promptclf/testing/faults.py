"""The faults the fake server injects, and how a content fault rewrites a model's answer.

A :class:`Fault` breaks one chat-completion request the way hosted APIs break in practice:
rate limits with ``Retry-After``, 5xx, requests that hang past the client's timeout, dropped
connections, truncated JSON, answers with missing / duplicated / out-of-range / off-list
items, reordered answers (their token log-probabilities moved along), added latency.
Content faults name the items they break by ``ids`` (the 1-based item ids of the batch
request), so a test knows exactly which rows must be re-asked whatever the model said.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

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
    """What a fault rule sees: method, path, parsed JSON body (or None), raw-body hash, arrival index."""

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
    forwarded: bool = False  # reached the backend (the upstream server or the in-process responder)
    status: int | None = None  # status sent back (None: connection dropped / held / client gone)
    delivered: bool = False  # a complete response was written to a client that was still connected
    applied: bool = True  # content faults: False when the content could not be edited (not JSON)
    content: str | None = None  # the model's answer as sent back (after any edit)
    upstream: dict[str, Any] | None = None  # chat 200s: the backend's response body, before any edit
    started: float = 0.0
    finished: float = 0.0
    upstream_s: float = 0.0  # time the backend took

    def text(self) -> str:
        """The request's message contents joined (to find which item texts a request carried)."""
        msgs = (self.body or {}).get("messages") or []
        return "\n".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))


def body_hash(raw: bytes) -> str:
    """sha256 of a request body: the identity used for "was this request sent twice"."""
    return hashlib.sha256(raw).hexdigest()


def error_body(status: int) -> dict[str, Any]:
    kinds = {
        401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    }
    msg, typ, code = kinds.get(status, (f"injected upstream error {status}", "server_error", None))
    return {"error": {"message": msg, "type": typ, "param": None, "code": code}}


def content_ref(payload: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
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
    spans: list[tuple[int, int, bytes]] = []
    pos = 0
    for tok in logprobs:
        blob = bytes(tok["bytes"]) if tok.get("bytes") else str(tok.get("token", "")).encode("utf-8")
        spans.append((pos, pos + len(blob), blob))
        pos += len(blob)
    if pos != len(raw):
        return new_text, None  # tokens do not spell the text: nothing consistent to move
    out: list[dict[str, Any]] = []
    for a, b in regions:
        for (s, e, blob), tok in zip(spans, logprobs, strict=True):
            lo, hi = max(a, s), min(b, e)  # the part of this token inside the region
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
