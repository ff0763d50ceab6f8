"""Gold labels from outside the runs (``report --gold FILE --gold-col C``), and agreement between runs without gold.

Each run's predictions (a label run's labeled file, a student's ``predictions.csv``) are joined
with the gold file by one column, ``on``: the text (the default) or a row id present in both.
A student's ``predictions.csv`` holds its text under ``text``, so joining by its training text
column finds it there. Rows with no gold match are counted and said, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from ..data.tables import cell_text, read_table
from ..errors import InputError
from .load import Run, _output_path


@dataclass
class Gold:
    """The true labels of a gold file, keyed by the join column's value."""

    path: Path
    col: str
    on: str
    labels: dict[str, str]

    @property
    def source(self) -> str:
        return f"{self.path.name} (column {self.col!r}, joined by {self.on!r})"


def read_gold(path: str | Path, col: str, on: str = "text") -> Gold:
    """Read a gold file; conflicting labels for one key are refused (join by a row id instead)."""
    p = Path(path)
    df = read_table(p)
    missing = [c for c in (col, on) if c not in df.columns]
    if missing:
        raise InputError(
            f"--gold {p}: no column {', '.join(repr(c) for c in missing)} (it has {', '.join(map(str, df.columns))}); "
            "name the true labels with --gold-col and the join column with --gold-on"
        )
    labels: dict[str, str] = {}
    clash: list[str] = []
    for key, lab in zip(df[on], df[col], strict=True):
        k, g = cell_text(key).strip(), cell_text(lab).strip()
        if not k or not g:
            continue
        if labels.get(k, g) != g:
            clash.append(k)
        labels[k] = g
    if clash:
        raise InputError(
            f"--gold {p}: {len(clash)} {on!r} values have different gold labels (first: {clash[0][:60]!r}); "
            "join by a row id present in both files with --gold-on ID"
        )
    if not labels:
        raise InputError(f"--gold {p}: no row has both {on!r} and {col!r}")
    return Gold(p, col, on, labels)


def _frame(run: Run, on: str) -> tuple[list[str], list[str], list[str] | None, list[str] | None] | None:
    """(join keys, predictions, statuses, confidences) of a run's output, or None when it has no ``on`` column."""
    out = _output_path(run)
    if out is None:
        return None
    df = read_table(out)
    pred_col = "pred" if run.is_student else "pred_label"
    key_col = on
    if run.is_student and on not in df.columns and on == run.options.get("text_col", "text"):
        key_col = "text"
    if key_col not in df.columns or pred_col not in df.columns:
        return None
    status = [cell_text(v) for v in df["pred_status"]] if "pred_status" in df.columns else None
    prob_col = "prob" if run.is_student else "pred_prob"
    conf = [cell_text(v) for v in df[prob_col]] if prob_col in df.columns else None
    return [cell_text(v).strip() for v in df[key_col]], [cell_text(v) for v in df[pred_col]], status, conf


def score_against(runs: list[Run], gold: Gold) -> None:
    """Replace each run's metrics with its score against ``gold``; ``extra["gold"]`` says what matched."""
    from ..eval.metrics import collapse_check, evaluate

    for run in runs:
        frame = _frame(run, gold.on)
        if frame is None:
            run.metrics = None
            run.extra["gold"] = {"matched": 0, "rows": 0, "why": f"its output has no {gold.on!r} column to join by"}
            continue
        keys, pred, status, conf = frame
        rows = [i for i, k in enumerate(keys) if not status or status[i] != "shot"]
        hit = [i for i in rows if keys[i] in gold.labels]
        run.extra["gold"] = {"matched": len(hit), "rows": len(rows), "why": None}
        if not hit:
            run.metrics = None
            continue
        truth, said = [gold.labels[keys[i]] for i in hit], [pred[i] for i in hit]
        st = [status[i] for i in hit] if status else None
        cf = [conf[i] for i in hit] if conf else None
        run.metrics = evaluate(truth, said, run.rec.labels or None, status=st, confidence=cf)
        if not run.is_student:  # the collapse warning, now with gold to compare with
            run.collapse = collapse_check(said, truth, st)


def agreement(runs: list[Run]) -> list[dict[str, Any]]:
    """Share of items two runs gave the same label, over the items both labeled, joined by their text."""
    labeled: dict[str, dict[str, str]] = {}
    for run in runs:
        cols = run.options.get("text_cols") or [run.options.get("text_col") or "text"]
        frame = _frame(run, str(cols[0])) if len(cols) == 1 else None
        if frame is None:
            continue
        keys, pred, status, conf = frame
        ok = range(len(keys)) if status is None else [i for i, s in enumerate(status) if s == "ok"]
        labeled[run.name] = {keys[i]: pred[i] for i in ok if keys[i] and pred[i]}
    out = []
    for a, b in combinations(labeled, 2):
        both = labeled[a].keys() & labeled[b].keys()
        if both:
            same = sum(labeled[a][k] == labeled[b][k] for k in both)
            out.append({"a": a, "b": b, "n": len(both), "agreement": same / len(both)})
    return out
