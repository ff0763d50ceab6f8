"""``promptclf distill`` and ``promptclf predict``: train a local student on an LLM's labels, then use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..distill.options import DistillOptions
from ..options import build_options, flag_name
from ..predict.options import PredictOptions, RayOptions
from .group import main
from .options import flags_from, given


@main.command()
@click.argument("input", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder to write (and resume).",
)
@flags_from(DistillOptions)
@click.option("--restart", is_flag=True, help="Discard checkpoints/results in the folder and train anew.")
def distill(input: str, output: Path, recipe: str | None, restart: bool, **options: Any) -> None:
    """Fine-tune a small local student on the labels in INPUT (a `promptclf label` output: a table
    file, a folder written by datasets' save_to_disk, or a Hugging Face dataset name, with --split).

    Trains on rows whose --status-col is `ok`, holds gold rows out for testing, and writes
    OUTPUT/ with the adapter/model, tokenizer, labels.json, options.json, run.json and
    predictions.csv. Ctrl-C saves a checkpoint; rerun the same command to resume.

    QLoRA needs a CUDA GPU: without one it stops with the reason, unless --allow-cpu, which
    runs it on CPU (bitsandbytes NF4 with float32 compute; fine for tiny models, slow otherwise).

    Several processes or GPUs: `torchrun --standalone --nproc_per_node N -m promptclf distill ...`
    (DDP; --batch-size is per process, so a step sees N x --batch-size x --grad-accum rows).
    """
    from ..distill.distributed import is_main
    from ..distill.run import distill as run_distill

    opts = DistillOptions.build(recipe=recipe, **given(options))
    run = run_distill(input, output, opts, restart=restart)
    if not is_main():  # under torchrun, rank 0 prints the summary
        return
    m = run.metrics or {}
    tr = run.train
    if run.multi_label is not None:  # micro/macro/sample-F1, subset accuracy, Hamming; the teacher's; thresholds
        from ..distill.multilabel import summary_lines

        for line in summary_lines(run):
            click.echo(line)
    elif m:
        click.echo(f"gold test ({run.n_items} rows): accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")
        if m.get("levels"):  # a label tree: the leaf's path gives every level
            click.echo("  per level: " + ", ".join(f"{lv['level']}: {lv['accuracy']:.4f}" for lv in m["levels"]))
    ts = run.temperature_scaling
    if ts is not None and ts.n:
        click.echo(
            f"temperature scaling: T={ts.temperature:.3f} on {ts.n} validation rows "
            f"(NLL {ts.nll_before:.4f} -> {ts.nll_after:.4f}, ECE {ts.ece_before} -> {ts.ece_after}); predict applies it"
        )
    if run.ordinal:
        click.echo(_ordinal_line(run.ordinal))
    if run.teacher_agreement is not None:
        click.echo(f"agreement with teacher ({run.teacher_agreement_on}): {run.teacher_agreement:.4f}")
    click.echo(
        f"train {tr.time_s:.1f}s (${tr.train_cost_usd or 0:.4f})  predict {run.items_per_s:.1f} items/s "
        f"(${run.cost_per_1k:.5f}/1k)  peak {tr.peak_memory_mb or 0:.0f} MB"
    )
    click.echo(str(output))


def _ordinal_line(o: dict[str, Any]) -> str:
    """The ordinal student's figures: validation MAE and within-one, the gold test's when there are any."""
    v = o.get("validation") or {}
    line = f"ordinal ({o.get('head')} head): validation MAE {v.get('mae', float('nan')):.3f} within-one "
    line += f"{v.get('within_one', float('nan')):.3f}"
    if o.get("sigma") is not None:
        line += f" sigma {o['sigma']:.3f}"
    t = o.get("test") or {}
    if t.get("n"):
        rho = t.get("spearman")
        line += (
            f"; gold test MAE {t['mae_score']:.3f} (score) Spearman {'-' if rho is None else f'{rho:.3f}'} "
            f"within-one {t['within_one']:.3f} F1 at >= {t['cut']:g} {t['binary']['f1']:.3f}"
        )
    return line


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("input", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Output table (.csv, .jsonl, ...); with --engine ray, a folder of Parquet shards.",
)
@flags_from(PredictOptions)
@flags_from(RayOptions)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def predict(run_dir: Path, input: str, output: Path, quiet: bool, **options: Any) -> None:
    """Label every row of INPUT with the student in RUN_DIR: adds pred_label and pred_prob.

    INPUT: a table file (CSV, TSV, XLSX, JSONL, Parquet, Arrow), a folder written by datasets'
    save_to_disk, or a Hugging Face dataset name (read from its cache when offline).

    --engine ray: INPUT is a file or a folder of Parquet/CSV/TSV/JSONL/Arrow shards (or a save_to_disk
    folder); OUTPUT is a folder with one Parquet shard per input shard, each written whole. A rerun skips
    the shards that are finished; a shard that cannot be read is named at the end, after the others."""
    values = given(options)
    ray_fields = set(RayOptions.model_fields)
    opts = build_options(PredictOptions, {k: v for k, v in values.items() if k not in ray_fields})
    ray_opts = build_options(RayOptions, {k: v for k, v in values.items() if k in ray_fields})
    common = dict(
        text_col=opts.text_col, batch_size=opts.batch_size, merge=opts.merge, class_probs=opts.probs,
        dtype=opts.dtype, split=opts.split, chunk_rows=opts.chunk_rows, progress=not quiet,
    )  # fmt: skip
    if opts.engine == "ray":
        from ..predict.ray_engine import predict_shards

        run = predict_shards(run_dir, input, output, ray_opts, **common)  # type: ignore[arg-type]
        skipped = sum(s.status == "skipped" for s in run.shards)
        click.echo(
            f"{run.rows:,} rows in {run.wall_s:.1f}s ({run.items_per_s or 0} items/s, {run.workers} workers); "
            f"{len(run.shards) - skipped} shards written, {skipped} skipped -> {output}",
            err=True,
        )
        click.echo(str(output))
        return
    if ray_fields & set(values):
        flags = ", ".join(sorted(flag_name(f, RayOptions.model_fields[f]) for f in ray_fields & set(values)))
        raise click.UsageError(f"{flags} go with --engine ray")
    from ..predict.file import predict_file

    res = predict_file(run_dir, input, output, **common)  # type: ignore[arg-type]
    click.echo(f"{res['rows']:,} rows in {res['wall_s']:.1f}s ({res['items_per_s']} items/s) -> {output}", err=True)
    click.echo(str(output))
