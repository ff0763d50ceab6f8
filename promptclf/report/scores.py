"""Per-run score tables beyond accuracy, for the report: calibration, the scale of ordinal label sets, and the
F1s and Hamming loss of multi-label ones.

Each is a :class:`ScoreTable` (title, column heads, one line of cells per run that has the figures, a
note saying how to read it, an optional figure); runs without the figures are left out of a table, and
a table no run fills is not drawn. :mod:`.render` writes them as HTML and Markdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


@dataclass(frozen=True)
class ScoreTable:
    key: str  # the HTML table id
    title: str
    heads: list[str]
    lines: list[list[str]]
    note: str
    figure: str | None = None  # an image key of the report
    caption: str = ""


def calibration_table(rows: list[dict[str, Any]]) -> ScoreTable | None:
    """ECE (15 bins), AUROC of the confidence for correctness, and the share of rows kept (with the
    threshold) at 95/98/99% accuracy: teacher and student side by side."""
    lines = []
    for r in rows:
        c = r.get("calibration")
        if not c or not c.get("n"):
            continue
        keep = {round(p["target"], 2): p for p in c.get("coverage") or []}

        def kept(t: float, keep: dict[float, Any] = keep) -> str:
            p = keep.get(t)
            if not p or not p["reachable"]:
                return "not reachable"
            return f"{_pct(p['coverage'])} (>= {p['threshold']:.3f})"

        auroc = "-" if c.get("auroc") is None else f"{c['auroc']:.3f}"
        lines.append(
            [r["name"], f"{c['n']:,}", _pct(c["accuracy"]), _pct(c["mean_confidence"]), f"{c['ece']:.3f}", auroc]
            + [kept(t) for t in (0.95, 0.98, 0.99)]
        )
    if not lines:
        return None
    return ScoreTable(
        "calibration",
        "Calibration",
        ["run", "rows", "accuracy", "mean confidence", "ECE", "AUROC", "keep @95%", "keep @98%", "keep @99%"],
        lines,
        "On gold rows with a confidence (the LLM's from log-probabilities or local scoring; the student's after "
        "temperature scaling). ECE: the gap between confidence and accuracy over 15 bins. AUROC: how well the "
        "confidence separates right from wrong labels. keep @95%: the share of rows whose confidence clears the "
        "threshold shown, and whose accuracy then reaches 95%.",
        figure="reliability",
        caption="Accuracy against confidence per bin; on the dashed line a confidence means what it says.",
    )


def ordinal_table(rows: list[dict[str, Any]]) -> ScoreTable | None:
    """MAE, Spearman, exact and within-one accuracy and F1 at the cut, for runs on an ordinal scale."""
    lines = []
    for r in rows:
        o = r.get("ordinal")
        if not o or not o.get("n"):
            continue
        rho = "-" if o.get("spearman") is None else f"{o['spearman']:.3f}"
        score_mae = "-" if o.get("mae_score") is None else f"{o['mae_score']:.3f}"
        lines.append(
            [r["name"], f"{o['n']:,}", f"{o['mae']:.3f}", score_mae, rho, _pct(o["exact"]), _pct(o["within_one"]),
             f"{_pct(o['binary']['f1'])} (>= {o['cut']:g})"]
        )  # fmt: skip
    if not lines:
        return None
    return ScoreTable(
        "ordinal",
        "Ordinal scale",
        ["run", "rows", "MAE (label)", "MAE (score)", "Spearman", "exact", "within one", "F1 at cut"],
        lines,
        "On gold rows with a valid prediction. MAE (score) uses the expected score (pred_score) where the run has "
        "one; F1 at cut scores 'rounded score >= cut' as a binary decision, as the FineWeb-Edu classifier reports it.",
    )


def _ci(v: float | None, ci: list[float] | None) -> str:
    return _pct(v) + (f" ({100 * ci[0]:.1f}–{100 * ci[1]:.1f})" if v is not None and ci else "")


def multilabel_table(rows: list[dict[str, Any]]) -> ScoreTable | None:
    """Micro-, macro- and sample-F1, subset accuracy and Hamming loss, for runs on a multi-label set: the
    run table's accuracy column holds only the subset accuracy, which punishes one wrong label of many."""
    lines = []
    for r in rows:
        m = r.get("multilabel")
        if not m or not m.get("n_scored"):
            continue
        card = m.get("cardinality") or {}
        per_row = f"{card['pred']:.2f} / {card['gold']:.2f}" if card else "-"
        lines.append(
            [r["name"], f"{m['n_scored']:,}", _ci(m.get("micro_f1"), m.get("micro_f1_ci")),
             _ci(m.get("macro_f1"), m.get("macro_f1_ci")), _pct(m.get("samples_f1")),
             _pct(m.get("subset_accuracy")), _ci(m.get("hamming_loss"), m.get("hamming_loss_ci")), per_row]
        )  # fmt: skip
    if not lines:
        return None
    return ScoreTable(
        "multilabel",
        "Multi-label",
        [
            "run",
            "rows",
            "micro-F1 (95% CI)",
            "macro-F1 (95% CI)",
            "sample-F1",
            "subset accuracy",
            "Hamming loss (95% CI)",
            "labels per row (predicted / gold)",
        ],  # fmt: skip
        lines,
        "On gold rows of runs with zero or more labels per text. Micro-F1 pools every (row, label) decision; "
        "macro-F1 averages the labels' F1; sample-F1 averages each row's; subset accuracy counts rows whose whole "
        "set is right (the run table's accuracy column for these runs); Hamming loss is the share of (row, label) "
        "decisions that are wrong. A student decides each label at the threshold distill tuned on validation.",
    )


def score_tables(rows: list[dict[str, Any]]) -> list[ScoreTable]:
    """The tables some run fills, in report order."""
    return [t for t in (calibration_table(rows), ordinal_table(rows), multilabel_table(rows)) if t is not None]
