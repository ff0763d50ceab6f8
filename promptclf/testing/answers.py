"""Answering promptclf's batch prompt without a model: read its labels and items, pick labels.

The batch prompt (``prompts/batch.j2``) lists the labels as ``- name[: description]`` under
"Classify each text below into one of these labels:" and the items as ``[n] text`` under
"Texts to classify:". :func:`parse_prompt` reads both back; an *answerer* maps one item's text
and the label names to a label; :class:`PromptAnswers` turns one into the chat completion the
fake server sends back.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Answerer = Callable[[str, list[str]], str]
MultiAnswerer = Callable[[str, list[str]], list[str]]  # multi-label: zero or more labels for one text

_ITEM = re.compile(r"^\[(\d+)\] (.*)$", re.M)
_LABELS_HEAD = "Classify each text below into one of these labels:\n"
_MULTI_HEAD = "Classify each text below with zero or more of these labels (every label that applies):\n"


def is_multi_label(user: str) -> bool:
    """Whether a batch prompt asks for zero or more labels per text (``--multi-label``)."""
    return _MULTI_HEAD in user


def parse_prompt(user: str) -> tuple[list[str], list[tuple[int, str]]]:
    """(label names, [(item id, item text)]) of one promptclf batch prompt (single- or multi-label)."""
    labels: list[str] = []
    head = _MULTI_HEAD if is_multi_label(user) else _LABELS_HEAD
    start = user.find(head)
    if start >= 0:
        for line in user[start + len(head) :].splitlines():
            if not line.startswith("- "):
                break
            labels.append(line[2:].split(":", 1)[0].strip())
    tail = user[user.find("Texts to classify:") :] if "Texts to classify:" in user else user
    items = [(int(m.group(1)), m.group(2)) for m in _ITEM.finditer(tail)]
    return labels, items


def hash_answer(text: str, labels: list[str]) -> str:
    """A deterministic label for ``text``: its CRC32 modulo the number of labels."""
    return labels[zlib.crc32(text.encode("utf-8")) % len(labels)]


def hash_multi_answer(text: str, labels: list[str]) -> list[str]:
    """A deterministic label set for ``text``: each label in it when a CRC32 of (label, text) is odd,
    so some texts get none, some one, some several."""
    return [lab for lab in labels if zlib.crc32(f"{lab}\x00{text}".encode()) % 2]


def noisy_multi_answer(truth: Mapping[str, Sequence[str]], error_rate: float, seed: int = 0) -> MultiAnswerer:
    """A multi-label teacher that gets each (text, label) decision wrong with probability ``error_rate``
    (a true label left out, or a false one added), independently and deterministically per text and
    label; texts it does not know get :func:`hash_multi_answer`."""

    def answer(text: str, labels: list[str]) -> list[str]:
        gold = truth.get(text)
        if gold is None:
            return hash_multi_answer(text, labels)
        out = []
        for lab in labels:
            rng = random.Random(zlib.crc32(f"{lab}\x00{text}".encode()) ^ seed)
            if (lab in gold) != (rng.random() < error_rate):
                out.append(lab)
        return out

    return answer


def keyword_answer(keywords: Mapping[str, str], default: Answerer = hash_answer) -> Answerer:
    """The label of the first keyword found in the text (lower-cased), else ``default``'s."""

    def answer(text: str, labels: list[str]) -> str:
        low = text.lower()
        for word, label in keywords.items():
            if word in low and label in labels:
                return label
        return default(text, labels)

    return answer


def noisy_answer(truth: Mapping[str, str], accuracy: float, seed: int = 0) -> Answerer:
    """A teacher that is right with probability ``accuracy`` on texts it knows the truth of
    (the same text always gets the same answer, so retries and resumes agree), else wrong
    uniformly; texts it does not know get :func:`hash_answer`."""

    def answer(text: str, labels: list[str]) -> str:
        gold = truth.get(text)
        if gold is None or gold not in labels:
            return hash_answer(text, labels)
        rng = random.Random(zlib.crc32(text.encode("utf-8")) ^ seed)
        if rng.random() < accuracy or len(labels) == 1:
            return gold
        return rng.choice([lab for lab in labels if lab != gold])

    return answer


def answer_json(items: list[tuple[int, str]], labels: list[str], answer: Answerer) -> str:
    """The response the engine asks for: ``{"items": [{"id": n, "label": ...}]}``."""
    return json.dumps({"items": [{"id": i, "label": answer(text, labels)} for i, text in items]})


def gold_answer(gold: Mapping[str, str], default: str = "unknown") -> Answerer:
    """A perfect annotator: the gold label of the known text an item starts like (its first line's
    first 30 characters, whitespace normalised, since the prompt shows the first line of an item)."""
    known = [(" ".join(t.split()), lab) for t, lab in gold.items()]
    index = {t[:30]: lab for t, lab in known}

    def answer(text: str, labels: list[str]) -> str:
        head = " ".join(text.split())[:30]
        if head in index:
            return index[head]
        return next((lab for t, lab in known if t.startswith(head)), default)

    return answer


class PromptAnswers:
    """A chat-completion responder for the fake server: reads each request's batch prompt back and
    labels its items with ``answer`` (``multi_answer`` for a multi-label prompt); usage counts ~4 characters a token. ``items`` and
    ``requests`` count what it answered (a benchmark's progress), ``texts`` each item text."""

    def __init__(
        self, answer: Answerer = hash_answer, model: str = "fake-model", multi_answer: MultiAnswerer = hash_multi_answer
    ) -> None:
        self.answer = answer
        self.multi_answer = multi_answer
        self.model = model
        self.items = 0
        self.requests = 0
        self.texts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        user = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        labels, items = parse_prompt(user)
        if is_multi_label(user):
            entries = [{"id": i, "labels": self.multi_answer(t, labels)} for i, t in items]
        else:
            entries = [{"id": i, "label": self.answer(t, labels)} for i, t in items]
        content = json.dumps({"items": entries}, separators=(",", ":"))
        prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4
        with self._lock:
            self.items += len(items)
            self.requests += 1
            self.texts.update(t for _, t in items)
            n = self.requests
        message: dict[str, Any] = {"role": "assistant", "content": content}
        finish = "stop"
        if body.get("tools"):  # the tools mode: the answer as the arguments of a call
            name = body["tools"][0].get("function", {}).get("name", "record_labels")
            call = {"id": "call_0", "type": "function", "function": {"name": name, "arguments": content}}
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": len(content) // 4,
                      "total_tokens": prompt + len(content) // 4},
        }  # fmt: skip
