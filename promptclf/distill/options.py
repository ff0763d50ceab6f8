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
from .models import DEFAULT_LM_PROMPT, MINILM_ALIASES


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
    # Hugging Face datasets as input: the split of a dataset input / eval source
    split: str | None = Field(None, description="split of a Hugging Face dataset input (name or save_to_disk folder)")
    eval_split: str | None = Field(None, description="split of a Hugging Face dataset --eval source")
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.2, ge=0.0, lt=0.9)
    seed: int = 0

    # review queue and soft labels: corrected labels, flagged rows left out, teacher distributions
    fallback_col: str | None = Field(
        None, description="where label_col is empty, train on this column (the LLM label; status-checked)"
    )
    corrections: str | None = Field(
        None, description="a review CSV: its filled 'corrected' cells replace the label of the rows with that text"
    )
    exclude: str | None = Field(None, description="a table (a review CSV): rows with its texts are not trained on")
    soft: bool = Field(False, description="train on the teacher's distribution (probs_col) where a row has one")
    temperature: float = Field(2.0, gt=0.0, description="soft labels: temperature of teacher and student")
    probs_col: str = "pred_probs"

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
        if self.soft and (self.head != "cls" or self.train_on != "teacher"):
            raise ValueError("--soft needs --head cls and --train-on teacher (it learns the teacher's distribution)")
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
    counts: dict[str, int] = field(default_factory=dict)


def estimate_steps(n_train: int, o: DistillOptions, world_size: int = 1) -> int:
    """Optimizer steps the run will take (for warmup and the ETA); ``world_size`` processes share each step."""
    per_epoch = math.ceil(n_train / o.batch_size / o.grad_accum / max(1, world_size))
    return o.max_steps or max(1, math.ceil(per_epoch * o.epochs))
