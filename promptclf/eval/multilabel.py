"""Scoring multi-label predictions: micro-, macro- and sample-F1, subset accuracy, Hamming loss.

Each row has a set of gold labels and a set of predicted labels (:func:`promptclf.labels.split_labels`
reads a cell: a JSON list or ``;``-separated names). The contract:

* rows whose status is ``shot`` are dropped; rows with an empty gold cell have no gold and are
  counted in ``n_rows`` but not scored (``[]`` is a gold answer: no label applies);
* a gold cell naming a label off the set is bad input: an :class:`InputError` names it and the fix;
* a scored row that is not ``ok`` (or predicts a label off the set) predicts nothing and counts as
  wrong for subset accuracy;
* per label, precision/recall/F1 with 0 where undefined (scikit-learn's ``zero_division=0``); macro-F1
  is their mean over the label set; sample-F1 counts a row with no gold and no predicted label as 1
  (a correct "none applies").

Bootstrap CIs resample scored rows: every statistic is a sum over rows of per-row counts, so each
resample is a weight vector (multinomial counts) times the per-row count matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.tables import cell_text, check_columns
from ..errors import InputError
from ..labels import LabelSet, split_labels

HEADLINE = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss")


def label_matrix(cells: Sequence[object], labels: LabelSet) -> tuple[np.ndarray, list[list[str]]]:
    """(rows x labels boolean matrix, each row's names off the set) of multi-label cells."""
    index = {n: j for j, n in enumerate(labels.names)}
    y = np.zeros((len(cells), len(index)), dtype=bool)
    unknown: list[list[str]] = []
    for i, cell in enumerate(cells):
        known, bad = labels.normalize_all(cell)
        for name in known:
            y[i, index[name]] = True
        unknown.append(bad)
    return y, unknown


def _safe(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def _scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The headline statistics from summed counts; works on one sample (shape (L,)) or many ((B, L))."""
    micro = _safe(2.0 * tp.sum(-1), 2.0 * tp.sum(-1) + fp.sum(-1) + fn.sum(-1))
    per_f1 = _safe(2.0 * tp, 2.0 * tp + fp + fn)
    n = rows["n"]
    return {
        "micro_f1": micro,
        "macro_f1": per_f1.mean(-1),
        "samples_f1": _safe(rows["f1"], n),
        "subset_accuracy": _safe(rows["exact"], n),
        "hamming_loss": _safe(rows["wrong"], n * tp.shape[-1]),
    }


def multilabel_metrics(
    gold: Sequence[object],
    pred: Sequence[object],
    labels: LabelSet,
    status: Sequence[object] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    where: str = "gold",
) -> dict[str, Any]:
    """Multi-label metrics of ``pred`` against ``gold`` (cells: JSON lists or ``;``-separated names).

    Returns a dict with ``multi_label: True``, counts, the headline statistics (``micro_f1``,
    ``macro_f1``, ``samples_f1``, ``subset_accuracy``, ``hamming_loss``) with ``*_ci`` (95%
    bootstrap), ``per_label`` ({label: precision, recall, f1, support, predicted}) and
    ``cardinality`` ({"gold", "pred"}: the mean number of labels per scored row).
    """
    if len(gold) != len(pred):
        raise InputError(f"{len(gold)} gold cells but {len(pred)} predictions")
    st = [cell_text(s).strip().lower() for s in status] if status is not None else [""] * len(gold)
    keep = [i for i, s in enumerate(st) if s != "shot"]
    has_gold = [i for i in keep if cell_text(gold[i]).strip().lower() not in ("", "nan", "none")]
    y_true, bad_gold = label_matrix([gold[i] for i in has_gold], labels)
    offenders = sorted({name for bad in bad_gold for name in bad})
    if offenders:
        row = has_gold[next(k for k, bad in enumerate(bad_gold) if bad)]
        raise InputError(
            f"{where}: label(s) {', '.join(map(repr, offenders[:10]))} not in the label set ({', '.join(labels.names)}), "
            f"first at row {row}; add them to --labels (or as aliases), or fix those cells"
        )
    y_pred, bad_pred = label_matrix([pred[i] for i in has_gold], labels)
    ok = np.array([st[i] in ("", "ok") and not bad_pred[k] for k, i in enumerate(has_gold)], dtype=bool)
    invalid = np.array([bool(bad_pred[k]) for k in range(len(has_gold))], dtype=bool)
    y_pred[~ok] = False  # a row without a trustworthy answer predicts nothing
    n = len(has_gold)
    out: dict[str, Any] = {
        "multi_label": True,
        "labels": labels.names,
        "n_rows": len(keep),
        "n_gold": n,
        "n_scored": n,
        "n_shots": len(gold) - len(keep),
        "coverage": float(ok.mean()) if n else None,
        "invalid_rate": float(invalid.mean()) if n else None,
    }
    if not n:
        return out | {k: None for k in HEADLINE} | {"per_label": {}, "cardinality": None}
    tp_r = (y_true & y_pred).astype(float)
    fp_r = (~y_true & y_pred).astype(float)
    fn_r = (y_true & ~y_pred).astype(float)
    n_true, n_pred = y_true.sum(1), y_pred.sum(1)
    both = n_true + n_pred
    row_f1 = np.where(both > 0, _safe(2.0 * tp_r.sum(1), both.astype(float)), 1.0)
    exact = ((y_true == y_pred).all(1) & ok).astype(float)
    wrong = (y_true != y_pred).sum(1).astype(float)
    rows = {"f1": row_f1, "exact": exact, "wrong": wrong}
    point = _scores(tp_r.sum(0), fp_r.sum(0), fn_r.sum(0), {k: v.sum() for k, v in rows.items()} | {"n": float(n)})
    for k in HEADLINE:
        out[k] = float(point[k])
    cis = _bootstrap(tp_r, fp_r, fn_r, rows, n_boot, seed)
    for k in HEADLINE:
        out[f"{k}_ci"] = cis.get(k)
    tp, fp, fn = tp_r.sum(0), fp_r.sum(0), fn_r.sum(0)
    prec, rec, f1 = _safe(tp, tp + fp), _safe(tp, tp + fn), _safe(2 * tp, 2 * tp + fp + fn)
    out["per_label"] = {
        name: {
            "precision": float(prec[j]),
            "recall": float(rec[j]),
            "f1": float(f1[j]),
            "support": int(y_true[:, j].sum()),
            "predicted": int(y_pred[:, j].sum()),
        }
        for j, name in enumerate(labels.names)
    }
    out["cardinality"] = {"gold": float(n_true.mean()), "pred": float(n_pred.mean())}
    return out


def _bootstrap(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, rows: dict[str, np.ndarray], n_boot: int, seed: int
) -> dict[str, list[float]]:
    """95% percentile intervals of the headline statistics over ``n_boot`` row resamples."""
    n = tp.shape[0]
    if n_boot <= 0 or n < 2:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {k: [] for k in HEADLINE}
    block = max(1, min(n_boot, 2_000_000 // n))  # resamples per block: bounded memory for large files
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(float)  # (b, n) row counts
        sums = {k: w @ v for k, v in rows.items()} | {"n": np.full(b, float(n))}
        stats = _scores(w @ tp, w @ fp, w @ fn, sums)
        for k in HEADLINE:
            draws[k].append(stats[k])
        done += b
    return {k: [float(v) for v in np.percentile(np.concatenate(d), [2.5, 97.5])] for k, d in draws.items()}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _ci(ci: Sequence[float] | None) -> str:
    return "" if not ci else f"  (95% CI {100 * ci[0]:.1f}–{100 * ci[1]:.1f})"


def format_multilabel(m: dict[str, Any]) -> str:
    """A plain-text summary: headline statistics with CIs, cardinality, and the per-label table."""
    lines = [
        f"multi-label  rows {m['n_rows']}  with gold {m['n_gold']}  scored {m['n_scored']}"
        + (f"  (few-shot examples excluded: {m['n_shots']})" if m.get("n_shots") else ""),
        f"micro-F1         {_pct(m['micro_f1'])}{_ci(m.get('micro_f1_ci'))}",
        f"macro-F1         {_pct(m['macro_f1'])}{_ci(m.get('macro_f1_ci'))}",
        f"sample-F1        {_pct(m['samples_f1'])}{_ci(m.get('samples_f1_ci'))}",
        f"subset accuracy  {_pct(m['subset_accuracy'])}{_ci(m.get('subset_accuracy_ci'))}",
        f"Hamming loss     {_pct(m['hamming_loss'])}{_ci(m.get('hamming_loss_ci'))}",
        f"coverage         {_pct(m['coverage'])}   invalid {_pct(m['invalid_rate'])}",
    ]
    card = m.get("cardinality")
    if card:
        lines.append(f"labels per row   predicted {card['pred']:.2f}   gold {card['gold']:.2f}")
    per = m.get("per_label") or {}
    if per:
        w = max(12, *(len(lab) for lab in per))
        lines += ["", f"{'label':<{w}}  precision  recall     f1  support  predicted"]
        for lab, v in per.items():
            lines.append(
                f"{lab:<{w}}  {v['precision']:9.3f}  {v['recall']:6.3f}  {v['f1']:5.3f}  {v['support']:7d}  "
                f"{v['predicted']:9d}"
            )
    return "\n".join(lines)


def pred_cells(df: Any, pred_col: str) -> list[object]:
    """A labeled file's predicted label sets: ``pred_labels`` (JSON lists) when ``pred_col`` is the
    default ``pred_label`` and the file has it, else ``pred_col`` (JSON lists or ``;``-joined)."""
    col = "pred_labels" if pred_col == "pred_label" and "pred_labels" in df.columns else pred_col
    return df[col].tolist()


def infer_multi_labels(gold: Sequence[object], pred: Sequence[object]) -> LabelSet:
    """A multi-label set from the gold cells (and the predicted ones), when no run or --labels gives it."""
    names = sorted({x for cell in gold for x in split_labels(cell)})
    if not names:
        raise InputError("the gold column has no labels; pass --labels")
    return LabelSet.from_names(names, multi_label=True)


def evaluate_multilabel_table(
    df: Any,
    path: str | Path,
    gold_col: str,
    pred_col: str,
    status: Sequence[object] | None,
    labels: LabelSet | None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`multilabel_metrics` on a labeled file's columns (``labels`` None: from the gold cells)."""
    check_columns(df, [gold_col], path, "--gold-col")
    check_columns(df, [pred_col], path, "--pred-col")
    gold = df[gold_col].tolist()
    pred = pred_cells(df, pred_col)
    labels = labels.as_multi_label() if labels is not None else infer_multi_labels(gold, pred)
    return multilabel_metrics(gold, pred, labels, status, n_boot, seed, where=f"{path}: column {gold_col!r}")
