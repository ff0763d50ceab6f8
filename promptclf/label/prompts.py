"""Jinja prompt templates and few-shot example selection.

Templates live in ``prompts/`` (installed with the package) and any of them can be
replaced by a path. Three templates make a prompt:

* ``system.j2`` — role, task and condition;
* ``batch.j2`` — the user message for chat providers: labels, examples, numbered items;
* ``score.j2`` — the user message for scoring providers: one item, rendered once with a
  sentinel so the part before the item (instructions + examples) is a shared prefix;
* ``score_multi.j2`` — a multi-label run's scoring prompt: one label's yes/no question about one item
  (:meth:`PromptBuilder.label_score_parts`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ..errors import InputError
from ..labels import Label, LabelSet
from ..resources import resource_dir

_SENTINEL = "\x00ITEM\x00"


def clip(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters at a word boundary, marking the cut."""
    text = " ".join(str(text).split()) if len(text) > limit else str(text)
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut + " …"


@dataclass(frozen=True)
class Shot:
    text: str
    label: str
    row: int | None = None  # input row position when the shot came from the input file


@dataclass(frozen=True)
class Item:
    id: int  # 1-based position inside one request
    text: str


def _load(path: str | Path | None, default: str) -> tuple[str, str]:
    """(template source, where it came from)."""
    if path is None:
        p = resource_dir("prompts") / default
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"template {path} not found; pass a path to a Jinja file or omit it for the default")
    return p.read_text(encoding="utf-8"), str(p)


class PromptBuilder:
    """Renders the system message, batch prompts and scoring prompts for one job."""

    def __init__(
        self,
        labels: LabelSet,
        shots: Sequence[Shot] = (),
        template: str | Path | None = None,
        system_template: str | Path | None = None,
        score_template: str | Path | None = None,
        max_chars: int = 4000,
        shot_max_chars: int = 400,
        candidates: bool = False,
    ) -> None:
        self.labels = labels
        # --candidates: each request lists its own labels, so the system message names none (one cacheable prefix).
        self.candidates = candidates
        self.shots = list(shots)
        self.max_chars = max_chars
        self.shot_max_chars = shot_max_chars
        env = jinja2.Environment(
            undefined=jinja2.StrictUndefined, keep_trailing_newline=False, trim_blocks=False, autoescape=False
        )
        env.filters["clip"] = clip
        self.sources: dict[str, str] = {}
        self._templates: dict[str, jinja2.Template] = {}
        for key, path, default in (
            ("system", system_template, "system.j2"),
            ("batch", template, "batch.j2"),
            ("score", score_template or template, "score.j2"),
            ("score_multi", None, "score_multi.j2"),
        ):
            src, origin = _load(path, default)
            self.sources[key] = src
            try:
                self._templates[key] = env.from_string(src)
            except jinja2.TemplateSyntaxError as exc:
                raise InputError(f"template {origin}: line {exc.lineno}: {exc.message}") from exc

    def _render(self, key: str, **extra: object) -> str:
        """Render template ``key``; ``extra`` adds variables or overrides the job's (``shots=[]``)."""
        try:
            context = {
                "labels": list(self.labels),
                "ordinal": self.labels.ordinal,
                "multi_label": self.labels.multi_label,
                "shots": self.shots,
                "max_chars": self.max_chars,
                "shot_max_chars": self.shot_max_chars,
                "candidates": self.candidates,
            }
            return self._templates[key].render(context | extra).strip()
        except jinja2.UndefinedError as exc:
            raise InputError(f"{key} template uses an undefined variable: {exc.message}") from exc

    def system(self) -> str:
        return self._render("system")

    def batch_messages(
        self,
        items: Sequence[Item],
        feedback: str | None = None,
        format_instructions: str | None = None,
        shots: Sequence[Shot] | None = None,
        labels: LabelSet | None = None,
    ) -> list[dict[str, str]]:
        """Chat messages for one request classifying ``items``.

        ``shots``: this request's few-shot examples (similar-example shots); None = the job's.
        ``labels``: the labels this request lists (``--candidates``); None = the job's.
        """
        extra: dict[str, object] = {} if shots is None else {"shots": list(shots)}
        if labels is not None:
            extra["labels"] = list(labels)
        user = self._render(
            "batch", items=list(items), feedback=feedback, format_instructions=format_instructions, **extra
        )
        return [{"role": "system", "content": self.system()}, {"role": "user", "content": user}]

    def score_parts(self, shots: Sequence[Shot] | None = None, labels: LabelSet | None = None) -> ScoreParts:
        """The scoring prompt split around the item: the user message for ``text`` is prefix + text + suffix.

        ``shots``: the few-shot examples of this prompt (similar-example shots); None = the job's.
        ``labels``: the labels this prompt lists (``--candidates``); None = the job's.
        """
        extra: dict[str, object] = {} if shots is None else {"shots": list(shots)}
        if labels is not None:
            extra["labels"] = list(labels)
        rendered = self._render("score", item=_SENTINEL, **extra)
        if rendered.count(_SENTINEL) != 1:
            raise InputError("the scoring template must use {{ item }} exactly once")
        prefix, suffix = rendered.split(_SENTINEL)
        has_shots = bool(self.shots if shots is None else shots)
        span = self._examples_span(prefix, suffix, extra) if has_shots else None
        return ScoreParts(self.system(), prefix, suffix, span)

    def label_score_parts(self, label: Label) -> ScoreParts:
        """A multi-label run's scoring prompt for one label, split around the item: does ``label`` apply
        (answered ``yes`` or ``no``)? Zero-shot, so no examples span."""
        rendered = self._render("score_multi", item=_SENTINEL, label=label)
        prefix, suffix = rendered.split(_SENTINEL)
        return ScoreParts(self._render("system", yes_no=True), prefix, suffix, None)

    def _examples_span(self, prefix: str, suffix: str, extra: dict[str, object]) -> tuple[int, int] | None:
        """Where the few-shot examples sit in ``prefix``: what changes when the shots are taken away.

        Rendering the template again with no shots and trimming the common head and tail of the
        two texts finds the span for any template, the packaged one or a user's.
        """
        bare = self._render("score", item=_SENTINEL, **(extra | {"shots": []}))
        if bare.count(_SENTINEL) != 1 or bare.split(_SENTINEL)[1] != suffix:
            return None
        bare_prefix = bare.split(_SENTINEL)[0]
        a = 0
        while a < min(len(prefix), len(bare_prefix)) and prefix[a] == bare_prefix[a]:
            a += 1
        b = 0
        while b < min(len(prefix), len(bare_prefix)) - a and prefix[-1 - b] == bare_prefix[-1 - b]:
            b += 1
        return (a, len(prefix) - b) if len(prefix) - b > a else None


@dataclass(frozen=True)
class ScoreParts:
    """The scoring prompt around the item, and the character span of the few-shot examples in ``prefix``."""

    system: str
    prefix: str
    suffix: str
    examples: tuple[int, int] | None


def select_shots(
    texts: Sequence[str], labels: Sequence[str], per_class: int, label_set: LabelSet, seed: int = 0
) -> tuple[list[Shot], list[str]]:
    """Pick ``per_class`` examples of every label, stratified and seeded.

    ``texts``/``labels`` are the candidate rows (empty label = not a candidate). Returns the
    shots (in a seeded shuffled order so no class sits last) and warnings for classes with
    fewer candidates than asked.
    """
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, (txt, lab) in enumerate(zip(texts, labels, strict=True)):
        name = label_set.normalize(lab) if lab else None
        if name is not None and str(txt).strip():
            by_label.setdefault(name, []).append(i)
    shots: list[Shot] = []
    warnings = []
    for name in label_set.names:
        pool = by_label.get(name, [])
        if len(pool) < per_class:
            warnings.append(f"label {name!r} has {len(pool)} example(s), fewer than --shots {per_class}")
        for i in rng.sample(pool, min(per_class, len(pool))):
            shots.append(Shot(text=str(texts[i]), label=name, row=i))
    rng.shuffle(shots)
    return shots, warnings
