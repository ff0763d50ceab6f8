"""Bad input gets a clear error that names the fix, before any model is loaded or request sent."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.data.tables import read_table, write_table
from promptclf.errors import InputError
from promptclf.label.labeler import Labeler
from promptclf.label.options import LabelOptions


def run_cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".xlsx", ".jsonl", ".parquet"])
def test_every_format_round_trips(tmp_path, ext):
    df = pd.DataFrame({"text": ["a b", "", 'ünïcode, "quoted"\nnewline'], "label": ["x", "", "y"]})
    p = write_table(df, tmp_path / f"t{ext}")
    back = read_table(p)
    assert list(back.columns) == ["text", "label"]
    assert back["text"].fillna("").tolist() == df["text"].tolist()


def test_missing_column_names_the_columns_that_exist(tmp_path):
    p = tmp_path / "news.csv"
    pd.DataFrame({"body": ["x"], "topic": ["a"]}).to_csv(p, index=False)
    code, out = run_cli("label", str(p), "--labels", "a,b", "--dry-run")
    assert code == 2
    assert "no column 'text'" in out and "--text-col" in out and "'body', 'topic'" in out


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, out = run_cli("label", str(empty), "--labels", "a,b")
    assert code == 2 and "empty" in out
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    code, out = run_cli("label", str(header), "--labels", "a,b")
    assert code == 2 and "no rows" in out


def test_unsupported_extension(tmp_path):
    p = tmp_path / "news.txt"
    p.write_text("hello")
    code, out = run_cli("label", str(p), "--labels", "a,b")
    assert code == 2 and ".csv" in out and ".parquet" in out


def test_no_label_set_says_how_to_give_one(tmp_path):
    p = tmp_path / "news.csv"
    pd.DataFrame({"text": ["x", "y"]}).to_csv(p, index=False)
    code, out = run_cli("label", str(p), "--dry-run")
    assert code == 2 and "--labels" in out and "'text'" in out


def test_gold_label_not_in_labels_is_an_error(tmp_path):
    p = tmp_path / "news.csv"
    pd.DataFrame({"text": ["x", "y"], "label": ["sport", "weather"]}).to_csv(p, index=False)
    code, out = run_cli("label", str(p), "--labels", "sport,business", "--dry-run")
    assert code == 2 and "'weather'" in out and "--labels" in out


def test_shots_without_labeled_rows(tmp_path):
    p = tmp_path / "news.csv"
    pd.DataFrame({"text": ["x", "y"]}).to_csv(p, index=False)
    code, out = run_cli("label", str(p), "--labels", "a,b", "--shots", "2", "--dry-run")
    assert code == 2 and "--examples" in out


def test_bad_option_value_is_a_config_error(tmp_path):
    p = tmp_path / "news.csv"
    pd.DataFrame({"text": ["x"], "label": ["a"]}).to_csv(p, index=False)
    code, out = run_cli("label", str(p), "--batch-size", "0", "--dry-run")
    assert code == 2 and "--batch-size:" in out  # the flag, as the user typed it


def test_empty_and_huge_rows_get_a_status_and_shots_are_excluded():
    df = pd.DataFrame(
        {
            "text": ["good one", "", "x" * 500, "another", "shot a", "shot b"],
            "label": ["", "", "", "", "a", "b"],
        }
    )
    opts = LabelOptions(provider="local", shots=1, max_item_chars=100)
    job = Labeler(opts, progress=False).prepare(df)
    status = [r.status for r in job.results]
    assert status[1] == "error" and "empty text" in job.results[1].reason
    assert status[2] == "error" and "--max-item-chars" in job.results[2].reason
    assert status[4] == status[5] == "shot"
    assert job.todo == [0, 3]


def test_invalid_utf8_is_read_with_replacement(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(b"text,label\nok,a\ncaf\xe9 latte,b\n")
    df = read_table(p)
    assert len(df) == 2 and df["text"][1].startswith("caf")


def test_examples_file_needs_the_columns(tmp_path):
    p = tmp_path / "news.csv"
    pd.DataFrame({"text": ["x"]}).to_csv(p, index=False)
    ex = tmp_path / "ex.csv"
    pd.DataFrame({"body": ["x"], "label": ["a"]}).to_csv(ex, index=False)
    with pytest.raises(InputError, match="'body'"):
        Labeler(LabelOptions(provider="local", shots=1, labels=[{"name": "a"}]), progress=False).prepare(
            read_table(p), read_table(ex)
        )


@pytest.mark.parametrize("how", ["labels", "gold"])
def test_a_label_set_of_one_label_warns(how):
    from promptclf.label.jobs import plan_stream
    from promptclf.labels import parse_labels

    if how == "labels":
        o = LabelOptions(labels=parse_labels("spam").to_dict(), label_col=None)
        plan = plan_stream(o, ["text"], None, [True] * 3, None, "in.csv")
    else:
        plan = plan_stream(LabelOptions(), ["text", "label"], ["spam", "spam", ""], [True] * 3, None, "in.csv")
    assert plan.labels.names == ["spam"]
    assert any("one label ('spam')" in w for w in plan.warnings)
    two = plan_stream(
        LabelOptions(labels=parse_labels("a,b").to_dict(), label_col=None), ["text"], None, [True], None, "x"
    )
    assert not any("one label" in w for w in two.warnings)
