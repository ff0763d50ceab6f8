"""``export.json``: what an export folder holds and how to use it, as a typed record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InputError

MANIFEST = "export.json"


class Parity(BaseModel):
    """The exported model against the PyTorch student on the same texts, measured at export time."""

    texts: int
    max_abs_diff: float = Field(description="Largest |p_onnx - p_torch| over every text and label.")
    same_label: float = Field(description="Share of texts given the same label (multi-label: the same set) by both.")


class ExportManifest(BaseModel):
    """``export.json``: probabilities are ``softmax(logits / temperature)`` over ``labels``, in that order
    (``sigmoid(logits)`` per label for a multi-label student, cut at ``thresholds``)."""

    model_config = ConfigDict(extra="allow")

    format: Literal["onnx"] = "onnx"
    created: str = ""
    source_run: str = ""
    base: str = ""
    model: str = "model.onnx"
    precision: Literal["float32", "int8"] = "float32"
    opset: int = 17
    labels: list[str]
    temperature: float = 1.0
    scores: list[float] | None = None  # an ordinal student: each label's value on the scale (pred_score)
    # A multi-label student: probabilities are sigmoid(logits), label j in the set when p_j >= thresholds[j].
    multi_label: bool = False
    thresholds: list[float] | None = None
    max_length: int
    inputs: list[str]
    output: str = "logits"
    tokenizer: str = "tokenizer.json"
    pad_id: int = 0
    pad_token: str = "[PAD]"
    text_col: str = "text"
    model_bytes: int | None = None
    float32_nodes: list[str] = Field(default_factory=list, description="int8: the nodes left in float32.")
    export_s: float | None = None
    parity: Parity | None = None
    probabilities: str = "softmax(logits / temperature)"

    def save(self, folder: Path) -> Path:
        path = folder / MANIFEST
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


def is_export_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder written by ``promptclf export`` (it holds ``export.json``)."""
    return (Path(path) / MANIFEST).is_file()


def load_manifest(folder: str | Path) -> ExportManifest:
    """The export folder's manifest, or one :class:`InputError` line saying what is wrong and the fix."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError(f"{folder}: not an export folder, no {MANIFEST}; write one with `promptclf export RUN -o DIR`")
    try:
        return ExportManifest.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise InputError(f"{path}: unreadable export manifest ({reason}); export the run again") from exc
