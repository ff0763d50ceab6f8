"""Run folders as the report reads them: one :class:`Run` per folder, its metrics and its teacher.

A run's metrics come from its ``run.json``, or are computed from its output when it has gold;
each student is matched to the label run whose labels it learned from (the teacher it recorded,
else one it names by folder or labeled file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..data.tables import FORMATS
from ..runs import DataCounts, DistillRun, LabelRun, label_paths, resolve_run_dir
from ..runs import load_run as load_record
from .render import GOLD


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
        if o.get("soft"):  # a multi-label student's soft targets are per-label probabilities, with no temperature
            multi = o.get("multi_label") or (self.student is not None and self.student.multi_label)
            said.append("soft labels" if multi else f"soft labels, T={_num(o.get('temperature')) or 2.0:g}")
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
            if self.options.get("multi_label") or (self.student is not None and self.student.multi_label):
                base += ", multi-label: subset accuracy"  # its accuracy column, as for a multi-label label run
            return base + self._label_treatment()
        # --calibrate changes the labels drawn from the same scores, so a calibrated run says so.
        calibrated = ", calibrated" if self.options.get("calibrate") else ""
        if self.shots:
            # Only the local model reads --shot-attention; "answer" is a different prompt, so say so.
            local_answer = self.rec.provider == "local" and self.options.get("shot_attention") == "answer"
            similar = ", similar" if self.options.get("shot_selection") == "similar" else ""
            attention = ", answer-only attention" if local_answer else ""
            return f"few-shot ({self.shots}/class{similar}{attention}{calibrated})"
        if self.options.get("multi_label"):  # its accuracy is the subset (exact-set) accuracy
            calibrated += ", multi-label: subset accuracy"
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
    conf = df["pred_prob"].tolist() if "pred_prob" in df.columns else None
    return evaluate(
        df[gold_col].tolist(), df["pred_label"].tolist(), run.rec.labels or None, status=status, confidence=conf
    )


def _collapse(run: Run) -> dict[str, Any] | None:
    """The collapse warning the run recorded, or, for a label run that predates it, one computed from its output."""
    # A record that has the field (set, even to null) decides; only older ones are recomputed.
    if "collapse" in run.rec.model_fields_set:
        c = getattr(run.rec, "collapse", None)
        c = c.model_dump() if isinstance(c, BaseModel) else c
        return c if isinstance(c, dict) and c.get("message") else None
    if run.metrics is not None and "collapse" in run.metrics:
        c = run.metrics["collapse"]
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
                refs += [
                    str(x) for x in (v.get("run"), v.get("path"), v.get("name")) if x
                ]  # the folder first: names repeat
    # Last resort: the labeled file it was tested on. When the teacher's own run is not in the report,
    # an LLM run over the student's test rows (same prompt, typically) is the fair comparison.
    if run.options.get("eval_file"):
        refs.append(str(run.options["eval_file"]))
    return refs


def match_teachers(runs: list[Run]) -> None:
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


def unique_names(runs: list[Run]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        base = r.name
        if base in seen:
            seen[base] += 1
            r.name = f"{base} ({r.path.parent.name or seen[base]})"
            if r.name in seen:
                r.name = f"{base} #{seen[base]}"
        seen.setdefault(r.name, 1)
