"""The arithmetic of a student-first cascade: rows whose student confidence is at least a threshold
keep the student's label, the rest get the LLM's.

Pure functions over arrays, shared by ``label --student`` (choosing ``--threshold auto`` on the
student's validation rows), the report (the accuracy-cost frontier) and the cascade bench:

* :func:`pick_threshold`: the smallest threshold at which the cascade's labels agree with the
  reference labels (the teacher's, on the distill run's validation rows) on at least the target
  share of rows. The rows under the threshold go to the LLM, which is the teacher, so they count as
  agreeing; only the student's kept rows can disagree.
* :func:`frontier`: accuracy and cost per 1,000 items of LLM only, student only and the cascade at
  each threshold, from rows that carry the student's prediction, the LLM's label and gold.
* :func:`validation_frame`: what ``distill`` saves as ``validation.csv`` for the first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

VALIDATION_FILE = "validation.csv"  # in a distill run folder: texts, reference labels, student predictions
DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def validation_path(student: str | Path) -> Path | None:
    """The ``validation.csv`` of a student: in its run folder, or for an export folder (``export.json``) in
    the folder itself or the run it was exported from; None when there is none."""
    folder = Path(student)
    if (folder / VALIDATION_FILE).is_file():
        return folder / VALIDATION_FILE
    try:
        source = json.loads((folder / "export.json").read_text()).get("source_run") or ""
    except (OSError, ValueError, AttributeError):
        return None
    return Path(source) / VALIDATION_FILE if source and (Path(source) / VALIDATION_FILE).is_file() else None


def validation_frame(
    texts: Sequence[str], labels: Sequence[str], y: Sequence[int], probs: np.ndarray, label_source: str
) -> pd.DataFrame:
    """The validation rows as ``distill`` saves them: ``text``, ``label`` (what the student was trained
    to give: ``label_source`` says whether the teacher's or gold), the student's ``pred`` and its
    calibrated ``prob``."""
    probs = np.asarray(probs, dtype=float).reshape(len(y), len(labels))
    best = probs.argmax(-1) if len(y) else np.zeros(0, dtype=int)
    return pd.DataFrame(
        {
            "text": list(texts),
            "label": [labels[i] for i in y],
            "label_source": [label_source] * len(y),
            "pred": [labels[j] for j in best],
            "prob": [round(float(probs[i, j]), 6) for i, j in enumerate(best)],
        }
    )


@dataclass(frozen=True)
class Pick:
    """:func:`pick_threshold`'s answer. ``threshold`` None: no threshold met the target (send every row)."""

    threshold: float | None
    target: float
    n: int
    agreement: float | None  # of the cascade at the threshold (rows under it count as agreeing)
    coverage: float | None  # share of rows the student keeps at the threshold
    student_agreement: float | None  # the student's agreement on the rows it keeps

    @property
    def met(self) -> bool:
        return self.threshold is not None


def pick_threshold(confidence: Sequence[float] | np.ndarray, agrees: Sequence[bool], target: float) -> Pick:
    """The smallest threshold ``t`` (one of the confidences) such that keeping the student's label on
    rows with confidence ``>= t`` leaves at most ``(1 - target) * n`` disagreements.

    Lowering the threshold only adds kept rows, so disagreements never fall: the first confidence,
    walking down, past which the budget is exceeded ends the search. Ties are kept or dropped together.
    """
    conf = np.asarray(confidence, dtype=float)
    wrong = ~np.asarray(agrees, dtype=bool)
    n = len(conf)
    if n == 0:
        return Pick(None, target, 0, None, None, None)
    budget = (1.0 - target) * n + 1e-9
    order = np.argsort(-conf, kind="stable")
    conf, wrong = conf[order], wrong[order]
    best: int | None = None  # rows kept at the best threshold so far
    errors = 0
    i = 0
    while i < n:
        j = i
        while j < n and conf[j] == conf[i]:
            j += 1
        errors += int(wrong[i:j].sum())
        if errors > budget:
            break
        best, i = j, j
    if best is None:
        return Pick(None, target, n, None, None, None)
    kept_wrong = int(wrong[:best].sum())
    return Pick(
        threshold=float(conf[best - 1]),
        target=target,
        n=n,
        agreement=1.0 - kept_wrong / n,
        coverage=best / n,
        student_agreement=1.0 - kept_wrong / best,
    )


@dataclass(frozen=True)
class FrontierPoint:
    """One way to label the rows: its accuracy on gold and its cost per 1,000 items."""

    name: str  # "LLM only", "student only", "cascade t=0.90"
    threshold: float | None  # None for LLM only
    share_student: float  # rows the student labeled
    accuracy: float
    cost_per_1k: float
    n: int  # rows with gold it was scored on


def frontier(
    student_pred: Sequence[str],
    student_prob: Sequence[float] | np.ndarray,
    llm_pred: Sequence[str],
    gold: Sequence[str],
    llm_cost_per_1k: float,
    student_cost_per_1k: float = 0.0,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    extra: dict[str, float] | None = None,
) -> list[FrontierPoint]:
    """Accuracy against cost per 1,000 items for LLM only, student only, and the cascade at each threshold
    (and at each named threshold in ``extra``, e.g. ``{"auto": 0.93}``), on the rows with a gold label.

    The student runs on every row of a cascade, so its cost is always paid; the LLM's is paid on the
    rows under the threshold. An LLM answer that is empty counts as wrong (as in ``evaluate``).
    """
    sp, lp, g = (np.asarray(x, dtype=object) for x in (student_pred, llm_pred, gold))
    prob = np.asarray(student_prob, dtype=float)
    has = np.array([bool(str(v).strip()) for v in g], dtype=bool)
    sp, lp, g, prob = sp[has], lp[has], g[has], prob[has]
    n = int(has.sum())

    def acc(pred: np.ndarray) -> float:
        return float((pred == g).mean()) if n else 0.0

    points = [
        FrontierPoint("LLM only", None, 0.0, acc(lp), llm_cost_per_1k, n),
        FrontierPoint("student only", 0.0, 1.0, acc(sp), student_cost_per_1k, n),
    ]
    named = [(f"cascade t={t:.2f}", float(t)) for t in thresholds]
    named += [(f"cascade {k} (t={t:.3f})", float(t)) for k, t in (extra or {}).items()]
    for name, t in named:
        keep = prob >= t
        share = float(keep.mean()) if n else 0.0
        cost = student_cost_per_1k + (1.0 - share) * llm_cost_per_1k
        points.append(FrontierPoint(name, t, share, acc(np.where(keep, sp, lp)), cost, n))
    return points


def format_frontier(points: Sequence[FrontierPoint]) -> str:
    """The frontier as a plain-text table."""
    lines = [f"{'labeler':<28} {'student share':>13} {'accuracy':>9} {'$ per 1k':>10}"]
    for p in points:
        lines.append(f"{p.name:<28} {p.share_student:>13.1%} {p.accuracy:>9.4f} {p.cost_per_1k:>10.4f}")
    return "\n".join(lines)
