"""``promptclf sample``: export the bundled BBC News data as a table to label."""

from __future__ import annotations

from pathlib import Path

import click

from .group import main


@main.command()
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("news.csv"), show_default=True
)
@click.option(
    "-n",
    "--rows",
    type=int,
    default=200,
    show_default=True,
    help="Stratified sample size (0 = all 2,127 unique articles).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--unlabeled",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of rows whose label is blanked (to mimic partly labeled data).",
)
def sample(output: Path, rows: int, seed: int, unlabeled: float) -> None:
    """Write a stratified sample of BBC News (columns id, text, label) to OUTPUT."""
    from ..data.tables import bbc_sample, write_table

    df = bbc_sample(rows or None, seed=seed)[["id", "text", "label"]]
    if unlabeled > 0:
        blank = df.sample(frac=min(unlabeled, 1.0), random_state=seed).index
        df.loc[blank, "label"] = ""
    write_table(df, output)
    click.echo(f"wrote {len(df):,} BBC News articles to {output}", err=True)
    click.echo(str(output))
