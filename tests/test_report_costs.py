"""The report never concludes from a missing figure: unknown prices, self-hosted teachers priced by the
hour, and the spend shown only where a price is known. Checked against the rendered report text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_report import make_distill_run, make_label_run

from promptclf.pricing.costs import break_even_items, round_volume
from promptclf.report.build import build_report


def _edit(labeled: Path, **changes: object) -> None:
    """Change a label run's run.json (``options`` is merged, not replaced)."""
    p = labeled.with_suffix(".run") / "run.json"
    rj = json.loads(p.read_text())
    rj["options"].update(changes.pop("options", {}))  # type: ignore[call-overload]
    rj.update(changes)
    p.write_text(json.dumps(rj))


def _unpriced(root: Path, name: str, base_url: str | None = None, **options: object) -> Path:
    """A hosted (or --base-url) label run whose model was not in the price table: it recorded $0."""
    f = make_label_run(root, name, 0.85, 0.0, 4.0, provider="openai")
    _edit(f, price_known=False, cost_usd=0.0, model="my-finetune", options={"base_url": base_url, **options})
    return f


def _verdict_and_md(paths: dict[str, Path]) -> tuple[str, str]:
    md = paths["markdown"].read_text()
    verdict = md.split("## Verdict", 1)[1].split("## Runs", 1)[0]
    return verdict, md


def test_missing_price_is_unknown_not_never(tmp_path: Path) -> None:
    teacher = _unpriced(tmp_path, "hosted")
    student = make_distill_run(tmp_path, "stu", teacher, 0.8, train_cost=0.5, cost_per_1k=0.001)
    paths = build_report([teacher, student], tmp_path / "r")
    verdict, md = _verdict_and_md(paths)
    assert "never" not in verdict and "never" not in md
    assert "cost per 1,000 items unknown (needs a price for hosted (openai/my-finetune is not in the price table)" in (
        verdict
    )
    assert "whether distilling pays off cannot be decided: it needs a price for hosted" in verdict
    assert "pass --prices FILE listing it" in verdict
    assert re.search(r"\| hosted \| .* \| unknown \|", md)  # the runs table: unknown, not "–" or "$0"
    assert "| stu | hosted | unknown: needs a price for hosted" in md
    (be,) = json.loads(paths["json"].read_text())["break_even"]
    assert be["status"] == "unknown" and be["items"] is None
    # with its teacher recorded, the labels' cost is unknown too, and said so
    _record_teacher(student, teacher)
    verdict, _ = _verdict_and_md(build_report([teacher, student], tmp_path / "r2"))
    assert "by hosted has an unknown cost (needs a price for hosted); training stu cost $0.50." in verdict


def test_report_prices_reprice_an_unknown_model(tmp_path: Path) -> None:
    teacher = _unpriced(tmp_path, "hosted")
    student = make_distill_run(tmp_path, "stu", teacher, 0.8, train_cost=0.5, cost_per_1k=0.001)
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"openai/my-finetune": {"input": 10.0, "output": 40.0}}))
    doc = json.loads(build_report([teacher, student], tmp_path / "r", prices=table)["json"].read_text())
    row = next(r for r in doc["runs"] if r["name"] == "hosted")
    n = row["n_items"]  # the run's recorded 1,000 prompt + 10 completion tokens at $10/$40 per 1M
    assert row["cost_per_1k"] == pytest.approx(1000 * (1000 * 10 + 10 * 40) / 1e6 / n)
    assert row["cost_basis"] == "list price from --prices"
    (be,) = doc["break_even"]
    assert be["items"] == pytest.approx(break_even_items(row["cost_per_1k"], 0.001, 0.5))
    assert any(f"pays off after {round_volume(be['items'])} items" in v for v in doc["verdict"])


def test_self_hosted_teacher_priced_by_the_hour(tmp_path: Path) -> None:
    teacher = _unpriced(tmp_path, "vllm", base_url="http://127.0.0.1:8000/v1")
    student = make_distill_run(tmp_path, "stu", teacher, 0.8, train_cost=0.02, cost_per_1k=0.0001)
    # Without an hourly price the verdict says what is missing and how to give it.
    verdict, _ = _verdict_and_md(build_report([teacher, student], tmp_path / "r0"))
    assert "cannot be decided" in verdict and "pass --hourly-price with the serving machine's dollars" in verdict
    assert "never" not in verdict
    # The student's recorded $0.10/h is its own machine's price, never the server's.
    paths = build_report([teacher, student], tmp_path / "r", hourly_price=2.0)
    verdict, md = _verdict_and_md(paths)
    llm = 1000 / 4.0 / 3600 * 2.0  # 4 items/s at $2/h
    items = break_even_items(llm, 0.0001, 0.02)
    assert items is not None
    assert (
        f"pays off after {round_volume(items)} items (LLM: machine time at $2/h; student: machine time at $0.1/h)"
        in (verdict)
    )
    assert "$0.14 (machine time at $2/h)" in md  # the runs table states the basis of the teacher's cost
    doc = json.loads(paths["json"].read_text())
    assert doc["break_even"][0]["llm_cost_per_1k"] == pytest.approx(llm)


def test_self_hosted_run_records_its_own_hourly_price(tmp_path: Path) -> None:
    teacher = _unpriced(tmp_path, "vllm", base_url="http://127.0.0.1:8000/v1", hourly_price=1.0)
    doc = json.loads(build_report([teacher], tmp_path / "r")["json"].read_text())
    (row,) = doc["runs"]
    assert row["cost_basis"] == "machine time at $1/h"
    assert row["cost_per_1k"] == pytest.approx(1000 / 4.0 / 3600)


def test_hourly_price_is_only_for_a_base_url_server() -> None:
    from pydantic import ValidationError

    from promptclf.label.options import LabelOptions

    with pytest.raises(ValidationError, match="--hourly-price prices the machine serving a --base-url model"):
        LabelOptions(provider="openai", hourly_price=1.0)
    assert LabelOptions(provider="openai", base_url="http://127.0.0.1:1/v1", hourly_price=1.0).hourly_price == 1.0


def test_label_summary_prices_a_served_model_by_the_hour() -> None:
    from promptclf.cli.label import _fmt_summary
    from promptclf.runs import LabelRun

    opts = {"base_url": "http://h/v1"}
    served = LabelRun(provider="openai", model="x", price_known=False, items_per_s=4.0, options=opts)
    assert "cost: unknown: the model is not in the price table; add it with --prices, or pass --hourly-price" in (
        _fmt_summary(served)
    )
    served.options["hourly_price"] = 2.0
    text = _fmt_summary(served)
    assert "cost: $0.1389 per 1,000 items, machine time at $2/h (no list price)" in text and "$0.0000" not in text


def _record_teacher(student: Path, labeled: Path) -> None:
    """What distill writes for a student trained on ``labeled``: its teacher and its training rows."""
    from promptclf.runs import teacher_of

    ref = teacher_of(labeled)
    assert ref is not None
    p = student / "run.json"
    rj = json.loads(p.read_text())
    rj.update(teacher=ref.model_dump(mode="json"), data={"train_rows": 800, "val_rows": 200})
    p.write_text(json.dumps(rj))


def test_teacher_record_of_a_label_run(tmp_path: Path) -> None:
    from promptclf.runs import DistillRun, LabelRun, load_run, teacher_of

    rec = LabelRun(provider="openai", model="gpt-4o-mini", n_items=90, cost_usd=0.02, cost_per_1k=0.25)
    rec.options = {"shots": 5, "shot_selection": "similar"}
    rec.save(tmp_path / "labeled.run")
    ref = teacher_of(tmp_path / "labeled.csv")  # the labeled file: its run folder beside it
    assert ref is not None
    assert (ref.name, ref.provider, ref.model, ref.prompt) == (
        "labeled",
        "openai",
        "gpt-4o-mini",
        "few-shot (5/class, similar)",
    )
    assert (ref.run, ref.cost_usd, ref.cost_per_1k) == (str((tmp_path / "labeled.run").resolve()), 0.02, 0.25)
    assert teacher_of(tmp_path / "elsewhere.csv") is None  # labels made without promptclf: nothing to record
    # a student's run.json keeps it, typed
    DistillRun(teacher=ref).save(tmp_path / "stu")
    back = load_run(tmp_path / "stu")
    assert isinstance(back, DistillRun) and back.teacher == ref
    unpriced = LabelRun(provider="openai", model="x", price_known=False)
    unpriced.save(tmp_path / "u.run")
    assert teacher_of(tmp_path / "u.run").cost_per_1k is None  # type: ignore[union-attr]


def test_student_compared_with_its_recorded_teacher(tmp_path: Path) -> None:
    teacher = make_label_run(tmp_path, "gpt-labels", 0.7, 0.5, 20.0, provider="openai")
    better = make_label_run(tmp_path, "other", 0.95, 2.0, 20.0, provider="openai")
    # The student names only a file elsewhere as its input; its record points at its teacher's folder.
    student = make_distill_run(tmp_path, "stu", tmp_path / "copied.csv", 0.8, train_cost=0.25, cost_per_1k=0.001)
    _record_teacher(student, teacher)
    paths = build_report([better, teacher, student], tmp_path / "r")
    verdict, md = _verdict_and_md(paths)
    assert "The student trained on gpt-labels's labels (stu)" in verdict
    assert "teacher not recorded" not in verdict
    # 1,000 train + validation rows at the teacher's $0.50 per 1k: $0.50, beside $0.25 of training
    assert "Labeling the 1,000 rows stu trained and validated on by gpt-labels cost $0.50 (list price); " in verdict
    assert "training stu cost $0.25." in verdict
    assert re.search(r"\| stu \| student on gpt-labels labels \|.*\| \$0\.25 \+ \$0\.50 teacher labels \|", md)
    doc = json.loads(paths["json"].read_text())
    assert doc["break_even"][0]["llm"] == "gpt-labels"


def test_recorded_teacher_missing_from_the_report_is_named_not_replaced(tmp_path: Path) -> None:
    teacher = make_label_run(tmp_path, "gpt-labels", 0.7, 0.5, 20.0, provider="openai")
    other = make_label_run(tmp_path, "other", 0.95, 2.0, 20.0, provider="openai")
    student = make_distill_run(tmp_path, "stu", teacher, 0.8, train_cost=0.25, cost_per_1k=0.001)
    _record_teacher(student, teacher)
    paths = build_report([other, student], tmp_path / "r")
    verdict, _ = _verdict_and_md(paths)
    folder = teacher.with_suffix(".run").resolve()
    assert (
        f"The student stu learned from gpt-labels (openai / gpt-4o-mini, zero-shot), whose run folder {folder} is "
        "not in this report: add it to compare them." in verdict
    )
    assert "compared with the best prompted run" not in verdict
    assert json.loads(paths["json"].read_text())["break_even"] == []
