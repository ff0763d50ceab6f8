"""Metrics for ordinal label sets (ratings such as 0-5), as the FineWeb-Edu classifier reports them.

On the rows with a gold label on the scale and a valid prediction (coverage and failed rows are the
main metrics' business; this part reads only what can be compared on the scale):

* ``mae``: mean absolute error between the gold score and the predicted label's score;
  ``mae_score``: the same for the predicted *score* (``pred_score``: the expected score from the
  probabilities) where the file has one;
* ``spearman``: rank correlation of gold and prediction (the score where present, else the label);
* ``exact`` and ``within_one``: the predicted label is the gold one, or at most one step away;
* ``cut``: binary precision, recall and F1 of "rounded score >= cut": the predicted score is rounded to
  the nearest label's score first, as the FineWeb-Edu classifier rounds its output before its
  "educational" threshold of 3 on 0-5 (an expected score is pulled towards the middle wherever the
  probabilities spread, so 2.8 from a confident 3 must still count as 3); the default cut is the
  middle label of the scale;
* 95% bootstrap CIs for MAE, within-one and F1 (rows resampled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data.tables import cell_text
from ..errors import InputError
from ..labels import LabelSet


def default_cut(labels: LabelSet) -> float:
    """The middle label's score: 3 on 0-5, 2 on 0-4 (the upper middle for an even count)."""
    return labels.scores[len(labels) // 2]


def _float(v: object) -> float | None:
    s = cell_text(v).strip()
    if not s:
        return None
    try:
        x = float(s)
    except ValueError:
        return None
    return x if np.isfinite(x) else None


def _f1(gold_pos: np.ndarray, pred_pos: np.ndarray) -> tuple[float, float, float]:
    tp = float((gold_pos & pred_pos).sum())
    p = tp / pred_pos.sum() if pred_pos.sum() else 0.0
    r = tp / gold_pos.sum() if gold_pos.sum() else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def ordinal_metrics(
    gold: Sequence[object],
    pred: Sequence[object],
    labels: LabelSet,
    status: Sequence[object] | None = None,
    pred_score: Sequence[object] | None = None,
    cut: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The ordinal metrics of the module docstring, as a JSON-ready dict."""
    from scipy.stats import spearmanr

    if not labels.ordinal:
        labels = labels.as_ordinal()
    cut = default_cut(labels) if cut is None else float(cut)
    lo, hi = labels.scores[0], labels.scores[-1]
    if not lo < cut <= hi:
        raise InputError(f"--cut {cut:g} is outside the scale ({lo:g} to {hi:g}]; pick a score above the lowest")
    n = len(gold)
    st = [cell_text(s).strip().lower() for s in status] if status is not None else [""] * n
    pos = {name: i for i, name in enumerate(labels.names)}
    g_idx, p_idx, p_score = [], [], []
    for i in range(n):
        g, p = labels.normalize(cell_text(gold[i])), labels.normalize(cell_text(pred[i]))
        if g is None or p is None or st[i] not in ("", "ok"):
            continue
        g_idx.append(pos[g])
        p_idx.append(pos[p])
        s = _float(pred_score[i]) if pred_score is not None else None
        p_score.append(labels.scores[pos[p]] if s is None else s)
    scores = np.array(labels.scores)
    gi, pi = np.array(g_idx, dtype=int), np.array(p_idx, dtype=int)
    gs, ps, pl = (
        scores[gi] if len(gi) else np.zeros(0),
        np.array(p_score, dtype=float),
        scores[pi] if len(pi) else np.zeros(0),
    )
    out: dict[str, Any] = {"n": int(len(gi)), "cut": cut, "scale": [lo, hi], "has_score": pred_score is not None}
    if not len(gi):
        return out | {"mae": None, "spearman": None, "exact": None, "within_one": None, "binary": None}
    rho = spearmanr(gs, ps).statistic if len(set(gs.tolist())) > 1 and len(set(ps.tolist())) > 1 else float("nan")
    pr = scores[[labels.names.index(labels.nearest(float(v))) for v in ps]] if len(ps) else ps  # rounded
    bp, br, bf = _f1(gs >= cut, pr >= cut)
    out |= {
        "mae": float(np.abs(pl - gs).mean()),
        "mae_score": float(np.abs(ps - gs).mean()) if pred_score is not None else None,
        "spearman": None if np.isnan(rho) else float(rho),
        "exact": float((gi == pi).mean()),
        "within_one": float((np.abs(gi - pi) <= 1).mean()),
        "binary": {"precision": bp, "recall": br, "f1": bf, "positives_gold": int((gs >= cut).sum())},
    }
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(gi), size=(n_boot, len(gi)))
        mae = np.abs(pl - gs)[draws].mean(1)
        w1 = (np.abs(gi - pi) <= 1)[draws].mean(1)
        gpos, ppos = (gs >= cut)[draws], (pr >= cut)[draws]
        tp = (gpos & ppos).sum(1)
        f1 = np.where(gpos.sum(1) + ppos.sum(1) > 0, 2 * tp / np.maximum(gpos.sum(1) + ppos.sum(1), 1), 0.0)
        out["mae_ci"] = [float(np.quantile(mae, 0.025)), float(np.quantile(mae, 0.975))]
        out["within_one_ci"] = [float(np.quantile(w1, 0.025)), float(np.quantile(w1, 0.975))]
        out["binary_f1_ci"] = [float(np.quantile(f1, 0.025)), float(np.quantile(f1, 0.975))]
    return out


def format_ordinal(m: dict[str, Any]) -> list[str]:
    """The ordinal block of ``promptclf eval``'s table."""
    if not m.get("n"):
        return ["ordinal: no row with a gold label and a valid prediction on the scale"]

    def ci(key: str, pct: bool = False) -> str:
        c = m.get(key)
        if not c:
            return ""
        return f"  (95% CI {100 * c[0]:.1f}–{100 * c[1]:.1f})" if pct else f"  (95% CI {c[0]:.3f}–{c[1]:.3f})"

    b = m["binary"]
    lines = [
        f"ordinal scale {m['scale'][0]:g}-{m['scale'][1]:g} on {m['n']} rows",
        f"MAE (label)   {m['mae']:.3f}{ci('mae_ci')}",
    ]
    if m.get("mae_score") is not None:
        lines.append(f"MAE (score)   {m['mae_score']:.3f}   (pred_score: the expected score)")
    rho = m.get("spearman")
    lines += [
        f"Spearman      {'-' if rho is None else f'{rho:.3f}'}",
        f"exact         {100 * m['exact']:.1f}%   within one {100 * m['within_one']:.1f}%{ci('within_one_ci', True)}",
        f"at cut >= {m['cut']:g}: precision {100 * b['precision']:.1f}%  recall {100 * b['recall']:.1f}%  "
        f"F1 {100 * b['f1']:.1f}%{ci('binary_f1_ci', True)}  ({b['positives_gold']} gold positives)",
    ]
    return lines
