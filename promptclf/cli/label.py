"""``promptclf label``: parse options, call :func:`promptclf.label.labeler.label_file`, print."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import ConfigError
from ..label.options import LabelOptions
from ..pricing.costs import compute_cost_per_1k
from .group import main
from .options import flags_from, given

if TYPE_CHECKING:
    from ..runs import LabelRun


def _fmt_candidates(c: dict[str, object] | None) -> list[str]:
    """The --candidates line: K, labels per request, answers outside them, candidate recall on gold rows."""
    if not c:
        return []
    line = f"  candidates: K={c['k']}, {c['mean_shown_labels']} labels shown per request"
    line += f", {c['off_candidate_answers']} answers outside them"
    if c.get("candidate_recall") is not None:
        line += f"; gold among the candidates on {c['candidate_recall']:.1%} of {c['n_candidate_rows']:,} gold rows"
    return [line]


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
    if m and m.get("n_scored") and m.get("multi_label"):
        lines.append(
            f"  multi-label on {m['n_scored']:,} rows with gold labels: micro-F1 {m['micro_f1']:.3f}, macro-F1 "
            f"{m['macro_f1']:.3f}, subset accuracy {m['subset_accuracy']:.1%}, Hamming loss {m['hamming_loss']:.3f}"
        )
    elif m and m.get("n_scored"):
        lines.append(
            f"  accuracy: {m['accuracy']:.1%} on {m['n_scored']:,} rows with gold labels (macro-F1 {m['macro_f1']:.3f})"
        )
        if m.get("levels"):  # a label tree: accuracy at every level, top first
            accs = ", ".join(
                f"level {lv['level']} {lv['accuracy']:.1%}" for lv in m["levels"] if lv["accuracy"] is not None
            )
            lines.append(f"  tree: {accs} (promptclf eval for macro-F1 per level)")
        o = m.get("ordinal")
        if o and o.get("n"):
            mae = o["mae_score"] if o.get("mae_score") is not None else o["mae"]
            lines.append(
                f"  ordinal: MAE {mae:.3f}, within one {o['within_one']:.1%}, F1 at >= {o['cut']:g} "
                f"{o['binary']['f1']:.3f} (promptclf eval --ordinal for the rest)"
            )
    c = m.get("calibration") if m else None
    if c and c.get("n"):
        lines.append(f"  confidence: ECE {c['ece']:.3f} on {c['n']:,} gold rows (promptclf eval for the table)")
    if rec.collapse:
        lines.append(f"  warning: {rec.collapse.message}")
    lines += _fmt_candidates(rec.candidates)
    u = rec.usage
    lines.append(
        f"  requests: {u.requests:,} ({u.cached_requests:,} from cache, {u.reasks:,} items re-asked, "
        f"{u.transport_retries:,} transport retries, {u.failed_requests:,} failed)"
    )
    cached = f" ({u.cached_prompt_tokens:,} prompt tokens from the provider's cache)" if u.cached_prompt_tokens else ""
    lines.append(f"  tokens: {u.prompt_tokens:,} prompt + {u.completion_tokens:,} completion{cached}")
    if u.batch_requests:
        lines.append(f"  batch API: {u.batch_requests:,} requests answered by provider batches, at the batch price")
    hourly = rec.options.get("hourly_price")
    if not rec.price_known and isinstance(hourly, (int, float)) and rec.items_per_s > 0:
        # A --base-url server priced by the hour: the basis is machine time, not a list price.
        per_1k = compute_cost_per_1k(rec.items_per_s, float(hourly)) or 0.0
        lines.append(f"  cost: ${per_1k:.4f} per 1,000 items, machine time at ${hourly:g}/h (no list price)")
    elif not rec.price_known:
        more = ", or pass --hourly-price for the serving machine" if rec.options.get("base_url") else ""
        lines.append(f"  cost: unknown: the model is not in the price table; add it with --prices{more}")
    elif rec.provider == "local" and rec.cost_usd == 0 and rec.cost_per_1k == 0:
        lines.append("  cost: none (the local model runs on this machine; compare by its speed below)")
    else:
        lines.append(f"  cost: ${rec.cost_usd:.4f} spent now; ${rec.cost_per_1k:.4f} per 1,000 items")
    lines += _fmt_cascade(rec)
    lines.append(f"  time: {rec.wall_s:.1f}s ({rec.items_per_s:.2f} items/s)")
    lines.append(f"  output: {rec.output}   run folder: {rec.run_dir}")
    if rec.dataset:
        lines.append(f"  dataset (save_to_disk): {rec.dataset}")
    return "\n".join(lines)


def _fmt_cascade(rec: LabelRun) -> list[str]:
    """The student-first cascade's lines: who labeled what, the threshold, the LLM's cost and the saving."""
    c = rec.cascade
    if c is None:
        return []
    how = "auto" if c.auto is not None else "given"
    t = f"{c.threshold:.4f}" if c.threshold is not None else "none (every row to the LLM)"
    lines = [
        f"  cascade: student {c.n_student:,} rows ({c.share_student:.1%}), LLM {c.n_llm:,} rows ({c.share_llm:.1%}); "
        f"threshold {t} ({how})"
    ]
    a = c.auto
    if a is not None and a.met:
        lines.append(
            f"    auto on {a.n:,} validation rows ({a.label_source} labels): agreement {a.agreement:.1%} "
            f"(target {a.target_agreement:.1%}), student keeps {a.coverage:.1%}"
        )
    elif a is not None:
        lines.append(f"    warning: no threshold met {a.target_agreement:.1%} agreement on {a.n:,} validation rows")
    if c.saved_usd is not None and c.llm_only_cost_usd is not None:
        lines.append(
            f"    LLM list cost ${c.llm_only_cost_usd - c.saved_usd:.4f} vs ${c.llm_only_cost_usd:.4f} LLM only: "
            f"saved ${c.saved_usd:.4f} ({c.saving_basis})"
        )
    else:
        lines.append(f"    saving: {c.saving_basis}")
    return lines


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
@flags_from(LabelOptions)
@click.option(
    "--labels",
    "labels_spec",
    help="Label set: 'a,b,c' or a .txt/.yaml/.json file with descriptions and aliases. Default: values of --label-col.",
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
    from ..labels import parse_labels

    values = given(kw)
    if labels_spec:
        parsed = parse_labels(labels_spec)
        values["labels"] = parsed.to_dict()
        if parsed.multi_label:  # a labels file's 'multi_label: true' is --multi-label
            values["multi_label"] = True
    opts = LabelOptions.build(**values)
    if dry_run and opts.student:
        raise ConfigError(
            "--dry-run with --student: the cascade's share is known only after the student runs; drop one"
        )
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
        if est.labels_listed is not None:  # --candidates: each request lists its own labels
            click.echo(
                f"# candidates: K={opts.candidates}; {est.labels_listed:.1f} of the {est.n_labels} labels listed per "
                "request on average (counted above)"
            )
        for line in est.notes:  # batch price, prompt-cache saving
            click.echo(f"# {line}")
        return
    run = label_file
    if opts.student:
        from ..predict.cascade import cascade_file as run
    rec = run(input_path, output, opts, name=name, progress=not quiet, split=split, save_dataset=save_dataset)
    if not quiet:
        click.echo(_fmt_summary(rec), err=True)
    click.echo(rec.output)
    from ..label.outcome import check_outcome

    check_outcome(rec, opts.min_coverage, rec.output)
