"""Compare run folders side by side: prompted LLM runs (zero-/few-shot, any provider) and distilled students.

``build_report(runs, out_dir)`` reads each run's ``run.json`` (docs/ARCHITECTURE.md) and writes

* ``index.html``: one self-contained file (inline CSS, figures as base64 PNG data URIs, no
  external resources), so it can be mailed or opened offline;
* ``report.md`` with the PNGs beside it;
* ``report.json``: the table, break-even volumes and verdict as data.

Nothing from the environment is written; run options never hold API keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..pricing.costs import compute_cost_per_1k
from ..runs import LabelRun
from . import plots as report_plots
from .cascade import cascade_points
from .costs import break_even, label_cost, machine_hourly_price, student_cost, teacher_label_cost
from .gold import agreement, read_gold, score_against
from .load import Run, _num, load_run, match_teachers, unique_names
from .render import GOLD, render_html, render_markdown
from .verdict import verdict


def _row(run: Run, hourly: float | None, explicit: float | None, prices: str | None) -> dict[str, Any]:
    m = run.metrics or {}
    cost = student_cost(run, hourly) if run.is_student else label_cost(run, explicit, prices)
    st = run.student
    return {
        "name": run.name,
        "kind": run.kind,
        "description": run.describe(),
        "provider": run.rec.provider,
        "model": run.rec.model,
        "path": str(run.path),
        "n_items": run.rec.n_items,
        "n_scored": m.get("n_scored"),
        # A multi-label run's exact-match (subset) accuracy stands in its accuracy column; its row says so.
        "accuracy": m.get("subset_accuracy") if m.get("multi_label") else m.get("accuracy"),
        "accuracy_ci": m.get("subset_accuracy_ci") if m.get("multi_label") else m.get("accuracy_ci"),
        "macro_f1": m.get("macro_f1"),
        "macro_f1_ci": m.get("macro_f1_ci"),
        "coverage": m.get("coverage"),
        "calibration": m.get("calibration"),
        "ordinal": m.get("ordinal"),
        "multilabel": m if m.get("multi_label") else None,  # micro/macro-F1, Hamming: the multi-label table
        "cost_usd": _num(run.rec.cost_usd),
        **cost,
        # What the same work costs when the machine is rented by the hour: makes a $0 local run
        # comparable with a student whose cost is its (CPU/GPU) time.
        "compute_cost_per_1k": compute_cost_per_1k(run.items_per_s, hourly)
        if hourly and (run.is_student or run.rec.provider == "local")
        else None,  # a hosted API's throughput says nothing about renting a machine
        "items_per_s": run.items_per_s,
        "cached_share": run.cached_share,
        "latency_s_median": _num(run.rec.latency_s_median),
        "wall_s": _num(run.rec.wall_s),
        "train_cost_usd": _num(st.train.train_cost_usd) if st else None,
        "train_time_s": _num(st.train.time_s) if st else None,
        "teacher": run.teacher,
        "teacher_agreement": _num(st.teacher_agreement) if st else None,
        "teacher_agreement_on": st.teacher_agreement_on if st else None,
        "per_class": m.get("per_class") or {},
        "confusion": m.get("confusion") or {},
        "collapse": run.collapse,
        "gold_match": run.extra.get("gold"),
    }


# --- writing ---------------------------------------------------------------------------------


def _label_order(runs: list[Run], rows: list[dict[str, Any]]) -> list[str]:
    """One label order for every figure: the label runs' label sets first, then any other label seen."""
    order: list[str] = []
    sources = [r.rec.labels for r in runs if not r.is_student] + [r.rec.labels for r in runs]
    for labels in sources + [list(row["per_class"]) for row in rows]:
        if isinstance(labels, list):
            order += [str(lab) for lab in labels if str(lab) not in order]
    return order


def _reorder_confusion(conf: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """The confusion matrix with rows and label columns in ``order``; extra columns such as (none) stay last."""
    labels = list(conf.get("labels") or [])
    matrix = conf.get("matrix") or []
    if not labels or not matrix or labels == [lab for lab in order if lab in labels]:
        return conf
    cols = list(conf.get("columns") or labels)
    new_labels = [lab for lab in order if lab in labels] + [lab for lab in labels if lab not in order]
    new_cols = new_labels + [c for c in cols if c not in labels]
    ri = {lab: i for i, lab in enumerate(labels)}
    ci = {c: j for j, c in enumerate(cols)}
    if len(cols) != len(matrix[0]):
        return conf  # malformed: leave it as recorded
    new_matrix = [[matrix[ri[r]][ci[c]] for c in new_cols] for r in new_labels]
    return {**conf, "labels": new_labels, "columns": new_cols, "matrix": new_matrix}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def build_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    title: str = "promptclf: prompting vs fine-tuning",
    hourly_price: float | None = None,
    prices: str | Path | None = None,
    gold: str | Path | None = None,
    gold_col: str | None = None,
    gold_on: str = "text",
) -> dict[str, Path]:
    """Compare runs and write ``index.html``, ``report.md`` (+ PNGs) and ``report.json`` into ``out_dir``.

    ``run_dirs`` are run folders or labeled files (``x.csv`` → ``x.run/``). ``hourly_price``
    (dollars per machine-hour) prices measured throughput so a free local model can be weighed
    against a student; by default it is the price the distill runs recorded, if any. Given
    here, it also prices a ``--base-url`` (self-hosted) run with no list price by its machine
    time. ``prices`` (a JSON price table) prices runs whose model was not in the table when they ran.
    ``gold`` (a table) with ``gold_col`` scores every run against that file instead of its own
    gold, joined by the column ``gold_on`` (the text, or a row id); with no gold anywhere the
    verdict says so and shows how often the runs agree.
    Returns the paths written, keyed ``html``, ``markdown``, ``json`` and one per figure.
    """
    if not run_dirs:
        raise InputError("no runs given; pass run folders (or labeled files) written by 'promptclf label'/'distill'")
    if gold is not None and not gold_col:
        raise InputError("--gold needs --gold-col: the gold file's column with the true labels")
    gold_table = read_gold(gold, gold_col, gold_on) if gold is not None and gold_col else None
    runs = [load_run(p) for p in run_dirs]
    if gold_table is not None:
        score_against(runs, gold_table)
    unique_names(runs)
    match_teachers(runs)
    hourly = machine_hourly_price(runs, hourly_price)
    rows = [_row(r, hourly, hourly_price, str(prices) if prices else None) for r in runs]
    by_name = {r["name"]: r for r in rows}
    for run, row in zip(runs, rows, strict=True):
        if run.student is not None:
            t = by_name.get(row["teacher"]) if row["teacher"] not in (None, GOLD) else None
            row.update(teacher_label_cost(run, t))
            rec = run.student.teacher
            row["teacher_record"] = rec.model_dump(mode="json") if rec is not None else None
    llm_rows = [r for r in rows if r["kind"] != "distill"]
    breakeven = []
    for s in (r for r in rows if r["kind"] == "distill"):
        t = by_name.get(s["teacher"]) if s["teacher"] not in (None, GOLD) else None
        # A student whose recorded teacher is not in the report is not compared with another run.
        if t is None and s["teacher"] is None and not s.get("teacher_record") and llm_rows:
            scored = [r for r in llm_rows if r["accuracy"] is not None]
            t = max(scored, key=lambda r: r["accuracy"]) if scored else None
        if t is not None:
            breakeven.append(break_even(s, t, hourly))
    agreements = agreement(runs) if all(r["accuracy"] is None for r in rows) else []
    lines = verdict(rows, breakeven, gold_table.source if gold_table else None, agreements)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    if (p := report_plots.accuracy_vs_cost(rows, out / "accuracy_vs_cost.png")) is not None:
        images["accuracy_vs_cost"] = p
    if (
        len([r for r in rows if r["items_per_s"]]) > 1
        and (p := report_plots.throughput(rows, out / "throughput.png")) is not None
    ):
        images["throughput"] = p
    for run, row in zip(runs, rows, strict=True):
        pts = cascade_points(run.rec) if isinstance(run.rec, LabelRun) else None
        if pts:  # a student-first cascade run: accuracy against cost at the thresholds its rows support
            row["cascade_frontier"] = pts
            title = f"Cascade {run.name}: student first, LLM for the rest"
            if (p := report_plots.cascade_frontier(pts, out / f"cascade_{_slug(run.name)}.png", title)) is not None:
                images[f"cascade:{run.name}"] = p
    all_labels = _label_order(runs, rows)
    for r in rows:
        r["confusion"] = _reorder_confusion(r["confusion"], all_labels)
    if (p := report_plots.reliability(rows, out / "reliability.png")) is not None:
        images["reliability"] = p
    if (p := report_plots.per_class_f1(rows, all_labels, out / "per_class_f1.png")) is not None:
        images["per_class_f1"] = p
    for r in rows:
        if r["confusion"].get("matrix"):
            p = report_plots.confusion(r["name"], r["confusion"], out / f"confusion_{_slug(r['name'])}.png")
            if p is not None:
                images[f"confusion:{r['name']}"] = p

    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    paths = {"html": out / "index.html", "markdown": out / "report.md", "json": out / "report.json"}
    paths["html"].write_text(render_html(title, created, rows, breakeven, lines, images, hourly), encoding="utf-8")
    paths["markdown"].write_text(
        render_markdown(title, created, rows, breakeven, lines, images, hourly), encoding="utf-8"
    )
    doc = {
        "title": title,
        "created": created,
        "hourly_price_usd": hourly,
        "runs": [{k: v for k, v in r.items() if k != "confusion"} | {"confusion": r["confusion"]} for r in rows],
        "break_even": breakeven,
        "gold": gold_table.source if gold_table else None,
        "agreement": agreements,
        "verdict": lines,
        "images": {k: v.name for k, v in images.items()},
    }
    paths["json"].write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    for k, v in images.items():
        paths[f"image:{k}"] = v
    return paths
