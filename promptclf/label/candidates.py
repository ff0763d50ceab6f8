"""Large label sets (``--candidates K``): each request shows only the labels nearest to its texts.

With dozens or hundreds of labels, listing every label in every prompt costs most of the prompt
and drowns the few that matter. Each label's ``name: description`` and each text are embedded
with the bundled all-MiniLM-L6-v2 (:mod:`promptclf.embeddings`, cached in the store, the encoder
similar-example shots use); a text's *candidates* are the K labels most similar to it.

* A chat request shows the union of its texts' candidates (:meth:`CandidateSets.shown`), in
  label-set order, so two requests with the same union render the same bytes. Texts are
  ordered so that similar ones share a batch (:func:`promptclf.label.shots.cluster_order`): their
  candidates overlap and the union stays small. The structured-output enum is that union, but
  answers are validated against the full set: a label from the set that was not shown is
  accepted (and counted as ``off_candidate_answers``), a name off the set is ``invalid`` as before.
* The local (scoring) model scores each text against its own K candidates only: the
  distribution is over them, every other label gets probability 0 in ``pred_probs``.
* Each row's own candidates (nearest first) go to the labeled file's ``pred_candidates`` (a JSON
  list), so ``eval`` can say how often the gold label was among them (candidate recall): an
  answer can only be right when it was, so recall bounds the accuracy of the run.

Prompt caching: the system message names no label under ``--candidates`` (it points at the list
in the message), so it is the same bytes in every request; the user message diverges from the
first listed label on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..labels import Label, LabelSet

if TYPE_CHECKING:
    from ..store import Store


def k_error(k: int, n_labels: int) -> str | None:
    """Why ``--candidates k`` cannot go with ``n_labels`` labels (naming the fix), or None when it can."""
    if k <= n_labels:
        return None
    return (
        f"--candidates {k} is larger than the label set ({n_labels} labels): pass --candidates {n_labels} or "
        "fewer, or drop --candidates to show every label in every prompt"
    )


def check_k(k: int, n_labels: int) -> None:
    """Refuse a K larger than the label set (:class:`InputError`, naming the fix)."""
    msg = k_error(k, n_labels)
    if msg is not None:
        raise InputError(msg)


def label_text(label: Label) -> str:
    """What a label is embedded as: ``name: description``, or the name alone."""
    return f"{label.name}: {label.description}" if label.description else label.name


@dataclass
class CandidateSets:
    """Every row's K nearest labels, and the label subsets requests show."""

    labels: LabelSet
    k: int
    by_row: dict[int, list[str]]  # input row (rows to label) -> its K candidates, nearest first
    row_vecs: dict[int, np.ndarray] = field(default_factory=dict)  # the rows' embeddings (for batching)
    stats: CandidateStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = CandidateStats(self.k)

    def vectors(self, rows: Sequence[int]) -> np.ndarray:
        """The embeddings of ``rows``, shape ``(len(rows), d)``."""
        return np.stack([self.row_vecs[r] for r in rows])

    def shown(self, rows: Sequence[int]) -> LabelSet:
        """The labels one request holding ``rows`` shows: the union of their candidates, in label-set order."""
        union: set[str] = set()
        for r in rows:
            union.update(self.by_row[r])
        return self.subset(union)

    def of_row(self, row: int) -> LabelSet:
        """One row's own candidates, in label-set order (a scoring prompt's labels)."""
        return self.subset(self.by_row[row])

    def subset(self, names: set[str] | Sequence[str]) -> LabelSet:
        """The labels of ``names`` as a label set (descriptions, aliases and flags kept), in label-set order."""
        keep = set(names)
        return LabelSet(
            tuple(lab for lab in self.labels if lab.name in keep),
            ordinal=self.labels.ordinal,
            multi_label=self.labels.multi_label,
        )


def build_candidates(
    labels: LabelSet,
    k: int,
    texts: Sequence[str],
    rows: Sequence[int],
    store: Store | None = None,
    progress: bool = False,
) -> CandidateSets:
    """Embed the labels and the texts of ``rows`` (one call, cached in ``store``) and pick each row's K nearest."""
    from ..embeddings import embed, knn

    check_k(k, len(labels))
    vecs = embed([label_text(lab) for lab in labels] + [texts[r] for r in rows], store=store, progress=progress)
    label_vecs, item_vecs = vecs[: len(labels)], vecs[len(labels) :]
    names = labels.names
    by_row: dict[int, list[str]] = {}
    if len(rows):
        idx, _ = knn(item_vecs, label_vecs, k)
        by_row = {r: [names[j] for j in idx[n]] for n, r in enumerate(rows)}
    return CandidateSets(labels, k, by_row, {r: item_vecs[n] for n, r in enumerate(rows)})


@dataclass
class CandidateStats:
    """What ``--candidates`` did in a run: K, the labels requests showed, and answers outside them."""

    k: int
    shown_labels: int = 0  # labels listed, summed over the requests
    requests: int = 0
    off_candidate_answers: int = 0  # answers from the full set that the request did not show

    def add(self, other: CandidateStats) -> None:
        """Add another chunk's counts."""
        self.shown_labels += other.shown_labels
        self.requests += other.requests
        self.off_candidate_answers += other.off_candidate_answers

    def count(self, shown: LabelSet, answers: Sequence[str]) -> None:
        """One request's outcome: the labels it showed and the labels it answered."""
        names = set(shown.names)
        self.shown_labels += len(names)
        self.requests += 1
        self.off_candidate_answers += sum(1 for a in answers if a not in names)

    def as_dict(self, recall: dict[str, object] | None = None) -> dict[str, object]:
        """The record a run keeps (``run.json["candidates"]``), with the candidate recall on gold rows if known."""
        out: dict[str, object] = {
            "k": self.k,
            "mean_shown_labels": round(self.shown_labels / self.requests, 2) if self.requests else None,
            "off_candidate_answers": self.off_candidate_answers,
        }
        if recall is not None:
            out.update(recall)
        return out
