"""``promptclf review``: a queue of the LLM labels most likely to be wrong, for a person to check."""

from __future__ import annotations

from pathlib import Path

import click

from .group import main


@main.command()
@click.argument("input", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Queue CSV to write (plus OUTPUT.json with the figures). [default: INPUT.review.csv]",
)
@click.option("--top", help="Rows in the queue: a count (200), a fraction (0.1) or a percentage. [default: 10%]")
@click.option("--text-col", help="Text column. [default: text]")
@click.option("--label-col", help="LLM label column. [default: pred_label]")
@click.option("--status-col", help="Rank only rows whose status is 'ok'. [default: pred_status]")
@click.option("--gold-col", help="Gold labels, if any: prints the precision at k of the ranking.")
@click.option("--folds", type=int, help="Cross-validation folds of the student. [default: 5]")
@click.option("--neighbours", type=int, help="Nearest rows whose LLM labels vote. [default: 10]")
@click.option("--seed", type=int, help="Fold assignment seed. [default: 0]")
@click.option("--store", help="SQLite store caching embeddings (default $PROMPTCLF_STORE or ~/.cache/promptclf).")
@click.option("--no-cache", is_flag=True, default=None, help="Do not read or write cached embeddings.")
def review(input: Path, output: Path | None, **options: object) -> None:
    """Rank the rows of INPUT (a `promptclf label` output) by how likely their LLM label is wrong.

    Three signals, each an estimate of P(label wrong), averaged: low LLM confidence
    (pred_probs/pred_prob; rows without one are neutral), disagreement with an out-of-fold
    student (logistic regression on all-MiniLM-L6-v2 embeddings, K folds), and disagreement
    with the LLM labels of the nearest other rows. Writes the top rows with the score, the
    reasons, a suggested label and an empty `corrected` column. Fill `corrected` and train on
    it with `promptclf distill INPUT --corrections OUTPUT`, or leave the rows out with
    `--exclude OUTPUT`.
    """
    from ..review.queue import ReviewOptions, default_output, summary_lines, write_review
    from ..review.queue import review as run_review

    opts = ReviewOptions.build(**options)
    result = run_review(input, opts)
    out = write_review(result, output or default_output(input))
    for line in summary_lines(result.summary):
        click.echo(line)
    click.echo(str(out))
