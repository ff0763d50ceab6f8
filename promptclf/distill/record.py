"""``run.json`` of a distill run: what every kind of student records alike (cost, speed, training, teacher).

:func:`promptclf.distill.run.finish_run` evaluates a reloaded student one way for a single-label set and
another for a multi-label one (:mod:`.multilabel`); each gives an :class:`Evaluated`, and
:func:`build_record` turns it into the record.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..runs import teacher_of
from .distributed import main_logger
from .options import DistillData, DistillOptions

log = main_logger(__name__)  # under torchrun, one copy of each message

# Dollars per hour used for train_cost_usd and inference cost_per_1k unless --hourly-price is given:
# a small 2-vCPU cloud VM, and one rented 24-80 GB GPU.
DEFAULT_CPU_HOURLY_USD = 0.10
DEFAULT_GPU_HOURLY_USD = 2.50


@dataclass
class Evaluated:
    """A reloaded student's figures: gold test and validation metrics, its speed, its calibration."""

    infer_s: float  # seconds to predict the timed rows (the gold test rows, else validation)
    n_timed: int
    metrics: dict[str, Any] | None  # on the gold test rows (None: no gold)
    metrics_validation: dict[str, Any]
    agreement: float | None
    agreement_on: str | None  # "test" or "validation"
    scaling: dict[str, Any]  # run.json["temperature_scaling"]
    blocks: dict[str, Any] = field(default_factory=dict)  # extra top-level keys: "ordinal", "multi_label"


def hourly_price(o: DistillOptions, device: str) -> float:
    """--hourly-price, else the default for the device the student runs on."""
    if o.hourly_price is not None:
        return o.hourly_price
    return DEFAULT_GPU_HOURLY_USD if device.startswith("cuda") else DEFAULT_CPU_HOURLY_USD


def _teacher(input_path: str, o: DistillOptions) -> dict[str, Any] | None:
    """The label run whose labels the student trains on, as ``run.json`` records it (None on gold)."""
    if o.train_on != "teacher":
        return None
    ref = teacher_of(input_path)
    if ref is None:
        log.info(f"{input_path}: no label run folder beside it, so the student's teacher is not recorded")
        return None
    return ref.model_dump(mode="json")


def build_record(
    out: Path, data: DistillData, o: DistillOptions, tr: dict[str, Any], input_path: str, student: Any, ev: Evaluated
) -> dict[str, Any]:
    """The dict ``run.json`` holds."""
    price = hourly_price(o, student.device)
    items_per_s = ev.n_timed / ev.infer_s if ev.infer_s > 0 else float("inf")
    cost_per_1k = price / 3600.0 / items_per_s * 1000.0
    hours = tr["time_s"] / 3600.0
    head = f"{o.head} head, multi-label" if data.multi_label else f"{o.head} head"
    return {
        "kind": "distill",
        "name": o.name or out.resolve().name,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "options": o.model_dump(mode="json"),
        "input": input_path,
        "provider": "student",
        "model": f"{Path(student.spec.base).name} ({o.method}, {head})",
        "labels": data.labels,
        "gold_col": o.gold_col if data.test_texts else None,
        "output": "predictions.csv" if data.test_texts else None,
        "n_items": len(data.test_texts),
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "cached_requests": 0, "reasks": 0},
        "cost_usd": round(price * hours, 6),
        "cost_per_1k": round(cost_per_1k, 6),
        "wall_s": round(ev.infer_s, 3),
        "items_per_s": round(items_per_s, 2),
        "latency_s_median": round(statistics.median(student.last_batch_s) / o.eval_batch_size, 5)
        if student.last_batch_s
        else None,
        "metrics": ev.metrics,
        "metrics_validation": ev.metrics_validation,
        "teacher_agreement": ev.agreement,
        "teacher_agreement_on": ev.agreement_on,
        "teacher": _teacher(input_path, o),
        "data": data.counts,
        "train": {**tr, "hourly_price_usd": price, "train_cost_usd": round(price * hours, 6)},
        "temperature_scaling": ev.scaling,
        "ordinal": None,
        **ev.blocks,
        "inference": {
            "items_per_s": round(items_per_s, 2),
            "cost_per_1k": round(cost_per_1k, 6),
            "measured_on": "test" if data.test_texts else "validation",
            "n_items": ev.n_timed,
            "batch_size": o.eval_batch_size,
            "device": student.device,
        },
    }
