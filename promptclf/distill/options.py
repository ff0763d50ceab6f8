"""Distillation options and data: what ``promptclf.distill.run`` and its trainer both need.

Kept in a module of their own so that :mod:`promptclf.distill.run` (data, run folders) and
:mod:`promptclf.distill.train` (the training loop) both import them and neither imports the other's
caller: ``distill`` → ``distill_train`` → ``distill_options``, no cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ConfigError
from ..options import build_options
from .models import DEFAULT_LM_PROMPT, MINILM_ALIASES


class DistillOptions(BaseModel):
    """Everything that decides what a distillation run trains and how; saved as ``options.json``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # data
    text_col: str = Field("text", description="Text column.")
    label_col: str = Field("pred_label", description="Teacher label column.")
    status_col: str = Field(
        "pred_status", description="Train only on rows whose status is 'ok' (all labeled rows if the column is absent)."
    )
    gold_col: str | None = Field("label", description="Gold label column: evaluation only, unless --train-on gold.")
    train_on: Literal["teacher", "gold"] = Field(
        "teacher", description="Train on the teacher's labels or the gold labels (the ceiling)."
    )
    eval_file: str | None = Field(
        None,
        description="Gold test file. Default: hold out --test-fraction of the gold rows.",
        json_schema_extra={"flag": "--eval"},
    )
    split: str | None = Field(
        None, description="Split of a Hugging Face dataset INPUT (a name or a save_to_disk folder)."
    )
    eval_split: str | None = Field(None, description="Split of a Hugging Face dataset given to --eval.")
    val_fraction: float = Field(
        0.1, gt=0.0, lt=0.5, description="Share of training rows for validation / early stopping."
    )
    test_fraction: float = Field(
        0.2, ge=0.0, lt=0.9, description="Share of gold rows held out for testing when no --eval."
    )
    seed: int = Field(0, description="Seed for splits, initialisation and data order.")

    # review queue and soft labels: corrected labels, flagged rows left out, teacher distributions
    fallback_col: str | None = Field(
        None,
        description="Where --label-col is empty, train on this column (e.g. --label-col corrected --fallback-col pred_label).",
    )
    corrections: str | None = Field(
        None,
        description="A `promptclf review` queue: its filled `corrected` cells replace the LLM label of those rows (by text).",
    )
    exclude: str | None = Field(
        None,
        description="A table (e.g. a review queue): rows with its texts are left out of training (gold test rows stay).",
    )
    soft: bool = Field(
        False,
        description="Train on the teacher's distribution (--probs-col) with KL at --temperature where a row has one, "
        "hard labels elsewhere. Multi-label: each label's probability is its BCE target (no temperature).",
    )
    temperature: float = Field(2.0, gt=0.0, description="Soft labels: temperature, loss scaled by T^2.")
    probs_col: str = Field("pred_probs", description="Teacher distribution column (JSON {label: prob}).")

    # ordinal scales (ratings such as 0-5): read from the teacher's label run, or --ordinal
    ordinal: bool = Field(
        False,
        description="Treat the labels as an ordinal scale (lowest first; numeric names sort by value). Default: "
        "on when the teacher's label run (INPUT's .run/labels.json) was ordinal.",
    )
    ordinal_head: Literal["classification", "regression"] = Field(
        "classification",
        description="Ordinal students: classification (K-way head; score = expected score under its "
        "probabilities) or regression (one output trained with MSE on the teacher's score, FineWeb-Edu style).",
    )

    # multi-label sets (zero or more labels per text): read from the teacher's label run, or --multi-label
    multi_label: bool = Field(
        False,
        description="Each text has zero or more labels (cells: JSON lists or ';'-separated; the teacher's from "
        "pred_labels): a sigmoid head with BCE and per-label thresholds tuned on validation. Default: on when the "
        "teacher's label run (INPUT's .run/labels.json) was multi-label.",
    )

    thresholds: Literal["tuned", "fixed"] = Field(
        "tuned",
        description="Multi-label: tuned (each label's threshold maximises its F1 on the validation split) or fixed "
        "(0.5 for every label; better when the validation labels are noisy and each label has few of them).",
        json_schema_extra={"flag": "--thresholds"},
    )

    # student
    student: str = Field(
        "minilm",
        description="Local model folder or hub id (in the local cache when offline); minilm: the bundled all-MiniLM-L6-v2.",
    )
    method: Literal["lora", "full", "qlora"] = Field(
        "lora", description="lora, full fine-tuning, or qlora (4-bit base; needs a CUDA GPU unless --allow-cpu)."
    )
    head: Literal["cls", "lm"] = Field(
        "cls",
        description="cls: new classification head. lm: keep the LM head, train it to answer with the label word "
        "(causal LMs).",
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha (the update is scaled by alpha/r).")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] | None = Field(
        None,
        description="Comma-separated LoRA targets. Default: query,value for BERT; q,k,v,o_proj for LMs.",
        json_schema_extra={"csv": True},
    )
    lm_prompt: str = Field(DEFAULT_LM_PROMPT, description="--head lm: the prompt the label word answers ({text}).")
    allow_cpu: bool = Field(False, description="Run QLoRA on CPU (slow) instead of refusing without a GPU.")

    # training
    epochs: float = Field(3.0, gt=0, description="Training epochs (fractions allowed).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="Learning rate. Default: 5e-4 LoRA, 2e-4 QLoRA, 5e-5 full.",
        json_schema_extra={"flag": "--lr"},
    )
    batch_size: int = Field(16, ge=1, description="Training batch size (per process under torchrun).")
    eval_batch_size: int = Field(64, ge=1, description="Batch size for validation, test and prediction.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_length: int = Field(128, ge=8, description="Tokens per text (longer texts are truncated).")
    padding: Literal["dynamic", "max_length"] = Field(
        "dynamic",
        description="dynamic: length-grouped batches padded to their longest text; max_length: pad every text to "
        "--max-length.",
    )
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        0.06, ge=0.0, lt=1.0, description="Share of the steps spent warming the learning rate up."
    )
    patience: int = Field(
        2, ge=0, description="Early stopping: evaluations without a validation macro-F1 gain (0 = off)."
    )
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate and checkpoint every N steps. Default: every epoch."
    )
    logging_steps: int = Field(10, ge=1, description="Log the training loss every N steps.")
    gradient_checkpointing: bool | None = Field(None, description="Gradient checkpointing. Default: on for causal LMs.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch.")
    hourly_price: float | None = Field(
        None, ge=0.0, description="Machine $/hour for cost figures. Default: 0.10 CPU, 2.50 GPU."
    )

    # bookkeeping
    name: str | None = Field(None, description="Run name in reports. Default: the folder name.")
    recipe: str | None = Field(
        None,
        description="Packaged recipe name (minilm-lora, llama-3.2-3b-qlora, ...) or a YAML path; options given here "
        "override it.",
    )

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
        if self.soft and (self.head != "cls" or self.train_on != "teacher"):
            raise ValueError("--soft needs --head cls and --train-on teacher (it learns the teacher's distribution)")
        if "{text}" not in self.lm_prompt:
            raise ValueError("lm_prompt must contain {text}")
        if self.multi_label and self.ordinal:
            raise ValueError("--multi-label and --ordinal exclude each other: a scale gives each text one grade")
        return self

    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return {"lora": 5e-4, "qlora": 2e-4, "full": 5e-5}[self.method]

    @classmethod
    def build(cls, recipe: str | None = None, **kwargs: Any) -> DistillOptions:
        """Recipe values, overridden by the given (non-None) options; pydantic errors → ConfigError."""
        values: dict[str, Any] = {}
        if recipe:
            values.update(load_recipe(recipe))
            values["recipe"] = recipe
        values.update({k: v for k, v in kwargs.items() if v is not None})
        return build_options(cls, values)


def recipe_names() -> list[str]:
    """Names of the packaged recipes (``distill/*.yaml``)."""
    from ..resources import resource_dir

    return sorted(p.stem for p in resource_dir("distill").glob("*.yaml"))


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A recipe as a dict of DistillOptions fields: a YAML path, or the name of a packaged one."""
    import yaml

    from ..resources import resource_dir

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
    train_soft: list[list[float] | None] | None = None  # --soft: target distribution per train row (None = hard)
    teacher_confidence: float | None = None  # mean pred_prob of the teacher's rows trained on, where it gave one
    # Ordinal students: each label's value on the scale (labels in scale order), and with the regression head
    # the score each train/validation row is trained towards (the teacher's expected score under --soft).
    scores: list[float] | None = None
    ordinal_head: str | None = None
    train_score: list[float] | None = None
    val_score: list[float] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    # Multi-label students: per train row the target of each label (0/1, or with --soft the teacher's probability
    # where pred_probs gives one), per validation row the teacher's 0/1 decisions; test_gold/test_teacher then
    # hold JSON lists. train_y/val_y stay empty.
    multi_label: bool = False
    train_targets: list[list[float]] | None = None
    val_targets: list[list[float]] | None = None


def estimate_steps(n_train: int, o: DistillOptions, world_size: int = 1) -> int:
    """Optimizer steps the run will take (for warmup and the ETA); ``world_size`` processes share each step."""
    per_epoch = math.ceil(n_train / o.batch_size / o.grad_accum / max(1, world_size))
    return o.max_steps or max(1, math.ceil(per_epoch * o.epochs))
