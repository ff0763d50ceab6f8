"""Ordinal label sets: the scale, the expected score a labeling run writes, and the ordinal metrics of eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.errors import InputError
from promptclf.eval.ordinal import default_cut, ordinal_metrics
from promptclf.label.labeler import Labeler
from promptclf.label.options import LabelOptions
from promptclf.labels import Label, LabelSet, infer_labels, load_labels_file
from promptclf.testing.answers import hash_answer, parse_prompt
from promptclf.testing.fake_provider import FakeChatProvider

SCALE = ["0", "1", "2", "3", "4", "5"]


def test_scores_numbers_positions_or_given() -> None:
    assert LabelSet.from_names(["1", "2", "10"], ordinal=True).scores == [1.0, 2.0, 10.0]
    assert LabelSet.from_names(["poor", "fair", "good"], ordinal=True).scores == [0.0, 1.0, 2.0]
    given = LabelSet((Label("low", score=1), Label("mid", score=2.5), Label("high", score=4)))
    assert given.ordinal and given.scores == [1.0, 2.5, 4.0]


def test_scale_errors_name_the_fix() -> None:
    with pytest.raises(InputError, match="lowest first"):
        LabelSet.from_names(["3", "1", "2"], ordinal=True)
    with pytest.raises(InputError, match="every label a score or none"):
        LabelSet((Label("a", score=1), Label("b")))
    with pytest.raises(InputError, match="not all numbers"):
        infer_labels(["good", "bad"], ordinal=True)


def test_infer_sorts_numbers_by_value_and_round_trips() -> None:
    s = infer_labels(["10", "2", "0", "2"], ordinal=True)
    assert s.names == ["0", "2", "10"] and s.ordinal
    back = LabelSet.from_dict(s.to_dict())  # what labels.json and LabelOptions.labels carry
    assert back.ordinal and back.scores == s.scores
    assert not LabelSet.from_dict(LabelSet.from_names(["a", "b"]).to_dict()).ordinal


def test_labels_file_says_ordinal(tmp_path: Path) -> None:
    f = tmp_path / "scale.yaml"
    f.write_text("ordinal: true\nlabels:\n  - {name: poor, description: no value}\n  - fair\n  - good\n")
    s = load_labels_file(f)
    assert s.ordinal and s.names == ["poor", "fair", "good"] and s.scores == [0.0, 1.0, 2.0]


def test_expected_score_and_nearest() -> None:
    s = LabelSet.from_names(SCALE, ordinal=True)
    assert s.expected_score({"2": 0.5, "4": 0.5}) == pytest.approx(3.0)
    assert s.expected_score({"2": 0.2, "off-list": 0.8}) == pytest.approx(2.0)  # renormalised over the scale
    assert s.expected_score(None, "5") == 5.0 and s.expected_score(None, None) is None
    assert s.nearest(2.49) == "2" and s.nearest(2.51) == "3" and s.nearest(9) == "5"
    assert default_cut(s) == 3.0


def test_ordinal_metrics_by_hand() -> None:
    s = LabelSet.from_names(SCALE, ordinal=True)
    gold = ["0", "1", "2", "3", "4", "5", "3", ""]
    pred = ["0", "2", "2", "5", "4", "3", "x", "1"]  # row 6 off the scale, row 7 without gold: not compared
    m = ordinal_metrics(gold, pred, s, n_boot=200)
    assert m["n"] == 6
    assert m["mae"] == pytest.approx((0 + 1 + 0 + 2 + 0 + 2) / 6)
    assert m["exact"] == pytest.approx(3 / 6) and m["within_one"] == pytest.approx(4 / 6)
    # cut 3: gold positives rows 3, 4, 5; predicted positives rows 3, 4, 5 -> all right
    assert m["binary"]["f1"] == pytest.approx(1.0) and m["binary"]["positives_gold"] == 3
    assert m["mae_ci"][0] <= m["mae"] <= m["mae_ci"][1]
    m4 = ordinal_metrics(gold, pred, s, cut=4, n_boot=0)
    assert m4["binary"]["precision"] == pytest.approx(1 / 2) and m4["binary"]["recall"] == pytest.approx(1 / 2)
    with_score = ordinal_metrics(gold[:6], pred[:6], s, pred_score=[0.4, 1.6, 2, 4.5, 4, 3.5], n_boot=0)
    assert with_score["mae_score"] == pytest.approx((0.4 + 0.6 + 0 + 1.5 + 0 + 1.5) / 6)
    assert with_score["binary"]["f1"] == pytest.approx(1.0)  # rounded first: 4.5 -> 4, 3.5 -> 3
    pulled = ordinal_metrics(["3", "3", "1"], ["3", "3", "1"], s, pred_score=[2.8, 2.4, 1.2], n_boot=0)
    assert pulled["binary"]["recall"] == pytest.approx(0.5)  # 2.8 rounds to 3 and counts; 2.4 does not
    assert with_score["spearman"] == pytest.approx(1 - 6 * 8 / (6 * 35))  # rank differences 0,0,0,2,0,-2
    with pytest.raises(InputError, match="outside the scale"):
        ordinal_metrics(gold, pred, s, cut=0)


def test_failed_rows_are_not_on_the_scale() -> None:
    s = LabelSet.from_names(SCALE, ordinal=True)
    m = ordinal_metrics(["1", "2"], ["1", "2"], s, status=["ok", "error"], n_boot=0)
    assert m["n"] == 1


def _scale_answer(text: str, labels: list[str]) -> str:
    return labels[len(text) % len(labels)]


def test_label_run_writes_expected_score_and_says_the_scale(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": [f"item {'x' * i}" for i in range(12)]})
    opts = LabelOptions(  # type: ignore[call-arg]
        labels=[{"name": n} for n in SCALE], ordinal=True, label_col=None, batch_size=4, concurrency=1,
        top_logprobs=5, store=str(tmp_path / "s.sqlite"),
    )  # fmt: skip
    fake = FakeChatProvider(answer=_scale_answer, logprobs=True)
    res = Labeler(opts, provider=fake, progress=False).label(df)
    f = res.frame
    assert f["pred_label"].tolist() == [_scale_answer(t, SCALE) for t in df["text"]]
    s = LabelSet.from_names(SCALE, ordinal=True)
    for _, r in f.iterrows():
        probs = json.loads(r["pred_probs"]) if r["pred_probs"] else None
        assert r["pred_score"] == pytest.approx(s.expected_score(probs, r["pred_label"]), abs=1e-3)
    user = fake.calls[0].messages[-1]["content"]
    assert "ordered scale, from 0 (lowest) to 5 (highest)" in user
    assert parse_prompt(user)[0] == SCALE


def test_a_nominal_run_has_no_score_column(tmp_path: Path) -> None:
    opts = LabelOptions(  # type: ignore[call-arg]
        labels=[{"name": n} for n in ("a", "b")], label_col=None, batch_size=4, store=str(tmp_path / "s.sqlite")
    )
    fake = FakeChatProvider(answer=hash_answer)
    res = Labeler(opts, provider=fake, progress=False).label(pd.DataFrame({"text": ["one", "two"]}))
    assert "pred_score" not in res.frame.columns and "ordered scale" not in fake.calls[0].messages[-1]["content"]


def test_eval_cli_ordinal(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, 200)
    pred = np.clip(gold + rng.integers(-1, 2, 200), 0, 5)
    path = tmp_path / "rated.csv"
    pd.DataFrame({"gold": gold.astype(str), "pred_label": pred.astype(str), "pred_status": "ok"}).to_csv(path)
    r = CliRunner().invoke(main, ["eval", str(path), "--gold-col", "gold", "--ordinal", "--cut", "3", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)["ordinal"]
    assert m["within_one"] == 1.0 and m["mae"] == pytest.approx(float(np.abs(pred - gold).mean()))
    table = CliRunner().invoke(main, ["eval", str(path), "--gold-col", "gold", "--ordinal", "--n-boot", "0"])
    assert "ordinal scale 0-5 on 200 rows" in table.stdout and "at cut >= 3:" in table.stdout
    bad = CliRunner().invoke(main, ["eval", str(path), "--gold-col", "gold", "--cut", "3"])
    assert bad.exit_code != 0 and "--cut needs an ordinal label set" in bad.output


def test_label_summary_has_the_calibration_of_its_confidences(tmp_path: Path) -> None:
    """A run with gold and log-probabilities records the calibration of its confidences in run.json's metrics."""
    df = pd.DataFrame({"text": [f"item {'x' * i}" for i in range(12)]})
    df["label"] = [_scale_answer(t, SCALE) if i % 3 else "0" for i, t in enumerate(df["text"])]
    opts = LabelOptions(  # type: ignore[call-arg]
        labels=[{"name": n} for n in SCALE], label_col="label", batch_size=4, top_logprobs=5,
        store=str(tmp_path / "s.sqlite"),
    )  # fmt: skip
    fake = FakeChatProvider(answer=_scale_answer, logprobs=True)
    lab = Labeler(opts, provider=fake, progress=False)
    lab.label(df)
    cal = lab.summary().metrics["calibration"]
    assert cal["n"] == 12 and 0 <= cal["ece"] <= 1 and len(cal["bins"]) == 15


def test_label_summary_and_report_show_the_ordinal_metrics(tmp_path: Path) -> None:
    from promptclf.report.build import build_report

    df = pd.DataFrame({"text": [f"item {'x' * i}" for i in range(18)]})
    df["label"] = [SCALE[min(5, len(t) % 6 + (i % 2))] for i, t in enumerate(df["text"])]  # off by one on odd rows
    opts = LabelOptions(  # type: ignore[call-arg]
        labels=[{"name": n} for n in SCALE], ordinal=True, label_col="label", batch_size=6,
        store=str(tmp_path / "s.sqlite"),
    )  # fmt: skip
    lab = Labeler(opts, provider=FakeChatProvider(answer=_scale_answer), progress=False)
    lab.label(df)
    o = lab.summary().metrics["ordinal"]
    pred = [_scale_answer(t, SCALE) for t in df["text"]]
    assert o["n"] == 18 and o["exact"] == pytest.approx(
        sum(p == g for p, g in zip(pred, df["label"], strict=True)) / 18
    )
    assert o["within_one"] == 1.0
    run = tmp_path / "rated.run"
    run.mkdir()
    rec = {"kind": "label", "name": "rated", "provider": "openai", "model": "m", "labels": SCALE, "n_items": 18,
           "metrics": lab.summary().metrics}  # fmt: skip
    (run / "run.json").write_text(json.dumps(rec))
    html = build_report([run], tmp_path / "rep")["html"].read_text()
    table = html[html.index("id='ordinal'") : html.index("</table>", html.index("id='ordinal'"))]
    assert "rated" in table and f"{o['mae']:.3f}" in table


def test_label_cli_summary_shows_ordinal_and_calibration_figures() -> None:
    from promptclf.cli.label import _fmt_summary
    from promptclf.runs import LabelRun

    s = LabelSet.from_names(SCALE, ordinal=True)
    gold = ["0", "1", "2", "3", "4", "5"] * 5
    pred = ["0", "2", "2", "3", "4", "4"] * 5
    from promptclf.eval.metrics import evaluate

    m = evaluate(gold, pred, SCALE, confidence=[0.9] * 30)
    m["ordinal"] = ordinal_metrics(gold, pred, s, n_boot=0)
    text = _fmt_summary(LabelRun(provider="openai", model="m", n_items=30, metrics=m))
    assert f"ordinal: MAE {m['ordinal']['mae']:.3f}, within one 100.0%" in text
    assert f"confidence: ECE {m['calibration']['ece']:.3f} on 30 gold rows" in text
