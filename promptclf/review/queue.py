"""The review queue: rank labeled rows by how likely their LLM label is wrong.

``review(labeled_file, options)`` scores every row that has an LLM label (status ``ok``) with
three signals, each an estimate on the same 0-1 scale of "this label is wrong":

* **confidence**: ``1 - p(label)`` from the provider (``pred_probs`` when it has the label,
  else ``pred_prob``). A row without a confidence gets no value here (neutral), never an
  invented one.
* **student**: ``1 - p(label)`` from an out-of-fold student: logistic regression on the
  all-MiniLM-L6-v2 embeddings, K folds. Folds are assigned from a seeded permutation of the
  distinct texts, independent of the labels, and each row is predicted only by the model of
  the fold it is not in, so its own label never reaches its prediction; copies of a text share
  a fold. (A fine-tuned student per fold would be K trainings: minutes per fold on a CPU, so
  the queue uses a linear probe on frozen embeddings, which takes seconds.)
* **neighbours**: ``1 - share of the label`` among the k nearest other rows (cosine similarity
  weighted), copies of the same text left out (they carry the same LLM answer, not evidence).

The score is a weighted mean of the signals a row has. The weights are fitted on the file itself,
without gold labels, anchored on the LLM's confidence (see :mod:`.weights`, which says why the usual
agreement-based methods fail here); without a confidence the signals weigh equally. The
suggested label is the argmax of the student's and the neighbours' distributions averaged.

The queue (``write_review``) is a CSV for a person: the top N rows with rank, score, the
reasons in words, the suggested label, every input column, and an empty ``corrected`` column.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.tables import cell_text, check_columns, read_table, write_table
from ..errors import InputError
from ..label.confidence import parse_pred_probs
from .options import ReviewOptions, top_count
from .weights import SignalWeights, combine, equal_weights, fit_weights

log = logging.getLogger(__name__)

SIGNALS = ("confidence", "student", "neighbours")
# Columns the queue adds in front of the input columns (``corrected`` is for the person).
QUEUE_COLUMNS = ["review_rank", "review_row", "review_score", "suggested_label", "corrected", "review_reasons"]


# --- the three signals -------------------------------------------------------------------------


def fold_ids(texts: list[str], folds: int, seed: int) -> np.ndarray:
    """A fold per row from a seeded permutation of the distinct texts: labels play no part, copies share a fold."""
    distinct = sorted(set(texts))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(distinct))
    fold_of = {t: int(perm[i] % folds) for i, t in enumerate(distinct)}
    return np.array([fold_of[t] for t in texts], dtype=np.int64)


def oof_proba(
    x: np.ndarray, y: np.ndarray, n_labels: int, folds: np.ndarray, c: float = 1.0, progress: bool = False
) -> np.ndarray:
    """Out-of-fold class probabilities: row i is predicted by a model fitted on the other folds only.

    Rows of a fold whose training part has fewer than two classes get NaN (no student signal).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = np.full((len(y), n_labels), np.nan, dtype=np.float64)
    ks = sorted(set(folds.tolist()))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ks), unit="fold", desc="cross-validated student", file=sys.stderr)
    for k in ks:
        test = folds == k
        train = ~test
        classes = np.unique(y[train])
        if len(classes) >= 2:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
            model.fit(x[train], y[train])
            p = model.predict_proba(x[test])
            block = np.zeros((int(test.sum()), n_labels))
            block[:, model.classes_] = p  # classes absent from the training folds get 0
            out[test] = block
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


def neighbour_share(x: np.ndarray, y: np.ndarray, n_labels: int, texts: list[str], k: int) -> np.ndarray:
    """Similarity-weighted label shares among the ``k`` nearest other rows (other texts only)."""
    from ..embeddings import knn

    copies: dict[str, int] = {}
    for t in texts:
        copies[t] = copies.get(t, 0) + 1
    extra = max(copies.values())  # self and every copy may come before the real neighbours
    idx, sims = knn(x, x, k + extra)
    share = np.zeros((len(y), n_labels), dtype=np.float64)
    for i in range(len(y)):
        got = 0
        for j, s in zip(idx[i], sims[i], strict=True):
            if j == i or texts[j] == texts[i]:
                continue
            share[i, y[j]] += max(float(s), 0.0) + 1e-6  # +eps: orthogonal neighbours still count a little
            got += 1
            if got == k:
                break
        total = share[i].sum()
        share[i] = share[i] / total if total > 0 else np.nan
    return share


def confidence_of(label: str, prob: object, probs: dict[str, float] | None) -> float:
    """The provider's probability of ``label`` (pred_probs first, then pred_prob); NaN when it gave none."""
    if probs and label in probs:
        return float(probs[label])
    s = cell_text(prob).strip()
    if not s:
        return float("nan")
    try:
        return float(s)
    except ValueError:
        return float("nan")


# --- ranking -----------------------------------------------------------------------------------


@dataclass
class ReviewResult:
    """Every ranked row (best first) plus the queue and a summary for REVIEW.json / the CLI."""

    ranked: Any  # DataFrame: input columns + review columns, sorted by score
    queue: Any  # DataFrame: the top rows, queue columns first
    summary: dict[str, Any] = field(default_factory=dict)


def _reasons(
    label: str, conf: float, stud: np.ndarray, share: np.ndarray, labels: list[str], folds: int, k: int
) -> str:
    """The signals that argue against ``label``, in words (the strongest signal when none does)."""
    li = labels.index(label)
    said: list[tuple[float, str]] = []
    if not math.isnan(conf):
        said.append((1 - conf, f"LLM confidence {conf:.2f}" + (" (low)" if conf < 0.5 else "")))
    if not np.isnan(stud).any():
        j = int(stud.argmax())
        if j != li:
            said.append(
                (1 - stud[li], f"a {folds}-fold student says {labels[j]} ({stud[j]:.2f}; {label} {stud[li]:.2f})")
            )
        else:
            said.append((1 - stud[li], f"the {folds}-fold student agrees ({stud[li]:.2f})"))
    if not np.isnan(share).any():
        j = int(share.argmax())
        if j != li:
            said.append((1 - share[li], f"nearest {k} rows mostly say {labels[j]} ({share[j]:.0%} vs {share[li]:.0%})"))
        else:
            said.append((1 - share[li], f"{share[li]:.0%} of the nearest {k} rows agree"))
    against = [t for d, t in said if d >= 0.5]
    if against:
        return "; ".join(against)
    return max(said)[1] if said else "no signal"


def precision_report(wrong: np.ndarray, order: np.ndarray, top_n: int) -> dict[str, Any]:
    """Base error rate and precision (share of wrong labels) in the top k of ``order``, for several k."""
    n = len(order)
    base = float(wrong.mean()) if n else float("nan")
    ks: dict[str, int] = {"5%": math.ceil(0.05 * n), "10%": math.ceil(0.10 * n), "20%": math.ceil(0.20 * n)}
    ks[f"top {top_n}"] = top_n
    at: dict[str, Any] = {}
    for name, k in ks.items():
        k = max(1, min(k, n))
        hit = int(wrong[order[:k]].sum())
        prec = hit / k
        at[name] = {
            "k": k,
            "wrong": hit,
            "precision": round(prec, 4),
            "lift": round(prec / base, 2) if base > 0 else None,
            "recall": round(hit / wrong.sum(), 4) if wrong.sum() else None,
        }
    return {"n_gold": n, "n_wrong": int(wrong.sum()), "error_rate": round(base, 4), "at": at}


def review(path: str | Path, o: ReviewOptions, progress: bool = True) -> ReviewResult:
    """Rank the rows of a labeled file by how likely their LLM label is wrong (see the module doc)."""
    import pandas as pd

    from ..embeddings import embed

    df = read_table(path)
    if o.multi_label or (o.label_col == "pred_label" and "pred_labels" in df.columns):
        raise InputError(
            f"{path} is a multi-label file (pred_labels): rank its (row, label) decisions with "
            "'promptclf review --multi-label' (promptclf.review.multilabel.review_multilabel)"
        )
    check_columns(df, [o.text_col], path, "--text-col")
    check_columns(df, [o.label_col], path, "--label-col")
    if o.gold_col:
        check_columns(df, [o.gold_col], path, "--gold-col")
    texts = [cell_text(v) for v in df[o.text_col]]
    labs = [cell_text(v).strip() for v in df[o.label_col]]
    status = (
        [cell_text(v).strip().lower() for v in df[o.status_col]] if o.status_col in df.columns else ["ok"] * len(df)
    )
    keep = [i for i in range(len(df)) if status[i] == "ok" and labs[i] and texts[i].strip()]
    skipped = {
        "not_ok": sum(1 for s in status if s != "ok"),
        "no_label_or_text": sum(1 for i in range(len(df)) if status[i] == "ok" and not (labs[i] and texts[i].strip())),
    }
    labels = sorted({labs[i] for i in keep})
    if len(labels) < 2 or len(keep) < 2 * o.folds:
        raise InputError(
            f"{path}: {len(keep)} rows with an ok label in {len(labels)} class(es); the review needs at least "
            f"{2 * o.folds} rows (2 per fold, --folds {o.folds}) and two classes"
        )
    lab_id = {lab: j for j, lab in enumerate(labels)}
    k_texts = [texts[i] for i in keep]
    y = np.array([lab_id[labs[i]] for i in keep], dtype=np.int64)

    conf = np.full(len(keep), np.nan)
    if o.probs_col in df.columns or o.prob_col in df.columns:
        for r, i in enumerate(keep):
            where = f"{path} row {i + 2}"  # +2: header line, 1-based
            probs = parse_pred_probs(df[o.probs_col].iat[i], where) if o.probs_col in df.columns else None
            prob = df[o.prob_col].iat[i] if o.prob_col in df.columns else ""
            conf[r] = confidence_of(labs[i], prob, probs)

    store = None
    if not o.no_cache:
        from ..label.options import default_store
        from ..store import Store

        store = Store(o.store or default_store())
    try:
        if progress:
            log.info("embedding %d rows with all-MiniLM-L6-v2", len(k_texts))
        x = embed(k_texts, store=store, progress=progress)
    finally:
        if store is not None:
            store.close()
    folds = fold_ids(k_texts, o.folds, o.seed)
    stud = oof_proba(x, y, len(labels), folds, c=o.c, progress=progress)
    share = neighbour_share(x, y, len(labels), k_texts, o.neighbours)

    rows = np.arange(len(keep))
    doubts = np.stack([1 - conf, 1 - stud[rows, y], 1 - share[rows, y]], axis=1)
    have = ~np.isnan(doubts)
    if o.weights == "fitted":
        sw = fit_weights(doubts, SIGNALS, anchor=0)
    else:
        sw = equal_weights(doubts, SIGNALS, "equal weights (--weights equal)")
    log.info("signal weights: %s (%s)", _weights_text(sw), sw.reason)
    score = combine(doubts, sw, SIGNALS)
    both = np.nan_to_num(stud, nan=0.0) + np.nan_to_num(share, nan=0.0)
    suggested = [labels[j] for j in both.argmax(1)]
    order = np.lexsort((rows, -score))  # highest score first; ties keep file order

    ranked = df.iloc[[keep[r] for r in order]].copy()
    # Reviewing a file that went through a review before: its review columns are replaced, but a
    # person's corrections in it are kept.
    previous = ranked["corrected"].map(cell_text).tolist() if "corrected" in ranked.columns else None
    ranked = ranked.drop(columns=[c for c in ranked.columns if c in QUEUE_COLUMNS or c.startswith("doubt_")])
    ranked.insert(0, "review_rank", np.arange(1, len(order) + 1))
    ranked.insert(1, "review_row", [keep[r] for r in order])
    ranked.insert(2, "review_score", np.round(score[order], 4))
    ranked.insert(3, "suggested_label", [suggested[r] for r in order])
    ranked.insert(4, "corrected", previous if previous is not None else "")
    reasons = [_reasons(labs[keep[r]], conf[r], stud[r], share[r], labels, o.folds, o.neighbours) for r in order]
    ranked.insert(5, "review_reasons", reasons)
    for name, col in zip(SIGNALS, doubts.T, strict=True):
        ranked[f"doubt_{name}"] = [None if math.isnan(v) else round(float(v), 4) for v in col[order]]
    ranked = ranked.reset_index(drop=True)
    n_top = top_count(o.top, len(order))
    queue = ranked.iloc[:n_top].copy()

    summary: dict[str, Any] = {
        "input": str(path),
        "options": o.model_dump(mode="json"),
        "labels": labels,
        "n_rows": len(df),
        "n_ranked": len(keep),
        "not_ranked": skipped,
        "n_queue": n_top,
        "signals": {name: int(have[:, j].sum()) for j, name in enumerate(SIGNALS)},
        "combination": "weighted mean of the available signals' P(label wrong)",
        "weights": sw.as_dict(),
    }
    if o.gold_col:
        gold = [cell_text(df[o.gold_col].iat[keep[r]]).strip() for r in range(len(keep))]
        has = np.array([bool(g) for g in gold])
        wrong_all = np.array([g != labs[keep[r]] for r, g in enumerate(gold)])
        pos = np.full(len(keep), -1)
        pos[has] = np.arange(int(has.sum()))
        ord_gold = np.array([pos[r] for r in order if has[r]], dtype=np.int64)
        summary["gold"] = precision_report(wrong_all[has], ord_gold, min(n_top, int(has.sum())))
        per: dict[str, Any] = {}
        for j, name in enumerate(SIGNALS):
            if not have[:, j].any():
                continue
            d = np.where(have[:, j], doubts[:, j], -1.0)  # rows without the signal go last
            o_sig = np.lexsort((rows, -d))
            o_sig_gold = np.array([pos[r] for r in o_sig if has[r]], dtype=np.int64)
            per[name] = precision_report(wrong_all[has], o_sig_gold, min(n_top, int(has.sum())))["at"]["10%"]
        if sw.method == "fitted":  # what the weights bought over the plain mean, on the same rows
            plain = combine(doubts, equal_weights(doubts, SIGNALS, ""), SIGNALS)
            o_eq = np.array([pos[r] for r in np.lexsort((rows, -plain)) if has[r]], dtype=np.int64)
            per["equal weights"] = precision_report(wrong_all[has], o_eq, min(n_top, int(has.sum())))["at"]["10%"]
        summary["gold"]["by_signal_at_10%"] = per
    return ReviewResult(ranked=ranked, queue=pd.DataFrame(queue), summary=summary)


def _weights_text(sw: SignalWeights) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in sw.weights.items())


def default_output(path: str | Path) -> Path:
    """``labeled.csv`` → ``labeled.review.csv``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.review.csv")


def write_review(result: ReviewResult, out: str | Path) -> Path:
    """Write the queue CSV and ``<out>.json`` (options, counts, precision with gold)."""
    out = Path(out)
    write_table(result.queue, out)
    out.with_suffix(".json").write_text(json.dumps(result.summary, indent=2) + "\n")
    return out


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The figures the CLI prints: counts, then with gold the precision at k and the base error rate."""
    nr = summary["not_ranked"]
    lines = [
        f"ranked {summary['n_ranked']} of {summary['n_rows']} rows ({nr['not_ok']} not ok, "
        f"{nr['no_label_or_text']} without label or text are not ranked); queue: top {summary['n_queue']}",
        "signals present: " + ", ".join(f"{k} {v}" for k, v in summary["signals"].items()),
    ]
    w = summary.get("weights")
    if w:
        lines.append(
            f"weights ({w['method']}): "
            + ", ".join(f"{k} {v:.2f}" for k, v in w["weights"].items())
            + f"; {w['reason']}"
        )
    g = summary.get("gold")
    if g:
        lines.append(f"LLM label error rate on {g['n_gold']} gold rows: {g['error_rate']:.4f} ({g['n_wrong']} wrong)")
        for name, a in g["at"].items():
            lift = f"{a['lift']:.2f}x the error rate" if a["lift"] is not None else "n/a"
            rec = f", recall {a['recall']:.3f}" if a["recall"] is not None else ""
            lines.append(f"precision at {name} (k={a['k']}): {a['precision']:.4f} ({lift}{rec})")
        for name, a in g.get("by_signal_at_10%", {}).items():
            what = name if name == "equal weights" else f"{name} alone"
            lines.append(f"  {what}, precision at 10%: {a['precision']:.4f}")
    return lines
