"""How much each review signal counts: weights fitted on the labeled file itself, without gold.

The three signals (LLM confidence, out-of-fold student, neighbours) are each a "P(label wrong)"
estimate, but how good each is depends on the data: on a topic set the embedding signals find
most wrong labels, on a sentiment set sentence embeddings carry little of what the label is about
and the LLM's own confidence is the better guide. An unweighted mean is right on one and wrong on
the other, so the weights are estimated per file.

**Why not the usual label-model methods.** Methods that learn source accuracies from agreement
alone (Dawid-Skene, the triplet method of FlyingSquid/Snorkel, "how well a signal predicts the
others' disagreements") assume the sources err independently. The student and the neighbours do
not: both read the same MiniLM embeddings, so where the embeddings miss the point both are wrong
together, and those methods read their agreement as reliability. Measured with the simulated
teacher on a set where embeddings are weak (VADER sentiment intensity), the triplet weights put
0.8 on the neighbours and dropped precision at 10% from 0.57 (confidence alone) to 0.33.

**What is done instead: the LLM's confidence as an anchor.** Assume (a) the confidence is roughly
calibrated, ``P(wrong | confidence p) ≈ 1 − p``, and (b) given whether a label is wrong, the LLM's
confidence is independent of the embedding signals (different models); the student and the
neighbours may be correlated with each other. Then, with ``c = 1 − p`` and ``Z`` = label wrong:

* ``E[d_i | c] = a_i + Δ_i · c`` for each embedding signal ``d_i``, so its separation
  ``Δ_i = E[d_i | Z=1] − E[d_i | Z=0]`` is the slope of ``d_i`` on ``c``: ``cov(d_i, c) / var(c)``;
* for the confidence itself ``Δ_c = var(c) / (π(1 − π))`` with the error rate ``π = mean(c)``;
* the signals' noise covariance is ``Σ = cov(d) − Δ Δᵀ π(1 − π)``, correlations included;
* the weights are Fisher's discriminant ``w = Σ⁻¹ Δ`` (the best linear score for two Gaussian
  classes with a shared covariance), negative weights set to 0 (a signal never counts *against*
  a doubt), normalised to sum to 1, so the score stays a weighted mean of doubts in [0, 1].

An over-confident LLM breaks (a) in a way that over-weights the embedding signals somewhat; the
fit then still ranks better than the equal mean on every set measured (``bench/bench_review.py``).

**Fallback.** Without a confidence on enough rows (a provider without log-probabilities), or when
it is constant, nothing anchors the fit: the signals get equal weights, and the summary says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_ROWS = 50  # rows with every signal below which the covariances are too noisy to fit


@dataclass(frozen=True)
class SignalWeights:
    """The weight of each signal (summing to 1 over the signals used) and how they were chosen."""

    weights: dict[str, float]
    method: str  # "fitted" | "equal"
    reason: str  # one line: what the fit used, or why the weights are equal
    rows: int = 0  # rows the fit used (every signal present)
    separation: dict[str, float] = field(default_factory=dict)  # estimated Δ per signal
    error_rate: float | None = None  # π, the error rate the confidence implies

    def as_dict(self) -> dict[str, object]:
        """For review.json."""
        return {
            "weights": {k: round(v, 4) for k, v in self.weights.items()},
            "method": self.method,
            "reason": self.reason,
            "rows": self.rows,
            "separation": {k: round(v, 4) for k, v in self.separation.items()},
            "error_rate_from_confidence": None if self.error_rate is None else round(self.error_rate, 4),
        }


def equal_weights(doubts: np.ndarray, names: tuple[str, ...], reason: str) -> SignalWeights:
    """Equal weights over the signals that some row has."""
    have = [n for j, n in enumerate(names) if (~np.isnan(doubts[:, j])).any()]
    return SignalWeights({n: (1.0 / len(have) if n in have else 0.0) for n in names}, "equal", reason)


def fit_weights(doubts: np.ndarray, names: tuple[str, ...], anchor: int = 0) -> SignalWeights:
    """Weights for the columns of ``doubts`` (rows × signals, NaN = no value), anchored on column ``anchor``.

    See the module docstring for the model. Signals no row has get weight 0.
    """
    n_sig = doubts.shape[1]
    present = [j for j in range(n_sig) if (~np.isnan(doubts[:, j])).any()]
    if anchor not in present:
        return equal_weights(doubts, names, f"no row has a {names[anchor]}: nothing to anchor a fit, equal weights")
    if len(present) == 1:
        return SignalWeights({n: float(j == anchor) for j, n in enumerate(names)}, "equal", "only one signal")
    x = doubts[:, present]
    full = ~np.isnan(x).any(1)
    rows = int(full.sum())
    if rows < MIN_ROWS:
        return equal_weights(
            doubts, names, f"{rows} rows have every signal (under {MIN_ROWS}): too few to fit, equal weights"
        )
    x = x[full]
    a = present.index(anchor)
    c = x[:, a]
    pi = float(c.mean())
    v = pi * (1.0 - pi)
    var_c = float(c.var(ddof=1))
    if var_c < 1e-8 or v < 1e-6:
        return equal_weights(
            doubts, names, f"the {names[anchor]} is (nearly) constant: nothing to anchor a fit, equal weights"
        )
    cov = np.cov(x.T)
    delta = cov[:, a] / var_c
    delta[a] = var_c / v
    noise = cov - np.outer(delta, delta) * v
    # The model's noise covariance must be positive definite; sampling error can make it not.
    ev, vecs = np.linalg.eigh(noise)
    noise = (vecs * np.maximum(ev, 1e-4 * max(float(ev.max()), 1e-12))) @ vecs.T
    w = np.maximum(np.linalg.solve(noise, delta), 0.0)
    if not np.isfinite(w).all() or w.sum() <= 0:
        return equal_weights(doubts, names, "no signal separates wrong from right labels in the fit: equal weights")
    w = w / w.sum()
    weights = {n: 0.0 for n in names}
    sep = {}
    for k, j in enumerate(present):
        weights[names[j]] = float(w[k])
        sep[names[j]] = float(delta[k])
    return SignalWeights(
        weights,
        "fitted",
        f"fitted on {rows} rows, anchored on the {names[anchor]} (error rate it implies: {pi:.3f})",
        rows=rows,
        separation=sep,
        error_rate=pi,
    )


def combine(doubts: np.ndarray, sw: SignalWeights, names: tuple[str, ...]) -> np.ndarray:
    """Each row's score: the weighted mean of the doubts it has (weights renormalised over them).

    A row whose present signals all have weight 0 gets the plain mean of those signals, and a row
    with no signal gets 0, so every row is ranked.
    """
    w = np.array([sw.weights.get(n, 0.0) for n in names])
    have = ~np.isnan(doubts)
    filled = np.nan_to_num(doubts, nan=0.0)
    wsum = (have * w).sum(1)
    weighted = (filled * w).sum(1) / np.where(wsum > 0, wsum, 1.0)
    plain = filled.sum(1) / np.maximum(have.sum(1), 1)
    return np.where(wsum > 0, weighted, plain)
