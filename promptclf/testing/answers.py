"""Answering promptclf's batch prompt without a model: read its labels and items, pick labels.

The batch prompt (``prompts/batch.j2``) lists the labels as ``- name[: description]`` under
"Classify each text below into one of these labels:" and the items as ``[n] text`` under
"Texts to classify:". :func:`parse_prompt` reads both back; an *answerer* maps one item's text
and the label names to a label.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Callable, Mapping

Answerer = Callable[[str, list[str]], str]

_ITEM = re.compile(r"^\[(\d+)\] (.*)$", re.M)
_LABELS_HEAD = "Classify each text below into one of these labels:\n"


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


def hash_answer(text: str, labels: list[str]) -> str:
    """A deterministic label for ``text``: its CRC32 modulo the number of labels."""
    return labels[zlib.crc32(text.encode("utf-8")) % len(labels)]


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
