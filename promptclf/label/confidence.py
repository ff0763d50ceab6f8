"""Label confidence from a chat answer's token log-probabilities.

A chat provider that returns ``logprobs`` (OpenAI, Together, vLLM, llama.cpp) gives one
entry per generated token: its text, bytes, log-probability and the ``top_logprobs``
alternatives at that position. :func:`item_confidence` turns them into per-item label
probabilities:

1. **Align.** The tokens' bytes, concatenated, must spell the answer text (up to surrounding
   whitespace, which some servers strip); each token gets a byte span. When they
   do not line up, no probability is given: never a guessed one.
2. **Find each item's label.** Every ``{"id": k, "label": "..."}`` object in the answer gives
   the character span of item ``k``'s label value (the first object for an id, as the parser
   keeps it). Items are matched by their ``id``, never by position, so an answer that lists
   items out of order still puts each probability on its own row.
3. **``prob``** is the probability of the chosen label's text: the product of the
   probabilities of every token overlapping the label's value (exact for a label spread over
   several tokens; the token that ends the string is not counted, so for a label that is a
   prefix of another label, e.g. ``sport``/``sports``, the choice to stop is left out).
4. **``probs``**, the distribution over labels, comes from the ``top_logprobs`` at the label's
   first token: an alternative whose text (after the part of the token before the label
   starts, e.g. ``' "'``) starts exactly one label's name or alias gives that label its
   probability; alternatives matching several labels or none are skipped. The chosen label
   keeps ``prob``; the others get their first-token probability (an upper bound on the full
   label's probability, exact for single-token labels). The masses are renormalised over the
   labels found. It is given only when at least one other label is found, so a provider with
   no alternatives never yields an invented distribution.

**Multi-label answers** (``{"id": k, "labels": ["a", "b"]}``, :func:`set_confidence`): each label in
an item's list gets the probability of its text, the product over its tokens as for ``prob``; ``probs``
holds those, one per chosen label (a label the model left out gets no entry: the tokens say how sure it
was of writing each label, not how likely an omitted one was), and ``prob`` is the smallest of them,
the least sure label of the set (none for an empty list).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..data.tables import cell_text
from ..errors import InputError
from ..labels import LabelSet

# One answer object with its label's value as a group, in either key order (as schema.py parses).
_OBJ = re.compile(r'\{\s*"id"\s*:\s*"?(?P<id>\d+)"?\s*,\s*"label"\s*:\s*"(?P<val>(?:[^"\\]|\\.)*)"\s*\}')
_OBJ_REV = re.compile(r'\{\s*"label"\s*:\s*"(?P<val>(?:[^"\\]|\\.)*)"\s*,\s*"id"\s*:\s*"?(?P<id>\d+)"?\s*\}')


# One multi-label answer object with its list's inside as a group, in either key order.
_SET = r'\[(?P<list>\s*(?:"(?:[^"\\]|\\.)*"\s*,?\s*)*)\]'
_SET_OBJ = re.compile(r'\{\s*"id"\s*:\s*"?(?P<id>\d+)"?\s*,\s*"labels"\s*:\s*' + _SET + r"\s*\}")
_SET_OBJ_REV = re.compile(r'\{\s*"labels"\s*:\s*' + _SET + r'\s*,\s*"id"\s*:\s*"?(?P<id>\d+)"?\s*\}')
_STRING = re.compile(r'"(?P<val>(?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Confidence:
    """One item's confidence: ``prob`` of the chosen label, ``probs`` over labels (or None)."""

    prob: float
    probs: dict[str, float] | None


def probs_cell(probs: dict[str, float] | None) -> str:
    """A ``pred_probs`` cell: a JSON object ``{"label": prob}`` (6 decimals), or "" when unknown."""
    if not probs:
        return ""
    return json.dumps({k: round(float(v), 6) for k, v in probs.items()}, ensure_ascii=False, separators=(",", ":"))


def parse_pred_probs(cell: object, where: str) -> dict[str, float] | None:
    """A ``pred_probs`` cell (JSON object ``{"label": prob}``) as a dict; None when empty.

    Bad JSON is bad input: the error names the row rather than the row being silently ignored.
    """
    s = cell_text(cell).strip()
    if not s:
        return None
    try:
        d = json.loads(s)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: pred_probs is not a JSON object ({exc.msg}): {s[:80]!r}") from exc
    if not isinstance(d, dict):
        raise InputError(f"{where}: pred_probs must be a JSON object {{label: probability}}, got {s[:80]!r}")
    try:
        out = {str(k): float(v) for k, v in d.items()}
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: pred_probs has a non-numeric probability: {s[:80]!r}") from exc
    if any(not (0.0 <= v <= 1.0 + 1e-6) for v in out.values()):
        raise InputError(f"{where}: pred_probs has a probability outside [0, 1]: {s[:80]!r}")
    return out


def compact_logprobs(text: str, logprobs: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """What :func:`item_confidence` needs of ``logprobs``, for the store: every token's text and
    logprob, its bytes only where they differ from the text's UTF-8, and the ``top_logprobs``
    only at tokens where a label value starts. None when the tokens do not spell ``text``."""
    if not logprobs:
        return None
    spans = _spans(text, logprobs)
    if spans is None:
        return None
    starts = {a for a, _ in _label_spans(text, None).values()}
    out = []
    for (s, e), tok in zip(spans, logprobs, strict=True):
        entry: dict[str, Any] = {"token": tok.get("token", ""), "logprob": tok.get("logprob")}
        raw = _token_bytes(tok)
        if raw != str(entry["token"]).encode("utf-8"):
            entry["bytes"] = list(raw)
        if any(s <= a < e for a in starts) and tok.get("top_logprobs"):
            entry["top_logprobs"] = [
                {"token": alt.get("token", ""), "logprob": alt.get("logprob"), "bytes": list(_token_bytes(alt))}
                for alt in tok["top_logprobs"]
                if isinstance(alt, dict)
            ]
        out.append(entry)
    return out


def _token_bytes(entry: dict[str, Any]) -> bytes:
    raw = entry.get("bytes")
    if isinstance(raw, list) and raw:
        try:
            return bytes(raw)
        except (TypeError, ValueError):
            pass
    return str(entry.get("token", "")).encode("utf-8")


def _spans(text: str, tokens: Sequence[dict[str, Any]]) -> list[tuple[int, int]] | None:
    """Byte span of every token within ``text`` (UTF-8), or None when they do not spell it."""
    blobs = [_token_bytes(t) for t in tokens]
    joined = b"".join(blobs)
    target = text.encode("utf-8")
    if joined == target:
        shift = 0
    elif joined.strip() and joined.strip() == target.strip():
        # Only surrounding whitespace differs (a server stripped it from the text, or added it).
        shift = (len(target) - len(target.lstrip())) - (len(joined) - len(joined.lstrip()))
    else:
        return None
    out, pos = [], shift
    for b in blobs:
        out.append((pos, pos + len(b)))
        pos += len(b)
    return out


def _label_spans(text: str, ids: Sequence[int] | None) -> dict[int, tuple[int, int]]:
    """Byte span of each asked id's label value (its first answer object); ``None``: every id."""
    asked = None if ids is None else set(ids)
    spans: dict[int, tuple[int, int]] = {}
    matches = {(m.start(), int(m.group("id"))): m for rx in (_OBJ, _OBJ_REV) for m in rx.finditer(text)}
    for start, k in sorted(matches):
        if (asked is None or k in asked) and k not in spans:
            m = matches[(start, k)]
            a = len(text[: m.start("val")].encode("utf-8"))
            b = a + len(m.group("val").encode("utf-8"))
            if b > a:
                spans[k] = (a, b)
    return spans


def _alt_label(value: str, labels: LabelSet) -> str | None:
    """The one label an alternative token's text points to, or None (none, or ambiguous)."""
    if '"' in value:  # the token ends the string: the value is complete
        return labels.normalize(value.split('"', 1)[0])
    head = value.lstrip().lower()
    if not head:
        return None
    hits = {lab.name for lab in labels for s in (lab.name, *lab.aliases) if s.lower().startswith(head)}
    return next(iter(hits)) if len(hits) == 1 else None


def item_confidence(
    text: str, logprobs: Sequence[dict[str, Any]] | None, chosen: dict[int, str], labels: LabelSet
) -> dict[int, Confidence]:
    """Per-item confidence for the answer ``text`` given its token ``logprobs``.

    ``chosen``: item id -> the canonical label the parser read for it (items without a valid
    label get nothing). Returns only the ids whose label could be located among the tokens.
    """
    if not logprobs or not chosen:
        return {}
    tokens = [t for t in logprobs if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))]
    if len(tokens) != len(logprobs):
        return {}
    spans = _spans(text, tokens)
    if spans is None:
        return {}
    out: dict[int, Confidence] = {}
    for k, (a, b) in _label_spans(text, list(chosen)).items():
        inside = [i for i, (s, e) in enumerate(spans) if s < b and e > a]
        if not inside:
            continue
        logp = sum(float(tokens[i]["logprob"]) for i in inside)
        prob = min(1.0, math.exp(logp))
        first = tokens[inside[0]]
        offset = a - spans[inside[0]][0]  # bytes of the first token before the label starts
        head = _token_bytes(first)[:offset]
        mass: dict[str, float] = {}
        for alt in first.get("top_logprobs") or []:
            if not isinstance(alt, dict) or not isinstance(alt.get("logprob"), (int, float)):
                continue
            ab = _token_bytes(alt)
            if ab[:offset] != head:
                continue
            name = _alt_label(ab[offset:].decode("utf-8", errors="ignore"), labels)
            if name is not None and name != chosen[k]:
                mass[name] = mass.get(name, 0.0) + math.exp(float(alt["logprob"]))
        probs = None
        if mass:
            mass[chosen[k]] = prob
            total = sum(mass.values())
            probs = {name: mass[name] / total for name in labels.names if name in mass}
        out[k] = Confidence(prob, probs)
    return out


def _set_spans(text: str, ids: Sequence[int]) -> dict[int, list[tuple[str, int, int]]]:
    """Each asked id's label values (first answer object): (value, byte start, byte end) in ``text``."""
    asked = set(ids)
    out: dict[int, list[tuple[str, int, int]]] = {}
    matches = {(m.start(), int(m.group("id"))): m for rx in (_SET_OBJ, _SET_OBJ_REV) for m in rx.finditer(text)}
    for start, k in sorted(matches):
        if k not in asked or k in out:
            continue
        m = matches[(start, k)]
        base = m.start("list")
        values = []
        for v in _STRING.finditer(m.group("list")):
            a = len(text[: base + v.start("val")].encode("utf-8"))
            values.append((v.group("val"), a, a + len(v.group("val").encode("utf-8"))))
        out[k] = values
    return out


def set_confidence(
    text: str, logprobs: Sequence[dict[str, Any]] | None, chosen: dict[int, list[str]], labels: LabelSet
) -> dict[int, Confidence]:
    """Per-item confidence of a multi-label answer: each chosen label's probability (module docstring).

    ``chosen``: item id -> the canonical labels the parser read for it. An item gets a confidence only
    when every one of its labels is found among the tokens; an empty list gets none.
    """
    if not logprobs or not chosen:
        return {}
    tokens = [t for t in logprobs if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))]
    if len(tokens) != len(logprobs):
        return {}
    spans = _spans(text, tokens)
    if spans is None:
        return {}
    out: dict[int, Confidence] = {}
    for k, values in _set_spans(text, list(chosen)).items():
        probs: dict[str, float] = {}
        for value, a, b in values:
            name = labels.normalize(json.loads(f'"{value}"'))
            inside = [i for i, (s, e) in enumerate(spans) if s < b and e > a]
            if name is None or not inside or name in probs:
                continue
            probs[name] = min(1.0, math.exp(sum(float(tokens[i]["logprob"]) for i in inside)))
        if probs and set(probs) == set(chosen[k]):
            out[k] = Confidence(min(probs.values()), {n: probs[n] for n in labels.names if n in probs})
    return out
