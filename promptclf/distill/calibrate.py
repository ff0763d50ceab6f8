"""Temperature scaling of a distilled student, fitted on its validation split, and what the fit assumes.

The validation rows carry the *teacher's* labels. Fitted to them as they are, the temperature calibrates the
student to agreement with the teacher, not to being right: with a teacher right 85% of the time, a student
that is right 91% of the time agrees with it far less often, and the plain fit makes it under-confident
against the truth (measured with ``bench/bench_student_calibration.py`` on BBC topics: ECE against gold 0.052
before, 0.156 after). So the fit models the teacher's noise: its label is the truth with probability ``a``,
else one of the other labels, and the likelihood of the teacher's label ``y`` is
``a·p_y + (1 − a)(1 − p_y)/(K − 1)`` (a fixed noise-adaptation layer). ``a`` comes from, in order:

* ``gold``: the teacher's agreement with the gold labels of the held-out test rows, where at least
  :data:`MIN_GOLD` have both (one number about the teacher; the student's test metrics are unaffected);
* ``teacher confidence``: the mean ``pred_prob`` of the rows trained on (the LLM's confidence taken as
  calibrated, as the review queue takes it);
* otherwise 1: the labels are taken as right (plain temperature scaling), as they are with ``--train-on gold``.

``run.json`` records ``a`` and where it came from (``temperature_scaling.label_accuracy``/``label_accuracy_from``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..eval.calibration import apply_temperature, fit_temperature, noisy_nll, top_label_ece
from .options import DistillData, DistillOptions

log = logging.getLogger(__name__)

MIN_GOLD = 20


def teacher_accuracy(data: DistillData, o: DistillOptions) -> tuple[float, str]:
    """How often the labels trained on are right, and where that figure comes from (module docstring)."""
    if o.train_on != "teacher":
        return 1.0, "gold labels (taken as right)"
    if data.test_teacher is not None:
        pairs = [(t, g) for t, g in zip(data.test_teacher, data.test_gold, strict=True) if t and g]
        if len(pairs) >= MIN_GOLD:
            return sum(t == g for t, g in pairs) / len(pairs), f"gold: teacher agreement on {len(pairs)} test rows"
    if data.teacher_confidence is not None:
        return data.teacher_confidence, "teacher confidence: mean pred_prob of the rows trained on"
    return 1.0, "no gold and no teacher confidence: teacher labels taken as right"


def temperature_scaling(val_probs: Any, val_y: list[int], label_accuracy: float, basis: str) -> dict[str, Any]:
    """Fit the temperature on the validation split; NLL (noise-aware) and ECE (15 bins, against the
    validation labels) before and after."""
    y = np.asarray(val_y, dtype=int)
    probs = np.asarray(val_probs, dtype=float)
    a = float(min(1.0, max(label_accuracy, 1.0 / max(probs.shape[1], 2) + 1e-6))) if probs.ndim == 2 else 1.0
    if not len(y):
        return {"temperature": 1.0, "fitted_on": "validation", "n": 0}
    t = fit_temperature(probs, y, label_accuracy=a)
    after = apply_temperature(probs, t)
    ece_before, ece_after = round(top_label_ece(probs, y), 6), round(top_label_ece(after, y), 6)
    log.info(
        "temperature scaling on %d validation rows, labels taken as right %.1f%% of the time (%s): T=%.3f",
        len(y), 100 * a, basis, t,
    )  # fmt: skip
    return {
        "temperature": round(t, 6), "fitted_on": "validation", "n": int(len(y)),
        "label_accuracy": round(a, 6), "label_accuracy_from": basis,
        "nll_before": round(noisy_nll(probs, y, a), 6), "nll_after": round(noisy_nll(after, y, a), 6),
        "ece_before": ece_before, "ece_after": ece_after,
    }  # fmt: skip
