"""How far to trust a label's confidence: calibration of ``pred_prob`` against gold labels.

:func:`calibration` takes, for each scored row, whether its label is right and its confidence
(``None`` where the provider gave none; such rows are counted, never dropped silently), and
returns a :class:`CalibrationReport`:

* **ECE** with 15 equal-width bins (the expected gap between confidence and accuracy, weighted by
  bin size), **MCE** (the largest gap), and the bins themselves, for a reliability diagram;
* **AUROC** of the confidence for correctness (does a higher confidence mean a right label more
  often?); undefined, and said so, when every row is right or every row is wrong;
* an **accuracy–coverage** table: for each target accuracy (95%, 98%, 99%), the largest share of
  rows, most confident first, whose accuracy reaches it, and the confidence threshold that keeps
  them (rows tied at the threshold are kept or dropped together), or that it is not reachable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

N_BINS = 15
TARGETS = (0.95, 0.98, 0.99)


class ReliabilityBin(BaseModel):
    """Rows whose confidence falls in ``[lo, hi)`` (the last bin includes 1.0)."""

    lo: float
    hi: float
    n: int
    confidence: float | None  # mean confidence of its rows; None when empty
    accuracy: float | None


class CoveragePoint(BaseModel):
    """The most confident rows that reach ``target`` accuracy, or ``reachable=False``."""

    target: float
    reachable: bool
    coverage: float = 0.0  # share of the rows with a confidence
    kept: int = 0
    threshold: float | None = None  # keep rows with confidence >= this
    accuracy: float | None = None  # accuracy of the kept rows


class CalibrationReport(BaseModel):
    n: int  # rows with a confidence and gold
    n_without_confidence: int
    accuracy: float
    mean_confidence: float
    ece: float
    mce: float
    bins: list[ReliabilityBin]
    auroc: float | None
    auroc_note: str = ""
    coverage: list[CoveragePoint]


def reliability_bins(correct: np.ndarray, conf: np.ndarray, n_bins: int = N_BINS) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1]; a confidence of exactly 1.0 lands in the last bin."""
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    out = []
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        out.append(
            ReliabilityBin(
                lo=b / n_bins,
                hi=(b + 1) / n_bins,
                n=n,
                confidence=float(conf[mask].mean()) if n else None,
                accuracy=float(correct[mask].mean()) if n else None,
            )
        )
    return out


def ece_of(bins: list[ReliabilityBin]) -> tuple[float, float]:
    """(ECE, MCE) of reliability bins: the confidence-accuracy gap weighted by bin size, and the largest gap."""
    gaps = [(b.n, abs((b.confidence or 0.0) - (b.accuracy or 0.0))) for b in bins if b.n]
    total = sum(n for n, _ in gaps)
    return (sum(n * g for n, g in gaps) / total if total else 0.0), max((g for _, g in gaps), default=0.0)


def top_label_ece(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE of the most probable label's probability for the true classes ``y``."""
    return ece_of(reliability_bins(probs.argmax(1) == y, probs.max(1), n_bins))[0]


def auroc(correct: np.ndarray, conf: np.ndarray) -> float | None:
    """P(a right row is more confident than a wrong one), ties counted half; None if one class is absent."""
    pos, neg = conf[correct], conf[~correct]
    if not len(pos) or not len(neg):
        return None
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks: ties count half
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def coverage_at(correct: np.ndarray, conf: np.ndarray, target: float) -> CoveragePoint:
    """The largest confidence threshold cut (between distinct confidences) whose kept rows reach ``target``."""
    order = np.argsort(-conf, kind="stable")
    c, r = conf[order], correct[order].astype(float)
    cum_right = np.cumsum(r)
    # Candidate cuts: after the last row of each distinct confidence (ties go together).
    ends = np.flatnonzero(np.r_[c[1:] != c[:-1], True])
    kept = ends + 1
    acc = cum_right[ends] / kept
    ok = np.flatnonzero(acc >= target - 1e-12)
    if not len(ok):
        return CoveragePoint(target=target, reachable=False)
    best = ok[-1]
    k = int(kept[best])
    return CoveragePoint(
        target=target,
        reachable=True,
        coverage=k / len(c),
        kept=k,
        threshold=float(c[ends[best]]),
        accuracy=float(acc[best]),
    )


def calibration(
    correct: Sequence[bool],
    confidence: Sequence[float | None],
    n_bins: int = N_BINS,
    targets: Sequence[float] = TARGETS,
) -> CalibrationReport | None:
    """The calibration of ``confidence`` for ``correct`` (same length); None when no row has a confidence."""
    if len(correct) != len(confidence):
        raise ValueError(f"{len(correct)} correctness flags but {len(confidence)} confidences")
    have = [
        (bool(ok), float(p))
        for ok, p in zip(correct, confidence, strict=True)
        if p is not None and not (isinstance(p, float) and math.isnan(p))
    ]
    missing = len(correct) - len(have)
    if not have:
        return None
    right = np.array([ok for ok, _ in have], dtype=bool)
    conf = np.clip(np.array([p for _, p in have], dtype=float), 0.0, 1.0)
    bins = reliability_bins(right, conf, n_bins)
    ece, mce = ece_of(bins)
    area = auroc(right, conf)
    note = "" if area is not None else ("every row is right" if right.all() else "every row is wrong")
    return CalibrationReport(
        n=len(conf),
        n_without_confidence=missing,
        accuracy=float(right.mean()),
        mean_confidence=float(conf.mean()),
        ece=float(ece),
        mce=float(mce),
        bins=bins,
        auroc=area,
        auroc_note=note,
        coverage=[coverage_at(right, conf, t) for t in targets],
    )


def format_calibration(rep: CalibrationReport) -> list[str]:
    """Terminal lines: ECE/MCE, AUROC, and the accuracy-coverage table."""
    lines = [
        f"calibration on {rep.n} rows with a confidence"
        + (f" ({rep.n_without_confidence} scored rows have none)" if rep.n_without_confidence else ""),
        f"  mean confidence {rep.mean_confidence:.3f}  accuracy {rep.accuracy:.3f}  "
        f"ECE ({len(rep.bins)} bins) {rep.ece:.3f}  MCE {rep.mce:.3f}",
        "  AUROC of confidence for correctness: "
        + (f"{rep.auroc:.3f}" if rep.auroc is not None else f"undefined ({rep.auroc_note})"),
    ]
    for p in rep.coverage:
        if p.reachable:
            lines.append(
                f"  keep {p.coverage:6.1%} of rows ({p.kept}) at confidence >= {p.threshold:.4f}: "
                f"accuracy {p.accuracy:.1%} (target {p.target:.0%})"
            )
        else:
            lines.append(f"  target {p.target:.0%} accuracy: not reachable at any threshold")
    return lines


# --- temperature scaling ---------------------------------------------------------------------------


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities softened (T > 1) or sharpened (T < 1): ``softmax(log p / T)``, row by row."""
    if temperature == 1.0:
        return probs
    logp = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes ``y`` (row indices into ``probs``)."""
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)).mean())


def noisy_nll(probs: np.ndarray, y: np.ndarray, label_accuracy: float = 1.0) -> float:
    """Mean NLL of observed labels ``y`` that are the true class with probability ``label_accuracy`` and
    otherwise one of the other classes, uniformly: P(y) = a·p_y + (1 − a)(1 − p_y)/(K − 1). At a = 1 it is
    :func:`nll`."""
    k = probs.shape[1]
    p_y = np.clip(probs[np.arange(len(y)), y], 0.0, 1.0)
    a = float(label_accuracy)
    q = p_y if a >= 1.0 or k < 2 else a * p_y + (1.0 - a) * (1.0 - p_y) / (k - 1)
    return float(-np.log(np.clip(q, 1e-12, 1.0)).mean())


def fit_temperature(
    probs: np.ndarray,
    y: Sequence[int] | np.ndarray,
    lo: float = 0.05,
    hi: float = 20.0,
    label_accuracy: float = 1.0,
) -> float:
    """The temperature minimising the NLL of ``y`` under ``apply_temperature(probs, T)`` (Guo et al. 2017).

    Probabilities are enough: log p is the logits up to a per-row constant, which softmax ignores.
    Searched on log T in ``[lo, hi]``; 1.0 when there are no rows. With ``label_accuracy`` < 1 the labels
    are taken as noisy (:func:`noisy_nll`), so the fit calibrates to the truth rather than to the labels.
    """
    from scipy.optimize import minimize_scalar

    labels = np.asarray(y, dtype=int)
    if not len(labels):
        return 1.0

    def loss(t: float) -> float:
        return noisy_nll(apply_temperature(probs, t), labels, label_accuracy)

    res = minimize_scalar(
        lambda log_t: loss(float(np.exp(log_t))),
        bounds=(math.log(lo), math.log(hi)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    t = float(np.exp(res.x))
    # Never worse than leaving the probabilities alone (the bounded search can stop near a flat optimum).
    return t if loss(t) <= loss(1.0) else 1.0
