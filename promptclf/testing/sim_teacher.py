"""A simulated teacher: an OpenAI-compatible HTTP server that stands in for a 70B chat model.

A 70B teacher cannot run here, and the embedded SmolLM2 labels near chance, so the labeling
loop (label → review → distill → report) is measured against this server instead. It answers
the batched requests ``promptclf label --base-url`` sends from a gold table, at a set accuracy
(85% by default: the zero-shot accuracy published results give Llama-3-70B on AG News), and
its mistakes look like an LLM's:

* **Where it errs.** Every text is embedded with the bundled all-MiniLM-L6-v2; the class
  centroids of the gold table give each text a margin (similarity to its own class's centroid
  minus that of the most similar other class). Exactly ``round((1 - accuracy) * n)`` distinct
  texts are answered wrongly, drawn without replacement with weights that fall with the margin
  (``exp(-margin / (boundary * std))``), so texts near a class boundary are wrong more often.
* **What it answers when wrong.** Another class, drawn with a softmax over centroid
  similarities at a low temperature: nearly always the most similar class.
* **How sure it is.** The chosen label's probability is drawn from Beta(8, 1) (mean 0.89) when
  right and Beta(4, 1.5) (mean 0.73) when wrong: lower on errors, yet often high, as an LLM is
  overconfident (17% of its errors above 0.9; AUROC of the probability for its errors ≈ 0.80); the rest of the mass goes to the other labels,
  the true label getting 50-90% of it when wrong, the others by centroid similarity. The answer's ``logprobs`` carry exactly this
  distribution: each label is split into word-piece tokens of up to 5 characters, and at each
  label token the ``top_logprobs`` list the next pieces of all labels that share the prefix so
  far, with their conditional probabilities, so the product of the chosen label's token
  probabilities is its probability.
* **Deterministic.** Answers depend only on (gold table, text, seed), never on the batch a text
  arrives in, so cached and resumed runs stay consistent.

Every figure measured with it must say "simulated teacher".

Python API::

    with SimTeacher(texts, gold_labels, accuracy=0.85, seed=0) as t:
        t.base_url  # "http://127.0.0.1:PORT/v1"; any API key and model name are accepted

CLI (prints the base URL on stdout, then serves until interrupted)::

    python -m promptclf.testing.sim_teacher --gold FILE.csv --text-col text --label-col label --accuracy 0.85 --port 0

Endpoints: ``GET /v1/models``; ``POST /v1/chat/completions`` with ``messages``,
``response_format`` (json_object / json_schema / none: the answer is always
``{"items": [{"id": k, "label": ...}]}``), ``tools`` (answered as a tool call, no logprobs),
``logprobs``, ``top_logprobs``, ``max_tokens`` / ``max_completion_tokens`` (the answer is cut
there, ``finish_reason: "length"``). ``stream: true`` is refused with HTTP 400.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import hashlib
import json
import math
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .answers import parse_prompt
from .fake_server import FakeServer, Responder
from .sim_tree import TreeIndex, stage_answer

MODEL_NAME = "simulated-teacher"
DEFAULT_ACCURACY = 0.85
PIECE = 5  # characters per label token
_FILLERS = [" ", "\n", "<|eot_id|>", ".", " the", "\t", "-", ","]
_ITEM = re.compile(r"(?m)^\[(\d+)\] ")


def norm(text: str) -> str:
    """Whitespace-normalised text, the form both sides are compared in (prompts.clip does this)."""
    return " ".join(str(text).split())


def pieces(label: str) -> list[str]:
    """A label as tokens: word pieces of up to ``PIECE`` characters (like a BPE split)."""
    return [label[i : i + PIECE] for i in range(0, len(label), PIECE)] or [""]


def count_tokens(text: str) -> int:
    """Prompt tokens as a Llama-3 tokenizer counts English text, roughly (4.2 characters a token)."""
    return max(1, round(len(text) / 4.2))


def _text_rng(seed: int, text: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass
class Answer:
    label: str
    probs: dict[str, float]  # over every label, sums to 1
    correct: bool


@dataclass
class _Stats:
    requests: int = 0
    items: int = 0
    unmatched: int = 0  # items whose text is not in the gold table (answered by nearest centroid)
    lock: threading.Lock = field(default_factory=threading.Lock)


class SimTeacher:
    """The simulated teacher as a context manager; see the module docstring.

    ``texts``/``gold_labels``: the gold table. ``accuracy``: share of distinct texts answered
    right (realised exactly, up to rounding). ``boundary``: how strongly errors favour small
    margins (smaller = more strongly). ``latency_s``: sleep before each answer, like a distant
    API. ``embeddings``: precomputed L2-normalised vectors for ``texts`` (else computed with
    :func:`promptclf.embeddings.embed`, cached in ``store`` when one is given).
    """

    def __init__(
        self,
        texts: Sequence[str],
        gold_labels: Sequence[str],
        accuracy: float = DEFAULT_ACCURACY,
        seed: int = 0,
        *,
        boundary: float = 1.0,
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        embeddings: np.ndarray | None = None,
        store: Any = None,
        progress: bool = False,
    ) -> None:
        if len(texts) != len(gold_labels):
            raise ValueError(f"{len(texts)} texts but {len(gold_labels)} gold labels")
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
        self.accuracy, self.seed, self.boundary = accuracy, seed, boundary
        self.latency_s, self.host, self.port = latency_s, host, port
        self.stats = _Stats()
        # One decision per distinct text (first gold label wins), so duplicates answer alike.
        first: dict[str, int] = {}
        for i, t in enumerate(texts):
            if str(gold_labels[i]).strip() and norm(t):
                first.setdefault(norm(t), i)
        if not first:
            raise ValueError("the gold table has no row with both a text and a label")
        self._keys = sorted(first)
        rows = [first[k] for k in self._keys]
        gold = [str(gold_labels[i]).strip() for i in rows]
        self.labels = sorted(set(gold))
        if len(self.labels) < 2:
            raise ValueError(f"the gold table needs at least two labels, has {self.labels}")
        if embeddings is None:
            from promptclf.embeddings import embed

            emb = embed([str(texts[i]) for i in rows], store=store, progress=progress)
        else:
            emb = np.asarray(embeddings, dtype=np.float32)[rows]
        self._answers, self.margins = self._decide(emb, gold)
        self._emb = emb
        self._tree = TreeIndex(self.labels) if any("/" in lab for lab in self.labels) else None
        self._server: FakeServer | None = None

    # -- the teacher's decisions ------------------------------------------------------------
    def _centroid_sims(self, emb: np.ndarray, gold: list[str] | None = None) -> np.ndarray:
        if gold is not None:
            idx = np.array([self.labels.index(g) for g in gold])
            cents = np.stack([emb[idx == c].mean(0) for c in range(len(self.labels))])
            self._centroids = cents / np.linalg.norm(cents, axis=1, keepdims=True)
        return emb @ self._centroids.T

    def _decide(self, emb: np.ndarray, gold: list[str]) -> tuple[dict[str, Answer], np.ndarray]:
        sims = self._centroid_sims(emb, gold)
        n = len(gold)
        true = np.array([self.labels.index(g) for g in gold])
        other = sims.copy()
        other[np.arange(n), true] = -np.inf
        margins = sims[np.arange(n), true] - other.max(1)
        n_wrong = round((1.0 - self.accuracy) * n)
        # Weighted sampling without replacement (Efraimidis-Spirakis keys u^(1/w)), seeded.
        scale = self.boundary * float(np.std(margins) or 1.0)
        logw = -(margins - margins.min()) / scale
        u = np.random.default_rng(self.seed).random(n)
        keys = np.log(np.maximum(u, 1e-300)) / np.exp(logw)
        wrong = set(np.argsort(-keys, kind="stable")[:n_wrong].tolist())
        answers = {}
        for i, key in enumerate(self._keys):
            answers[key] = self._answer(key, sims[i], int(true[i]), i in wrong)
        return answers, margins

    def _answer(self, key: str, sims: np.ndarray, true: int | None, wrong: bool) -> Answer:
        """The label and the distribution over labels for one text (seeded by the text)."""
        rng = _text_rng(self.seed, key)
        k = len(self.labels)
        near = np.exp((sims - sims.max()) / 0.02)  # similarity softmax, low temperature
        if true is None:  # not in the gold table: the nearest class, at the wrong-answer confidence
            true, wrong = int(np.argmax(sims)), False
            p = float(rng.beta(4.0, 1.5))
        else:
            p = float(rng.beta(4.0, 1.5) if wrong else rng.beta(8.0, 1.0))
        p = min(max(p, 1.0 / k + 0.01), 0.999)
        if wrong:
            w = near.copy()
            w[true] = 0.0
            chosen = int(rng.choice(k, p=w / w.sum()))
        else:
            chosen = true
        probs = np.zeros(k)
        probs[chosen] = p
        rest = 1.0 - p
        others = [c for c in range(k) if c != chosen]
        if wrong:
            share = float(rng.uniform(0.5, 0.9))
            probs[true] = rest * share
            rest *= 1.0 - share
            others = [c for c in others if c != true]
        if others:
            # The rest follows similarity, more softly: the nearest other class gets most of it.
            w = np.exp((sims[others] - sims[others].max()) / 0.03)
            w = w / w.sum() + 0.05
            probs[others] = rest * w / w.sum()
        else:
            probs[true if wrong else chosen] += rest
        return Answer(self.labels[chosen], {lab: float(probs[c]) for c, lab in enumerate(self.labels)}, not wrong)

    def lookup(self, text: str) -> Answer | None:
        """The gold table's answer for a text as a prompt shows it (possibly clipped), or None."""
        q = norm(text)
        i = bisect.bisect_left(self._keys, q)
        best, best_lcp = None, -1
        for j in (i - 1, i):  # in sorted order, the longest common prefix is a neighbour
            if 0 <= j < len(self._keys):
                cand = self._keys[j]
                lcp = len(cand) if q.startswith(cand) else _lcp(cand, q)
                if lcp > best_lcp:
                    best, best_lcp = cand, lcp
        if best is None:
            return None
        rest = q[best_lcp:].lstrip()
        # Whole text present (the last item is followed by template text), clipped with " …",
        # or a long shared head (a clipped text whose cut fell oddly).
        if best_lcp == len(best) or rest.startswith("…") or best_lcp >= 200:
            return self._answers[best]
        return None

    def answer_for(self, text: str) -> Answer:
        """The answer for any text: the gold table's, else the nearest centroid's."""
        found = self.lookup(text)
        if found is not None:
            return found
        with self.stats.lock:
            self.stats.unmatched += 1
        from promptclf.embeddings import embed

        sims = self._centroid_sims(embed([text]))[0]
        return self._answer(norm(text), sims, None, False)

    def _shown(self, ans: Answer, user: str) -> Answer:
        """``ans`` told in the labels the prompt lists: when the gold labels are tree paths and the prompt
        lists one node's children (a stage of hierarchical labelling; :mod:`promptclf.testing.sim_tree`),
        or when it lists only some of the labels (``--candidates``): then the teacher answers, as an LLM
        would, from those alone (:func:`among_shown`)."""
        shown, _ = parse_prompt(user)
        if not shown or set(shown) >= set(self.labels):
            return ans
        if self._tree is None:
            return among_shown(ans, shown)
        label, probs = stage_answer(ans.label, ans.probs, shown, self._tree)
        return Answer(label, probs, ans.correct)

    def answers(self) -> dict[str, Answer]:
        """Every distinct gold text (whitespace-normalised) and its answer."""
        return dict(self._answers)

    # -- the HTTP side --------------------------------------------------------------------------
    def respond(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat-completion response to one request body (OpenAI format)."""
        messages = body.get("messages") or []
        user = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        items = parse_items(user)
        answers = [(k, self._shown(self.answer_for(t), user)) for k, t in items]
        tokens = answer_tokens(answers)
        cap = body.get("max_tokens") or body.get("max_completion_tokens")
        finish = "stop"
        if cap is not None and len(tokens) > int(cap):
            tokens, finish = tokens[: int(cap)], "length"
        text = "".join(t["token"] for t in tokens)
        want = bool(body.get("logprobs"))
        top = int(body.get("top_logprobs") or 0)
        prompt_tokens = sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        logprobs = {"content": [_logprob_entry(t, top) for t in tokens]} if want else None
        if body.get("tools"):
            name = body["tools"][0].get("function", {}).get("name", "record_labels")
            call = {"id": "call_0", "type": "function", "function": {"name": name, "arguments": text}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            logprobs = None
            finish = "tool_calls" if finish == "stop" else finish
        with self.stats.lock:
            self.stats.requests += 1
            self.stats.items += len(items)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
        return {
            "id": f"chatcmpl-sim-{digest}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or MODEL_NAME,
            "system_fingerprint": f"sim-teacher-seed{self.seed}",
            "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(tokens),
                "total_tokens": prompt_tokens + len(tokens),
            },
        }

    @property
    def server(self) -> FakeServer:
        assert self._server is not None, "start() the teacher first"
        return self._server

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def start(self) -> SimTeacher:
        """Serve :meth:`respond` on the fake server (``latency_s`` before each answer)."""
        responder = Responder(self.respond, MODEL_NAME)
        self._server = FakeServer(responder, latency_s=self.latency_s, host=self.host, port=self.port).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> SimTeacher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def among_shown(ans: Answer, shown: Sequence[str]) -> Answer:
    """The answer to a prompt that lists only ``shown`` labels: the decided label when it is listed, else
    the most probable listed one (its distribution renormalised over the listed labels). A text whose
    gold label is not listed is therefore answered wrongly, as an LLM shown the wrong candidates would."""
    # A listed label the teacher's gold table lacks gets a sliver, as a model never gives a listed label
    # exactly 0 (and its token logprobs must stay finite).
    mass = {lab: max(ans.probs.get(lab, 0.0), 1e-6) for lab in shown}
    total = sum(mass.values())
    probs = {lab: m / total for lab, m in mass.items()}
    label = ans.label if ans.label in probs else max(probs, key=lambda lab: probs[lab])
    return Answer(label, probs, ans.correct and label == ans.label)


def _lcp(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def parse_items(user: str) -> list[tuple[int, str]]:
    """The numbered items ``[k] text`` of a batch prompt (prompts/batch.j2), ids 1, 2, 3, ... in order.

    An item runs to the next item marker; a ``[k]`` at a line start that is not the next id is
    part of the text. The last item keeps the template text after it (matching ignores it).
    """
    head = user.rfind("Texts to classify:")
    body = user[head:] if head >= 0 else user
    marks: list[re.Match[str]] = []
    for m in _ITEM.finditer(body):
        if int(m.group(1)) == len(marks) + 1:
            marks.append(m)
    out = []
    for j, m in enumerate(marks):
        end = marks[j + 1].start() if j + 1 < len(marks) else len(body)
        out.append((j + 1, body[m.end() : end]))
    return out


def answer_tokens(answers: list[tuple[int, Answer]]) -> list[dict[str, Any]]:
    """The JSON answer as tokens, each ``{"token", "logprob", "alts": [(token, logprob), ...]}``.

    Structure tokens are near-certain; label tokens follow the trie of label pieces, so the
    chosen label's token probabilities multiply to its probability.
    """
    toks: list[dict[str, Any]] = []

    def fixed(s: str) -> None:
        toks.append({"token": s, "logprob": -1e-6, "alts": []})

    fixed('{"')
    fixed("items")
    fixed('":')
    for n, (k, ans) in enumerate(answers):
        fixed(' [{"' if n == 0 else ' {"')
        fixed("id")
        fixed('":')
        fixed(f" {k}")
        fixed(",")
        fixed(' "')
        fixed("label")
        fixed('":')
        fixed(' "')
        chosen = pieces(ans.label)
        split = {lab: pieces(lab) for lab in ans.probs}
        for j, piece in enumerate(chosen):
            prefix = chosen[:j]
            live = {lab: p for lab, p in ans.probs.items() if split[lab][:j] == prefix and len(split[lab]) > j}
            mass: dict[str, float] = {}
            for lab, p in live.items():
                mass[split[lab][j]] = mass.get(split[lab][j], 0.0) + p
            total = sum(mass.values())
            alts = sorted(((t, math.log(m / total)) for t, m in mass.items()), key=lambda a: -a[1])
            toks.append({"token": piece, "logprob": math.log(mass[piece] / total) if total else 0.0, "alts": alts})
        fixed('"}' if n + 1 < len(answers) else '"}]}')
        if n + 1 < len(answers):
            fixed(",")
    if not answers:
        fixed(" []}")
    return toks


def _logprob_entry(tok: dict[str, Any], top: int) -> dict[str, Any]:
    """One OpenAI ``logprobs.content`` entry, with ``top`` alternatives (padded with fillers)."""

    def entry(t: str, lp: float) -> dict[str, Any]:
        return {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}

    alts = list(tok["alts"]) or [(tok["token"], tok["logprob"])]
    seen = {a[0] for a in alts}
    fill = [f for f in _FILLERS if f not in seen]
    floor = min(a[1] for a in alts)
    # Other tokens share what the listed ones leave: far below them, as in a real model.
    alts += [(f, min(floor, 0.0) - 12.0 - 1.5 * i) for i, f in enumerate(fill)]
    return {**entry(tok["token"], tok["logprob"]), "top_logprobs": [entry(t, lp) for t, lp in alts[:top]]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Simulated teacher: an OpenAI-compatible server answering from gold labels."
    )
    ap.add_argument("--gold", required=True, help="table with the texts and their gold labels (CSV, TSV, XLSX, ...)")
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--label-col", default="label")
    ap.add_argument("--accuracy", type=float, default=DEFAULT_ACCURACY)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boundary", type=float, default=1.0, help="smaller: errors concentrate more on small margins")
    ap.add_argument("--latency-s", type=float, default=0.0, help="sleep before each answer")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: a free port (the base URL is printed)")
    ap.add_argument("--store", default=None, help="SQLite store caching the embeddings (default: promptclf's store)")
    args = ap.parse_args(argv)

    from promptclf.data.tables import cell_text, read_table
    from promptclf.label.options import default_store
    from promptclf.store import Store

    df = read_table(args.gold)
    for col in (args.text_col, args.label_col):
        if col not in df.columns:
            ap.error(f"--gold {args.gold} has no column {col!r} (it has: {', '.join(map(str, df.columns))})")
    store = Store(args.store or default_store())
    teacher = SimTeacher(
        [cell_text(v) for v in df[args.text_col]],
        [cell_text(v) for v in df[args.label_col]],
        accuracy=args.accuracy,
        seed=args.seed,
        boundary=args.boundary,
        latency_s=args.latency_s,
        host=args.host,
        port=args.port,
        store=store,
        progress=True,
    )
    store.close()
    right = sum(a.correct for a in teacher.answers().values())
    with teacher:
        print(teacher.base_url, flush=True)
        print(
            f"simulated teacher: {len(teacher.answers())} texts, {len(teacher.labels)} labels, "
            f"accuracy {right / len(teacher.answers()):.4f} (asked {args.accuracy}), seed {args.seed}",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
