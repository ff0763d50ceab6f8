"""Gold from outside the runs (report --gold FILE --gold-col C) and, with no gold at all, agreement
between runs instead of a verdict on accuracy. Checked against the rendered report text."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from test_report import make_distill_run, make_label_run

from promptclf.cli import main
from promptclf.data.tables import read_table, write_table
from promptclf.errors import InputError
from promptclf.eval.metrics import evaluate
from promptclf.report.build import build_report


def _strip_gold(labeled: Path) -> Path:
    """The labeled file without its gold column, as 'label --label-col none' leaves it; returns the gold."""
    df = read_table(labeled)
    gold = df[["text", "label"]].rename(columns={"label": "truth"})
    gold["row_id"] = range(len(gold))
    write_table(df.drop(columns=["label"]).assign(row_id=range(len(df))), labeled)
    p = labeled.with_suffix(".run") / "run.json"
    rj = json.loads(p.read_text())
    rj.update(metrics=None, gold_col=None)
    p.write_text(json.dumps(rj))
    return write_table(gold, labeled.parent / "gold.csv")


def _verdict(paths: dict[str, Path]) -> str:
    return paths["markdown"].read_text().split("## Verdict", 1)[1].split("## Runs", 1)[0]


def test_no_gold_says_so_and_shows_agreement(tmp_path: Path) -> None:
    a = make_label_run(tmp_path, "run-a", 0.8, 0.2, 5.0, provider="openai")
    b = make_label_run(tmp_path, "run-b", 0.6, 0.2, 5.0, provider="openai")
    _strip_gold(a), _strip_gold(b)
    paths = build_report([a, b], tmp_path / "r")
    verdict = _verdict(paths)
    assert "No run has gold labels to score against, so nothing here says which run is more accurate" in verdict
    assert "'report --gold FILE --gold-col COLUMN'" in verdict
    da, db = read_table(a), read_table(b)
    both = (da["pred_status"] == "ok") & (db["pred_status"] == "ok")
    want = (da["pred_label"][both] == db["pred_label"][both]).mean()
    assert f"run-a and run-b give the same label to {100 * want:.1f}% of the {both.sum()} items both labeled" in verdict
    assert "Best prompted run" not in verdict and "accuracy (" not in verdict


@pytest.mark.parametrize("on", ["text", "row_id"])
def test_gold_file_scores_every_run(tmp_path: Path, on: str) -> None:
    a = make_label_run(tmp_path, "run-a", 0.8, 0.2, 5.0, provider="openai")
    truth = read_table(a)["label"].tolist()
    gold = _strip_gold(a)
    paths = build_report([a], tmp_path / "r", gold=gold, gold_col="truth", gold_on=on)
    df = read_table(a)
    want = evaluate(truth, df["pred_label"].tolist(), ["business", "sport", "tech"], status=df["pred_status"].tolist())
    verdict = _verdict(paths)
    assert f"Accuracy is scored against the gold file gold.csv (column 'truth', joined by '{on}')" in verdict
    assert "every item of every run has a gold row" in verdict
    assert "no gold labels to compare with" not in verdict
    assert f"{100 * want['accuracy']:.1f}% accuracy" in verdict


def test_gold_file_counts_rows_it_does_not_cover_and_joins_students_by_text(tmp_path: Path) -> None:
    a = make_label_run(tmp_path, "run-a", 0.8, 0.2, 5.0, provider="openai")
    gold = _strip_gold(a)
    stu = make_distill_run(tmp_path, "stu", a, 0.8, train_cost=0.1, cost_per_1k=0.001)
    # the student's test texts t0..t29 are not in the gold file: half of them are added
    preds = read_table(stu / "predictions.csv")
    extra = pd.DataFrame({"text": preds["text"][:15], "truth": preds["gold"][:15], "row_id": range(1000, 1015)})
    write_table(pd.concat([read_table(gold), extra]), gold)
    paths = build_report([a, stu], tmp_path / "r", gold=gold, gold_col="truth")
    verdict = _verdict(paths)
    assert "stu 15 of 30 items (the rest have no gold row)" in verdict
    want = evaluate(preds["gold"][:15].tolist(), preds["pred"][:15].tolist(), ["business", "sport", "tech"])
    row = next(r for r in json.loads(paths["json"].read_text())["runs"] if r["name"] == "stu")
    assert row["accuracy"] == pytest.approx(want["accuracy"]) and row["n_scored"] == 15
    # joined by a row id the student's predictions do not have: said, not scored
    paths = build_report([a, stu], tmp_path / "r2", gold=gold, gold_col="truth", gold_on="row_id")
    assert "stu not scored (its output has no 'row_id' column to join by)" in _verdict(paths)


def test_gold_errors_name_the_fix(tmp_path: Path) -> None:
    a = make_label_run(tmp_path, "run-a", 0.8, 0.2, 5.0, provider="openai")
    gold = _strip_gold(a)
    with pytest.raises(InputError, match="--gold-col"):
        build_report([a], tmp_path / "r", gold=gold)
    with pytest.raises(InputError, match="no column 'nope'.*--gold-col"):
        build_report([a], tmp_path / "r", gold=gold, gold_col="nope")
    clash = write_table(pd.DataFrame({"text": ["x", "x"], "truth": ["tech", "sport"]}), tmp_path / "clash.csv")
    with pytest.raises(InputError, match="different gold labels.*--gold-on ID"):
        build_report([a], tmp_path / "r", gold=clash, gold_col="truth")
    res = CliRunner().invoke(
        main, ["report", str(a), "--gold", str(gold), "--gold-col", "truth", "-o", str(tmp_path / "cli")]
    )
    assert res.exit_code == 0, res.output
    assert "scored against the gold file gold.csv" in (tmp_path / "cli" / "report.md").read_text()
