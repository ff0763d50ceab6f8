"""An exported student on ONNX Runtime: the same interface as :class:`promptclf.predict.student.Student`.

>>> student = OnnxStudent.load("runs/student-onnx")
>>> student.predict(["Shares fell sharply after the profit warning."])
[('business', 0.97)]

Only ``onnxruntime``, ``tokenizers`` and numpy are imported (no torch, no transformers), so loading takes a
fraction of a second. Texts are batched longest first (dynamic padding); the output order is the input order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data.tables import cell_text
from ..distill.thresholds import DEFAULT_THRESHOLD, label_sets, sigmoid
from ..errors import InputError, require
from .manifest import ExportManifest, load_manifest

log = logging.getLogger(__name__)


def _softmax(logits: Any, temperature: float) -> Any:
    import numpy as np

    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


class OnnxStudent:
    """An export folder loaded into ONNX Runtime: ``predict(texts) -> [(label, prob)]``, ``predict_proba``."""

    device = "cpu"

    def __init__(self, session: Any, tokenizer: Any, manifest: ExportManifest, folder: Path):
        self.session = session
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.folder = folder
        self.inputs = [i.name for i in session.get_inputs()]
        self.last_batch_s: list[float] = []  # seconds per batch of the last predict call
        # The temperature distill fitted, applied to the logits as the PyTorch student does.
        self.temperature = manifest.temperature if manifest.temperature > 0 else 1.0

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> OnnxStudent:
        """Load an export folder written by ``promptclf export``; ``threads``: ONNX Runtime's intra-op threads."""
        folder = Path(path)
        manifest = load_manifest(folder)
        ort: Any = require("onnxruntime", "onnx", "running an exported ONNX student")
        require("tokenizers", "onnx", "running an exported ONNX student")
        from tokenizers import Tokenizer

        model_path, tok_path = folder / manifest.model, folder / manifest.tokenizer
        for f in (model_path, tok_path):
            if not f.is_file():
                raise InputError(f"{folder}: the export folder has no {f.name}; export the run again")
        try:
            tok = Tokenizer.from_file(str(tok_path))
        except Exception as exc:  # tokenizers raises plain Exceptions on a bad file
            raise InputError(f"{tok_path}: cannot read the tokenizer ({_short(exc)}); export the run again") from exc
        tok.enable_truncation(max_length=manifest.max_length)
        tok.enable_padding(pad_id=manifest.pad_id, pad_token=manifest.pad_token)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
        try:
            session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
            raise InputError(
                f"{model_path}: ONNX Runtime cannot load it ({_short(exc)}); export the run again"
            ) from exc
        missing = [n for n in (i.name for i in session.get_inputs()) if n not in manifest.inputs]
        if missing:
            raise InputError(f"{model_path}: the model wants inputs {missing} the manifest does not name; export again")
        return cls(session, tok, manifest, folder)

    def encode(self, texts: list[str]) -> dict[str, Any]:
        """The model's inputs for ``texts``: int64 arrays padded to the longest (at most ``max_length``)."""
        import numpy as np

        enc = self.tokenizer.encode_batch(texts)
        feed: dict[str, Any] = {}
        for name in self.inputs:
            attr = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}[name]
            feed[name] = np.array([getattr(e, attr) for e in enc], dtype=np.int64)
        return feed

    def predict_proba(
        self, texts: list[str], batch_size: int = 32, on_batch: Callable[[int], None] | None = None
    ) -> Any:
        """(n_texts, n_labels) numpy array of probabilities, rows in input order.
        ``on_batch(n)`` is called after each batch of ``n`` texts (a progress bar)."""
        import numpy as np

        texts = [cell_text(t) for t in texts]
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths share a batch
        self.last_batch_s = []
        for start in range(0, len(order), batch_size):
            t0 = time.perf_counter()
            idx = order[start : start + batch_size]
            logits = self.session.run([self.manifest.output], self.encode([texts[i] for i in idx]))[0]
            probs[idx] = sigmoid(logits) if self.manifest.multi_label else _softmax(logits, self.temperature)
            self.last_batch_s.append(time.perf_counter() - t0)
            if on_batch is not None:
                on_batch(len(idx))
        return probs

    @property
    def multi_label(self) -> bool:
        """Zero or more labels per text (a sigmoid per label), as the PyTorch student it was exported from."""
        return self.manifest.multi_label

    @property
    def thresholds(self) -> list[float] | None:
        """A multi-label student's per-label thresholds (``export.json``), else None."""
        if not self.manifest.multi_label:
            return None
        return list(self.manifest.thresholds or [DEFAULT_THRESHOLD] * len(self.labels))

    def predict_sets(self, texts: list[str], batch_size: int = 32) -> list[list[str]]:
        """A multi-label student's label set per text, decided as the PyTorch student decides it."""
        if not self.manifest.multi_label:
            raise InputError("this student gives one label per text; predict_sets needs a multi-label student")
        return label_sets(self.predict_proba(texts, batch_size=batch_size), self.thresholds, self.labels)

    @property
    def scores(self) -> list[float] | None:
        """Each label's value on the scale for an ordinal student, else None (as the PyTorch student)."""
        return list(self.manifest.scores) if self.manifest.scores is not None else None

    def predict_with_scores(self, texts: list[str], batch_size: int = 32, on_batch: Any = None) -> tuple[Any, Any]:
        """(probabilities, expected scores or None), like the PyTorch student's classification head."""
        import numpy as np

        probs = self.predict_proba(texts, batch_size=batch_size, on_batch=on_batch)
        if self.manifest.scores is None:
            return probs, None
        return probs, np.asarray(probs, dtype=np.float64) @ np.asarray(self.manifest.scores, dtype=np.float64)

    def predict(self, texts: list[str], batch_size: int = 32) -> list[tuple[str, float]]:
        """(label, probability) per text, in input order."""
        probs = self.predict_proba(texts, batch_size=batch_size)
        best = probs.argmax(-1)
        return [(self.labels[j], float(probs[i, j])) for i, j in enumerate(best)]


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
