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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..data.tables import FORMATS
from ..errors import InputError
from ..pricing.costs import break_even_items, compute_cost_per_1k, round_volume
from ..runs import DataCounts, DistillRun, LabelRun, label_paths, resolve_run_dir
from ..runs import load_run as load_record
from . import plots as report_plots
from .render import (
    GOLD,
    fmt_cost,
    fmt_pct,
    fmt_share,
    fmt_speed,
    fmt_times,
    render_html,
    render_markdown,
)

# --- loading ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One run folder, flattened into the numbers the report compares."""

    path: Path
    rec: LabelRun | DistillRun  # run.json, typed (promptclf.runs)
    name: str = ""
    metrics: dict[str, Any] | None = None
    teacher: str | None = None  # name of the label run the student learned from, or "gold"
    collapse: dict[str, Any] | None = None  # promptclf.eval.metrics.collapse_check: one label for nearly every item
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.rec.kind

    @property
    def is_student(self) -> bool:
        return self.kind == "distill"

    @property
    def options(self) -> dict[str, Any]:
        return self.rec.options

    @property
    def student(self) -> DistillRun | None:
        return self.rec if isinstance(self.rec, DistillRun) else None

    @property
    def cost_per_1k(self) -> float | None:
        st = self.student
        if st is not None and st.inference.cost_per_1k is not None:
            return _num(st.inference.cost_per_1k)
        return _num(self.rec.cost_per_1k)

    @property
    def items_per_s(self) -> float | None:
        st = self.student
        if st is not None:
            return _num(st.inference.items_per_s if st.inference.items_per_s is not None else st.items_per_s)
        if self.cached_share > 0:
            return None  # answers came from the response cache: the speed is the cache's, not the model's
        return _num(self.rec.items_per_s)

    @property
    def cached_share(self) -> float:
        """Share of a label run's requests answered from the cache (0 for students)."""
        u = self.rec.usage
        if self.is_student or not u.requests:
            return 0.0
        return u.cached_requests / u.requests

    @property
    def price_known(self) -> bool:
        return self.rec.price_known if isinstance(self.rec, LabelRun) else True

    @property
    def shots(self) -> int | None:
        v = self.options.get("shots")
        return int(v) if isinstance(v, (int, float)) else None

    def _label_treatment(self) -> str:
        """How a student used its labels: soft vs hard, review corrections, flagged rows left out."""
        o = self.options
        counts = self.student.data if self.student is not None else DataCounts()
        said = []
        if o.get("soft"):
            said.append(f"soft labels, T={_num(o.get('temperature')) or 2.0:g}")
        if o.get("corrections") or o.get("fallback_col"):
            n = counts.corrected
            said.append(f"{n} corrected labels" if n is not None else "corrected labels")
        if o.get("exclude"):
            n = counts.excluded
            said.append(f"{n} flagged rows left out" if n is not None else "flagged rows left out")
        # Plain hard-label students stay "student on X labels"; a soft one says so beside them.
        return f" ({'; '.join(said)})" if said else ""

    def describe(self) -> str:
        """``zero-shot``, ``few-shot (10/class)`` (local answer-only runs say so), or ``student on few-shot-10 labels``."""
        if self.is_student:
            if self.teacher == GOLD:
                return "student on gold labels"
            base = f"student on {self.teacher} labels" if self.teacher else "student"
            return base + self._label_treatment()
        # --calibrate changes the labels drawn from the same scores, so a calibrated run says so.
        calibrated = ", calibrated" if self.options.get("calibrate") else ""
        if self.shots:
            # Only the local model reads --shot-attention; "answer" is a different prompt, so say so.
            local_answer = self.rec.provider == "local" and self.options.get("shot_attention") == "answer"
            similar = ", similar" if self.options.get("shot_selection") == "similar" else ""
            attention = ", answer-only attention" if local_answer else ""
            return f"few-shot ({self.shots}/class{similar}{attention}{calibrated})"
        return f"zero-shot{calibrated}" if self.shots == 0 else f"prompted LLM{calibrated}"


def _num(v: object) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def load_run(path: str | Path) -> Run:
    """Read one run folder; metrics missing from run.json are computed from its output when it has gold."""
    rec = load_record(path)
    d = rec.run_dir or resolve_run_dir(path)
    run = Run(path=d, rec=rec, name=rec.name or d.name)
    run.metrics = rec.metrics if rec.metrics is not None else _metrics_from_output(run)
    run.collapse = _collapse(run)
    return run


def _output_path(run: Run) -> Path | None:
    out = run.rec.output
    if not out:
        return None
    p = Path(str(out))
    for cand in (run.path / p, run.path.parent / p, p):
        if cand.is_file():
            return cand
    return None


def _metrics_from_output(run: Run) -> dict[str, Any] | None:
    gold_col = run.rec.gold_col
    out = _output_path(run)
    if not gold_col or out is None:
        return None
    from ..data.tables import read_table
    from ..eval.metrics import evaluate

    df = read_table(out)
    if gold_col not in df.columns or "pred_label" not in df.columns:
        return None
    status = df["pred_status"].tolist() if "pred_status" in df.columns else None
    return evaluate(df[gold_col].tolist(), df["pred_label"].tolist(), run.rec.labels or None, status=status)


def _collapse(run: Run) -> dict[str, Any] | None:
    """The collapse warning the run recorded, or, for a label run that predates it, one computed from its output."""
    for src in (run.rec.model_dump(), run.metrics or {}):
        if "collapse" in src and src["collapse"] is not None:
            c = src["collapse"]
            return c if isinstance(c, dict) and c.get("message") else None
    out = _output_path(run)
    if run.is_student or out is None:
        return None
    from ..data.tables import read_table
    from ..eval.metrics import collapse_check

    df = read_table(out)
    if "pred_label" not in df.columns:
        return None
    gold_col = run.rec.gold_col
    gold = df[gold_col].tolist() if gold_col and gold_col in df.columns else None
    status = df["pred_status"].tolist() if "pred_status" in df.columns else None
    return collapse_check(df["pred_label"].tolist(), gold, status)


def _teacher_refs(run: Run) -> list[str]:
    """Strings in a distill run that may name its teacher: a run name, folder or labeled file."""
    refs: list[str] = []
    for src in (run.rec.model_dump(), run.options):
        for key in ("teacher", "teacher_run", "teacher_name", "train_file", "train", "input", "data", "labels_from"):
            v = src.get(key)
            if isinstance(v, str) and v:
                refs.append(v)
            elif isinstance(v, dict):
                refs += [str(x) for x in (v.get("name"), v.get("path"), v.get("run")) if x]
    # Last resort: the labeled file it was tested on. When the teacher's own run is not in the report,
    # an LLM run over the student's test rows (same prompt, typically) is the fair comparison.
    if run.options.get("eval_file"):
        refs.append(str(run.options["eval_file"]))
    return refs


def _match_teachers(runs: list[Run]) -> None:
    """Set ``teacher`` on each student: the label run it names (by name, folder or labeled file) or gold."""
    label_runs = [r for r in runs if not r.is_student]
    for s in (r for r in runs if r.is_student):
        t = s.rec.model_dump().get("teacher")
        if isinstance(t, dict):
            t = t.get("name") or t.get("kind")
        if (isinstance(t, str) and t.lower() == GOLD) or s.options.get("train_on") == GOLD:
            s.teacher = GOLD
            continue
        for ref in _teacher_refs(s):
            for lr in label_runs:
                if ref == lr.name or _same_run(ref, s.path, lr):
                    s.teacher = lr.name
                    break
            if s.teacher:
                break


def _same_run(ref: str, base: Path, lr: Run) -> bool:
    cands = {Path(ref), base / ref, base.parent / ref}
    targets = {lr.path.resolve()}
    out = _output_path(lr)
    if out is not None:
        targets.add(out.resolve())
    for c in cands:
        try:
            rc = c.resolve()
        except OSError:
            continue
        if rc in targets or (rc.suffix.lower() in FORMATS and label_paths(rc)[1] == lr.path.resolve()):
            return True
    return False


def _unique_names(runs: list[Run]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        base = r.name
        if base in seen:
            seen[base] += 1
            r.name = f"{base} ({r.path.parent.name or seen[base]})"
            if r.name in seen:
                r.name = f"{base} #{seen[base]}"
        seen.setdefault(r.name, 1)


# --- analysis --------------------------------------------------------------------------------


def _hourly_price(runs: list[Run], hourly_price: float | None) -> float | None:
    if hourly_price is not None:
        return hourly_price
    found = [_num(r.student.train.hourly_price_usd) for r in runs if r.student is not None]
    prices = [p for p in found if p is not None and p > 0]
    return max(prices) if prices else None


def _row(run: Run, hourly: float | None) -> dict[str, Any]:
    m = run.metrics or {}
    cost = run.cost_per_1k
    if cost == 0 and not run.price_known:
        cost = None  # no price in the table for this model: unknown, not free
    local_free = cost == 0 and run.rec.provider == "local"
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
        "accuracy": m.get("accuracy"),
        "accuracy_ci": m.get("accuracy_ci"),
        "macro_f1": m.get("macro_f1"),
        "macro_f1_ci": m.get("macro_f1_ci"),
        "coverage": m.get("coverage"),
        "cost_usd": _num(run.rec.cost_usd),
        "cost_per_1k": cost,
        "cost_is_local": local_free,
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
    }


def _break_even(student: dict[str, Any], teacher: dict[str, Any], hourly: float | None) -> dict[str, Any]:
    """Break-even volume at list prices and, when the LLM is a free local model, at compute prices."""
    out: dict[str, Any] = {
        "student": student["name"],
        "llm": teacher["name"],
        "llm_cost_per_1k": teacher["cost_per_1k"],
        "student_cost_per_1k": student["cost_per_1k"],
        "student_fixed_cost": student["train_cost_usd"] or 0.0,
        "items": break_even_items(teacher["cost_per_1k"], student["cost_per_1k"], student["train_cost_usd"]),
        "basis": "list price",
    }
    if out["items"] is None and teacher.get("cost_is_local") and teacher.get("compute_cost_per_1k") is not None:
        s_cost = (
            student["compute_cost_per_1k"] if student["compute_cost_per_1k"] is not None else student["cost_per_1k"]
        )
        out.update(
            llm_cost_per_1k=teacher["compute_cost_per_1k"],
            student_cost_per_1k=s_cost,
            items=break_even_items(teacher["compute_cost_per_1k"], s_cost, student["train_cost_usd"]),
            basis=f"compute time at ${hourly:g}/h",
        )
    return out


def _overlap(a: list[float] | None, b: list[float] | None) -> bool:
    return bool(a and b and a[0] <= b[1] and b[0] <= a[1])


def verdict(rows: list[dict[str, Any]], breakeven: list[dict[str, Any]]) -> list[str]:
    """Plain-language findings computed from the numbers; one sentence each."""
    out: list[str] = []
    llm = [r for r in rows if r["kind"] != "distill" and r["accuracy"] is not None]
    students = [r for r in rows if r["kind"] == "distill" and r["accuracy"] is not None]
    by_name = {r["name"]: r for r in rows}
    # First, because it changes how every other number reads: a run that gave one label to nearly everything.
    out += [f"Warning, {r['name']}: {r['collapse']['message']}" for r in rows if r.get("collapse")]
    if not llm and not students:
        return [*out, "No run has gold labels to score against, so the report compares cost and speed only."]
    if llm:
        best = max(llm, key=lambda r: r["accuracy"])
        out.append(
            f"Best prompted run: {best['name']}"
            + ("" if best["name"] == best["description"] else f", {best['description']}")
            + f" with {best['model']}: "
            f"{fmt_pct(best['accuracy'])} accuracy, {fmt_pct(best['macro_f1'])} macro-F1, "
            f"{fmt_cost(best)} per 1,000 items."
        )
        n_labels = len(best["per_class"]) or 0
        if n_labels > 1 and best["accuracy"] < 1.5 / n_labels:
            out.append(
                f"That is close to guessing ({100 / n_labels:.0f}% with {n_labels} labels): {best['model']} is "
                "too weak a teacher here; a larger model (a hosted provider or a bigger local one) should label better."
            )
        # Zero- vs few-shot only within one provider/model: across models the model is the difference.
        for key in dict.fromkeys((r["provider"], r["model"]) for r in llm):
            same = [r for r in llm if (r["provider"], r["model"]) == key]
            zero = [r for r in same if r["description"] == "zero-shot"]
            few = [r for r in same if r["description"].startswith("few-shot")]
            if not (zero and few):
                continue
            z = max(zero, key=lambda r: r["accuracy"])
            f = max(few, key=lambda r: r["accuracy"])
            diff = 100 * (f["accuracy"] - z["accuracy"])
            sig = (
                "the 95% confidence intervals overlap, so this sample does not show a clear difference"
                if _overlap(f["accuracy_ci"], z["accuracy_ci"])
                else "the 95% confidence intervals do not overlap"
            )
            out.append(
                f"With {key[1]}, few-shot examples ({f['name']}) change accuracy by {diff:+.1f} points over "
                f"zero-shot ({z['name']}); {sig}."
            )
    gold_students = [s for s in students if s["teacher"] == GOLD]
    for s in students:
        t = by_name.get(s["teacher"]) if s["teacher"] not in (None, GOLD) else None
        if s["teacher"] == GOLD:
            continue
        if t is None and llm:
            t = max(llm, key=lambda r: r["accuracy"])
            lead = f"The student {s['name']} (teacher not recorded; compared with the best prompted run {t['name']})"
        elif t is None:
            continue
        else:
            lead = f"The student trained on {t['name']}'s labels ({s['name']})"
        if t.get("accuracy"):
            ratio = s["accuracy"] / t["accuracy"]
            sent = f"{lead} reaches {100 * ratio:.1f}% of its accuracy ({fmt_pct(s['accuracy'])} vs {fmt_pct(t['accuracy'])})"
        else:
            sent = f"{lead} reaches {fmt_pct(s['accuracy'])} accuracy"
        be = next((b for b in breakeven if b["student"] == s["name"] and b["llm"] == t["name"]), None)
        if t["cost_per_1k"] and s["cost_per_1k"] is not None:
            sent += f" at {fmt_share(s['cost_per_1k'] / t['cost_per_1k'])} of its cost per 1,000 items"
        if s["items_per_s"] and t["items_per_s"]:
            r = s["items_per_s"] / t["items_per_s"]
            speed = f"{fmt_times(r)} faster" if r >= 1 else f"{fmt_times(1 / r)} slower"
            sent += f", {speed} ({fmt_speed(s['items_per_s'])} vs {fmt_speed(t['items_per_s'])} items/s)"
        if t.get("cost_is_local"):
            sent += f"; {t['name']} runs a local model with no list price"
        if be and be["items"] is not None:
            basis = "" if be["basis"] == "list price" else f", counting {be['basis']}"
            sent += f"; distilling pays off after {round_volume(be['items'])} items{basis}"
        elif be and t.get("cost_is_local") and not t["items_per_s"]:
            sent += f"; {t['name']}'s speed was not measured (answers came from the cache), so there is no break-even"
        elif be:
            sent += "; at these prices distilling never pays off in dollars"
        out.append(sent + ".")
        if s["teacher_agreement"] is not None:
            on = s.get("teacher_agreement_on") or "test"
            out.append(f"{s['name']} agrees with its teacher on {fmt_pct(s['teacher_agreement'])} of {on} items.")
    for g in gold_students:
        sent = f"The ceiling: a student trained on gold labels ({g['name']}) reaches {fmt_pct(g['accuracy'])}"
        peers = [s for s in students if s["teacher"] not in (None, GOLD)]
        if peers:
            p = max(peers, key=lambda r: r["accuracy"])
            sent += f"; the best student on LLM labels ({p['name']}) recovers {100 * p['accuracy'] / g['accuracy']:.1f}% of it"
        out.append(sent + ".")
    return out


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
) -> dict[str, Path]:
    """Compare runs and write ``index.html``, ``report.md`` (+ PNGs) and ``report.json`` into ``out_dir``.

    ``run_dirs`` are run folders or labeled files (``x.csv`` → ``x.run/``). ``hourly_price``
    (dollars per machine-hour) prices measured throughput so a free local model can be weighed
    against a student; by default it is the price the distill runs recorded, if any.
    Returns the paths written, keyed ``html``, ``markdown``, ``json`` and one per figure.
    """
    if not run_dirs:
        raise InputError("no runs given; pass run folders (or labeled files) written by 'promptclf label'/'distill'")
    runs = [load_run(p) for p in run_dirs]
    _unique_names(runs)
    _match_teachers(runs)
    hourly = _hourly_price(runs, hourly_price)
    rows = [_row(r, hourly) for r in runs]
    by_name = {r["name"]: r for r in rows}
    llm_rows = [r for r in rows if r["kind"] != "distill"]
    breakeven = []
    for s in (r for r in rows if r["kind"] == "distill"):
        t = by_name.get(s["teacher"]) if s["teacher"] not in (None, GOLD) else None
        if t is None and s["teacher"] is None and llm_rows:
            scored = [r for r in llm_rows if r["accuracy"] is not None]
            t = max(scored, key=lambda r: r["accuracy"]) if scored else None
        if t is not None:
            breakeven.append(_break_even(s, t, hourly))
    lines = verdict(rows, breakeven)

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
    all_labels = _label_order(runs, rows)
    for r in rows:
        r["confusion"] = _reorder_confusion(r["confusion"], all_labels)
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
        "verdict": lines,
        "images": {k: v.name for k, v in images.items()},
    }
    paths["json"].write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    for k, v in images.items():
        paths[f"image:{k}"] = v
    return paths
