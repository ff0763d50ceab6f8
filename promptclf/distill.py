"""Distillation: fine-tune a small local student on the labels an LLM produced.

``distill(input, out_dir, options)`` reads a labeled file (``promptclf label`` output),
trains on the teacher's ``ok`` labels (or the gold labels with ``train_on="gold"``, the
ceiling), holds out gold rows for evaluation (never trained on), and writes a run folder:
the adapter or model, tokenizer, ``labels.json``, ``options.json``, ``student.json``,
``train_log.jsonl``, ``predictions.csv`` (gold test rows) and ``run.json``.

Training is resumable: checkpoints go to ``OUT/checkpoints``; Ctrl-C saves one and stops,
and rerunning the same command continues from the last checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .data import cell_text, check_columns, read_table, stratified_split, write_table
from .distill_models import DEFAULT_LM_PROMPT, MINILM_ALIASES
from .errors import ConfigError, InputError, TrainingError

# Dollars per hour used for train_cost_usd and inference cost_per_1k unless --hourly-price is given:
# a small 2-vCPU cloud VM, and one rented 24-80 GB GPU.
DEFAULT_CPU_HOURLY_USD = 0.10
DEFAULT_GPU_HOURLY_USD = 2.50

# Options that do not change what is trained; a rerun may change them and still resume.
_RESUME_NEUTRAL = {"threads", "hourly_price", "name", "eval_batch_size", "logging_steps", "recipe"}


def _log(msg: str) -> None:
    print(f"[distill] {msg}", file=sys.stderr, flush=True)


class DistillOptions(BaseModel):
    """Everything that decides what a distillation run trains and how; saved as ``options.json``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # data
    text_col: str = "text"
    label_col: str = Field("pred_label", description="the teacher's label column")
    status_col: str = Field("pred_status", description="train only on rows whose status is 'ok' (if present)")
    gold_col: str | None = Field("label", description="gold labels: evaluation only, unless train_on='gold'")
    train_on: Literal["teacher", "gold"] = "teacher"
    eval_file: str | None = Field(None, description="a gold test file; default: hold out test_fraction of gold rows")
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.2, ge=0.0, lt=0.9)
    seed: int = 0

    # student
    student: str = "minilm"
    method: Literal["lora", "full", "qlora"] = "lora"
    head: Literal["cls", "lm"] = "cls"
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None  # None = attention projections of the family
    lm_prompt: str = DEFAULT_LM_PROMPT
    allow_cpu: bool = False  # QLoRA on CPU (slow; bitsandbytes NF4 with float32 compute)

    # training
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    learning_rate: float | None = Field(None, gt=0, description="default 5e-4 LoRA, 2e-4 QLoRA, 5e-5 full")
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(128, ge=8)
    padding: Literal["dynamic", "max_length"] = Field(
        "dynamic", description="dynamic: pad each length-grouped batch to its longest text; max_length: always pad"
    )
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0)
    patience: int = Field(2, ge=0, description="evaluations without macro-F1 gain before stopping; 0 = never")
    eval_steps: int | None = Field(None, ge=1, description="evaluate+checkpoint every N steps; default every epoch")
    logging_steps: int = Field(10, ge=1)
    gradient_checkpointing: bool | None = None  # None = on for causal LMs
    threads: int | None = Field(None, ge=1)
    hourly_price: float | None = Field(None, ge=0.0, description="$/hour of the machine; default CPU 0.10, GPU 2.50")

    # bookkeeping
    name: str | None = None
    recipe: str | None = None

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        v = [t.strip() for t in v if t.strip()]
        return v or None

    @model_validator(mode="after")
    def _check(self) -> DistillOptions:
        if self.head == "lm" and self.student.strip().lower() in MINILM_ALIASES:
            raise ValueError("--head lm needs a causal LM student (Llama, Qwen, SmolLM2, ...), not MiniLM")
        if self.train_on == "gold" and not self.gold_col:
            raise ValueError("--train-on gold needs --gold-col")
        if "{text}" not in self.lm_prompt:
            raise ValueError("lm_prompt must contain {text}")
        return self

    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return {"lora": 5e-4, "qlora": 2e-4, "full": 5e-5}[self.method]

    @classmethod
    def build(cls, recipe: str | None = None, **kwargs: Any) -> DistillOptions:
        """Recipe values, overridden by the given (non-None) options; pydantic errors → ConfigError."""
        from pydantic import ValidationError

        values: dict[str, Any] = {}
        if recipe:
            values.update(load_recipe(recipe))
            values["recipe"] = recipe
        values.update({k: v for k, v in kwargs.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            msgs = [f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()]
            raise ConfigError("; ".join(msgs)) from exc


def recipe_names() -> list[str]:
    """Names of the packaged recipes (``distill/*.yaml``)."""
    from .resources import resource_dir

    return sorted(p.stem for p in resource_dir("distill").glob("*.yaml"))


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A recipe as a dict of DistillOptions fields: a YAML path, or the name of a packaged one."""
    import yaml

    from .resources import resource_dir

    path = Path(name_or_path)
    if not path.exists():
        stem = name_or_path.removesuffix(".yaml").removesuffix(".yml")
        path = resource_dir("distill") / f"{stem}.yaml"
        if not path.exists():
            raise ConfigError(f"recipe {name_or_path!r}: no such file or packaged recipe; packaged: {recipe_names()}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of option: value")
    data.pop("description", None)  # free text for humans
    return {str(k).replace("-", "_"): v for k, v in data.items()}


# --- data --------------------------------------------------------------------------------------


@dataclass
class DistillData:
    """Texts and labels split for training, validation and gold testing."""

    labels: list[str]
    train_texts: list[str]
    train_y: list[int]
    val_texts: list[str]
    val_y: list[int]
    test_texts: list[str] = field(default_factory=list)
    test_gold: list[str] = field(default_factory=list)
    test_teacher: list[str] | None = None  # teacher label per test row ('' when not ok)
    counts: dict[str, int] = field(default_factory=dict)


def _clean(series: Any) -> list[str]:
    return [cell_text(v).strip() for v in series]


def prepare_data(input_path: str | Path, o: DistillOptions) -> DistillData:
    """Read the labeled file, pick trainable rows, split train/validation/test (seeded, stratified)."""
    df = read_table(input_path)
    src_col, src_opt = (
        (o.label_col, "--label-col") if o.train_on == "teacher" else (o.gold_col or "label", "--gold-col")
    )
    check_columns(df, [o.text_col], input_path, "--text-col")
    check_columns(df, [src_col], input_path, src_opt)
    texts = [cell_text(v) for v in df[o.text_col]]
    y = _clean(df[src_col])
    teacher = _clean(df[o.label_col]) if o.label_col in df.columns else None
    status_ok = [True] * len(df)
    if o.status_col in df.columns:
        status_ok = [s.lower() == "ok" for s in _clean(df[o.status_col])]
    if teacher is not None:
        teacher = [t if ok else "" for t, ok in zip(teacher, status_ok, strict=True)]
    has_text_label = [bool(t.strip()) and bool(lab) for t, lab in zip(texts, y, strict=True)]
    counts = {"input_rows": len(df)}
    if o.train_on == "teacher":
        counts["not_ok"] = sum(1 for ok in status_ok if not ok)
        usable = [u and ok for u, ok in zip(has_text_label, status_ok, strict=True)]
        counts["no_label"] = sum(1 for u, ok in zip(has_text_label, status_ok, strict=True) if ok and not u)
    else:
        usable = has_text_label
        counts["no_label"] = sum(1 for u in usable if not u)

    test_texts: list[str] = []
    test_gold: list[str] = []
    test_teacher: list[str] | None = None
    in_test = [False] * len(df)
    if o.eval_file:
        ev = read_table(o.eval_file)
        check_columns(ev, [o.text_col], o.eval_file, "--text-col")
        check_columns(ev, [o.gold_col or "label"], o.eval_file, "--gold-col")
        ev_texts = [cell_text(v) for v in ev[o.text_col]]
        ev_gold = _clean(ev[o.gold_col or "label"])
        keep = [i for i, g in enumerate(ev_gold) if g and ev_texts[i].strip()]
        test_texts = [ev_texts[i] for i in keep]
        test_gold = [ev_gold[i] for i in keep]
        if o.label_col in ev.columns:
            ev_teacher = _clean(ev[o.label_col])
            if o.status_col in ev.columns:
                ev_status = _clean(ev[o.status_col])
                ev_teacher = [t if s.lower() == "ok" else "" for t, s in zip(ev_teacher, ev_status, strict=True)]
            test_teacher = [ev_teacher[i] for i in keep]
        # The same text in the eval file and the training file would leak: drop it from training.
        seen = set(test_texts)
        in_test = [t in seen for t in texts]
    elif o.gold_col and o.gold_col in df.columns and o.test_fraction > 0:
        gold = _clean(df[o.gold_col])
        cand = [i for i, g in enumerate(gold) if g and texts[i].strip()]
        _, test_pos = stratified_split([gold[i] for i in cand], o.test_fraction, seed=o.seed)
        test_idx = [cand[p] for p in test_pos]
        for i in test_idx:
            in_test[i] = True
        test_texts = [texts[i] for i in test_idx]
        test_gold = [gold[i] for i in test_idx]
        if teacher is not None:
            test_teacher = [teacher[i] for i in test_idx]
    counts["held_out_for_test"] = sum(1 for u, t in zip(usable, in_test, strict=True) if u and t)
    pool = [i for i, (u, t) in enumerate(zip(usable, in_test, strict=True)) if u and not t]

    pool_y = [y[i] for i in pool]
    freq: dict[str, int] = {}
    for lab in pool_y:
        freq[lab] = freq.get(lab, 0) + 1
    where = (
        f"{input_path} ({src_col!r}{', status ok' if o.train_on == 'teacher' and o.status_col in df.columns else ''})"
    )
    if not freq:
        raise TrainingError(f"{where}: no rows to train on; {counts}")
    if len(freq) < 2:
        (only, n), *_ = freq.items()
        raise TrainingError(f"{where}: only one class ({only!r}, {n} rows) to train on; a classifier needs two or more")
    few = {lab: n for lab, n in freq.items() if n < 2}
    if few:
        raise TrainingError(
            f"{where}: too few training rows for class(es) "
            + ", ".join(f"{lab!r} ({n} row{'s' if n != 1 else ''})" for lab, n in sorted(few.items()))
            + "; each class needs at least 2 (one to train, one to validate): add rows or drop the class"
        )
    labels = sorted(freq)
    lab_id = {lab: i for i, lab in enumerate(labels)}
    tr_pos, va_pos = stratified_split(pool_y, o.val_fraction, seed=o.seed + 1)
    if not va_pos:
        raise TrainingError(
            f"{where}: {len(pool)} training rows are too few for a validation split at --val-fraction "
            f"{o.val_fraction}; add rows or raise --val-fraction"
        )
    counts.update(train_rows=len(tr_pos), val_rows=len(va_pos), test_rows=len(test_texts))
    return DistillData(
        labels=labels,
        train_texts=[texts[pool[p]] for p in tr_pos],
        train_y=[lab_id[pool_y[p]] for p in tr_pos],
        val_texts=[texts[pool[p]] for p in va_pos],
        val_y=[lab_id[pool_y[p]] for p in va_pos],
        test_texts=test_texts,
        test_gold=test_gold,
        test_teacher=test_teacher,
        counts=counts,
    )


# --- metrics -----------------------------------------------------------------------------------


def _evaluate(gold: list[str], pred: list[str], labels: list[str]) -> dict[str, Any]:
    """Metrics over the student's labels plus any gold label it never saw in training."""
    from .metrics import evaluate

    all_labels = list(labels) + sorted({g for g in gold if g and g not in labels})
    return evaluate(gold, pred, all_labels, status=None)


# --- the run -----------------------------------------------------------------------------------


def _same_options(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    keys = (set(saved) | set(now)) - _RESUME_NEUTRAL
    return sorted(k for k in keys if saved.get(k) != now.get(k))


def distill(
    input_path: str | Path, out_dir: str | Path, options: DistillOptions, restart: bool = False
) -> dict[str, Any]:
    """Train a student on ``input_path`` into ``out_dir`` and return its ``run.json`` dict.

    A finished run folder is returned as is (pass ``restart=True`` to train again); an
    unfinished one with the same options resumes from its last checkpoint.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: exists and is not a folder")
    opts = options.model_dump(mode="json")
    saved_path = out / "options.json"
    if restart and out.exists():
        for name in ("checkpoints", "run.json", "train_time.json", "train_log.jsonl"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    elif saved_path.exists() and ((out / "checkpoints").is_dir() or (out / "run.json").exists()):
        # Only a folder with training progress is protected; one that failed before its first
        # checkpoint (say, QLoRA refused without a GPU) just takes the new options.
        diff = _same_options(json.loads(saved_path.read_text()), opts)
        if diff:
            raise ConfigError(
                f"{out} holds a run with different options ({', '.join(diff)}); "
                "use another -o folder, or --restart to discard it and train anew"
            )
        if (out / "run.json").exists():
            _log(f"{out} is already finished; returning its run.json (--restart trains again)")
            return json.loads((out / "run.json").read_text())

    data = prepare_data(input_path, options)
    _log(
        f"{len(data.train_texts)} train / {len(data.val_texts)} validation / {len(data.test_texts)} gold test rows, "
        f"{len(data.labels)} labels; skipped: {data.counts.get('not_ok', 0)} not ok, "
        f"{data.counts['no_label']} without label or text"
    )
    out.mkdir(parents=True, exist_ok=True)
    saved_path.write_text(json.dumps(opts, indent=2) + "\n")
    (out / "labels.json").write_text(json.dumps(data.labels, indent=2) + "\n")

    from .distill_train import train

    result = train(data, options, out)
    return finish_run(out, data, options, result, str(input_path))


def finish_run(out: Path, data: DistillData, o: DistillOptions, tr: dict[str, Any], input_path: str) -> dict[str, Any]:
    """Reload the saved student, evaluate it, write predictions.csv and run.json."""
    import statistics

    import pandas as pd

    from .predict import Student

    student = Student.load(out)
    on_gpu = student.device.startswith("cuda")
    price = (
        o.hourly_price if o.hourly_price is not None else (DEFAULT_GPU_HOURLY_USD if on_gpu else DEFAULT_CPU_HOURLY_USD)
    )

    val_probs = student.predict_proba(data.val_texts, batch_size=o.eval_batch_size)
    val_pred = [data.labels[j] for j in val_probs.argmax(-1)]
    mem = tr.pop("val_probs_in_memory", None)
    if mem is not None:
        # Same inputs through the trained model and the reloaded one: a sanity check on saving.
        tr["reload_max_abs_diff"] = float(abs(mem - val_probs).max()) if len(val_probs) else 0.0
        tr["reload_same_labels"] = bool((mem.argmax(-1) == val_probs.argmax(-1)).all())
    val_true = [data.labels[i] for i in data.val_y]
    metrics_val = _evaluate(val_true, val_pred, data.labels)

    timed = data.test_texts or data.val_texts
    t0 = time.perf_counter()
    preds = student.predict(timed, batch_size=o.eval_batch_size)
    infer_s = time.perf_counter() - t0
    items_per_s = len(timed) / infer_s if infer_s > 0 else float("inf")
    cost_per_1k = price / 3600.0 / items_per_s * 1000.0

    metrics = None
    agreement: float | None = None
    agreement_on = None
    if data.test_texts:
        test_pred = [lab for lab, _ in preds]
        metrics = _evaluate(data.test_gold, test_pred, data.labels)
        frame: dict[str, list[Any]] = {"text": data.test_texts, "gold": data.test_gold}
        if data.test_teacher is not None:
            frame["teacher"] = data.test_teacher
            pairs = [(t, p) for t, p in zip(data.test_teacher, test_pred, strict=True) if t]
            if pairs:
                agreement = sum(t == p for t, p in pairs) / len(pairs)
                agreement_on = "test"
        frame["pred"] = test_pred
        frame["prob"] = [round(p, 6) for _, p in preds]
        write_table(pd.DataFrame(frame), out / "predictions.csv")
    if agreement is None and o.train_on == "teacher":
        agreement, agreement_on = metrics_val["accuracy"], "validation"

    hours = tr["time_s"] / 3600.0
    run = {
        "kind": "distill",
        "name": o.name or out.resolve().name,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "options": o.model_dump(mode="json"),
        "input": input_path,
        "provider": "student",
        "model": f"{Path(student.spec.base).name} ({o.method}, {o.head} head)",
        "labels": data.labels,
        "gold_col": o.gold_col if data.test_texts else None,
        "output": "predictions.csv" if data.test_texts else None,
        "n_items": len(data.test_texts),
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "cached_requests": 0, "reasks": 0},
        "cost_usd": round(price * hours, 6),
        "cost_per_1k": round(cost_per_1k, 6),
        "wall_s": round(infer_s, 3),
        "items_per_s": round(items_per_s, 2),
        "latency_s_median": round(statistics.median(student.last_batch_s) / o.eval_batch_size, 5)
        if student.last_batch_s
        else None,
        "metrics": metrics,
        "metrics_validation": metrics_val,
        "teacher_agreement": agreement,
        "teacher_agreement_on": agreement_on,
        "data": data.counts,
        "train": {
            **tr,
            "hourly_price_usd": price,
            "train_cost_usd": round(price * hours, 6),
        },
        "inference": {
            "items_per_s": round(items_per_s, 2),
            "cost_per_1k": round(cost_per_1k, 6),
            "measured_on": "test" if data.test_texts else "validation",
            "n_items": len(timed),
            "batch_size": o.eval_batch_size,
            "device": student.device,
        },
    }
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    ckpt = out / "checkpoints"
    if ckpt.exists():  # the finished student is saved at the top level; checkpoints are only for resuming
        shutil.rmtree(ckpt, ignore_errors=True)
    return run


def estimate_steps(n_train: int, o: DistillOptions) -> int:
    """Optimizer steps the run will take (for warmup and the ETA)."""
    per_epoch = math.ceil(n_train / o.batch_size / o.grad_accum)
    return o.max_steps or max(1, math.ceil(per_epoch * o.epochs))
