"""Scoring a labeled file against gold labels: accuracy, macro-F1, per-class, confusion, coverage, CIs.

The contract (docs/ARCHITECTURE.md, "Metrics dict"):

* rows whose status is ``shot`` are few-shot examples; they are dropped entirely;
* rows with no gold label are counted in ``n_rows`` but not scored;
* a scored row whose status is not ``ok``, or whose prediction is empty or not in the label
  set, counts as wrong (its prediction is the extra ``(none)`` column of the confusion matrix);
* ``coverage`` is the share of scored rows that have a valid prediction.

scikit-learn computes the point estimates. The bootstrap resamples scored rows; because a
row only matters through its (gold, prediction) cell, resampling n rows is the same as one
multinomial draw over the confusion cells, which makes 1,000 resamples cost milliseconds
even for 100,000 rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.tables import cell_text, check_columns
from ..errors import InputError
from ..labels import LabelSet

NONE_COLUMN = "(none)"
STATUSES = ("ok", "empty", "invalid", "error", "shot")


def _clean(values: Sequence[object] | None, n: int) -> list[str]:
    if values is None:
        return [""] * n
    return [cell_text(v).strip() for v in values]


def _prob(cell: str) -> float | None:
    """A ``pred_prob`` cell as a probability in [0, 1], or None (empty or not a number)."""
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if 0.0 <= v <= 1.0 else None


def _row_status(status: str, pred: str, valid: bool) -> str:
    """The effective status of one non-shot row: ok, empty, invalid or error."""
    status = status.lower()
    if status in ("", "ok"):
        if not pred:
            return "empty"
        return "ok" if valid else "invalid"
    if status in ("empty", "invalid", "error"):
        return status
    # An unknown status means the row did not get a trustworthy answer: count it as an error.
    return "error"


def _f1_from_confusion(conf: np.ndarray, n_labels: int, macro_idx: np.ndarray) -> np.ndarray:
    """Macro-F1 for a stack of confusion matrices ``(..., L, L+1)`` over the label indices ``macro_idx``."""
    tp = np.diagonal(conf[..., :, :n_labels], axis1=-2, axis2=-1).astype(float)
    pred_tot = conf[..., :, :n_labels].sum(axis=-2).astype(float)  # column sums (predicted as label)
    gold_tot = conf.sum(axis=-1).astype(float)  # row sums (gold label)
    denom = pred_tot + gold_tot
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)  # zero_division=0
    return f1[..., macro_idx].mean(axis=-1)


def evaluate(
    gold: Sequence[object],
    pred: Sequence[object],
    labels: Sequence[str] | LabelSet | None,
    status: Sequence[object] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: Sequence[object] | None = None,
) -> dict[str, Any]:
    """Score predictions against gold labels; returns the metrics dict of docs/ARCHITECTURE.md.

    ``confidence``: each row's ``pred_prob`` (empty where there is none); the result then holds
    ``calibration`` (:mod:`promptclf.eval.calibration`: ECE, reliability bins, AUROC, accuracy
    by coverage) over the scored rows, or None when no scored row has a confidence.

    ``labels`` is the label set (names or a :class:`LabelSet`, whose aliases also map gold
    values such as ``Sport`` to ``sport``); ``None`` infers it from the gold values. Gold
    values outside the label set are kept as extra classes a prediction can never match
    (listed under ``unknown_gold``). Macro-F1 averages over labels that occur in the gold
    or the valid predictions, so a label absent from this sample does not drag it to 0.
    ``n_boot=0`` skips the bootstrap (CIs are None).
    """
    n = len(gold)
    if len(pred) != n:
        raise InputError(f"gold has {n} rows but predictions have {len(pred)}")
    if status is not None and len(status) != n:
        raise InputError(f"gold has {n} rows but statuses have {len(status)}")
    gold_s, pred_s, status_s = _clean(gold, n), _clean(pred, n), _clean(status, n)

    if labels is None:
        names = sorted({g for g in gold_s if g})
        labelset = LabelSet.from_names(names) if names else None
    elif isinstance(labels, LabelSet):
        labelset = labels
    else:
        labelset = LabelSet.from_names(labels) if len(labels) else None
    names = labelset.names if labelset is not None else []

    def canon(value: str) -> str | None:
        if not value or labelset is None:
            return None
        return value if value in names else labelset.normalize(value)

    keep = [i for i in range(n) if status_s[i].lower() != "shot"]
    n_shots = n - len(keep)
    scored: list[tuple[str, str | None, str]] = []  # (gold, valid pred or None, effective status)
    probs: list[float | None] = []  # the scored rows' confidences
    conf_cells = _clean(confidence, n) if confidence is not None else None
    for i in keep:
        if not gold_s[i]:
            continue
        g = canon(gold_s[i]) or gold_s[i]
        p = canon(pred_s[i])
        st = _row_status(status_s[i], pred_s[i], p is not None)
        scored.append((g, p if st == "ok" else None, st))
        probs.append(_prob(conf_cells[i]) if conf_cells is not None else None)

    unknown_gold = sorted({g for g, _, _ in scored if g not in names})
    all_labels = names + unknown_gold
    n_scored = len(scored)
    counts = {s: sum(1 for _, _, st in scored if st == s) for s in ("ok", "empty", "invalid", "error")}

    def rate(k: int) -> float | None:
        return k / n_scored if n_scored else None

    result: dict[str, Any] = {
        "n_rows": len(keep),
        "n_shots": n_shots,
        "n_gold": sum(1 for i in keep if gold_s[i]),
        "n_scored": n_scored,
        "n_valid": counts["ok"],
        "coverage": rate(counts["ok"]),
        "invalid_rate": rate(counts["invalid"]),
        "empty_rate": rate(counts["empty"]),
        "error_rate": rate(counts["error"]),
        "accuracy": None,
        "macro_f1": None,
        "accuracy_ci": None,
        "macro_f1_ci": None,
        "labels": all_labels,
        "unknown_gold": unknown_gold,
        "per_class": {},
        "confusion": {"labels": all_labels, "columns": [*all_labels, NONE_COLUMN], "matrix": []},
    }

    L = len(all_labels)
    index = {lab: k for k, lab in enumerate(all_labels)}
    conf = np.zeros((L, L + 1), dtype=np.int64)
    for g, p, _ in scored:
        conf[index[g], index[p] if p is not None else L] += 1
    result["confusion"]["matrix"] = conf.tolist()
    if confidence is not None:
        from .calibration import calibration

        cal = calibration([p is not None and p == g for g, p, _ in scored], probs)
        result["calibration"] = cal.model_dump() if cal is not None else None
    # Over every answered row, with gold or not: a collapse shows without gold too.
    answers = [canon(pred_s[i]) or "" for i in keep]
    result["collapse"] = collapse_check(
        answers,
        [(canon(gold_s[i]) or gold_s[i]) if gold_s[i] else "" for i in keep],
        [_row_status(status_s[i], pred_s[i], bool(answers[j])) for j, i in enumerate(keep)],
    )

    if n_scored == 0:
        result["per_class"] = {lab: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0} for lab in all_labels}
        return result

    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    y_true = [g for g, _, _ in scored]
    y_pred = [p if p is not None else NONE_COLUMN for _, p, _ in scored]
    prec, rec, f1, sup = precision_recall_fscore_support(
        y_true, y_pred, labels=all_labels, zero_division=0, average=None
    )
    result["per_class"] = {
        lab: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]), "support": int(sup[k])}
        for k, lab in enumerate(all_labels)
    }
    present = set(y_true) | {p for p in y_pred if p != NONE_COLUMN}
    macro_labels = [lab for lab in all_labels if lab in present]
    result["accuracy"] = float(accuracy_score(y_true, y_pred))
    result["macro_f1"] = float(f1_score(y_true, y_pred, labels=macro_labels, average="macro", zero_division=0))
    result["macro_f1_labels"] = macro_labels

    if n_boot > 0:
        rng = np.random.default_rng(seed)
        cells = conf.ravel()
        draws = rng.multinomial(n_scored, cells / n_scored, size=n_boot).reshape(n_boot, L, L + 1)
        acc = np.trace(draws[:, :, :L], axis1=1, axis2=2) / n_scored
        macro_idx = np.array([index[lab] for lab in macro_labels])
        mf1 = _f1_from_confusion(draws, L, macro_idx)
        result["accuracy_ci"] = [float(np.percentile(acc, 2.5)), float(np.percentile(acc, 97.5))]
        result["macro_f1_ci"] = [float(np.percentile(mf1, 2.5)), float(np.percentile(mf1, 97.5))]
    return result


# --- collapse: one label for (nearly) every item ---------------------------------------------

# A weak model (or a bad prompt) often gives the same label to everything: accuracy then equals
# the majority share and looks passable while macro-F1 is near zero. Warn when one label takes
# more than COLLAPSE_SHARE of the answered items, unless the gold labels are just as skewed
# towards it (a genuinely imbalanced data set answered correctly).
COLLAPSE_SHARE = 0.9
COLLAPSE_MARGIN = 0.05  # with gold: the label's predicted share must exceed its gold share by this much
COLLAPSE_MIN_ITEMS = 10  # below this a 90% share says little


def _share_text(x: float) -> str:
    """``100%``, ``97%``; never rounds a share below 1 up to ``100%``."""
    text = f"{100 * x:.0f}%"
    return f"{100 * x:.1f}%" if text == "100%" and x < 1 else text


def collapse_check(
    pred: Sequence[object],
    gold: Sequence[object] | None = None,
    status: Sequence[object] | None = None,
) -> dict[str, Any] | None:
    """Whether the predictions collapsed onto one label, with the warning in plain words; None if not.

    Counts the items that got an answer: rows whose status is ``ok`` (or empty: no status
    column) and whose prediction is not empty; ``shot`` rows and failed rows are left out.
    The top label must take more than 90% of them. When some of those items have gold labels
    the label's gold share must also be at least 5 points lower than its predicted share, so a
    data set that really is 95% one label, answered correctly, is not flagged.
    Returns ``{"label", "share", "n", "gold_share", "n_gold", "message"}`` (``gold_share``
    None without gold).
    """
    n = len(pred)
    pred_s, status_s = _clean(pred, n), _clean(status, n)
    gold_s = _clean(gold, n) if gold is not None else [""] * n
    answered = [i for i in range(n) if pred_s[i] and status_s[i].lower() in ("", "ok")]
    if len(answered) < COLLAPSE_MIN_ITEMS:
        return None
    counts: dict[str, int] = {}
    for i in answered:
        counts[pred_s[i]] = counts.get(pred_s[i], 0) + 1
    top, k = max(counts.items(), key=lambda kv: kv[1])
    share = k / len(answered)
    if share <= COLLAPSE_SHARE:
        return None
    with_gold = [i for i in answered if gold_s[i]]
    gold_share = sum(1 for i in with_gold if gold_s[i] == top) / len(with_gold) if with_gold else None
    if gold_share is not None and gold_share > share - COLLAPSE_MARGIN:
        return None
    what = f"the model answered {top!r} for {_share_text(share)} of the {len(answered):,} items"
    if gold_share is None:
        what += " (there are no gold labels to compare with)"
    else:
        what += f", but only {_share_text(gold_share)} of the gold labels are {top!r}"
    message = (
        f"{what}; it is probably not discriminating between the labels. Check the label names and the "
        "prompt, or try few-shot examples (--shots), --calibrate (local model) or a larger model."
    )
    return {
        "label": top,
        "share": share,
        "n": len(answered),
        "gold_share": gold_share,
        "n_gold": len(with_gold),
        "message": message,
    }


# --- terminal output ------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ci(ci: Sequence[float] | None) -> str:
    return "" if not ci else f"  (95% CI {100 * ci[0]:.1f}–{100 * ci[1]:.1f})"


def format_table(metrics: dict[str, Any]) -> str:
    """A plain-text summary for the terminal: headline numbers, per-class table, confusion matrix."""
    m = metrics
    if m.get("candidates"):
        from .candidates import format_recall

        rest = {k: v for k, v in m.items() if k != "candidates"}
        return format_table(rest) + "\n" + format_recall(m["candidates"])
    if m.get("multi_label"):
        from .multilabel import format_multilabel

        return format_multilabel(m)
    lines = [
        f"rows {m['n_rows']}  with gold {m['n_gold']}  scored {m['n_scored']}"
        + (f"  (few-shot examples excluded: {m['n_shots']})" if m.get("n_shots") else ""),
        f"accuracy   {_pct(m['accuracy'])}{_ci(m.get('accuracy_ci'))}",
        f"macro-F1   {_pct(m['macro_f1'])}{_ci(m.get('macro_f1_ci'))}",
        f"coverage   {_pct(m['coverage'])}   invalid {_pct(m['invalid_rate'])}   "
        f"empty {_pct(m['empty_rate'])}   error {_pct(m['error_rate'])}",
    ]
    if m.get("collapse"):
        lines.append(f"warning: {m['collapse']['message']}")
    if m.get("unknown_gold"):
        lines.append(f"note: gold labels not in the label set (never predictable): {', '.join(m['unknown_gold'])}")
    if m.get("levels"):
        from .hierarchy import format_levels

        lines += ["", *format_levels(m["levels"])]
    per = m.get("per_class") or {}
    if per:
        w = max(12, *(len(lab) for lab in per))
        lines += ["", f"{'label':<{w}}  precision  recall     f1  support"]
        for lab, v in per.items():
            lines.append(f"{lab:<{w}}  {v['precision']:9.3f}  {v['recall']:6.3f}  {v['f1']:5.3f}  {v['support']:7d}")
    conf = m.get("confusion") or {}
    if m.get("ordinal"):
        from .ordinal import format_ordinal

        lines += ["", *format_ordinal(m["ordinal"])]
    if m.get("calibration"):
        from .calibration import CalibrationReport, format_calibration

        lines += ["", *format_calibration(CalibrationReport(**m["calibration"]))]
    if conf.get("matrix"):
        cols = conf.get("columns") or [*conf["labels"], NONE_COLUMN]
        w = max(10, *(len(lab) for lab in conf["labels"]))
        cw = max(6, *(len(c) for c in cols))
        lines += ["", "confusion (rows gold, columns predicted)"]
        lines.append(" " * w + "  " + " ".join(f"{c:>{cw}}" for c in cols))
        for lab, row in zip(conf["labels"], conf["matrix"], strict=True):
            lines.append(f"{lab:<{w}}  " + " ".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)


# --- helpers for `promptclf eval` -----------------------------------------------------------


def labels_beside(path: str | Path) -> LabelSet | None:
    """The label set saved in the run folder of a labeled file (``x.csv`` → ``x.run/labels.json``), if any."""
    import json

    path = Path(path)
    for cand in (path.with_suffix(".run") / "labels.json", path.parent / "labels.json"):
        if cand.is_file():
            try:
                data = json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            multi = False
            if isinstance(data, dict) and "labels" in data:
                multi = bool(data.get("multi_label", False))  # a multi-label run (LabelSet.file_data)
                data = data["labels"]
            if isinstance(data, list) and data:
                if all(isinstance(x, str) for x in data):
                    return LabelSet.from_names(data, multi_label=multi)
                return LabelSet.from_dict(data, multi_label=multi)
    return None


def evaluate_table(
    df: Any,
    path: str | Path,
    gold_col: str,
    pred_col: str = "pred_label",
    status_col: str | None = "pred_status",
    labels: LabelSet | None = None,
    status_required: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    prob_col: str | None = "pred_prob",
    ordinal: bool = False,
    cut: float | None = None,
    score_col: str = "pred_score",
    multi_label: bool = False,
) -> dict[str, Any]:
    """Evaluate a DataFrame's columns; a missing status column is fine unless ``status_required``;
    with ``prob_col`` present, the calibration of its confidences too; for an ordinal label set
    (``ordinal``, or one saved as ordinal) the ordinal metrics under ``"ordinal"``; for a multi-label
    set (``multi_label``, or a run saved as multi-label) the multi-label metrics instead
    (:func:`promptclf.eval.multilabel.multilabel_metrics`).

    Without ``labels`` the label set comes from the run folder beside ``path``, else from
    the gold column's values.
    """
    check_columns(df, [gold_col], path, "--gold-col")
    check_columns(df, [pred_col], path, "--pred-col")
    status = None
    if status_col:
        if status_col in df.columns:
            status = df[status_col].tolist()
        elif status_required:
            check_columns(df, [status_col], path, "--status-col")
    if labels is None:
        labels = labels_beside(path)
    if multi_label or (labels is not None and labels.multi_label):
        from .multilabel import evaluate_multilabel_table

        if ordinal or cut is not None:
            raise InputError("--ordinal/--cut and --multi-label do not go together: a scale gives one grade per row")
        multi = evaluate_multilabel_table(df, path, gold_col, pred_col, status, labels, n_boot, seed)
        return _with_candidates(multi, df, gold_col, status, labels, True)
    confidence = df[prob_col].tolist() if prob_col and prob_col in df.columns else None
    if ordinal and labels is None:
        from ..labels import infer_labels

        labels = infer_labels([cell_text(v) for v in df[gold_col]], ordinal=True)
    elif ordinal and labels is not None:
        labels = labels.as_ordinal()
    metrics = evaluate(
        df[gold_col].tolist(), df[pred_col].tolist(), labels, status=status, n_boot=n_boot, seed=seed,
        confidence=confidence,
    )  # fmt: skip
    if labels is not None and labels.ordinal:
        from .ordinal import ordinal_metrics

        scores = df[score_col].tolist() if score_col in df.columns else None
        metrics["ordinal"] = ordinal_metrics(
            df[gold_col].tolist(), df[pred_col].tolist(), labels, status=status, pred_score=scores, cut=cut,
            n_boot=n_boot, seed=seed,
        )  # fmt: skip
    elif cut is not None:
        raise InputError("--cut needs an ordinal label set: add --ordinal, or --labels with an ordinal labels file")
    if labels is not None and labels.tree is not None:
        from .hierarchy import level_metrics

        metrics["levels"] = level_metrics(df[gold_col].tolist(), df[pred_col].tolist(), labels, status, n_boot, seed)
    return _with_candidates(metrics, df, gold_col, status, labels, False)


def _with_candidates(
    metrics: dict[str, Any], df: Any, gold_col: str, status: Sequence[object] | None, labels: LabelSet | None,
    multi: bool,
) -> dict[str, Any]:  # fmt: skip
    """``metrics`` with the candidate recall of a ``--candidates`` run (its ``pred_candidates`` column)."""
    from .candidates import CANDIDATES_COL, candidate_recall

    if CANDIDATES_COL in df.columns:
        recall = candidate_recall(df[gold_col].tolist(), df[CANDIDATES_COL].tolist(), labels, status, multi)
        if recall is not None:
            metrics["candidates"] = recall
    return metrics
