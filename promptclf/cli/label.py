"""``promptclf label``: parse options, call :func:`promptclf.label.labeler.label_file`, print."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .group import main

if TYPE_CHECKING:
    from ..runs import LabelRun


def _fmt_summary(rec: LabelRun) -> str:
    st = rec.statuses
    lines = [
        f"labeled {rec.n_items:,} rows with {rec.provider}:{rec.model}"
        + (f" ({st['shot']} shot rows not scored)" if st.get("shot") else ""),  # --examples rows are not input rows
        "  status: " + ", ".join(f"{k} {v:,}" for k, v in sorted(st.items())),
        f"  coverage: {rec.coverage:.1%}",
    ]
    if rec.rerun_rows:
        lines.append(f"  rerun: {rec.rerun_rows:,} rows (error or unsent) would be sent again by the same command")
    m = rec.metrics
    if m and m.get("n_scored"):
        lines.append(
            f"  accuracy: {m['accuracy']:.1%} on {m['n_scored']:,} rows with gold labels (macro-F1 {m['macro_f1']:.3f})"
        )
    if rec.collapse:
        lines.append(f"  warning: {rec.collapse.message}")
    u = rec.usage
    lines.append(
        f"  requests: {u.requests:,} ({u.cached_requests:,} from cache, {u.reasks:,} items re-asked, "
        f"{u.transport_retries:,} transport retries, {u.failed_requests:,} failed)"
    )
    cached = f" ({u.cached_prompt_tokens:,} prompt tokens from the provider's cache)" if u.cached_prompt_tokens else ""
    lines.append(f"  tokens: {u.prompt_tokens:,} prompt + {u.completion_tokens:,} completion{cached}")
    if u.batch_requests:
        lines.append(f"  batch API: {u.batch_requests:,} requests answered by provider batches, at the batch price")
    price = "" if rec.price_known else " (model not in the price table: add it with --prices)"
    lines.append(f"  cost: ${rec.cost_usd:.4f} spent now; ${rec.cost_per_1k:.4f} per 1,000 items{price}")
    lines.append(f"  time: {rec.wall_s:.1f}s ({rec.items_per_s:.2f} items/s)")
    lines.append(f"  output: {rec.output}   run folder: {rec.run_dir}")
    if rec.dataset:
        lines.append(f"  dataset (save_to_disk): {rec.dataset}")
    return "\n".join(lines)


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Labeled file (.csv/.tsv/.xlsx/.jsonl/.parquet/.arrow) or a run folder. Default: INPUT.labeled.csv.",
)
@click.option("--split", help="Split of a Hugging Face dataset INPUT (a name or a save_to_disk folder).")
@click.option(
    "--save-dataset",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the labeled rows as a Hugging Face dataset folder (save_to_disk), pred_label a ClassLabel.",
)
@click.option(
    "--chunk-rows",
    type=int,
    default=10_000,
    show_default=True,
    help="Rows read, labeled and appended to the output at a time (memory stays flat for any input size).",
)
@click.option(
    "--text-col",
    "text_cols",
    multiple=True,
    default=("text",),
    show_default=True,
    help="Text column; repeat for several (rendered as 'col: value' lines).",
)
@click.option(
    "--label-col", default="label", show_default=True, help="Column with gold/example labels (optional on rows)."
)
@click.option(
    "--labels",
    "labels_spec",
    help="Label set: 'a,b,c' or a .txt/.yaml/.json file with descriptions and aliases. Default: values of --label-col.",
)
@click.option("--shots", type=int, default=0, show_default=True, help="Few-shot examples per class (0 = zero-shot).")
@click.option(
    "--examples",
    type=click.Path(exists=True, dir_okay=False),
    help="File of labeled examples for --shots (default: labeled rows of INPUT, which are then not scored).",
)
@click.option("--batch-size", type=int, default=10, show_default=True, help="Items per request.")
@click.option(
    "--provider",
    type=click.Choice(["auto", "together", "openai", "local"]),
    default="auto",
    show_default=True,
    help="auto: Together if TOGETHER_API_KEY, else OpenAI if OPENAI_API_KEY, else local.",
)
@click.option(
    "--model",
    help="Model id (default per provider: Llama-3.3-70B on Together, gpt-4o-mini on OpenAI, SmolLM2-135M locally; local also takes a path or hub id).",
)
@click.option("--base-url", help="OpenAI-compatible server (vLLM, llama.cpp, Ollama), e.g. http://127.0.0.1:8000/v1.")
@click.option(
    "--structured",
    type=click.Choice(["auto", "json_schema", "json_object", "tools", "prompt"]),
    default="auto",
    show_default=True,
    help="How to ask for structured output.",
)
@click.option("--concurrency", type=int, default=4, show_default=True, help="Requests in flight.")
@click.option("--rpm", type=float, help="Requests-per-minute limit.")
@click.option("--tpm", type=float, help="Tokens-per-minute limit.")
@click.option(
    "--max-retries", type=int, default=6, show_default=True, help="Transport retries per request (429/5xx/timeouts)."
)
@click.option(
    "--breaker-failures",
    type=int,
    default=10,
    show_default=True,
    help="Circuit breaker: connection failures or 5xx in a row, with no success, that stop the run.",
)
@click.option(
    "--breaker-window-s",
    type=float,
    default=10.0,
    show_default=True,
    help="Circuit breaker: seconds those failures must span (unless a request runs out of retries first).",
)
@click.option(
    "--min-coverage",
    type=float,
    help="Fail with exit code 8 when fewer than this share (0-1) of the rows is labeled ok.",
)
@click.option(
    "--max-reasks",
    type=int,
    default=3,
    show_default=True,
    help="Re-ask rounds for missing/invalid items (smaller batches each time).",
)
@click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True, help="Seconds per request.")
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--max-tokens", type=int, help="Completion token cap per request (default scales with batch size).")
@click.option(
    "--template",
    type=click.Path(exists=True, dir_okay=False),
    help="Jinja template for the user message (default prompts/batch.j2, or score.j2 for local).",
)
@click.option(
    "--system-template",
    type=click.Path(exists=True, dir_okay=False),
    help="Jinja template for the system message (default prompts/system.j2).",
)
@click.option(
    "--max-chars",
    type=int,
    default=4000,
    show_default=True,
    help="Truncate item texts in the prompt to this many characters.",
)
@click.option(
    "--shot-max-chars",
    type=int,
    default=400,
    show_default=True,
    help="Truncate each few-shot example to this many characters (shorter = cheaper prompts).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for shot selection.")
@click.option(
    "--shot-selection",
    type=click.Choice(["random", "similar"]),
    default="random",
    show_default=True,
    help="random: the same seeded --shots per class in every prompt. similar: each request gets the --shots per "
    "class nearest to its texts (all-MiniLM-L6-v2 embeddings, cached in the store), and chat batches group "
    "similar texts; the local model then gives every text its own prompt (no shared prefix).",
)
@click.option(
    "--shot-pool",
    type=int,
    default=20,
    show_default=True,
    help="--shot-selection similar without --examples: labeled rows per class of INPUT set aside (seeded) as the "
    "pool similar shots are picked from; they are not scored. With --examples the whole file is the pool.",
)
@click.option(
    "--shot-attention",
    type=click.Choice(["full", "answer"]),
    default="full",
    show_default=True,
    help="Local model with --shots: 'full' scores the exact prompt; 'answer' lets only the answer attend to the "
    "examples, not the item (10-shot at 1.2x zero-shot cost instead of 2.2x on SmolLM2; changes some labels).",
)
@click.option(
    "--items-per-pass",
    type=click.IntRange(1, 64),
    default=None,
    help="Local model: items scored per forward pass, padded, behind the shared prefix (same scores). "
    "Default: 8 on a CUDA GPU, 1 on CPU. At most --batch-size items share a pass.",
)
@click.option(
    "--calibrate",
    is_flag=True,
    help="Local model: contextual calibration (divide each item's label probabilities by those the same prompt "
    "gives content-free inputs 'N/A', '', '[MASK]', then renormalise). Off by default: see the README for when it helps.",
)
@click.option(
    "--top-logprobs",
    type=click.IntRange(0, 20),
    default=5,
    show_default=True,
    help="Chat providers: ask for token log-probabilities with this many alternatives, for pred_prob and "
    "pred_probs (0: ask for none). A server that rejects them is asked without them for the rest of the run.",
)
@click.option(
    "--store",
    type=click.Path(dir_okay=False),
    help="SQLite store (default $PROMPTCLF_STORE or ~/.cache/promptclf/store.sqlite).",
)
@click.option("--no-cache", is_flag=True, help="Do not reuse stored responses (they are still recorded).")
@click.option(
    "--prices", type=click.Path(exists=True, dir_okay=False), help="JSON price table overriding the packaged one."
)
@click.option(
    "--batch-api",
    is_flag=True,
    help="Send the job as a provider batch (OpenAI, Together; or a --base-url server with batch endpoints) at the "
    "batch price; polls until done, resumes the same batch after a kill. Re-asks go synchronously.",
)
@click.option(
    "--poll-interval",
    "poll_interval_s",
    type=float,
    default=30.0,
    show_default=True,
    help="--batch-api: seconds between polls of a running batch.",
)
@click.option(
    "--batch-min-requests",
    type=int,
    default=100,
    show_default=True,
    help="--batch-api: lines a batch left unanswered go to a follow-up batch if at least this many, else synchronously.",
)
@click.option("--name", help="Run name for reports (default: output name).")
@click.option("--dry-run", is_flag=True, help="Show the first prompt, token count and estimated cost; send nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def label(
    input_path: str,
    output: Path | None,
    split: str | None,
    save_dataset: Path | None,
    labels_spec: str | None,
    name: str | None,
    dry_run: bool,
    quiet: bool,
    **kw: object,
) -> None:
    """Label every row of INPUT with an LLM.

    INPUT: a table file (CSV, TSV, XLSX, JSONL, Parquet, Arrow), a folder written by datasets'
    save_to_disk, or a Hugging Face dataset name (read from its cache when offline; --split).
    The output is written chunk by chunk as the run goes."""
    from ..data.tables import read_table
    from ..label.labeler import Labeler, label_file
    from ..label.options import LabelOptions
    from ..labels import parse_labels

    kw["text_cols"] = list(kw["text_cols"])  # type: ignore[call-overload]
    if labels_spec:
        kw["labels"] = parse_labels(labels_spec).to_dict()
    opts = LabelOptions.build(**kw)
    if dry_run:
        labeler = Labeler(opts, progress=not quiet)
        examples = read_table(opts.examples) if opts.examples else None
        est = labeler.dry_run(read_table(input_path, split=split), examples, source=str(input_path))
        approx = "" if est.tokens_exact else "≈"
        click.echo(est.prompt)
        click.echo("")
        click.echo(f"# provider {est.provider}:{est.model}")
        shots = (
            f"{est.shots} pool examples ({opts.shots} per class per prompt, the nearest)"
            if opts.shot_selection == "similar" and opts.shots
            else f"{est.shots} shots"
        )
        click.echo(f"# rows {est.rows:,}: {est.items:,} to label, {shots}, {est.skipped} with bad text")
        click.echo(f"# first prompt: {approx}{est.first_prompt_tokens:,} tokens; {est.requests:,} requests")
        click.echo(
            f"# estimated tokens: {approx}{est.est_prompt_tokens:,} prompt + {approx}{est.est_completion_tokens:,} completion"
        )
        known = "" if est.price_known else " (model not in the price table: add it with --prices)"
        click.echo(f"# estimated cost: ${est.est_cost_usd:.4f} (before re-asks){known}")
        for line in est.notes:  # batch price, prompt-cache saving
            click.echo(f"# {line}")
        return
    rec = label_file(input_path, output, opts, name=name, progress=not quiet, split=split, save_dataset=save_dataset)
    if not quiet:
        click.echo(_fmt_summary(rec), err=True)
    click.echo(rec.output)
    from ..label.outcome import check_outcome

    check_outcome(rec, opts.min_coverage, rec.output)
