"""Candidate recall of a ``--candidates K`` run: how often the gold label was among a row's candidates.

A row's candidates (the labeled file's ``pred_candidates``, a JSON list) are the labels its prompt
was built around; an answer can only be right when the gold label was among them, so the recall
is an upper bound on the accuracy the candidate step allows. Rows counted: a gold label, not a
few-shot example (status ``shot``), and candidates recorded (rows that were never sent have none).
Multi-label gold: the share of gold (row, label) pairs among the row's candidates, and the share of
rows whose every gold label was. Pure functions; no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from ..labels import LabelSet, split_labels

CANDIDATES_COL = "pred_candidates"


def read_cell(cell: object) -> list[str] | None:
    """A ``pred_candidates`` cell as a list of names; None when empty (the row has no candidates)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None
    if isinstance(cell, (list, tuple)):
        return [str(x) for x in cell]
    text = str(cell).strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return split_labels(text)
    return [str(x) for x in data] if isinstance(data, list) else None


def _wilson(hits: int, n: int, z: float = 1.96) -> list[float]:
    """The 95% Wilson score interval of a proportion (rows are independent draws)."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def candidate_recall(
    gold: Sequence[object],
    candidates: Sequence[object],
    labels: LabelSet | None = None,
    status: Sequence[object] | None = None,
    multi_label: bool | None = None,
) -> dict[str, Any] | None:
    """``{"candidate_recall", "candidate_recall_ci", "n_candidate_rows", "mean_candidates"}`` (multi-label
    gold adds ``candidate_row_recall``), or None when no row has both a gold label and candidates.

    ``labels`` maps gold spellings to canonical names (aliases); without it gold is taken as written.
    ``multi_label``: gold cells hold several labels (default: the label set says).
    """
    multi = multi_label if multi_label is not None else (labels is not None and labels.multi_label)
    hits = total = rows = whole = sizes = 0
    for i, (g, c) in enumerate(zip(gold, candidates, strict=True)):
        if status is not None and str(status[i]).strip().lower() == "shot":
            continue
        cands = read_cell(c)
        if cands is None:
            continue
        names = split_labels(g) if multi else ([str(g).strip()] if g is not None and str(g).strip() else [])
        names = [n for n in names if n.lower() != "nan"]
        if labels is not None:
            names = [labels.normalize(n) or n for n in names]
        if not names:
            continue
        found = sum(1 for n in names if n in cands)
        hits, total, rows, sizes = hits + found, total + len(names), rows + 1, sizes + len(cands)
        whole += found == len(names)
    if not rows:
        return None
    out: dict[str, Any] = {
        "candidate_recall": hits / total,
        "candidate_recall_ci": _wilson(hits, total),
        "n_candidate_rows": rows,
        "mean_candidates": sizes / rows,
    }
    if multi:
        out["candidate_row_recall"] = whole / rows
    return out


def format_recall(m: dict[str, Any]) -> str:
    """One line for the terminal."""
    lo, hi = m["candidate_recall_ci"]
    line = (
        f"candidate recall {100 * m['candidate_recall']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] "
        f"(gold label among the row's {m['mean_candidates']:.3g} candidates, {m['n_candidate_rows']:,} rows)"
    )
    if "candidate_row_recall" in m:
        line += f"; rows with every gold label among them {100 * m['candidate_row_recall']:.1f}%"
    return line
