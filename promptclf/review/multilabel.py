"""The review queue of a multi-label file: doubt per (row, label).

Every (row, label) pair is one decision of the LLM: the label is in the row's set (``pred_labels``)
or it is not. Each pair gets the single-label queue's three signals, each an estimate of
P(this decision is wrong):

* **confidence**: from ``pred_probs``: ``1 - p`` for a label in the set, ``p`` for one left out.
  A chat answer gives probabilities only for the labels it wrote, so a left-out label has no value
  there (neutral); the local model gives every label's ``P(yes)``.
* **student**: per label, an out-of-fold logistic regression (present vs absent) on the
  all-MiniLM-L6-v2 embeddings, folds as in the single-label queue: ``1 - p(decision)``.
* **neighbours**: per label, ``1 -`` the similarity-weighted share of the k nearest other rows that
  made the same decision.

The weights are fitted over all pairs as in :mod:`.queue` (anchored on the confidence; equal without
one). The queue has one line per pair, best first: which label is doubted (``review_label``), what the
LLM decided (``review_decision``: ``in`` or ``out``), and the row's set with that decision flipped
(``suggested_labels``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..data.tables import cell_text, check_columns
from ..errors import InputError
from ..label.confidence import parse_pred_probs
from ..labels import LabelSet, split_labels
from .options import ReviewOptions, top_count
from .queue import SIGNALS, ReviewResult, fold_ids, neighbour_share, oof_proba, precision_report
from .weights import combine, equal_weights, fit_weights

# Columns the multi-label queue adds in front of the input columns (``corrected`` is for the person).
MULTI_QUEUE_COLUMNS = [
    "review_rank", "review_row", "review_label", "review_decision", "review_score", "suggested_labels", "corrected",
    "review_reasons",
]  # fmt: skip


def is_multi_label_run(path: str | Path) -> bool:
    """Whether the run folder beside a labeled file says its label set is multi-label."""
    from ..eval.metrics import labels_beside

    saved = labels_beside(path)
    return saved is not None and saved.multi_label


def review_file(path: str | Path, o: ReviewOptions, progress: bool = True) -> ReviewResult:
    """Read a labeled file and rank its (row, label) decisions (:func:`review_multilabel`)."""
    from ..data.tables import read_table

    return review_multilabel(read_table(path), path, o, progress)


def label_set_of(path: str | Path, sets: list[list[str]]) -> LabelSet:
    """The run's label set (``labels.json`` beside the file), else the labels the file's sets use."""
    from ..eval.metrics import labels_beside

    saved = labels_beside(path)
    if saved is not None:
        return saved.as_multi_label()
    names = sorted({n for s in sets for n in s})
    if not names:
        raise InputError(f"{path}: no row has a label, and no labels.json beside it says the label set")
    return LabelSet.from_names(names, multi_label=True)


def _reason(label: str, decided: bool, conf: float, stud: float, share: float, folds: int, k: int) -> str:
    """The signals that argue against the decision, in words (the strongest when none does)."""
    said = "in" if decided else "out"
    notes: list[tuple[float, str]] = []
    if not math.isnan(conf):  # conf is the doubt: 1 - P(label) for a label in the set, P(label) for one out
        notes.append((conf, f"LLM P({label}) {1 - conf if decided else conf:.2f}"))
    if not math.isnan(stud):
        word = "disagrees" if stud >= 0.5 else "agrees"
        notes.append((stud, f"the {folds}-fold student {word} ({label} {said}: {1 - stud:.2f})"))
    if not math.isnan(share):
        notes.append((share, f"{1 - share:.0%} of the nearest {k} rows also have {label} {said}"))
    against = [t for d, t in notes if d >= 0.5]
    if against:
        return "; ".join(against)
    return max(notes)[1] if notes else "no signal"


def review_multilabel(df: Any, path: str | Path, o: ReviewOptions, progress: bool = True) -> ReviewResult:
    """Rank the (row, label) decisions of a multi-label file by how likely each is wrong."""
    import pandas as pd

    from ..embeddings import embed

    col = "pred_labels" if o.label_col == "pred_label" and "pred_labels" in df.columns else o.label_col
    check_columns(df, [o.text_col, col], path, "--text-col/--label-col")
    texts = [cell_text(v) for v in df[o.text_col]]
    status = (
        [cell_text(v).strip().lower() for v in df[o.status_col]] if o.status_col in df.columns else ["ok"] * len(df)
    )
    keep = [i for i in range(len(df)) if status[i] == "ok" and texts[i].strip()]
    sets = [split_labels(df[col].iat[i]) for i in range(len(df))]
    labels = label_set_of(path, [sets[i] for i in keep])
    names = labels.names
    if len(keep) < 2 * o.folds:
        raise InputError(
            f"{path}: {len(keep)} rows with an ok label set; the review needs at least {2 * o.folds} (2 per fold, "
            f"--folds {o.folds})"
        )
    y = np.zeros((len(keep), len(names)), dtype=np.int64)
    for r, i in enumerate(keep):
        known, bad = labels.normalize_all(sets[i])
        if bad:
            raise InputError(f"{path} row {i + 2}: {col} has {', '.join(map(repr, bad))}, not in the label set")
        y[r, [names.index(n) for n in known]] = 1

    conf = np.full(y.shape, np.nan)
    if o.probs_col in df.columns:
        for r, i in enumerate(keep):
            probs = parse_pred_probs(df[o.probs_col].iat[i], f"{path} row {i + 2}") or {}
            for j, n in enumerate(names):
                if n in probs:
                    conf[r, j] = 1 - probs[n] if y[r, j] else probs[n]

    from ..label.options import default_store
    from ..store import Store

    k_texts = [texts[i] for i in keep]
    store = None if o.no_cache else Store(o.store or default_store())
    try:
        x = embed(k_texts, store=store, progress=progress)
    finally:
        if store is not None:
            store.close()
    folds = fold_ids(k_texts, o.folds, o.seed)
    rows = np.arange(len(keep))
    stud = np.full(y.shape, np.nan)
    share = np.full(y.shape, np.nan)
    for j in range(len(names)):
        stud[:, j] = 1 - oof_proba(x, y[:, j], 2, folds, c=o.c)[rows, y[:, j]]
        share[:, j] = 1 - neighbour_share(x, y[:, j], 2, k_texts, o.neighbours)[rows, y[:, j]]

    doubts = np.stack([conf.ravel(), stud.ravel(), share.ravel()], axis=1)  # pair p = row * L + label
    have = ~np.isnan(doubts)
    if o.weights == "fitted":
        sw = fit_weights(doubts, SIGNALS, anchor=0)
    else:
        sw = equal_weights(doubts, SIGNALS, "equal weights (--weights equal)")
    score = combine(doubts, sw, SIGNALS)
    pairs = np.arange(len(score))
    order = np.lexsort((pairs, -score))
    pr, pl = order // len(names), order % len(names)

    ranked = df.iloc[[keep[r] for r in pr]].copy()
    ranked = ranked.drop(columns=[c for c in ranked.columns if c in MULTI_QUEUE_COLUMNS or c.startswith("doubt_")])

    def flipped(r: int, j: int) -> str:
        chosen = {n for n, v in zip(names, y[r], strict=True) if v} ^ {names[j]}
        return json.dumps([n for n in names if n in chosen])

    front = {
        "review_rank": np.arange(1, len(order) + 1),
        "review_row": [keep[r] for r in pr],
        "review_label": [names[j] for j in pl],
        "review_decision": ["in" if y[r, j] else "out" for r, j in zip(pr, pl, strict=True)],
        "review_score": np.round(score[order], 4),
        "suggested_labels": [flipped(r, j) for r, j in zip(pr, pl, strict=True)],
        "corrected": "",
        "review_reasons": [
            _reason(names[j], bool(y[r, j]), conf[r, j], stud[r, j], share[r, j], o.folds, o.neighbours)
            for r, j in zip(pr, pl, strict=True)
        ],
    }
    for pos, (name, values) in enumerate(front.items()):
        ranked.insert(pos, name, values)
    for name, column in zip(SIGNALS, doubts.T, strict=True):
        ranked[f"doubt_{name}"] = [None if math.isnan(v) else round(float(v), 4) for v in column[order]]
    ranked = ranked.reset_index(drop=True)
    n_top = top_count(o.top, len(order))
    summary: dict[str, Any] = {
        "input": str(path),
        "options": o.model_dump(mode="json"),
        "multi_label": True,
        "unit": "(row, label) decisions",
        "labels": names,
        "n_rows": len(df),
        "n_ranked": len(order),
        "not_ranked": {
            "not_ok": sum(1 for s in status if s != "ok"),
            "no_label_or_text": sum(1 for i in range(len(df)) if status[i] == "ok" and not texts[i].strip()),
        },
        "n_queue": n_top,
        "signals": {name: int(have[:, j].sum()) for j, name in enumerate(SIGNALS)},
        "combination": "weighted mean of the available signals' P(decision wrong), per (row, label)",
        "weights": sw.as_dict(),
    }
    if o.gold_col:
        summary["gold"] = _gold_report(df, path, o.gold_col, keep, labels, y, order, n_top)
    return ReviewResult(ranked=ranked, queue=pd.DataFrame(ranked.iloc[:n_top].copy()), summary=summary)


def _gold_report(
    df: Any, path: str | Path, gold_col: str, keep: list[int], labels: LabelSet, y: np.ndarray, order: np.ndarray,
    n_top: int,
) -> dict[str, Any]:  # fmt: skip
    """Precision at k of the ranking: the share of its top pairs whose decision the gold set contradicts."""
    check_columns(df, [gold_col], path, "--gold-col")
    names = labels.names
    g = np.zeros_like(y)
    has = np.zeros(len(keep), dtype=bool)
    for r, i in enumerate(keep):
        cell = df[gold_col].iat[i]
        if cell_text(cell).strip().lower() in ("", "nan", "none"):
            continue
        known, bad = labels.normalize_all(cell)
        if bad:
            raise InputError(
                f"{path} row {i + 2}: gold {', '.join(map(repr, bad))} not in the label set ({', '.join(names)}); "
                "fix the cell or the labels"
            )
        has[r] = True
        g[r, [names.index(n) for n in known]] = 1
    pair_has = np.repeat(has, len(names))
    wrong = (y != g).ravel()
    pos = np.full(len(wrong), -1)
    pos[pair_has] = np.arange(int(pair_has.sum()))
    ord_gold = np.array([pos[p] for p in order if pair_has[p]], dtype=np.int64)
    return precision_report(wrong[pair_has], ord_gold, min(n_top, int(pair_has.sum())))
