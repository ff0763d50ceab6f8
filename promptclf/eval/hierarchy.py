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
    boots = [rng.integers(0, len(rows), len(rows)) for _ in range(n_boot)] if rows and n_boot > 0 else []
    out = []
    for k in range(1, labels.tree.depth + 1):
        level_names = list(dict.fromkeys(at_level(p, k) for p in labels.names))
        g = np.array([at_level(x, k) for x in gold_l], dtype=object)
        p = np.array([at_level(x, k) if x else NONE for x in pred_l], dtype=object)
        acc, f1 = _scores(g, p)
        accs = [_scores(g[b], p[b]) for b in boots]
        out.append(
            {
                "level": k,
                "n_labels": len(level_names),
                "n_scored": len(rows),
                "accuracy": acc,
                "accuracy_ci": _ci([a for a, _ in accs]),
                "macro_f1": f1,
                "macro_f1_ci": _ci([f for _, f in accs]),
            }
        )
    return out


def _scores(gold: np.ndarray, pred: np.ndarray) -> tuple[float | None, float | None]:
    """(accuracy, macro-F1 over the labels in gold or valid predictions), as ``evaluate`` averages."""
    if not len(gold):
        return None, None
    from sklearn.metrics import f1_score

    present = sorted(set(gold.tolist()) | {x for x in pred.tolist() if x != NONE})
    acc = float(np.mean(gold == pred))
    return acc, float(f1_score(gold, pred, labels=present, average="macro", zero_division=0))


def _ci(values: list[float | None]) -> list[float] | None:
    vals = [v for v in values if v is not None]
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if vals else None


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
