"""``promptclf review``: a queue of the LLM labels most likely to be wrong, for a person to check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..review.options import ReviewOptions
from .group import main
from .options import flags_from, given


@main.command()
@click.argument("input", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Queue CSV to write (plus OUTPUT.json with the figures). [default: INPUT.review.csv]",
)
@flags_from(ReviewOptions)
def review(input: Path, output: Path | None, **options: Any) -> None:
    """Rank the rows of INPUT (a `promptclf label` output) by how likely their LLM label is wrong.

    Three signals, each an estimate of P(label wrong), combined with weights fitted on INPUT
    itself (no gold; anchored on the LLM confidence; --weights equal for a plain mean): low LLM confidence
    (pred_probs/pred_prob; rows without one are neutral), disagreement with an out-of-fold
    student (logistic regression on all-MiniLM-L6-v2 embeddings, K folds), and disagreement
    with the LLM labels of the nearest other rows. Writes the top rows with the score, the
    reasons, a suggested label and an empty `corrected` column. Fill `corrected` and train on
    it with `promptclf distill INPUT --corrections OUTPUT`, or leave the rows out with
    `--exclude OUTPUT`.

    Multi-label files (--multi-label, automatic for a multi-label run) rank every (row, label) decision with the
    same three signals per label; the queue says which label is doubted and whether the LLM put it in or left it out.
    """
    from ..review.multilabel import is_multi_label_run, review_file
    from ..review.queue import default_output, summary_lines, write_review
    from ..review.queue import review as run_review

    opts = ReviewOptions.build(**given(options))
    if opts.multi_label or is_multi_label_run(input):
        result = review_file(input, opts)  # every (row, label) decision ranked
    else:
        result = run_review(input, opts)
    out = write_review(result, output or default_output(input))
    for line in summary_lines(result.summary):
        click.echo(line)
    click.echo(str(out))
