"""The collapse warning: one label for (nearly) every item is said in plain words by `label`, `eval` and the report.

:func:`promptclf.eval.metrics.collapse_check` decides and words it; the three surfaces call it.
The `label` surface runs the real labeling engine on a scoring provider whose answer is
fixed (a stand-in for a model that collapsed: which label SmolLM2 collapses to is not a
property this test should depend on).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.cli.label import _fmt_summary
from promptclf.data.tables import write_table
from promptclf.eval.metrics import collapse_check, evaluate, format_table
from promptclf.label.labeler import label_file
from promptclf.label.options import LabelOptions
from promptclf.providers.base import ScoreRequest, ScoreResult, Usage
from promptclf.report.build import build_report

LABELS = ["acq", "earn", "grain"]


def test_collapse_without_gold_warns() -> None:
    c = collapse_check(["acq"] * 20)
    assert c is not None
    assert (c["label"], c["share"], c["n"], c["gold_share"]) == ("acq", 1.0, 20, None)
    assert "answered 'acq' for 100% of the 20 items" in c["message"]
    assert "probably not discriminating" in c["message"]
    assert "no gold labels" in c["message"]


def test_collapse_against_spread_gold_warns() -> None:
    gold = [LABELS[i % 3] for i in range(30)]  # a third each
    c = collapse_check(["acq"] * 29 + ["earn"], gold)
    assert c is not None and c["label"] == "acq"
    assert c["share"] == pytest.approx(29 / 30)
    assert c["gold_share"] == pytest.approx(1 / 3)
    assert "for 97% of the 30 items, but only 33% of the gold labels are 'acq'" in c["message"]


def test_imbalanced_gold_answered_correctly_does_not_warn() -> None:
    gold = ["acq"] * 95 + ["earn"] * 5
    pred = ["acq"] * 96 + ["earn"] * 4  # 96% acq, but so is the data (95%)
    assert collapse_check(pred, gold) is None


def test_spread_predictions_do_not_warn() -> None:
    pred = ["acq"] * 9 + ["earn"] * 1  # exactly 90% is not more than 90%
    assert collapse_check(pred * 3) is None
    assert collapse_check([LABELS[i % 3] for i in range(30)]) is None


def test_only_answered_rows_count() -> None:
    pred = ["acq"] * 10 + [""] * 5 + ["earn"] * 3
    status = ["ok"] * 10 + ["error"] * 5 + ["shot"] * 3  # shots and failures are not answers
    c = collapse_check(pred, None, status)
    assert c is not None and c["n"] == 10 and c["share"] == 1.0
    assert collapse_check(["acq"] * 9) is None  # too few items to say


def test_share_never_rounds_up_to_100() -> None:
    c = collapse_check(["acq"] * 999 + ["earn"])
    assert c is not None and "for 99.9% of the 1,000 items" in c["message"]


# --- the three surfaces ----------------------------------------------------------------------


class OneLabel:
    """A scoring provider that always prefers ``LABELS[0]``: the output of a model that collapsed."""

    name = "local"
    model = "collapsed-model"
    kind = "scoring"
    base_url = None
    shot_attention = "full"
    max_item_tokens = None

    def load(self) -> None:
        pass

    def layout_tokens(self, system: str, prefix: str, suffix: str) -> tuple[int, int]:
        return self.count_tokens(system + prefix), self.count_tokens(suffix)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def score(self, request: ScoreRequest) -> ScoreResult:
        row = [0.8] + [0.2 / (len(request.labels) - 1)] * (len(request.labels) - 1)
        return ScoreResult([row for _ in request.items], Usage(len(request.items), 0), 0.01)


def _data(tmp_path: Path, gold: bool) -> Path:
    df = pd.DataFrame({"text": [f"article number {i}" for i in range(24)]})
    if gold:
        df["label"] = [LABELS[i % 3] for i in range(24)]
    path = tmp_path / "news.csv"
    write_table(df, path)
    return path


@pytest.mark.parametrize("gold", [True, False])
def test_label_summary_and_run_json_warn(tmp_path: Path, gold: bool) -> None:
    opts = LabelOptions(labels=[{"name": n} for n in LABELS])
    rec = label_file(_data(tmp_path, gold), tmp_path / "out.csv", opts, progress=False, provider=OneLabel())
    assert rec.collapse is not None and rec.collapse.label == "acq"
    assert rec.collapse.gold_share == (pytest.approx(1 / 3) if gold else None)
    run = json.loads((tmp_path / "out.run" / "run.json").read_text())
    assert run["collapse"]["message"] == rec.collapse.message
    assert "the model answered 'acq' for 100% of the 24 items" in _fmt_summary(rec)
    assert "warning:" in _fmt_summary(rec)


def test_label_summary_is_quiet_when_answers_spread(tmp_path: Path) -> None:
    class Echo(OneLabel):
        def score(self, request: ScoreRequest) -> ScoreResult:  # the label named by the item's number
            rows = []
            for item in request.items:
                k = int(item.split()[-1]) % 3
                rows.append([0.9 if j == k else 0.05 for j in range(3)])
            return ScoreResult(rows, Usage(1, 0), 0.01)

    opts = LabelOptions(labels=[{"name": n} for n in LABELS])
    rec = label_file(_data(tmp_path, True), tmp_path / "out.csv", opts, progress=False, provider=Echo())
    assert rec.metrics is not None and rec.metrics["accuracy"] == 1.0
    assert rec.collapse is None
    assert "warning" not in _fmt_summary(rec)


def test_eval_table_and_json_warn(tmp_path: Path) -> None:
    df = pd.DataFrame({"label": [LABELS[i % 3] for i in range(30)], "pred_label": ["earn"] * 30})
    df["pred_status"] = "ok"
    write_table(df, tmp_path / "labeled.csv")
    runner = CliRunner()
    table = runner.invoke(main, ["eval", str(tmp_path / "labeled.csv"), "--gold-col", "label", "--n-boot", "0"])
    assert table.exit_code == 0, table.output
    assert "warning: the model answered 'earn' for 100% of the 30 items, but only 33%" in table.output
    as_json = runner.invoke(main, ["eval", str(tmp_path / "labeled.csv"), "--gold-col", "label", "--json"])
    data = json.loads(as_json.output)
    assert data["collapse"]["label"] == "earn" and "not discriminating" in data["collapse"]["message"]
    # The balanced control: same file with correct answers has no warning.
    df["pred_label"] = df["label"]
    write_table(df, tmp_path / "good.csv")
    good = runner.invoke(main, ["eval", str(tmp_path / "good.csv"), "--gold-col", "label", "--n-boot", "0"])
    assert "warning" not in good.output
    assert evaluate(df["label"], df["pred_label"], LABELS)["collapse"] is None
    assert "warning" not in format_table(evaluate(df["label"], df["pred_label"], LABELS, n_boot=0))


def test_eval_warns_without_any_gold(tmp_path: Path) -> None:
    m = evaluate([""] * 12, ["acq"] * 12, LABELS, n_boot=0)
    assert m["n_scored"] == 0 and m["collapse"]["gold_share"] is None
    assert "no gold labels" in format_table(m)


def test_report_says_so_in_html_markdown_and_json(tmp_path: Path) -> None:
    opts = LabelOptions(labels=[{"name": n} for n in LABELS])
    collapsed = label_file(_data(tmp_path, True), tmp_path / "zero.csv", opts, progress=False, provider=OneLabel())
    paths = build_report([collapsed.run_dir], tmp_path / "report")
    assert collapsed.collapse is not None
    message = collapsed.collapse.message
    page = paths["html"].read_text()
    assert "the model answered &#x27;acq&#x27; for 100% of the 24 items" in page
    assert "probably not discriminating" in page
    assert message in paths["markdown"].read_text()
    doc = json.loads(paths["json"].read_text())
    assert doc["runs"][0]["collapse"]["label"] == "acq"
    assert any(message in line for line in doc["verdict"])


def test_report_computes_it_for_runs_that_predate_it(tmp_path: Path) -> None:
    """A run.json without a ``collapse`` key: the report reads the labeled file and still warns."""
    opts = LabelOptions(labels=[{"name": n} for n in LABELS])
    rec = label_file(_data(tmp_path, False), tmp_path / "old.csv", opts, progress=False, provider=OneLabel())
    run_json = Path(rec.run_dir) / "run.json"
    data = json.loads(run_json.read_text())
    del data["collapse"]
    run_json.write_text(json.dumps(data))
    doc = json.loads(build_report([rec.run_dir], tmp_path / "report")["json"].read_text())
    assert doc["runs"][0]["collapse"]["label"] == "acq"
    assert doc["verdict"][0].startswith("Warning, old: the model answered 'acq' for 100%")
