"""``promptclf distill`` and ``promptclf predict``: train a local student on an LLM's labels, then use it."""

from __future__ import annotations

from pathlib import Path

import click

from .group import main


def _csv_list(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@main.command()
@click.argument("input", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder to write (and resume).",
)
@click.option(
    "--recipe",
    help="Packaged recipe name (minilm-lora, llama-3.2-3b-qlora, ...) or a YAML path; options given here override it.",
)
@click.option(
    "--student",
    help="Local model folder or hub id (in the local cache when offline). Default: the bundled all-MiniLM-L6-v2.",
)
@click.option(
    "--method",
    type=click.Choice(["lora", "full", "qlora"]),
    help="lora (default), full fine-tuning, or qlora (4-bit base; needs a CUDA GPU unless --allow-cpu).",
)
@click.option(
    "--head",
    type=click.Choice(["cls", "lm"]),
    help="cls: new classification head (default). lm: keep the LM head, train it to answer with the label word (causal LMs).",
)
@click.option("--text-col", help="Text column. [default: text]")
@click.option("--label-col", help="Teacher label column. [default: pred_label]")
@click.option(
    "--status-col",
    help="Train only on rows whose status is 'ok' (all labeled rows if the column is absent). [default: pred_status]",
)
@click.option("--gold-col", help="Gold label column: evaluation only, unless --train-on gold. [default: label]")
@click.option(
    "--train-on",
    type=click.Choice(["teacher", "gold"]),
    help="Train on the teacher's labels (default) or the gold labels (the ceiling).",
)
@click.option(
    "--fallback-col",
    help="Where --label-col is empty, train on this column (e.g. --label-col corrected --fallback-col pred_label).",
)
@click.option(
    "--corrections",
    type=click.Path(dir_okay=False),
    help="A `promptclf review` queue: its filled `corrected` cells replace the LLM label of those rows (by text).",
)
@click.option(
    "--exclude",
    type=click.Path(dir_okay=False),
    help="A table (e.g. a review queue): rows with its texts are left out of training (gold test rows stay).",
)
@click.option(
    "--soft",
    is_flag=True,
    default=None,
    help="Train on the teacher's distribution (--probs-col) with KL at --temperature where a row has one, hard labels elsewhere.",
)
@click.option("--temperature", type=float, help="Soft labels: temperature, loss scaled by T^2. [default: 2]")
@click.option("--probs-col", help="Teacher distribution column (JSON {label: prob}). [default: pred_probs]")
@click.option("--split", help="Split of a Hugging Face dataset INPUT (a name or a save_to_disk folder).")
@click.option("--eval-split", help="Split of a Hugging Face dataset given to --eval.")
@click.option(
    "--eval",
    "eval_file",
    help="Gold test file. Default: hold out --test-fraction of the gold rows.",
)
@click.option(
    "--val-fraction", type=float, help="Share of training rows for validation / early stopping. [default: 0.1]"
)
@click.option(
    "--test-fraction", type=float, help="Share of gold rows held out for testing when no --eval. [default: 0.2]"
)
@click.option("--epochs", type=float, help="[default: 3]")
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps.")
@click.option("--lr", "learning_rate", type=float, help="Learning rate. [default: 5e-4 LoRA, 2e-4 QLoRA, 5e-5 full]")
@click.option("--batch-size", type=int, help="[default: 16]")
@click.option("--grad-accum", type=int, help="Gradient accumulation steps. [default: 1]")
@click.option("--max-length", type=int, help="Tokens per text (longer texts are truncated). [default: 128]")
@click.option("--lora-r", type=int, help="[default: 8]")
@click.option("--lora-alpha", type=int, help="[default: 16]")
@click.option("--lora-dropout", type=float, help="[default: 0.1]")
@click.option(
    "--target-modules",
    callback=_csv_list,
    help="Comma-separated LoRA targets. [default: query,value for BERT; q,k,v,o_proj for LMs]",
)
@click.option(
    "--patience",
    type=int,
    help="Early stopping: evaluations without a validation macro-F1 gain (0 = off). [default: 2]",
)
@click.option("--eval-steps", type=int, help="Evaluate and checkpoint every N steps. [default: every epoch]")
@click.option("--logging-steps", type=int, help="Log the training loss every N steps. [default: 10]")
@click.option(
    "--padding",
    type=click.Choice(["dynamic", "max_length"]),
    help="dynamic: length-grouped batches padded to their longest text (default); max_length: pad every text to --max-length.",
)
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None, help="[default: on for causal LMs]")
@click.option(
    "--allow-cpu", is_flag=True, default=None, help="Run QLoRA on CPU (slow) instead of refusing without a GPU."
)
@click.option("--seed", type=int, help="[default: 0]")
@click.option("--threads", type=int, help="CPU threads for torch.")
@click.option("--hourly-price", type=float, help="Machine $/hour for cost figures. [default: 0.10 CPU, 2.50 GPU]")
@click.option("--name", help="Run name in reports. [default: folder name]")
@click.option("--restart", is_flag=True, help="Discard checkpoints/results in the folder and train anew.")
def distill(input: str, output: Path, recipe: str | None, restart: bool, **options: object) -> None:
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
    from ..distill.run import DistillOptions
    from ..distill.run import distill as run_distill

    opts = DistillOptions.build(recipe=recipe, **options)
    run = run_distill(input, output, opts, restart=restart)
    if not is_main():  # under torchrun, rank 0 prints the summary
        return
    m = run.get("metrics") or {}
    tr = run["train"]
    if m:
        click.echo(f"gold test ({run['n_items']} rows): accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")
    if run.get("teacher_agreement") is not None:
        click.echo(f"agreement with teacher ({run['teacher_agreement_on']}): {run['teacher_agreement']:.4f}")
    click.echo(
        f"train {tr['time_s']:.1f}s (${tr['train_cost_usd']:.4f})  predict {run['items_per_s']:.1f} items/s "
        f"(${run['cost_per_1k']:.5f}/1k)  peak {tr['peak_memory_mb']:.0f} MB"
    )
    click.echo(str(output))


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
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process. ray: Ray Data over a file or a folder of shards, one Parquet shard out per "
    "shard in (pip install 'promptclf[ray]').",
)
@click.option(
    "--address", help="--engine ray: the Ray cluster to attach to (auto, HOST:6379). [default: start a local one]"
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="--engine ray: student workers. [default: one per GPU, else one per CPU core]",
)
@click.option("--text-col", help="Text column. [default: the one the student was trained with]")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--merge", is_flag=True, help="Merge the LoRA adapter into the weights before predicting.")
@click.option("--probs", is_flag=True, help="Also write one prob_<label> column per class.")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "int8"]),
    default="float32",
    show_default=True,
    help="int8: dynamic quantization, ~3x faster on CPU; bfloat16: half the memory. Both merge the adapter.",
)
@click.option("--split", help="Split of a Hugging Face dataset INPUT (a name or a save_to_disk folder).")
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=8192,
    show_default=True,
    help="Rows read, predicted and written at a time (memory stays flat for any input size).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def predict(
    run_dir: Path,
    input: str,
    output: Path,
    text_col: str | None,
    batch_size: int,
    merge: bool,
    probs: bool,
    dtype: str,
    split: str | None,
    chunk_rows: int,
    quiet: bool,
    engine: str,
    address: str | None,
    workers: int | None,
) -> None:
    """Label every row of INPUT with the student in RUN_DIR: adds pred_label and pred_prob.

    INPUT: a table file (CSV, TSV, XLSX, JSONL, Parquet, Arrow), a folder written by datasets'
    save_to_disk, or a Hugging Face dataset name (read from its cache when offline).

    --engine ray: INPUT is a file or a folder of Parquet/CSV/TSV/JSONL/Arrow shards (or a save_to_disk
    folder); OUTPUT is a folder with one Parquet shard per input shard, each written whole. A rerun skips
    the shards that are finished; a shard that cannot be read is named at the end, after the others."""
    if engine == "ray":
        from ..predict.ray_engine import RayOptions, predict_shards

        run = predict_shards(
            run_dir, input, output, RayOptions(address=address, workers=workers), text_col=text_col,
            batch_size=batch_size, merge=merge, class_probs=probs, dtype=dtype, split=split, chunk_rows=chunk_rows,
            progress=not quiet,
        )  # fmt: skip
        skipped = sum(s.status == "skipped" for s in run.shards)
        click.echo(
            f"{run.rows:,} rows in {run.wall_s:.1f}s ({run.items_per_s or 0} items/s, {run.workers} workers); "
            f"{len(run.shards) - skipped} shards written, {skipped} skipped -> {output}",
            err=True,
        )
        click.echo(str(output))
        return
    if address or workers:
        raise click.UsageError("--address and --workers go with --engine ray")
    from ..predict.student import predict_file

    res = predict_file(
        run_dir, input, output, text_col=text_col, batch_size=batch_size, merge=merge, class_probs=probs,
        dtype=dtype, split=split, chunk_rows=chunk_rows, progress=not quiet,
    )  # fmt: skip
    click.echo(f"{res['rows']:,} rows in {res['wall_s']:.1f}s ({res['items_per_s']} items/s) -> {output}", err=True)
    click.echo(str(output))
