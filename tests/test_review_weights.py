"""The review's signal weights, fitted without gold (promptclf.review.weights), on data drawn from known models.

Each data set is drawn from the model the fit assumes, or from one it does not, with the truth known, so
the tests check what the fit is for: on the data, the fitted combination finds wrong labels at least as
well as the best single signal, where the plain mean does not.
"""

from __future__ import annotations

import numpy as np
import pytest

from promptclf.review.weights import MIN_ROWS, combine, equal_weights, fit_weights

NAMES = ("confidence", "student", "neighbours")


def _draw(n: int, emb_sep: float, shared: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Doubts and the truth: a calibrated confidence (P(wrong | c) = c), and two embedding signals that
    separate wrong from right by ``emb_sep`` and share noise of weight ``shared`` (as the student and the
    neighbours share the embeddings)."""
    rng = np.random.default_rng(seed)
    c = rng.beta(1.0, 6.0, n)  # mean ~0.14: the error rate the LLM's confidence implies
    wrong = rng.random(n) < c
    common = rng.normal(0, 1, n)
    sig = []
    for _ in range(2):
        z = emb_sep * wrong + shared * common + np.sqrt(1 - shared**2) * rng.normal(0, 1, n)
        sig.append(1 / (1 + np.exp(-(z - 1.5))))  # squashed into (0, 1) like a doubt
    return np.stack([c, *sig], 1), wrong


def _p10(score: np.ndarray, wrong: np.ndarray) -> float:
    k = int(np.ceil(0.1 * len(score)))
    return float(wrong[np.argsort(-score, kind="stable")[:k]].mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weak_correlated_embeddings_do_not_outvote_the_confidence(seed: int) -> None:
    """Embeddings that barely separate but agree with each other: the plain mean trails the confidence alone,
    the fit does not."""
    d, wrong = _draw(4000, emb_sep=0.4, shared=0.9, seed=seed)
    sw = fit_weights(d, NAMES)
    assert sw.method == "fitted" and sw.weights["confidence"] > 0.5
    fitted = _p10(combine(d, sw, NAMES), wrong)
    best = max(_p10(d[:, j], wrong) for j in range(3))
    plain = _p10(d.mean(1), wrong)
    assert plain < best - 0.03  # the failure the fit is for is present in this data
    assert fitted >= best - 0.02


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_strong_embeddings_get_the_weight(seed: int) -> None:
    d, wrong = _draw(4000, emb_sep=3.0, shared=0.3, seed=seed)
    sw = fit_weights(d, NAMES)
    assert sw.weights["student"] + sw.weights["neighbours"] > sw.weights["confidence"]
    assert _p10(combine(d, sw, NAMES), wrong) >= max(_p10(d[:, j], wrong) for j in range(3)) - 0.02


def test_separation_estimates_match_the_truth_when_the_model_holds() -> None:
    d, wrong = _draw(20000, emb_sep=1.5, shared=0.5, seed=3)
    sw = fit_weights(d, NAMES)
    true = d[wrong].mean(0) - d[~wrong].mean(0)
    for j, name in enumerate(NAMES):
        assert sw.separation[name] == pytest.approx(true[j], rel=0.15), name
    assert sw.error_rate == pytest.approx(wrong.mean(), abs=0.01)


def test_without_a_confidence_the_weights_are_equal_and_say_why() -> None:
    d, _ = _draw(500, 1.0, 0.5, 0)
    d[:, 0] = np.nan
    sw = fit_weights(d, NAMES)
    assert sw.method == "equal" and "no row has a confidence" in sw.reason
    assert sw.weights == {"confidence": 0.0, "student": 0.5, "neighbours": 0.5}


def test_constant_confidence_or_too_few_rows_fall_back_to_equal() -> None:
    d, _ = _draw(500, 1.0, 0.5, 0)
    const = d.copy()
    const[:, 0] = 0.1
    assert "constant" in fit_weights(const, NAMES).reason
    few = d.copy()
    few[MIN_ROWS - 1 :, 0] = np.nan  # only MIN_ROWS - 1 rows have every signal
    sw = fit_weights(few, NAMES)
    assert sw.method == "equal" and f"{MIN_ROWS - 1} rows" in sw.reason


def test_weights_are_non_negative_and_sum_to_one() -> None:
    rng = np.random.default_rng(0)
    d = rng.random((300, 3))  # no signal relates to another: any weight is noise, but never negative
    sw = fit_weights(d, NAMES)
    assert all(v >= 0 for v in sw.weights.values()) and sum(sw.weights.values()) == pytest.approx(1)


def test_combine_renormalises_over_present_signals() -> None:
    sw = equal_weights(np.ones((1, 3)), NAMES, "")
    sw = type(sw)({"confidence": 0.5, "student": 0.5, "neighbours": 0.0}, "fitted", "")
    d = np.array(
        [
            [0.2, 0.6, 0.9],  # all present: 0.5 * 0.2 + 0.5 * 0.6
            [np.nan, 0.6, 0.9],  # confidence missing: the student alone carries weight
            [np.nan, np.nan, 0.9],  # only a zero-weight signal: its plain value
            [np.nan, np.nan, np.nan],  # nothing: 0, still ranked
        ]
    )
    assert np.allclose(combine(d, sw, NAMES), [0.4, 0.6, 0.9, 0.0])
