"""One entry point for whatever predicts: a distill run folder (PyTorch) or an export folder (ONNX Runtime).

>>> predictor = load_predictor("runs/student")        # Student
>>> predictor = load_predictor("runs/student-onnx")   # OnnxStudent
>>> predictor.predict_proba(["Shares fell 3%"])

Both offer :class:`Predictor`; ``predict``, ``predict --engine ray`` (and any server) load through here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from ..errors import InputError
from ..export.manifest import is_export_dir, load_manifest


class Predictor(Protocol):
    """What ``predict`` needs from a student, PyTorch or ONNX."""

    device: str
    temperature: float
    last_batch_s: list[float]

    @property
    def labels(self) -> list[str]: ...

    @property
    def multi_label(self) -> bool: ...

    @property
    def thresholds(self) -> list[float] | None: ...

    def predict_proba(self, texts: list[str], batch_size: int = 32, on_batch: Any = None) -> Any: ...

    def predict(self, texts: list[str], batch_size: int = 32) -> list[tuple[str, float]]: ...


def load_predictor(
    path: str | Path, merge: bool = False, dtype: str = "float32", threads: int | None = None
) -> Predictor:
    """The student in ``path``: an export folder (``export.json``) on ONNX Runtime, else a distill run folder.

    ``merge`` and ``dtype`` apply to a run folder; an export folder's precision was fixed when it was
    exported (``promptclf export --int8``), so ``dtype`` must be left at float32 there. ``threads``:
    ONNX Runtime's intra-op threads (PyTorch's are set with ``torch.set_num_threads``).
    """
    folder = Path(path)
    check_dtype(folder, dtype)
    if is_export_dir(folder):
        from ..export.onnx_student import OnnxStudent

        return OnnxStudent.load(folder, threads=threads)
    from .student import Student

    return Student.load(folder, merge=merge, dtype=dtype)


def check_dtype(path: str | Path, dtype: str) -> None:
    """Refuse a ``--dtype`` other than float32 for an export folder, whose precision is fixed."""
    if dtype != "float32" and is_export_dir(path):
        raise InputError(
            f"--dtype {dtype} applies to a run folder; {path} is an ONNX export whose precision was set "
            "when it was exported (`promptclf export RUN --int8`): leave --dtype out"
        )


def predictor_labels(path: str | Path) -> list[str]:
    """The labels of the student in ``path`` (run or export folder), read without loading the model."""
    folder = Path(path)
    if is_export_dir(folder):
        return load_manifest(folder).labels
    meta = folder / "student.json"
    if not meta.exists():
        raise InputError(
            f"{folder}: neither a student run folder (student.json) nor an export folder (export.json); "
            "pass a folder written by `promptclf distill` or `promptclf export`"
        )
    return list(json.loads(meta.read_text())["labels"])


def predictor_thresholds(path: str | Path) -> list[float] | None:
    """A multi-label student's per-label thresholds (run or export folder, read without loading the model);
    None for a single-label student."""
    folder = Path(path)
    if is_export_dir(folder):
        m = load_manifest(folder)
        return list(m.thresholds or [0.5] * len(m.labels)) if m.multi_label else None
    predictor_labels(folder)  # the error naming the fix, for a folder that is neither
    spec = json.loads((folder / "student.json").read_text())
    if not spec.get("multi_label"):
        return None
    return list(spec.get("thresholds") or [0.5] * len(spec["labels"]))


def default_text_col(path: str | Path) -> str:
    """The text column the student was trained on (its ``options.json``), else ``text``."""
    folder = Path(path)
    if is_export_dir(folder):
        return load_manifest(folder).text_col
    opts = folder / "options.json"
    return json.loads(opts.read_text()).get("text_col", "text") if opts.exists() else "text"
