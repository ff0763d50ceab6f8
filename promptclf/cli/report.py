"""``promptclf eval``, ``promptclf report`` and ``promptclf demo``: thin wrappers over the library."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .group import main


@main.command("eval")
@click.argument("labeled", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--gold-col", required=True, help="Column with the true labels.")
@click.option("--pred-col", default="pred_label", show_default=True, help="Column with the predicted labels.")
@click.option(
    "--status-col",
    default=None,
    help="Column with row statuses (ok/empty/invalid/error/shot). [default: pred_status when present]",
)
@click.option("--labels", "labels_spec", default=None, help="Label set: comma-separated names or a labels file.")
@click.option(
    "--prob-col",
    default="pred_prob",
    show_default=True,
    help="Column with each label's confidence: calibration (ECE, AUROC, accuracy by coverage) when present.",
)
@click.option("--n-boot", default=1000, show_default=True, type=click.IntRange(0), help="Bootstrap resamples for CIs.")
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@click.option(
    "--ordinal",
    is_flag=True,
    help="The labels are an ordered scale (lowest first; numeric names sort by value): adds MAE, Spearman, "
    "exact and within-one accuracy and F1 at --cut. Automatic when the run's label set is ordinal.",
)
@click.option(
    "--cut",
    type=float,
    default=None,
    help="Ordinal: binary F1 of 'rounded score >= CUT' (FineWeb-Edu uses 3 on 0-5). [default: the middle label]",
)
@click.option(
    "--score-col",
    default="pred_score",
    show_default=True,
    help="Ordinal: the predicted expected score (if present), for MAE and Spearman on the score.",
)
@click.option(
    "--multi-label",
    is_flag=True,
    help="Each row has zero or more labels (gold cells: JSON lists or ';'-separated; predictions from pred_labels): "
    "micro-, macro- and sample-F1, subset accuracy, Hamming loss, per-label scores. Automatic when the run is "
    "multi-label.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON instead of a table.")
def eval_cmd(
    labeled: Path,
    gold_col: str,
    pred_col: str,
    status_col: str | None,
    labels_spec: str | None,
    prob_col: str,
    n_boot: int,
    seed: int,
    ordinal: bool,
    cut: float | None,
    score_col: str,
    multi_label: bool,
    as_json: bool,
) -> None:
    """Score a labeled file against its gold column: accuracy, macro-F1, per-class, confusion, CIs,
    and the calibration of --prob-col (ECE, AUROC, how many rows to keep for 95/98/99% accuracy).

    Rows without gold are counted but not scored; rows that are not 'ok' count as wrong;
    few-shot example rows (status 'shot') are left out.
    """
    from ..data.tables import read_table
    from ..eval.metrics import evaluate_table, format_table
    from ..labels import parse_labels

    df = read_table(labeled)
    labels = parse_labels(labels_spec) if labels_spec else None
    metrics = evaluate_table(
        df,
        labeled,
        gold_col,
        pred_col,
        status_col or "pred_status",
        labels=labels,
        status_required=status_col is not None,
        n_boot=n_boot,
        seed=seed,
        prob_col=prob_col,
        ordinal=ordinal,
        cut=cut,
        score_col=score_col,
        multi_label=multi_label,
    )
    click.echo(json.dumps(metrics, indent=2) if as_json else format_table(metrics))


@main.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    default="report",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for index.html, report.md, report.json and the PNGs.",
)
@click.option("--title", default="promptclf: prompting vs fine-tuning", show_default=True)
@click.option(
    "--hourly-price",
    type=click.FloatRange(min=0),
    default=None,
    help="Dollars per machine-hour to price measured throughput, and a --base-url (self-hosted) teacher that has "
    "no list price (default: what distill runs recorded, students and local models only).",
)
@click.option(
    "--prices",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON price table (as for 'label --prices') to price runs whose model was not in the table when they ran.",
)
@click.option(
    "--gold",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A file with the true labels: every run and student is scored against it instead of its own gold.",
)
@click.option("--gold-col", default=None, help="The --gold file's column with the true labels.")
@click.option(
    "--gold-on",
    default="text",
    show_default=True,
    help="Column joining the --gold file with each run's rows: the text, or a row id present in both.",
)
def report_cmd(
    runs: tuple[Path, ...],
    out_dir: Path,
    title: str,
    hourly_price: float | None,
    prices: Path | None,
    gold: Path | None,
    gold_col: str | None,
    gold_on: str,
) -> None:
    """Compare run folders (or labeled files: x.csv → x.run/) in one HTML/Markdown/JSON report.

    Mix any runs: zero- and few-shot, providers and models, students on LLM labels or on gold.
    """
    from ..report.build import build_report

    paths = build_report(
        list(runs),
        out_dir,
        title=title,
        hourly_price=hourly_price,
        prices=prices,
        gold=gold,
        gold_col=gold_col,
        gold_on=gold_on,
    )
    click.echo(str(paths["html"]))
    click.echo(f"also: {paths['markdown']}, {paths['json']}", err=True)


@main.command("demo")
@click.option("--quick", is_flag=True, help="A small sample and short training (about 3 minutes on 2 cores).")
@click.option(
    "-o",
    "--out",
    "out_dir",
    default="demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the sample, labeled files, run folders and report/.",
)
@click.option("--seed", default=0, show_default=True, type=int)
def demo_cmd(quick: bool, out_dir: Path, seed: int) -> None:
    """Run the whole loop offline on BBC News: local LLM zero-/few-shot, MiniLM students, report.

    Uses only bundled models and data (SmolLM2-135M-Instruct, all-MiniLM-L6-v2); no key needed.
    """
    from ..demo import run_demo

    paths = run_demo(out_dir, quick=quick, seed=seed)
    click.echo(f"demo finished in {paths['seconds']:.0f}s; open the report:", err=True)
    click.echo(str(paths["html"]))
