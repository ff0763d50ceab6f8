"""promptclf.eval.metrics and `promptclf eval` against hand-computed values on small fixtures."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.errors import InputError
from promptclf.eval.metrics import NONE_COLUMN, _f1_from_confusion, evaluate, format_table

LABELS = ["a", "b", "c", "d"]  # "d" occurs nowhere: it must still get a per-class row
# gold, pred, status
ROWS = [
    ("a", "a", "ok"),  # right
    ("a", "b", "ok"),  # wrong
    ("b", "b", "ok"),  # right
    ("b", "", "empty"),  # no answer → wrong, (none) column
    ("a", "zzz", "invalid"),  # off the list → wrong
    ("c", "", "error"),  # request failed → wrong
    ("", "a", "ok"),  # no gold: counted, not scored
    ("b", "a", "shot"),  # a few-shot example: left out entirely
    ("a", "a", "ok"),  # right
    ("b", "x", "ok"),  # status ok but off-list pred → invalid
]


def _cols() -> tuple[list[str], list[str], list[str]]:
    gold, pred, status = (list(x) for x in zip(*ROWS, strict=True))
    return gold, pred, status


def test_hand_computed_fixture() -> None:
    gold, pred, status = _cols()
    m = evaluate(gold, pred, LABELS, status=status, n_boot=200)
    assert (m["n_rows"], m["n_shots"], m["n_gold"], m["n_scored"], m["n_valid"]) == (9, 1, 8, 8, 4)
    assert m["accuracy"] == pytest.approx(3 / 8)
    assert m["coverage"] == pytest.approx(4 / 8)
    assert m["invalid_rate"] == pytest.approx(2 / 8)
    assert m["empty_rate"] == pytest.approx(1 / 8)
    assert m["error_rate"] == pytest.approx(1 / 8)
    pc = m["per_class"]
    # a: gold rows 1,2,5,9; predicted a on rows 1,9 (both right)
    assert pc["a"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 4})
    # b: gold rows 3,4,10; predicted b on rows 2,3 (one right)
    assert pc["b"] == pytest.approx({"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "support": 3})
    # c is never predicted, d is absent everywhere: both present with zeros
    assert pc["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert pc["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # macro over labels seen in gold or predictions (a, b, c), not d
    assert m["macro_f1_labels"] == ["a", "b", "c"]
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.4 + 0.0) / 3)
    assert m["confusion"]["labels"] == LABELS
    assert m["confusion"]["columns"] == [*LABELS, NONE_COLUMN]
    assert m["confusion"]["matrix"] == [
        [2, 1, 0, 0, 1],
        [0, 1, 0, 0, 2],
        [0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0],
    ]
    for key in ("accuracy", "macro_f1"):
        lo, hi = m[f"{key}_ci"]
        assert 0.0 <= lo <= m[key] <= hi <= 1.0
        assert hi > lo


def test_without_status_column_empty_and_offlist_preds_are_wrong() -> None:
    m = evaluate(["a", "a", "b", "b"], ["a", "", "nope", "b"], ["a", "b"], n_boot=0)
    assert m["accuracy"] == 0.5
    assert (m["coverage"], m["empty_rate"], m["invalid_rate"], m["error_rate"]) == (0.5, 0.25, 0.25, 0.0)
    assert m["accuracy_ci"] is None and m["macro_f1_ci"] is None


def test_gold_is_normalised_and_unknown_gold_kept_as_unpredictable_class() -> None:
    m = evaluate([" Sport", "TECH", "weather"], ["sport", "tech", "sport"], ["sport", "tech"], n_boot=0)
    assert m["unknown_gold"] == ["weather"]
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["per_class"]["weather"]["support"] == 1
    assert m["confusion"]["matrix"][2] == [1, 0, 0, 0]  # weather row: predicted sport


def test_nothing_scored_and_length_mismatch() -> None:
    m = evaluate(["", None, float("nan")], ["a", "b", "a"], ["a", "b"])
    assert m["n_rows"] == 3 and m["n_scored"] == 0
    assert m["accuracy"] is None and m["coverage"] is None and m["accuracy_ci"] is None
    with pytest.raises(InputError, match="3 rows"):
        evaluate(["a", "b", "a"], ["a"], ["a", "b"])


def test_agrees_with_sklearn_and_row_bootstrap_on_random_data() -> None:
    from sklearn.metrics import accuracy_score, f1_score

    rng = random.Random(1)
    labels = ["x", "y", "z"]
    gold = [rng.choice(labels) for _ in range(400)]
    pred = [g if rng.random() < 0.7 else rng.choice([*labels, ""]) for g in gold]
    m = evaluate(gold, pred, labels, n_boot=2000, seed=3)
    y_pred = [p or NONE_COLUMN for p in pred]
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(gold, y_pred, labels=labels, average="macro", zero_division=0))
    # the vectorised F1 used by the bootstrap matches sklearn on the full sample
    conf = np.asarray(m["confusion"]["matrix"])
    assert float(_f1_from_confusion(conf, 3, np.arange(3))) == pytest.approx(m["macro_f1"])
    # the multinomial bootstrap matches a plain row-resampling bootstrap
    nrng = np.random.default_rng(0)
    g, p = np.array(gold), np.array(y_pred)
    accs, f1s = [], []
    for _ in range(300):
        idx = nrng.integers(0, len(g), len(g))
        accs.append(accuracy_score(g[idx], p[idx]))
        f1s.append(f1_score(g[idx], p[idx], labels=labels, average="macro", zero_division=0))
    for ours, theirs in ((m["accuracy_ci"], accs), (m["macro_f1_ci"], f1s)):
        assert ours[0] == pytest.approx(np.percentile(theirs, 2.5), abs=0.02)
        assert ours[1] == pytest.approx(np.percentile(theirs, 97.5), abs=0.02)
        assert ours[0] < m["accuracy" if theirs is accs else "macro_f1"] < ours[1]
    # same seed → same interval; the interval narrows with more data
    assert evaluate(gold, pred, labels, n_boot=2000, seed=3)["accuracy_ci"] == m["accuracy_ci"]
    small = evaluate(gold[:40], pred[:40], labels, n_boot=2000, seed=3)
    assert (small["accuracy_ci"][1] - small["accuracy_ci"][0]) > (m["accuracy_ci"][1] - m["accuracy_ci"][0])


def test_format_table_lists_everything() -> None:
    gold, pred, status = _cols()
    text = format_table(evaluate(gold, pred, LABELS, status=status, n_boot=100))
    assert "accuracy   37.5%" in text and "coverage   50.0%" in text
    assert "few-shot examples excluded: 1" in text
    assert NONE_COLUMN in text and "\nd " in text


# --- promptclf eval ---------------------------------------------------------------------------


@pytest.fixture()
def labeled_csv(tmp_path):  # type: ignore[no-untyped-def]
    gold, pred, status = _cols()
    df = pd.DataFrame({"text": [f"t{i}" for i in range(len(gold))], "label": gold, "pred_label": pred})
    df["pred_status"] = status
    path = tmp_path / "news.labeled.csv"
    df.to_csv(path, index=False)
    return path


def test_eval_cli_table_and_json(labeled_csv) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    res = runner.invoke(main, ["eval", str(labeled_csv), "--gold-col", "label", "--labels", "a,b,c,d"])
    assert res.exit_code == 0, res.output
    assert "accuracy   37.5%" in res.output and "macro-F1   35.6%" in res.output
    res = runner.invoke(main, ["eval", str(labeled_csv), "--gold-col", "label", "--json", "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    assert m["accuracy"] == pytest.approx(3 / 8) and m["n_shots"] == 1
    # without --labels the label set comes from the gold column: a, b, c
    assert m["labels"] == ["a", "b", "c"]


def test_eval_cli_uses_run_folder_labels(labeled_csv) -> None:  # type: ignore[no-untyped-def]
    run = labeled_csv.with_suffix(".run")
    run.mkdir()
    (run / "labels.json").write_text(json.dumps([{"name": n, "description": "", "aliases": []} for n in LABELS]))
    res = CliRunner().invoke(main, ["eval", str(labeled_csv), "--gold-col", "label", "--json", "--n-boot", "0"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["labels"] == LABELS


def _all_output(res) -> str:  # type: ignore[no-untyped-def]
    try:
        return res.output + (res.stderr or "")
    except ValueError:  # older click: stderr not captured separately
        return res.output


def test_eval_cli_missing_columns_name_what_exists(labeled_csv) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    res = runner.invoke(main, ["eval", str(labeled_csv), "--gold-col", "gold"])
    assert res.exit_code == InputError.exit_code
    out = _all_output(res)
    assert "'gold'" in out and "--gold-col" in out and "'label'" in out and "'pred_status'" in out
    res = runner.invoke(main, ["eval", str(labeled_csv), "--gold-col", "label", "--status-col", "state"])
    assert res.exit_code == InputError.exit_code
    assert "'state'" in _all_output(res)
