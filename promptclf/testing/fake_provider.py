"""An in-process chat provider with injectable faults, for the labeling engine's unit tests.

It implements :class:`~promptclf.providers.base.ChatProvider`: it reads each request's batch
prompt back (:func:`~promptclf.testing.answers.parse_prompt`), labels every item with its
answerer, and returns the JSON the engine asks for, with token usage. A *fault* bends one
response the way real models and servers do:

================  ==============================================================
``missing``       the last item is left out
``shuffled``      the items come back in reverse order (still a valid answer)
``duplicated``    the first item twice, with the same label (harmless)
``conflicting``   the first item twice, with two different labels
``off_list``      the first item's label is not in the label set
``extra_id``      an item with an id that was not asked about is added
``empty``         an empty body
``truncated``     the JSON cut off half-way (complete items before the cut are salvageable)
``prose``         a sentence with no JSON in it
``429``           a rate limit, with ``retry_after`` seconds of Retry-After
``500``           a server error
``timeout``       a client-side timeout (after ``timeout_sleep_s``)
``connection``    a refused or dropped connection
``bad_key``       the key is rejected (never retried)
``bad_request``   the request is rejected as invalid (HTTP 400; not retried)
================  ==============================================================

Faults are given as a sequence consumed one per request (``None``: answer normally), or as a
function of the request's index and its items' texts, so concurrent tests stay deterministic. Every
request is recorded in :attr:`FakeChatProvider.calls`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import AuthenticationError, ProviderConnectionError, ProviderError, TransientProviderError
from ..providers.base import ChatResult, StructuredMode, Usage, estimate_tokens
from .answers import Answerer, MultiAnswerer, hash_answer, hash_multi_answer, is_multi_label, parse_prompt

Fault = Literal[
    "missing", "shuffled", "duplicated", "conflicting", "off_list", "extra_id", "empty", "truncated", "prose",
    "429", "500", "timeout", "connection", "bad_key", "bad_request",
]  # fmt: skip
FAULTS: tuple[str, ...] = Fault.__args__  # type: ignore[attr-defined]
FaultPlan = Sequence[Fault | None] | Callable[[int, list[str]], Fault | None]

OFF_LIST = "not-a-label"


@dataclass
class Call:
    """One request the fake received: its item ids and texts, and the fault it answered with."""

    index: int
    ids: list[int]
    texts: list[str]
    fault: Fault | None
    messages: list[dict[str, str]]


class FakeChatProvider:
    """A deterministic chat provider that answers promptclf's batch prompt, with faults on demand.

    ``answer``: the label for one item's text (default :func:`~promptclf.testing.answers.hash_answer`);
    ``multi_answer``: its labels when the prompt is multi-label (answered as ``{"id", "labels": [...]}``;
    the faults bend those answers the same way).
    ``faults``: see the module docstring. ``logprobs``: attach OpenAI-shaped token log-probabilities
    (each label token certain), so the confidence path runs. ``latency_s``: sleep per request.
    """

    kind: Literal["chat"] = "chat"
    batch_api = False

    def __init__(
        self,
        answer: Answerer = hash_answer,
        faults: FaultPlan = (),
        *,
        name: str = "fake",
        model: str = "fake-model",
        retry_after: float = 0.0,
        timeout_sleep_s: float = 0.0,
        latency_s: float = 0.0,
        logprobs: bool = False,
        multi_answer: MultiAnswerer = hash_multi_answer,
    ) -> None:
        for f in faults if not callable(faults) else ():
            if f is not None and f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}; one of {', '.join(FAULTS)}")
        self.answer = answer
        self.multi_answer = multi_answer
        self.faults = faults
        self.name = name
        self.model = model
        self.base_url: str | None = None
        self.retry_after = retry_after
        self.timeout_sleep_s = timeout_sleep_s
        self.latency_s = latency_s
        self.top_logprobs: int | None = 5 if logprobs else None
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    # -- the provider protocol -------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def load(self) -> None:
        """Nothing to load."""

    def default_mode(self) -> StructuredMode:
        return "json_schema"

    def complete(
        self, messages: list[dict[str, str]], schema: dict[str, Any], mode: StructuredMode, max_tokens: int
    ) -> ChatResult:
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        labels, items = parse_prompt(user)
        if not labels or not items:
            raise ProviderError("fake provider: the request is not a promptclf batch prompt")
        with self._lock:
            index = len(self.calls)
            fault = self._fault(index, [t for _, t in items])
            self.calls.append(Call(index, [i for i, _ in items], [t for _, t in items], fault, messages))
        if self.latency_s:
            time.sleep(self.latency_s)
        self._raise(fault)
        answers: list[tuple[int, str | list[str]]]
        if is_multi_label(user):
            answers = [(i, self.multi_answer(text, labels)) for i, text in items]
        else:
            answers = [(i, self.answer(text, labels)) for i, text in items]
        text = self._bend(fault, answers, labels)
        prompt_tokens = sum(estimate_tokens(m["content"]) for m in messages)
        return ChatResult(
            text=text,
            usage=Usage(prompt_tokens, estimate_tokens(text)),
            latency_s=self.latency_s,
            logprobs=self._logprobs(text) if self.top_logprobs and fault is None else None,
        )

    # -- faults ----------------------------------------------------------------------------
    @property
    def faults_sent(self) -> list[Fault | None]:
        """The fault of every request so far, in order."""
        return [c.fault for c in self.calls]

    def _fault(self, index: int, texts: list[str]) -> Fault | None:
        if callable(self.faults):
            return self.faults(index, texts)
        return self.faults[index] if index < len(self.faults) else None

    def _raise(self, fault: Fault | None) -> None:
        if fault == "429":
            raise TransientProviderError("rate limited (HTTP 429)", retry_after=self.retry_after, status=429)
        if fault == "500":
            raise TransientProviderError("server error (HTTP 500)", status=500)
        if fault == "timeout":
            time.sleep(self.timeout_sleep_s)
            raise TransientProviderError("request timed out")
        if fault == "connection":
            raise ProviderConnectionError("connection failed: connection refused")
        if fault == "bad_key":
            raise AuthenticationError(f"{self.name} rejected the API key (HTTP 401); check FAKE_API_KEY")
        if fault == "bad_request":
            raise ProviderError(f"{self.name} rejected the request (HTTP 400): bad request")

    @staticmethod
    def _bend(fault: Fault | None, answers: Sequence[tuple[int, str | list[str]]], labels: list[str]) -> str:
        multi = bool(answers) and isinstance(answers[0][1], list)
        key = "labels" if multi else "label"
        entries: list[dict[str, Any]] = [{"id": i, key: lab} for i, lab in answers]
        if fault == "missing":
            entries = entries[:-1]
        elif fault == "shuffled":
            entries = entries[::-1]
        elif fault == "duplicated":
            entries = [entries[0], *entries]
        elif fault == "conflicting":
            first = entries[0][key]
            if multi:  # the same item again with one label more or one fewer
                other: Any = first[1:] if first else labels[:1]
            else:
                other = next((lab for lab in labels if lab != first), OFF_LIST)
            entries = [entries[0], {"id": entries[0]["id"], key: other}, *entries[1:]]
        elif fault == "off_list":
            entries[0] = {"id": entries[0]["id"], key: [*entries[0][key], OFF_LIST] if multi else OFF_LIST}
        elif fault == "extra_id":
            entries.append({"id": max(i for i, _ in answers) + 100, key: labels[:1] if multi else labels[0]})
        elif fault == "empty":
            return ""
        elif fault == "prose":
            return "I am sorry, I cannot classify these texts."
        text = json.dumps({"items": entries})
        if fault == "truncated":
            return text[: len(text) // 2]
        return text

    @staticmethod
    def _logprobs(text: str) -> list[dict[str, Any]]:
        """Every character of the answer a certain token (logprob 0), in OpenAI's ``logprobs.content`` shape."""
        return [
            {"token": ch, "logprob": 0.0, "bytes": list(ch.encode()), "top_logprobs": [{"token": ch, "logprob": 0.0}]}
            for ch in text
        ]
