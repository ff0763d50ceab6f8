"""Ordinal students (ratings such as 0-5, FineWeb-Edu style): the scale, the targets, the validation figures.

A student is ordinal when the teacher's label run was (its ``labels.json`` beside the labeled file gives
every label a ``score``) or when ``distill --ordinal`` says so. Its labels are then kept in scale order
(lowest first) and ``student.json`` records each label's score, so ``predict`` writes ``pred_score``.

Two heads (``--ordinal-head``):

* ``classification``: the K-way head, hard or ``--soft`` targets; its score is the expected score
  ``sum_k p_k s_k`` under its (temperature-scaled) probabilities.
* ``regression``: one output trained with MSE on the teacher's score: the label's score, or with
  ``--soft`` the expected score under the teacher's ``pred_probs`` where the row has them. Its score
  is the raw output. So that every consumer of a student (``predict``, Ray, ``serve``, the cascade)
  still gets a distribution over the labels, ``predict_proba`` turns the output ``y`` into

      p_k ∝ exp(-(y - s_k)² / (2 σ²))

  with σ the student's RMSE on its validation rows (``run.json["ordinal"]["sigma"]``): the labels
  near the output get the mass, as widely spread as the student's measured error. Its argmax is the
  label nearest ``y`` (``pred_label``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from ..labels import LabelSet, infer_labels
from .distributed import main_logger

log = main_logger(__name__)  # under torchrun, one copy of each message

# A σ floor: a student that fits its validation rows exactly must still give finite probabilities.
MIN_SIGMA = 0.05


def ordinal_scale(input_path: str | Path, values: list[str], ordinal_flag: bool) -> LabelSet | None:
    """The ordinal scale of a distill run, or None for a plain label set.

    The teacher's label run (``x.run/labels.json`` beside ``x.csv``) decides when it is ordinal; else
    ``--ordinal`` orders the labels seen in ``values`` (they must all be numbers).
    """
    from ..eval.metrics import labels_beside

    saved = labels_beside(input_path) if Path(str(input_path)).is_file() else None
    if saved is not None and saved.ordinal:
        return saved
    if not ordinal_flag:
        return None
    names = saved.names if saved is not None and all(v in saved.names for v in values if v) else values
    if all(_is_number(n) for n in names):
        return infer_labels(names, ordinal=True)  # by value: "2" before "10"
    if saved is not None and names is saved.names:
        return saved.as_ordinal()  # the order the teacher's labels were given in, lowest first
    raise InputError(
        f"--ordinal: the labels of {input_path} ({', '.join(sorted(set(values))[:6])}) are not all numbers and "
        "its label run gives no order; label it with `promptclf label --ordinal --labels 'poor,fair,good'` "
        "(lowest first), or rename the labels to numbers"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_scale(scale: LabelSet, seen: set[str], where: str) -> None:
    """Every label trained on must be on the scale."""
    off = sorted(v for v in seen if v not in scale.names)
    if off:
        raise InputError(
            f"{where}: label(s) {', '.join(map(repr, off[:5]))} are not on the ordinal scale "
            f"{', '.join(scale.names)}; fix the labels or leave --ordinal out"
        )


def require_scale(head: str, scale: LabelSet | None, where: str) -> None:
    """``--ordinal-head regression`` needs an ordinal scale: say how to get one."""
    if head == "regression" and scale is None:
        raise ConfigError(
            f"--ordinal-head regression needs an ordinal label set, and {where} is not one (its label run's "
            "labels.json has no scores): pass --ordinal (numeric labels sort by value), or label with "
            "`promptclf label --ordinal`"
        )


def soft_score(probs: list[float] | None, scores: list[float]) -> float | None:
    """The expected score under a distribution over the scale's labels (None: no distribution)."""
    if probs is None:
        return None
    total = sum(probs)
    return sum(p * s for p, s in zip(probs, scores, strict=True)) / total if total > 0 else None


def gaussian_probs(y: Any, scores: list[float], sigma: float) -> Any:
    """(n, K) distribution over the scale for regression outputs ``y`` (module docstring)."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    sig = max(float(sigma), MIN_SIGMA)
    z = -((np.asarray(y, dtype=np.float64).reshape(-1, 1) - s[None, :]) ** 2) / (2 * sig * sig)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def expected_scores(probs: Any, scores: list[float]) -> Any:
    """The expected score under each row of ``probs`` (a classification head's score)."""
    import numpy as np

    return np.asarray(probs, dtype=np.float64) @ np.asarray(scores, dtype=np.float64)


def validation_figures(
    pred_score: Any, pred_label: list[int], true_label: list[int], scores: list[float]
) -> dict[str, float]:
    """MAE and RMSE of the score against the true label's score, exact and within-one accuracy of the label."""
    import numpy as np

    if not len(true_label):
        return {"mae": float("nan"), "rmse": float("nan"), "exact": float("nan"), "within_one": float("nan")}
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(true_label, dtype=int)
    p = np.asarray(pred_label, dtype=int)
    err = np.asarray(pred_score, dtype=np.float64).reshape(-1) - s[t]
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "exact": float((p == t).mean()),
        "within_one": float((np.abs(p - t) <= 1).mean()),
    }


def nearest_index(y: Any, scores: list[float]) -> Any:
    """The index of the label nearest each score (ties to the lower label)."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    return np.abs(np.asarray(y, dtype=np.float64).reshape(-1, 1) - s[None, :]).argmin(axis=1)


def plan_scale(input_path: str | Path, o: Any, freq: dict[str, int], where: str) -> LabelSet | None:
    """The scale of the run (None: a plain label set), checked against the labels trained on."""
    scale = ordinal_scale(input_path, sorted(freq), o.ordinal)
    # A regression head asked for (not the default) on a plain set is an error; the default falls back.
    if "ordinal_head" in o.model_fields_set:
        require_scale(o.ordinal_head, scale, where)
    if scale is not None:
        check_scale(scale, set(freq), where)
    return scale


def apply_scale(data: Any, scale: LabelSet | None, o: Any) -> Any:
    """``data`` (a DistillData) with the scale and, for the regression head, its score targets."""
    if scale is None:
        return data
    scores = list(scale.scores)
    data.scores, data.ordinal_head = scores, o.ordinal_head
    if o.ordinal_head == "regression":
        soft = data.train_soft or [None] * len(data.train_y)
        data.train_score = [
            s if (s := soft_score(p, scores)) is not None else scores[y]
            for p, y in zip(soft, data.train_y, strict=True)
        ]
        data.val_score = [scores[y] for y in data.val_y]
        data.train_soft = None  # the regression head learns the expected score, not the distribution
    return data


# --- the finished student ------------------------------------------------------------------------


def validate_student(student: Any, data: Any, batch_size: int) -> dict[str, Any]:
    """``run.json["ordinal"]``: the scale, the head, σ and the validation figures of a reloaded student.

    A regression student's σ (its RMSE against the validation labels' scores) is set on ``student``
    here, before anything asks it for probabilities.
    """
    scores = list(data.scores)
    probs, val_score = student.predict_with_scores(data.val_texts, batch_size=batch_size)
    regression = data.ordinal_head == "regression"
    # The regression student's label is the nearest one (its probabilities need σ, which is fitted here).
    pred = nearest_index(val_score, scores) if regression else probs.argmax(-1)
    fig = validation_figures(val_score, list(pred), list(data.val_y), scores)
    sigma = max(fig["rmse"], MIN_SIGMA) if regression and fig["rmse"] == fig["rmse"] else None
    if sigma is not None:
        student.sigma = sigma
    block: dict[str, Any] = {
        "head": data.ordinal_head,
        "scores": scores,
        "sigma": round(sigma, 6) if sigma is not None else None,
        "validation": {k: round(v, 6) for k, v in fig.items()},
    }
    log.info(
        f"ordinal validation ({data.ordinal_head} head, {len(data.val_y)} rows): MAE {fig['mae']:.4f} "
        f"within-one {fig['within_one']:.4f} exact {fig['exact']:.4f}"
        + (f"; sigma {sigma:.4f} (validation RMSE) spreads predict_proba" if sigma is not None else "")
    )
    return block


def scale_of(data: Any) -> LabelSet:
    """The ordinal label set of ``data`` (a DistillData with scores)."""
    return LabelSet.from_dict([{"name": n, "score": s} for n, s in zip(data.labels, data.scores, strict=True)])


def gold_figures(student: Any, data: Any, test_pred: list[str], batch_size: int) -> tuple[Any, dict[str, Any]]:
    """(scores of the gold test rows, :func:`~promptclf.eval.ordinal.ordinal_metrics` on them)."""
    from ..eval.ordinal import ordinal_metrics

    labels = scale_of(data)
    _, score = student.predict_with_scores(data.test_texts, batch_size=batch_size)
    return score, ordinal_metrics(data.test_gold, test_pred, labels, pred_score=list(score), n_boot=200)
