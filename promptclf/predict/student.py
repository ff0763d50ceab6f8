"""Load a distilled student from its run folder and predict labels with probabilities.

>>> student = Student.load("runs/student")
>>> student.predict(["Shares fell sharply after the profit warning."])
[('business', 0.97)]

Texts are batched by length (dynamic padding), so a batch of short texts is cheap; the
output order is always the input order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data.tables import cell_text
from ..distill.models import (
    MINILM_ALIASES,
    PromptParts,
    StudentSpec,
    device_and_dtype,
    is_causal,
    load_base,
    load_config,
    load_tokenizer,
    quiet_transformers,
    resolve_student,
    score_lm,
)
from ..errors import InputError, PromptclfError, require

log = logging.getLogger(__name__)


def _base_path(spec: StudentSpec) -> str:
    """Where the base model is now: the bundled MiniLM, the training-time path, or the name again."""
    if spec.base.strip().lower() in MINILM_ALIASES:
        return resolve_student(spec.base)
    if Path(spec.base_path).exists():
        return spec.base_path
    return resolve_student(spec.base)


class Student:
    """A trained student: ``predict(texts) -> [(label, prob)]``, ``predict_proba(texts) -> array``."""

    def __init__(self, model: Any, tokenizer: Any, spec: StudentSpec, device: str):
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = device
        self.parts = PromptParts.build(tokenizer, spec.lm_prompt, spec.labels) if spec.head == "lm" else None
        self.last_batch_s: list[float] = []  # seconds per batch of the last predict call
        # Temperature scaling fitted at the end of distill (run.json); 1.0 leaves the probabilities as trained.
        self.temperature = 1.0
        # Regression students: the spread of predict_proba's distribution, the validation RMSE (run.json).
        self.sigma = 1.0

    @property
    def labels(self) -> list[str]:
        return list(self.spec.labels)

    @classmethod
    def load(cls, path: str | Path, merge: bool = False, dtype: str = "float32") -> Student:
        """Load a run folder written by ``promptclf distill``.

        ``merge`` folds a LoRA adapter into the weights. ``dtype`` (CPU, non-4-bit students):
        ``bfloat16`` halves the weights, ``int8`` quantizes every Linear layer dynamically (about
        3x faster on CPU); both merge the adapter first and shift probabilities slightly.
        """
        if dtype not in ("float32", "bfloat16", "int8"):
            raise InputError(f"dtype {dtype!r}: use float32, bfloat16 or int8")
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        folder = Path(path)
        meta = folder / "student.json"
        if not meta.exists():
            hint = " (training has not finished: rerun `promptclf distill` to resume)" if folder.is_dir() else ""
            raise InputError(f"{folder}: not a student run folder, no student.json{hint}")
        spec = StudentSpec(**json.loads(meta.read_text()))
        device, _ = device_and_dtype()
        try:
            with quiet_transformers():  # the fresh head is replaced by the saved one right after
                if spec.method == "full":
                    tok = load_tokenizer(str(folder), causal=spec.head == "lm")
                    auto = AutoModelForCausalLM if spec.head == "lm" else AutoModelForSequenceClassification
                    model = auto.from_pretrained(str(folder))
                else:
                    require("peft", "distill", "loading a LoRA student")
                    from peft import PeftModel

                    base_path = _base_path(spec)
                    config = load_config(base_path)
                    tok = load_tokenizer(str(folder), causal=is_causal(config))
                    base = load_base(spec, base_path, config, tok)
                    model = PeftModel.from_pretrained(base, str(folder))
                    if merge:
                        model = model.merge_and_unload()
        except PromptclfError:
            raise
        except Exception as exc:  # transformers, peft, safetensors, torch: a damaged or incomplete run folder
            reason = " ".join(str(exc).split())[:300]
            raise InputError(
                f"{folder}: cannot load the student: {reason} ({type(exc).__name__}); the run folder is incomplete "
                "or damaged (a file missing or cut short): rerun `promptclf distill` into a new folder"
            ) from exc
        if spec.method != "qlora":  # 4-bit models are placed by device_map already
            model.to(device)  # type: ignore[arg-type]
        model.eval()
        if dtype != "float32":
            model = _reduce_precision(model, dtype, spec, device)
        student = cls(model, tok, spec, device)
        student.temperature = fitted_temperature(folder)
        student.sigma = fitted_sigma(folder)
        return student

    @property
    def multi_label(self) -> bool:
        """Zero or more labels per text: ``predict_proba`` gives each label's sigmoid, :meth:`predict_sets` the sets."""
        return self.spec.multi_label

    @property
    def thresholds(self) -> list[float] | None:
        """A multi-label student's per-label thresholds (tuned on validation by ``distill``), else None."""
        if not self.spec.multi_label:
            return None
        return list(self.spec.thresholds) if self.spec.thresholds is not None else [0.5] * len(self.spec.labels)

    def predict_sets(self, texts: list[str], batch_size: int = 32) -> list[list[str]]:
        """A multi-label student's label set per text (each label whose probability reaches its threshold)."""
        from ..distill.thresholds import label_sets

        if not self.spec.multi_label:
            raise InputError("this student gives one label per text; predict_sets needs a multi-label student")
        return label_sets(self.predict_proba(texts, batch_size=batch_size), self.thresholds, self.spec.labels)

    @property
    def scores(self) -> list[float] | None:
        """Each label's value on the scale for an ordinal student, else None."""
        return list(self.spec.scores) if self.spec.scores is not None else None

    def predict_proba(
        self, texts: list[str], batch_size: int = 32, on_batch: Callable[[int], None] | None = None
    ) -> Any:
        """(n_texts, n_labels) numpy array of probabilities, rows in input order.
        ``on_batch(n)`` is called after each batch of ``n`` texts (a progress bar).

        A regression student (``--ordinal-head regression``) has one output ``y``; its probabilities
        are ``p_k ∝ exp(-(y - s_k)² / (2σ²))`` over the scale, σ its validation RMSE
        (:mod:`promptclf.distill.ordinal`)."""
        return self.predict_with_scores(texts, batch_size=batch_size, on_batch=on_batch)[0]

    def predict_scores(self, texts: list[str], batch_size: int = 32) -> Any:
        """An ordinal student's score per text: the regression output, or the expected score under the
        classification head's probabilities. InputError for a student of a plain label set."""
        if self.spec.scores is None:
            raise InputError("this student's labels are not an ordinal scale, so it gives no score")
        return self.predict_with_scores(texts, batch_size=batch_size)[1]

    def predict_with_scores(
        self, texts: list[str], batch_size: int = 32, on_batch: Callable[[int], None] | None = None
    ) -> tuple[Any, Any]:
        """(probabilities, scores) in one pass: :meth:`predict_proba` and, for an ordinal student, the
        score per text (:meth:`predict_scores`); scores are None for a plain label set."""
        import numpy as np
        import torch

        from ..distill.ordinal import expected_scores, gaussian_probs

        texts = [cell_text(t) for t in texts]
        probs = np.zeros((len(texts), len(self.spec.labels)), dtype=np.float32)
        raw = np.zeros(len(texts), dtype=np.float64)  # the regression head's output
        # Longest first, so batches hold similar lengths and padding stays small.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        if self.parts is not None:
            batch_size = max(1, batch_size // max(1, len(self.parts.answers)))
        self.last_batch_s = []
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.startswith("cuda") else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            for start in range(0, len(order), batch_size):
                t0 = time.perf_counter()
                idx = order[start : start + batch_size]
                batch = [texts[i] for i in idx]
                if self.parts is not None:
                    scores = score_lm(self.model, self.tokenizer, self.parts, batch, self.spec.max_length)
                else:
                    enc = self.tokenizer(
                        batch, truncation=True, max_length=self.spec.max_length, padding=True, return_tensors="pt"
                    ).to(self.device)
                    scores = self.model(**enc).logits.float()
                if self.spec.regression:
                    raw[idx] = scores[:, 0].cpu().numpy()
                    probs[idx] = gaussian_probs(raw[idx], self.spec.scores or [], self.sigma)
                elif self.spec.multi_label:  # one independent probability per label
                    probs[idx] = torch.sigmoid(scores.float()).cpu().numpy()
                else:
                    probs[idx] = torch.softmax(scores.float() / self.temperature, dim=-1).cpu().numpy()
                self.last_batch_s.append(time.perf_counter() - t0)
                if on_batch is not None:
                    on_batch(len(idx))
        if self.spec.scores is None:
            return probs, None
        return probs, (raw if self.spec.regression else expected_scores(probs, self.spec.scores))

    def predict(self, texts: list[str], batch_size: int = 32) -> list[tuple[str, float]]:
        """(label, probability) per text, in input order (a multi-label student: its most probable label;
        :meth:`predict_sets` gives the sets)."""
        probs = self.predict_proba(texts, batch_size=batch_size)
        best = probs.argmax(-1)
        return [(self.spec.labels[j], float(probs[i, j])) for i, j in enumerate(best)]


def fitted_temperature(folder: Path) -> float:
    """The temperature ``distill`` fitted for the student in ``folder`` (1.0 for runs from before it did)."""
    try:
        run = json.loads((folder / "run.json").read_text())
        t = float((run.get("temperature_scaling") or {}).get("temperature", 1.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 1.0
    return t if t > 0 else 1.0


def fitted_sigma(folder: Path) -> float:
    """A regression student's σ (its validation RMSE, ``run.json["ordinal"]["sigma"]``); 1.0 when absent."""
    try:
        run = json.loads((folder / "run.json").read_text())
        s = float((run.get("ordinal") or {}).get("sigma", 1.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 1.0
    return s if s > 0 else 1.0


def _reduce_precision(model: Any, dtype: str, spec: StudentSpec, device: str) -> Any:
    import torch

    if spec.method == "qlora":
        raise InputError(f"--dtype {dtype}: a QLoRA student is already 4-bit; use float32")
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if dtype == "bfloat16":
        return model.to(torch.bfloat16)
    if device != "cpu":
        raise InputError("--dtype int8 is CPU-only dynamic quantization; on a GPU use bfloat16")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
