"""Per-level metrics for a label tree: accuracy and macro-F1 at level 1 (the top), 2, ..., the leaves.

Gold cells and predictions are leaf paths (``rec/sport/hockey``; a gold cell may give a leaf's bare name
when no other leaf has it). At level ``k`` both are cut to their first ``k`` names
(:func:`promptclf.label_tree.at_level`), so a prediction in the right branch but the wrong leaf counts
as right at the levels above. A leaf higher up than ``k`` (``misc`` at level 2) stays itself. Rows
without a valid prediction count as wrong at every level (as :func:`~promptclf.eval.metrics.evaluate`
counts them), so level accuracies are comparable with the headline accuracy; the last level is the
leaf accuracy. Macro-F1 averages over the level's labels present in gold or valid predictions, as the
headline macro-F1 does; CIs are a percentile bootstrap over rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..label_tree import at_level
from ..labels import LabelSet

NONE = "(none)"  # no valid prediction: wrong at every level


def level_metrics(
    gold: Sequence[object],
    pred: Sequence[object],
    labels: LabelSet,
    status: Sequence[object] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One entry per level of ``labels.tree``: ``level``, ``accuracy``, ``macro_f1`` (with ``_ci``: 95%
    bootstrap over rows), ``n_labels`` (the level's node paths), ``n_scored``. Empty when ``labels`` is
    not a tree. Rows without gold, and few-shot rows (status ``shot``), are left out."""
    if labels.tree is None:
        return []

    def cell(v: object) -> str:
        return "" if v is None or v != v else str(v).strip()  # NaN cells are empty

    names = set(labels.names)
    st = [cell(s).lower() for s in status] if status is not None else [""] * len(gold)
    rows = [(cell(g), cell(p), s) for g, p, s in zip(gold, pred, st, strict=True) if cell(g) and s != "shot"]
    gold_l = [labels.normalize(g) or g for g, _, _ in rows]
    # A prediction counts only when valid and ok: anything else is wrong at every level.
    pred_l = [(labels.normalize(p) or "") if s in ("", "ok") else "" for _, p, s in rows]
    pred_l = [p if p in names else "" for p in pred_l]
    rng = np.random.default_rng(seed)
    # Row resamples as multinomial counts: one weight matrix for every level, so levels share draws.
    weights = rng.multinomial(len(rows), np.full(len(rows), 1 / len(rows)), size=n_boot) if rows and n_boot else None
    out = []
    for k in range(1, labels.tree.depth + 1):
        level_names = list(dict.fromkeys(at_level(p, k) for p in labels.names))
        g = [at_level(x, k) for x in gold_l]
        p = [at_level(x, k) if x else NONE for x in pred_l]
        acc, f1 = _scores(g, p, np.ones((1, len(rows)))) if rows else (np.array([np.nan]), np.array([np.nan]))
        boot = _scores(g, p, weights) if weights is not None else None
        out.append(
            {
                "level": k,
                "n_labels": len(level_names),
                "n_scored": len(rows),
                "accuracy": float(acc[0]) if rows else None,
                "accuracy_ci": _ci(boot[0]) if boot else None,
                "macro_f1": float(f1[0]) if rows else None,
                "macro_f1_ci": _ci(boot[1]) if boot else None,
            }
        )
    return out


def _scores(gold: list[str], pred: list[str], w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, macro-F1) under each row of weights ``w`` (resample counts; ones: the sample itself).
    Macro-F1 averages over the labels in gold or valid predictions, as ``evaluate`` does."""
    present = sorted(set(gold) | {x for x in pred if x != NONE})
    index = {lab: j for j, lab in enumerate(present)}
    G = np.zeros((len(gold), len(present)))
    P = np.zeros((len(gold), len(present)))
    G[np.arange(len(gold)), [index[x] for x in gold]] = 1
    valid = [i for i, x in enumerate(pred) if x != NONE]
    P[valid, [index[pred[i]] for i in valid]] = 1
    n = w.sum(1)
    tp, n_gold, n_pred = w @ (G * P), w @ G, w @ P
    acc = tp.sum(1) / n
    denom = n_gold + n_pred
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return acc, f1.mean(1)


def _ci(values: np.ndarray) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_levels(levels: Sequence[dict[str, Any]]) -> list[str]:
    """The per-level table for the terminal."""
    if not levels:
        return []
    lines = ["level  labels  accuracy  macro-F1"]
    last = levels[-1]["level"]
    for lv in levels:
        name = f"{lv['level']}{' (leaf)' if lv['level'] == last else ''}"
        lines.append(f"{name:<9}{lv['n_labels']:>4}  {_pct(lv['accuracy']):>8}  {_pct(lv['macro_f1']):>8}")
    return lines
