"""``promptclf export RUN --format onnx``: a distill run folder -> an ONNX export folder.

The student is loaded as ``predict`` loads it (LoRA merged into the weights, float32), wrapped so that its
one output is the classification logits, and traced by ``torch.onnx.export`` (the TorchScript exporter,
``dynamo=False``: it traces a transformers encoder in about a second and gives dynamic batch and sequence
axes without a shape specification). ``int8`` then quantizes the weights dynamically with
``onnxruntime.quantization``. The folder is written under a temporary name and renamed into place, so an
interrupted export never leaves a half folder that looks whole; before that the exported model is run
through ONNX Runtime on a fixed set of probe texts and compared with the PyTorch student (``parity`` in
``export.json``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..distill.models import StudentSpec, is_causal
from ..distill.thresholds import decide
from ..errors import InputError, require
from ..labels import LabelSet
from ..predict.student import Student
from .manifest import MANIFEST, ExportManifest, Parity, is_export_dir
from .onnx_student import OnnxStudent
from .options import ExportOptions

log = logging.getLogger(__name__)

SUPPORTED = "encoder students with a classification head (BERT-like, e.g. recipe minilm-lora, LoRA or full fine-tuning)"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

# Texts the exported model is checked on against PyTorch: short, long (truncated), empty, non-ASCII.
PROBE_TEXTS = (
    "Shares fell sharply after the profit warning.",
    "The striker scored twice in the second half and the home side won the cup.",
    "The minister promised a vote on the new budget before the election.",
    "A new phone with a faster chip and a better camera goes on sale next week.",
    "The film won three awards, including best actress, at the ceremony on Sunday night.",
    "",
    "ok",
    "Économie : la banque centrale relève ses taux — 日本 の 株価 が 上昇",
    " ".join(["The company reported record sales in Asia while costs rose in Europe."] * 60),
    "rain",
)


@dataclass
class ExportResult:
    """Where the export went and its manifest (``export.json``)."""

    folder: Path
    manifest: ExportManifest


def default_output(run_dir: str | Path, options: ExportOptions) -> Path:
    """``runs/student`` -> ``runs/student-onnx`` (``-onnx-int8`` with ``int8``)."""
    run = Path(run_dir)
    return run.parent / f"{run.name}-{options.format}{'-int8' if options.int8 else ''}"


def _check_run(run: Path) -> StudentSpec:
    if not run.exists():
        raise InputError(f"{run}: no such run folder; pass the folder `promptclf distill ... -o RUN` wrote")
    if is_export_dir(run):
        raise InputError(f"{run}: already an export folder; export takes the distill run folder it came from")
    meta = run / "student.json"
    if not meta.is_file():
        raise InputError(
            f"{run}: not a student run folder, no student.json; export takes a folder written by `promptclf distill`"
        )
    try:
        spec = StudentSpec(**json.loads(meta.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{meta}: unreadable ({exc}); rerun `promptclf distill` into a new folder") from exc
    if spec.head == "lm":
        raise InputError(f"{run}: an LM-head student ({spec.base}) cannot be exported; export supports {SUPPORTED}")
    if spec.method == "qlora":
        raise InputError(f"{run}: a QLoRA (4-bit) student cannot be exported; export supports {SUPPORTED}")
    if spec.regression:  # its one output is a score: OnnxStudent's softmax over label logits would not hold
        raise InputError(
            f"{run}: a regression-head ordinal student cannot be exported yet; predict or serve the run folder, "
            "or distill with --ordinal-head classification (which exports)"
        )
    return spec


def _check_output(out: Path, run: Path) -> None:
    if out.resolve() == run.resolve():
        raise InputError(f"-o {out} is the run folder itself; write the export to another folder")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_export_dir(out))):
        raise InputError(f"-o {out}: exists and is not an export folder; choose another -o or remove it")


class _Logits:
    """Builds the traced module lazily (torch is imported inside): named inputs in, logits out."""

    @staticmethod
    def wrap(model: Any, names: list[str]) -> Any:
        import torch

        class Logits(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: Any) -> Any:
                return self.model(**dict(zip(names, args, strict=True))).logits

        # eval() on the wrapper: the exporter restores the wrapper's mode afterwards, and a wrapper left in
        # training mode would put the student's dropout back on.
        return Logits().eval()


def _trace(student: Student, names: list[str], path: Path, opset: int) -> None:
    import torch

    enc = student.tokenizer(
        ["a short text", "a somewhat longer text, so that the sequence axis is seen with another length"],
        padding=True,
        truncation=True,
        max_length=student.spec.max_length,
        return_tensors="pt",
    )
    args = tuple(enc[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes, deprecations
        torch.onnx.export(
            _Logits.wrap(student.model, names),
            args,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _fed_by_activation(path: Path, depth: int = 5) -> list[str]:
    """MatMul/Gemm nodes whose input comes from a GELU (its ``Erf``, 4 nodes up) or ``Tanh`` within ``depth`` nodes: in an
    encoder, each layer's feed-forward output projection (and the head after BERT's pooler)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}

    def fed(name: str, left: int) -> bool:
        node = producer.get(name)
        if node is None or left == 0:
            return False
        return node.op_type in ("Erf", "Tanh") or any(fed(i, left - 1) for i in node.input)

    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input and fed(n.input[0], depth)]


def _quantize(src: Path, dst: Path) -> list[str]:
    """int8 weights, one scale per output channel, except the layers fed by GELU, kept in float32.

    Dynamic quantization also quantizes each layer's input, with one scale per tensor; GELU outputs have
    outliers that such a scale handles badly. A MiniLM student (bench/bench_export.py's) gave PyTorch float32's
    label on 97.5% of 400 BBC texts with every layer quantized per tensor, 99.2% of 1,000 per channel, and
    99.8% of 1,000 per channel with the feed-forward output projections left in float32 (about 20% slower,
    34 MB instead of 23). Returns the names of the nodes left in float32.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = _fed_by_activation(src)
    # It logs advice to pre-process first through logging.warning(), which would also give the root logger a
    # stderr handler (basicConfig) for good: a NullHandler meanwhile, and the level above warnings.
    root = logging.getLogger()
    level, null = root.level, logging.NullHandler()
    root.addHandler(null)
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep)
    finally:
        root.setLevel(level)
        root.removeHandler(null)
    return keep


def _parity(student: Student, exported: OnnxStudent) -> Parity:
    texts = list(PROBE_TEXTS) + list(student.labels)
    p_torch = student.predict_proba(texts, batch_size=8)
    p_onnx = exported.predict_proba(texts, batch_size=8)
    if student.multi_label:  # the same label set: every label on the same side of its threshold
        same = float((decide(p_torch, student.thresholds) == decide(p_onnx, exported.thresholds)).all(-1).mean())
    else:
        same = float((p_torch.argmax(-1) == p_onnx.argmax(-1)).mean())
    return Parity(texts=len(texts), max_abs_diff=float(abs(p_torch - p_onnx).max()), same_label=same)


def export_onnx(
    run_dir: str | Path, output: str | Path | None = None, options: ExportOptions | None = None
) -> ExportResult:
    """Export the student in ``run_dir`` to an ONNX folder (``output``, default :func:`default_output`)."""
    opts = options or ExportOptions()
    run = Path(run_dir)
    spec = _check_run(run)
    out = Path(output) if output is not None else default_output(run, opts)
    _check_output(out, run)
    require("onnx", "onnx", "promptclf export --format onnx")
    require("onnxruntime", "onnx", "promptclf export --format onnx")
    t0 = time.perf_counter()
    student = Student.load(run, merge=True)
    if is_causal(student.model.config):
        raise InputError(f"{run}: a causal-LM student ({spec.base}) cannot be exported; export supports {SUPPORTED}")
    tok = student.tokenizer
    if not getattr(tok, "is_fast", False):
        raise InputError(f"{run}: the student's tokenizer has no tokenizer.json (a slow tokenizer); export needs one")
    params = inspect.signature(student.model.forward).parameters
    names = [n for n in tok.model_input_names if n in MODEL_INPUTS and n in params]
    float32_nodes: list[str] = []
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        log.info(
            "exporting %s (%s, %d labels) to ONNX%s", run, spec.base, len(spec.labels), " int8" if opts.int8 else ""
        )
        if opts.int8:
            _trace(student, names, tmp / "model.fp32.onnx", opts.opset)
            float32_nodes = _quantize(tmp / "model.fp32.onnx", tmp / "model.onnx")
            (tmp / "model.fp32.onnx").unlink()
        else:
            _trace(student, names, tmp / "model.onnx", opts.opset)
        tok.save_pretrained(str(tmp))
        labels_json: Any = student.labels
        if student.multi_label:  # the run folder's form, so whatever reads labels.json sees a multi-label set
            labels_json = LabelSet.from_names(student.labels, multi_label=True).file_data()
        (tmp / "labels.json").write_text(json.dumps(labels_json, indent=2) + "\n")
        text_col = "text"
        if (run / "validation.csv").is_file():  # what `label --student EXPORT --threshold auto` measures on
            shutil.copyfile(run / "validation.csv", tmp / "validation.csv")
        if (run / "options.json").is_file():
            shutil.copyfile(run / "options.json", tmp / "options.json")  # predict's default --text-col
            with contextlib.suppress(ValueError, AttributeError):
                text_col = json.loads((run / "options.json").read_text()).get("text_col") or "text"
        manifest = ExportManifest(
            created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            source_run=str(run.resolve()),
            base=spec.base,
            precision="int8" if opts.int8 else "float32",
            opset=opts.opset,
            labels=student.labels,
            temperature=student.temperature,
            scores=student.scores,
            multi_label=student.multi_label,
            thresholds=student.thresholds,
            probabilities="sigmoid(logits)" if student.multi_label else "softmax(logits / temperature)",
            max_length=spec.max_length,
            inputs=names,
            pad_id=int(tok.pad_token_id),
            pad_token=str(tok.pad_token),
            text_col=text_col,
            model_bytes=(tmp / "model.onnx").stat().st_size,
            float32_nodes=float32_nodes,
        )
        manifest.save(tmp)
        manifest.parity = _parity(student, OnnxStudent.load(tmp))
        manifest.export_s = round(time.perf_counter() - t0, 2)
        manifest.save(tmp)
        if out.exists():
            shutil.rmtree(out)  # an earlier export (checked above): replaced whole
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    p = manifest.parity
    log.info(
        "wrote %s in %.1fs (%s, %.1f MB); against PyTorch on %d texts: max |dp| %.2g, same label %.0f%%",
        out, manifest.export_s, manifest.precision, (manifest.model_bytes or 0) / 1e6, p.texts, p.max_abs_diff,
        100 * p.same_label,
    )  # fmt: skip
    return ExportResult(out, manifest)


__all__ = ["MANIFEST", "ExportResult", "default_output", "export_onnx"]
