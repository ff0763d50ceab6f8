"""``promptclf export``: a trained student as an ONNX folder that ``predict`` runs on ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..export.options import ExportOptions
from ..options import build_options
from .group import main
from .options import flags_from, given


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Export folder to write (replaced if it holds an earlier export). [default: RUN-onnx, RUN-onnx-int8]",
)
@flags_from(ExportOptions)
def export(run_dir: Path, output: Path | None, **options: Any) -> None:
    """Export the student in RUN (a `promptclf distill` run folder) for ONNX Runtime.

    Writes model.onnx (LoRA merged; --int8: weights quantized to int8), the tokenizer, labels.json and
    export.json (labels, the fitted temperature, and how far the export's probabilities are from
    PyTorch's on a set of probe texts). `promptclf predict EXPORT INPUT -o OUT` then runs it on ONNX
    Runtime. Encoder students with a classification head (recipe minilm-lora and other BERT-like
    students) are supported; LM-head, causal-LM and QLoRA students are not.
    """
    from ..export.onnx_export import export_onnx

    opts = build_options(ExportOptions, given(options))
    res = export_onnx(run_dir, output, opts)
    m, p = res.manifest, res.manifest.parity
    parity = (
        f"; vs PyTorch on {p.texts} texts: max |dp| {p.max_abs_diff:.2g}, same label {p.same_label:.0%}" if p else ""
    )
    click.echo(f"{m.precision} ONNX, {len(m.labels)} labels, T={m.temperature:.3f}{parity}", err=True)
    click.echo(str(res.folder))
