"""Calibration of label confidences (promptclf.eval.calibration), on hand-computed examples, and
in ``evaluate`` / ``promptclf eval``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.eval.calibration import auroc, calibration, coverage_at
from promptclf.eval.metrics import evaluate


def test_ece_and_mce_by_hand() -> None:
    rep = calibration([True, False, True, True], [0.9, 0.9, 0.6, 0.6])
    assert rep is not None
    # bin of 0.9: confidence 0.9, accuracy 0.5 (gap 0.4); bin of 0.6: 0.6 vs 1.0 (gap 0.4)
    assert rep.ece == pytest.approx(0.4) and rep.mce == pytest.approx(0.4)
    assert len(rep.bins) == 15 and sum(b.n for b in rep.bins) == 4
    assert rep.bins[13].n == 2 and rep.bins[13].accuracy == 0.5 and rep.bins[9].n == 2
    perfect = calibration([True, False], [1.0, 0.0])
    assert perfect is not None and perfect.ece == 0.0 and perfect.bins[-1].n == 1  # 1.0 lands in the last bin


def test_auroc_by_hand_ties_half_and_undefined() -> None:
    import numpy as np

    right = np.array([True, True, True, False])
    conf = np.array([0.9, 0.6, 0.6, 0.9])
    assert auroc(right, conf) == pytest.approx(0.5 / 3)  # one tie (half) and two losses out of three pairs
    assert auroc(np.array([True, False]), np.array([0.8, 0.2])) == 1.0
    rep = calibration([True, True], [0.7, 0.8])
    assert rep is not None and rep.auroc is None and rep.auroc_note == "every row is right"


def test_accuracy_coverage_table() -> None:
    import numpy as np

    right = np.array([True, True, True, False, True])
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7])
    p = coverage_at(right, conf, 0.95)
    assert p.reachable and p.kept == 3 and p.coverage == pytest.approx(0.6) and p.threshold == 0.9 and p.accuracy == 1.0
    p = coverage_at(right, conf, 0.8)
    assert p.kept == 5 and p.threshold == 0.7 and p.accuracy == pytest.approx(0.8)
    # rows tied at a confidence are kept or dropped together
    tied = coverage_at(np.array([True, False, True]), np.array([0.9, 0.9, 0.5]), 0.95)
    assert not tied.reachable and tied.threshold is None


def test_rows_without_a_confidence_are_counted() -> None:
    rep = calibration([True, False, True], [0.9, None, float("nan")])
    assert rep is not None and rep.n == 1 and rep.n_without_confidence == 2
    assert calibration([True], [None]) is None
    with pytest.raises(ValueError, match="2 correctness flags but 1"):
        calibration([True, False], [0.5])


def test_evaluate_reports_calibration_on_scored_rows() -> None:
    gold = ["a", "b", "a", "b", "a"]
    pred = ["a", "a", "a", "b", ""]
    status = ["ok", "ok", "ok", "ok", "empty"]
    m = evaluate(gold, pred, ["a", "b"], status=status, n_boot=0, confidence=["0.9", "0.8", "0.7", "", ""])
    cal = m["calibration"]
    assert cal["n"] == 3 and cal["n_without_confidence"] == 2 and cal["accuracy"] == pytest.approx(2 / 3)
    assert "calibration" not in evaluate(gold, pred, ["a", "b"], status=status, n_boot=0)


def test_eval_cli_prints_calibration(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    pd.DataFrame(
        {"label": ["a", "b", "a", "b"], "pred_label": ["a", "b", "b", "b"], "pred_prob": [0.99, 0.9, 0.6, 0.95]}
    ).to_csv(f, index=False)
    res = CliRunner().invoke(main, ["eval", str(f), "--gold-col", "label", "--n-boot", "0"])
    assert res.exit_code == 0, res.output
    assert "ECE (15 bins)" in res.output and "AUROC of confidence for correctness: 1.000" in res.output
    assert "keep  75.0% of rows (3) at confidence >= 0.9000: accuracy 100.0% (target 95%)" in res.output


def test_temperature_fit_recovers_a_known_temperature() -> None:
    import numpy as np

    from promptclf.eval.calibration import apply_temperature, fit_temperature, nll

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 4))
    true_t = 2.5  # the labels follow softmax(logits / 2.5): the raw softmax is overconfident
    p_true = np.exp(logits / true_t) / np.exp(logits / true_t).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p_true])
    raw = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = fit_temperature(raw, y)
    assert t == pytest.approx(true_t, rel=0.1)
    assert nll(apply_temperature(raw, t), y) < nll(raw, y)
    assert np.allclose(apply_temperature(raw, 1.0), raw) and fit_temperature(raw[:0], y[:0]) == 1.0
    assert (apply_temperature(raw, t).argmax(1) == raw.argmax(1)).all()  # labels never change


def test_noise_aware_temperature_calibrates_to_the_truth_not_to_noisy_labels() -> None:
    """A calibrated model, scored against labels that are right 85% of the time: the plain fit softens it
    (it learns agreement with the noisy labels); the noise-aware fit leaves it near T = 1."""
    from promptclf.eval.calibration import fit_temperature, nll, noisy_nll

    rng = np.random.default_rng(0)
    k, n = 4, 6000
    logits = rng.normal(0, 2.5, (n, k))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    truth = np.array([rng.choice(k, p=p) for p in probs])  # the model is calibrated by construction
    flip = rng.random(n) >= 0.85
    noisy = truth.copy()
    noisy[flip] = (truth[flip] + rng.integers(1, k, flip.sum())) % k  # another class, uniformly
    assert noisy_nll(probs, truth, 1.0) == pytest.approx(nll(probs, truth))
    plain = fit_temperature(probs, noisy)
    aware = fit_temperature(probs, noisy, label_accuracy=0.85)
    assert plain > 1.25  # the bias the noise-aware fit removes
    assert abs(aware - 1.0) < 0.1


def test_teacher_accuracy_sources() -> None:
    from promptclf.distill.calibrate import MIN_GOLD, teacher_accuracy
    from promptclf.distill.options import DistillData, DistillOptions

    base = dict(labels=["a", "b"], train_texts=[], train_y=[], val_texts=[], val_y=[])
    gold = ["a"] * MIN_GOLD
    teacher = ["a"] * (MIN_GOLD - 5) + ["b"] * 5
    o = DistillOptions.build()
    a, why = teacher_accuracy(DistillData(**base, test_gold=gold, test_teacher=teacher, teacher_confidence=0.9), o)
    assert a == pytest.approx((MIN_GOLD - 5) / MIN_GOLD) and why.startswith("gold")
    a, why = teacher_accuracy(
        DistillData(**base, test_gold=gold[:3], test_teacher=teacher[:3], teacher_confidence=0.9), o
    )
    assert a == 0.9 and why.startswith("teacher confidence")
    a, why = teacher_accuracy(DistillData(**base), o)
    assert a == 1.0 and "taken as right" in why
    assert (
        teacher_accuracy(DistillData(**base, teacher_confidence=0.7), DistillOptions.build(train_on="gold"))[0] == 1.0
    )
