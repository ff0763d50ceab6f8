"""``promptclf sample`` and ``promptclf data``: write a shipped data set as a table to label."""

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


_SETS = ("icd10cm", "icd10cm-flat", "hpo", "bbc-multilabel")


@main.command("data")
@click.argument("name", type=click.Choice(_SETS))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("-n", "--rows", type=int, default=0, show_default=True, help="Seeded sample size (0 = all rows).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--per-leaf",
    type=int,
    default=None,
    help="ICD-10-CM: at most this many titles per block (a few blocks hold over a thousand).",
)
@click.option(
    "--chapters",
    default=None,
    help="ICD-10-CM: keep only these chapters, by code range, comma-separated (e.g. A00-B99,C00-D49).",
)
@click.option(
    "--labels-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the labels YAML (the tree for icd10cm; descriptions from the data) for --labels.",
)
def data(
    name: str, output: Path, rows: int, seed: int, per_leaf: int | None, chapters: str | None, labels_out: Path | None
) -> None:
    """Write a real labeled set shipped in a package (columns id, text, label) to OUTPUT.

    icd10cm: ICD-10-CM diagnosis titles, label the path chapter/block (a 2-level tree, 262 leaves);
    icd10cm-flat: the same, label the block alone (262 labels); hpo: HPO phenotype definitions, label
    a JSON list of organ systems (multi-label, 23 labels); bbc-multilabel: joined BBC openings
    (synthetic multi-label).
    """
    from ..data import taxonomies as tx
    from ..data.tables import write_table

    n = rows or None
    labels_yaml = None
    if name.startswith("icd10cm"):
        keep = [c.strip() for c in chapters.split(",") if c.strip()] if chapters else None
        df = tx.icd10cm(n, seed=seed, per_leaf=per_leaf, path=name == "icd10cm", chapters=keep)
        labels_yaml = tx.icd10cm_tree_yaml(df) if name == "icd10cm" else tx.icd10cm_labels_yaml(df)
    elif chapters:
        raise click.UsageError("--chapters applies to icd10cm and icd10cm-flat only")
    elif name == "hpo":
        df = tx.hpo_multilabel(n, seed=seed)
        labels_yaml = tx.hpo_labels_yaml()
    else:
        from ..data.corpora import bbc_multilabel

        df = bbc_multilabel(rows or 300, seed=seed, none_share=0.1)
        df.insert(0, "id", [f"bbcml-{i}" for i in range(len(df))])
    write_table(df[["id", "text", "label"]], output)
    click.echo(f"wrote {len(df):,} rows of {name} to {output}", err=True)
    if labels_out is not None:
        if labels_yaml is None:
            raise click.UsageError(f"{name} has no labels file; its labels are the names in the label column")
        labels_out.write_text(labels_yaml, encoding="utf-8")
        click.echo(f"wrote the labels to {labels_out}", err=True)
    click.echo(str(output))
