"""The accuracy-cost frontier of a student-first cascade run (``label --student``), for the report.

A cascade run's labeled file carries, on every row, the student's answer (``student_label``,
``student_prob``) and, on the rows under the run's threshold ``T``, the LLM's (``pred_label`` where
``pred_source`` is ``llm``). So the cascade at any threshold ``t <= T`` is known exactly (the rows
between ``t`` and ``T`` have both answers), and so is the student alone; the LLM alone is known only
when no row was kept by the student (a run at ``--threshold 1``, or ``auto`` that kept none). Costs:
the LLM's measured list cost per row it labeled, the student's recorded CPU cost per 1,000 items.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from ..data.tables import read_table
from ..errors import InputError
from ..eval.cascade import DEFAULT_THRESHOLDS, frontier
from ..runs import DistillRun, LabelRun, load_run


def student_cost_per_1k(student_dir: str) -> float:
    """The student's recorded prediction cost per 1,000 items (0 when its run folder is gone)."""
    try:
        rec = load_run(student_dir)
    except InputError:
        return 0.0
    return float(rec.inference.cost_per_1k or 0.0) if isinstance(rec, DistillRun) else 0.0


def cascade_points(run: LabelRun) -> list[dict[str, Any]] | None:
    """The frontier points (dicts of :class:`~promptclf.eval.cascade.FrontierPoint`) a cascade run supports,
    or None: not a cascade run, no gold column, no LLM price, or a labeled file without the student's columns."""
    c = run.cascade
    path = run.output_path()
    if c is None or not run.gold_col or c.llm_cost_per_1k_sent is None or path is None or not path.exists():
        return None
    df = read_table(path)
    if not {"student_label", "student_prob", "pred_source", run.gold_col} <= set(df.columns):
        return None
    prob = np.array([float(v) if str(v).strip() else 0.0 for v in df["student_prob"]], dtype=float)
    sent = (df["pred_source"] != "student").to_numpy()
    llm = np.where(sent, df["pred_label"].astype(str).to_numpy(), "")
    top = c.threshold if c.threshold is not None else float("inf")
    extra = {"this run": c.threshold} if c.threshold is not None else {}
    points = frontier(
        df["student_label"].astype(str).tolist(), prob, llm.tolist(), df[run.gold_col].astype(str).tolist(),
        llm_cost_per_1k=c.llm_cost_per_1k_sent, student_cost_per_1k=student_cost_per_1k(c.student),
        thresholds=[t for t in DEFAULT_THRESHOLDS if t <= top], extra=extra,
    )  # fmt: skip
    kept_any = bool((~sent).any())
    return [asdict(p) for p in points if not (p.name == "LLM only" and kept_any)]
