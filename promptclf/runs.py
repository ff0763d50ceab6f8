"""Run folders and their records: where a run's outputs, resolved options and metrics live.

A labeling run ``-o labeled.csv`` writes ``labeled.csv`` and ``labeled.run/``; ``-o DIR``
(no table extension) writes ``DIR/labeled.csv`` and uses ``DIR`` as the run folder. A distill
run's folder is its ``-o``. Every run folder holds ``run.json``: a :class:`LabelRun` or a
:class:`DistillRun` (docs/ARCHITECTURE.md, "Run folder"), written with :meth:`RunRecord.save`
and read back with :func:`load_run`.

The records are the contract between the stages that write runs (label, distill) and those
that read them (eval, report). They read every ``run.json`` written so far: fields added
later have defaults, a record without ``kind`` is a label run, and keys this version does not
know are kept (and written back unchanged).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .data.tables import FORMATS
from .errors import InputError


def label_paths(output: str | Path) -> tuple[Path, Path]:
    """(labeled file, run folder) for a labeling run's ``-o``."""
    out = Path(output)
    if out.suffix.lower() in FORMATS:
        return out, out.with_name(out.stem + ".run")
    return out / "labeled.csv", out


def resolve_run_dir(path: str | Path) -> Path:
    """A run folder from a run folder, its ``run.json``, or a labeled file (``x.csv`` → ``x.run/``)."""
    p = Path(path)
    if p.is_file() and p.name == "run.json":
        return p.parent
    if p.is_dir():
        if (p / "run.json").is_file():
            return p
        raise InputError(
            f"{p}: no run.json in this folder; pass a run folder written by 'promptclf label' or 'distill'"
        )
    if p.suffix.lower() in FORMATS:
        cand = label_paths(p)[1]
        if (cand / "run.json").is_file():
            return cand
        raise InputError(f"{p}: no run folder {cand}/ beside this file; pass the folder 'promptclf label' wrote")
    raise InputError(f"{p}: no such run folder or labeled file")


def utc_now() -> str:
    """The ``created`` stamp of a run: UTC, to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Part(BaseModel):
    """A part of a run record: keys it does not declare are kept, so nothing in a file is lost."""

    model_config = ConfigDict(extra="allow")


class RunUsage(_Part):
    """What a run sent and received (a student's run sends nothing: all zeros)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    cached_requests: int = 0  # responses read from the store, not paid now
    failed_requests: int = 0
    reasks: int = 0  # items sent again after a response left them out or mislabelled them
    transport_retries: int = 0
    cached_prompt_tokens: int = 0  # part of prompt_tokens the provider served from its prompt cache
    batch_requests: int = 0  # responses fetched now through the provider's batch API


class Collapse(_Part):
    """:func:`promptclf.eval.metrics.collapse_check`: one label for over 90% of the answered items."""

    label: str
    share: float
    n: int
    gold_share: float | None = None
    n_gold: int = 0
    message: str


class Calibration(_Part):
    """What ``--calibrate`` divided every item's label probabilities by."""

    method: str
    content_free: list[str]
    prompts: int  # distinct prompts the content-free inputs went through
    probs: dict[str, float]  # the mean content-free distribution (averaged over prompts)


class RunRecord(_Part):
    """What every ``run.json`` holds, label run or student: what the report compares."""

    kind: Literal["label", "distill"]
    name: str = ""  # the folder name unless --name
    created: str = Field(default_factory=utc_now)
    options: dict[str, Any] = Field(default_factory=dict)  # resolved options, enough to reproduce the run
    input: str | None = None
    provider: str = ""
    model: str = ""
    labels: list[str] = Field(default_factory=list)
    gold_col: str | None = None
    output: str | None = None  # labeled file / predictions; relative paths are relative to the run folder
    n_items: int = 0  # rows scored
    usage: RunUsage = Field(default_factory=RunUsage)
    cost_usd: float = 0.0  # measured spend of this run (cached requests cost 0 now)
    cost_per_1k: float = 0.0  # dollars per 1,000 items at list price (cached included)
    wall_s: float = 0.0
    items_per_s: float = 0.0
    latency_s_median: float | None = None
    metrics: dict[str, Any] | None = None  # promptclf.eval.metrics.evaluate on rows with gold, shots excluded
    # Where this record was read from or saved to; never written into run.json.
    run_dir: Path | None = Field(default=None, exclude=True)

    def save(self, run_dir: str | Path, files: dict[str, str] | None = None) -> Path:
        """Write ``run.json``, ``options.json`` and extra text ``files`` into ``run_dir``; returns run.json."""
        d = Path(run_dir)
        d.mkdir(parents=True, exist_ok=True)
        if not self.name:
            self.name = d.name.removesuffix(".run")
        (d / "run.json").write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        (d / "options.json").write_text(json.dumps(self.options, indent=2, default=str) + "\n")
        for name, text in (files or {}).items():
            (d / name).write_text(text)
        self.run_dir = d
        return d / "run.json"

    def output_path(self) -> Path | None:
        """The labeled file / predictions, resolved against the run folder."""
        if not self.output:
            return None
        p = Path(self.output)
        return p if p.is_absolute() or self.run_dir is None else self.run_dir / p


class LabelSummary(_Part):
    """A labeling run's counts, coverage, accuracy, usage, cost and time (:meth:`Labeler.summary`)."""

    provider: str = ""
    model: str = ""
    labels: list[str] = Field(default_factory=list)
    n_rows: int = 0
    n_items: int = 0  # rows scored (not shots)
    n_shots: int = 0
    statuses: dict[str, int] = Field(default_factory=dict)  # ok / empty / invalid / error / shot -> rows
    coverage: float = 0.0  # share of the items labeled ok
    rerun_rows: int = 0  # rows a rerun of the same command would send again (error or unsent)
    usage: RunUsage = Field(default_factory=RunUsage)
    cost_usd: float = 0.0
    cost_per_1k: float = 0.0
    price_known: bool = True  # False: the model is not in the price table, so the costs read 0
    wall_s: float = 0.0
    items_per_s: float = 0.0
    latency_s_median: float | None = None
    metrics: dict[str, Any] | None = None
    collapse: Collapse | None = None
    calibration: Calibration | None = None
    # --candidates K: K, the mean labels a request showed, answers outside them, and the candidate recall on gold rows
    candidates: dict[str, Any] | None = None


class ThresholdChoice(_Part):
    """How ``--threshold auto`` chose the cascade's threshold on the student's validation rows."""

    target_agreement: float
    met: bool  # False: no threshold met the target, so every row went to the LLM
    n: int = 0  # validation rows it was measured on
    label_source: str = (
        "teacher"  # what the validation rows' labels are: the teacher's, or gold (distill --train-on gold)
    )
    agreement: float | None = None  # the cascade's labels vs those labels (the LLM's rows counted as agreeing)
    coverage: float | None = None  # share of validation rows the student keeps at the threshold
    student_agreement: float | None = None  # the student vs those labels, on the rows it keeps


class CascadeStats(_Part):
    """What ``label --student`` did: which rows the student labeled, which went to the LLM, and the saving."""

    student: str  # the student's run folder, absolute
    threshold: float | None  # the student keeps rows whose top probability is >= this; None: no row kept
    threshold_mode: Literal["fixed", "auto"] = "fixed"
    auto: ThresholdChoice | None = None  # how --threshold auto chose, measured on validation
    n_rows: int = 0
    n_student: int = 0  # rows labeled by the student
    n_llm: int = 0  # rows sent to the LLM's labeling path (every row the student did not keep)
    share_student: float = 0.0
    share_llm: float = 0.0
    llm_run: str | None = None  # the run folder of the LLM's part
    llm_cost_usd: float = 0.0  # measured spend of the LLM's part now (cached responses cost 0)
    llm_cost_per_1k_sent: float | None = None  # list price per 1,000 rows the LLM labeled; None: unknown
    llm_only_cost_usd: float | None = None  # estimated list cost of sending every row to the LLM
    saved_usd: float | None = None  # llm_only_cost_usd minus the LLM part's list cost
    saving_basis: str = ""  # how the estimate was made, in words
    student_s: float = 0.0  # seconds the student took over every row


class LabelRun(RunRecord, LabelSummary):
    """``run.json`` of ``promptclf label``: the summary plus where the rows came from and went."""

    kind: Literal["label"] = "label"
    cascade: CascadeStats | None = None  # --student: the student-first cascade's split and saving
    split: str | None = None
    dataset: str | None = None  # --save-dataset folder
    run_id: str | None = None  # the store's run id of this run's requests
    store: str | None = None


class TrainStats(_Part):
    """How a student was trained (``run.json["train"]``)."""

    time_s: float = 0.0  # training time, resumed sessions included
    session_time_s: float | None = None
    resumed_from_step: int | None = None
    steps: int | None = None
    epochs: float | None = None
    best_checkpoint_step: int | None = None
    best_val_macro_f1: float | None = None
    first_loss: float | None = None
    last_loss: float | None = None
    examples_per_s: float | None = None
    peak_memory_mb: float | None = None
    device: str | None = None
    threads: int | None = None
    processes: int = 1  # torchrun processes
    effective_batch_size: int | None = None  # batch_size x grad_accum x processes
    n_train: int | None = None
    n_val: int | None = None
    reload_max_abs_diff: float | None = None  # the saved student reloaded against the trained one
    reload_same_labels: bool | None = None
    hourly_price_usd: float | None = None
    train_cost_usd: float | None = None


class InferenceStats(_Part):
    """The student's measured prediction speed and what it costs (``run.json["inference"]``)."""

    items_per_s: float | None = None
    cost_per_1k: float | None = None
    measured_on: str | None = None  # "test" or "validation"
    n_items: int | None = None
    batch_size: int | None = None
    device: str | None = None


class DataCounts(_Part):
    """The rows a student was trained on, and those left out and why (``run.json["data"]``)."""

    input_rows: int | None = None
    not_ok: int | None = None
    no_label: int | None = None
    corrected: int | None = None  # rows whose label a person corrected
    excluded: int | None = None  # rows left out by --exclude
    held_out_for_test: int | None = None
    train_rows: int | None = None
    val_rows: int | None = None
    test_rows: int | None = None
    soft_rows: int | None = None  # rows trained on the teacher's distribution (--soft)


class TeacherRef(_Part):
    """The label run whose labels a student learned from (``run.json["teacher"]``): enough to name it
    and price its labels when its folder is not in a report."""

    run: str  # the label run's folder, absolute
    name: str = ""
    provider: str = ""
    model: str = ""
    prompt: str = ""  # "zero-shot", "few-shot (5/class)", "few-shot (5/class, similar)", with ", calibrated"
    n_items: int = 0  # rows it labeled
    cost_usd: float = 0.0  # what it spent labeling them (responses from the cache cost 0)
    cost_per_1k: float | None = None  # list price per 1,000 items; None where the model had no price
    hourly_price: float | None = None  # a --base-url server's $/h, when the label run recorded one

    @classmethod
    def of(cls, rec: LabelRun) -> TeacherRef:
        """The reference a student keeps to the label run ``rec`` (read from its folder)."""
        o = rec.options
        shots = o.get("shots")
        prompt = "zero-shot"
        if isinstance(shots, int) and shots > 0:
            similar = ", similar" if o.get("shot_selection") == "similar" else ""
            prompt = f"few-shot ({shots}/class{similar})"
        if o.get("calibrate"):
            prompt += ", calibrated"
        hourly = o.get("hourly_price")
        return cls(
            run=str(rec.run_dir.resolve()) if rec.run_dir else "",
            name=rec.name,
            provider=rec.provider,
            model=rec.model,
            prompt=prompt,
            n_items=rec.n_items,
            cost_usd=rec.cost_usd,
            cost_per_1k=rec.cost_per_1k if rec.price_known else None,
            hourly_price=float(hourly) if isinstance(hourly, (int, float)) else None,
        )


def teacher_of(labeled: str | Path) -> TeacherRef | None:
    """The label run behind a labeled file (its ``.run/`` folder beside it, or the run folder given), or None."""
    try:
        rec = load_run(labeled)
    except InputError:
        return None  # labels made elsewhere (or by hand): no run to name
    return TeacherRef.of(rec) if isinstance(rec, LabelRun) else None


class TemperatureScaling(_Part):
    """The temperature fitted on the student's validation split (``predict`` divides log-probabilities by it)."""

    temperature: float = 1.0
    fitted_on: str = "validation"
    n: int = 0
    label_accuracy: float | None = None  # how often the validation labels were taken to be right in the fit
    label_accuracy_from: str | None = None
    nll_before: float | None = None
    nll_after: float | None = None
    ece_before: float | None = None  # 15 bins
    ece_after: float | None = None


class DistillRun(RunRecord):
    """``run.json`` of ``promptclf distill``: a student, how it was trained and what it costs to run."""

    kind: Literal["distill"] = "distill"
    provider: str = "student"
    metrics_validation: dict[str, Any] | None = None
    teacher_agreement: float | None = None
    teacher_agreement_on: str | None = None  # "test" or "validation"
    teacher: TeacherRef | None = None  # the label run behind the training labels (None: gold, or not a run)
    data: DataCounts = Field(default_factory=DataCounts)
    train: TrainStats = Field(default_factory=TrainStats)
    inference: InferenceStats = Field(default_factory=InferenceStats)
    temperature_scaling: TemperatureScaling | None = None  # None: a run from before it was fitted (T = 1)
    # Ordinal students: {"head", "scores", "sigma" (regression), "validation": {mae, rmse, exact, within_one},
    # "test": eval.ordinal.ordinal_metrics on the gold test rows}; None for a plain label set.
    ordinal: dict[str, Any] | None = None
    # Multi-label students: {"thresholds": {label: t}, "tuned_on", "n_validation", "untuned" (left at 0.5),
    # "soft", "validation", "test_at_0_5", "teacher_on_test" (the teacher's figures on the same gold rows),
    # "student_vs_teacher_micro_f1"}; None for a single-label student.
    multi_label: dict[str, Any] | None = None


Run = Annotated[LabelRun | DistillRun, Field(discriminator="kind")]
_RUN: TypeAdapter[LabelRun | DistillRun] = TypeAdapter(Run)


def parse_run(data: object, where: str = "run.json") -> LabelRun | DistillRun:
    """A run record from ``run.json``'s parsed JSON (``where`` names it in errors)."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object")
    try:
        return _RUN.validate_python({"kind": "label", **data})  # records from before "kind" were label runs
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"][1:]) or "record"
        raise InputError(f"{where}: not a run record ({at}: {first['msg']})") from exc


def load_run(path: str | Path) -> LabelRun | DistillRun:
    """The record of a run folder (or of its ``run.json``, or of a labeled file beside its ``.run/``)."""
    d = resolve_run_dir(path)
    f = d / "run.json"
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{f}: not valid JSON ({exc})") from exc
    run = parse_run(data, str(f))
    run.run_dir = d
    return run
