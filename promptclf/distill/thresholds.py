"""Per-label decision thresholds of a multi-label student: tuned on its validation split, applied everywhere.

A multi-label student gives each label an independent probability (a sigmoid). Label ``j`` is in a text's
set when ``p_j >= t_j``. ``t_j`` is tuned on the validation rows (the teacher's labels) to maximise that
label's F1; a label with no positive validation row cannot be tuned and keeps 0.5 (the run says which).
Where several cuts give the same F1, the one nearest 0.5 wins, and a cut falls halfway between two
neighbouring probabilities, so that a small validation split does not push thresholds to its extremes.

Everything that predicts (``predict``, ``predict --engine ray``, the ONNX export, ``serve``) decides
with :func:`decide` on the thresholds stored in ``student.json`` (and ``export.json``), so all of them
give the same label sets. Only numpy is imported here: the ONNX student uses it without torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.5


def best_threshold(probs: Any, truth: Any) -> float | None:
    """The threshold on ``probs`` (one label's, shape (n,)) that maximises F1 against ``truth`` (0/1);
    None when ``truth`` has no positive (nothing to tune on)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(truth, dtype=bool).reshape(-1)
    n_pos = int(y.sum())
    if n_pos == 0 or len(p) == 0:
        return None
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)  # cut after position k: the k+1 highest are predicted positive
    k = np.arange(1, len(ps) + 1)
    f1 = 2.0 * tp / (k + n_pos)  # 2TP / (2TP + FP + FN), FP + TP = k, FN + TP = n_pos
    cut_ok = np.r_[ps[:-1] > ps[1:], True]  # equal probabilities cannot be split by a threshold
    f1 = np.where(cut_ok, f1, -1.0)
    below = np.r_[ps[1:], 0.0]
    thr = (ps + below) / 2.0  # halfway to the next probability: ps[k] >= t > ps[k+1]
    best = f1.max()
    cands = np.flatnonzero(np.isclose(f1, best, rtol=0.0, atol=1e-12))
    pick = cands[np.argmin(np.abs(thr[cands] - DEFAULT_THRESHOLD))]
    return float(thr[pick])


def tune_thresholds(probs: Any, truth: Any, labels: Sequence[str]) -> tuple[list[float], list[str]]:
    """(one threshold per label, the labels left at 0.5 because validation has no positive row of them)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(truth, dtype=bool)
    out: list[float] = []
    untuned: list[str] = []
    for j, name in enumerate(labels):
        t = best_threshold(p[:, j], y[:, j]) if len(p) else None
        if t is None:
            untuned.append(name)
            t = DEFAULT_THRESHOLD
        out.append(round(t, 6))
    return out, untuned


def decide(probs: Any, thresholds: Sequence[float] | None) -> Any:
    """(n, L) booleans: label ``j`` is in row ``i``'s set when ``probs[i, j] >= thresholds[j]`` (0.5 when None)."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * p.shape[-1], dtype=np.float64)
    return p >= t


def label_sets(probs: Any, thresholds: Sequence[float] | None, labels: Sequence[str]) -> list[list[str]]:
    """Each row's label set, in label order."""
    return [[labels[int(j)] for j in np.flatnonzero(row)] for row in decide(probs, thresholds)]


def multilabel_columns(probs: Any, thresholds: Sequence[float] | None, labels: Sequence[str]) -> dict[str, list[str]]:
    """The columns a multi-label student adds to a table, as ``label --multi-label`` writes them:
    ``pred_labels`` (JSON list, ``[]`` when none applies), ``pred_label`` (the same joined with ';') and
    ``pred_probs`` (JSON object: every label's probability)."""
    sets = label_sets(probs, thresholds, labels)
    p = np.asarray(probs, dtype=np.float64)
    return {
        "pred_label": [";".join(s) for s in sets],
        "pred_labels": [json.dumps(s, ensure_ascii=False) for s in sets],
        "pred_probs": [
            json.dumps({lab: round(float(v), 6) for lab, v in zip(labels, row, strict=True)}, ensure_ascii=False)
            for row in p
        ],
    }


def sigmoid(logits: Any) -> Any:
    """Element-wise logistic function, float32 (numerically safe for large |logits|)."""
    z = np.asarray(logits, dtype=np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)
