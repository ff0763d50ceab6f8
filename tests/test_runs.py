"""Run records (promptclf.runs): what label and distill write, read back typed, old run.json files included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptclf.errors import InputError
from promptclf.runs import DistillRun, LabelRun, RunUsage, load_run, parse_run

# A label run.json as the first versions wrote it: no kind, collapse, calibration, price_known,
# cached_prompt_tokens or batch_requests; and a key this version does not know.
OLD_LABEL = {
    "name": "zero-shot",
    "created": "2025-01-02T03:04:05Z",
    "input": "news.csv",
    "output": "/tmp/zero-shot.csv",
    "gold_col": "label",
    "provider": "local",
    "model": "SmolLM2-135M-Instruct",
    "labels": ["business", "sport"],
    "n_rows": 10,
    "n_items": 10,
    "n_shots": 0,
    "statuses": {"ok": 9, "empty": 1},
    "coverage": 0.9,
    "usage": {"prompt_tokens": 100, "completion_tokens": 0, "requests": 1, "cached_requests": 0, "reasks": 0},
    "cost_usd": 0.0,
    "cost_per_1k": 0.0,
    "wall_s": 3.0,
    "items_per_s": 3.3,
    "latency_s_median": 3.0,
    "metrics": {"accuracy": 0.8, "n_scored": 10},
    "options": {"shots": 0},
    "some_old_key": [1, 2],
}


def _write(d: Path, data: dict[str, object]) -> Path:
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps(data))
    return d


def test_an_old_label_run_reads_with_defaults_and_keeps_unknown_keys(tmp_path: Path) -> None:
    d = _write(tmp_path / "zero-shot.run", OLD_LABEL)
    run = load_run(d)
    assert isinstance(run, LabelRun) and run.kind == "label" and run.run_dir == d
    assert run.usage.requests == 1 and run.usage.cached_prompt_tokens == 0 and run.usage.batch_requests == 0
    assert run.collapse is None and run.calibration is None and run.price_known
    assert run.metrics == {"accuracy": 0.8, "n_scored": 10}
    # Saved again, nothing of the old file is lost; the folder it came from is not written into it.
    run.save(tmp_path / "copy")
    again = json.loads((tmp_path / "copy" / "run.json").read_text())
    assert again["some_old_key"] == [1, 2] and "run_dir" not in again
    assert {k: again[k] for k in OLD_LABEL if k != "usage"} == {k: v for k, v in OLD_LABEL.items() if k != "usage"}
    assert json.loads((tmp_path / "copy" / "options.json").read_text()) == {"shots": 0}


def test_a_labeled_file_or_its_run_json_finds_the_record(tmp_path: Path) -> None:
    d = _write(tmp_path / "news.labeled.run", OLD_LABEL)
    assert load_run(tmp_path / "news.labeled.csv").name == "zero-shot"
    assert load_run(d / "run.json").run_dir == d


def test_a_distill_run_reads_typed(tmp_path: Path) -> None:
    data = {
        "kind": "distill",
        "name": "student",
        "provider": "student",
        "model": "all-MiniLM-L6-v2 (lora, cls head)",
        "labels": ["a", "b"],
        "output": "predictions.csv",
        "n_items": 30,
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "cached_requests": 0, "reasks": 0},
        "cost_usd": 0.01,
        "cost_per_1k": 0.0002,
        "teacher_agreement": 0.9,
        "data": {"input_rows": 100, "soft_rows": 40},
        "train": {"time_s": 72.0, "hourly_price_usd": 0.1, "train_cost_usd": 0.002, "processes": 2, "new_stat": 1},
        "inference": {"items_per_s": 250.0, "cost_per_1k": 0.0002, "measured_on": "test"},
    }
    run = load_run(_write(tmp_path / "student", data))
    assert isinstance(run, DistillRun)
    assert run.train.processes == 2 and run.train.time_s == 72.0 and run.data.soft_rows == 40
    assert run.inference.items_per_s == 250.0 and run.teacher_agreement == 0.9
    assert run.output_path() == tmp_path / "student" / "predictions.csv"
    assert run.model_dump(mode="json")["train"]["new_stat"] == 1


def test_a_new_label_run_round_trips(tmp_path: Path) -> None:
    run = LabelRun(name="x", provider="openai", model="gpt-4o-mini", labels=["a"], usage=RunUsage(requests=3))
    run.save(tmp_path / "x.run", {"prompt.j2": "{{ items }}"})
    back = load_run(tmp_path / "x.run")
    assert back == run and (tmp_path / "x.run" / "prompt.j2").read_text() == "{{ items }}"
    assert back.created.endswith("Z")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"kind": "training"}', "not a run record"),
        ('{"kind": "label", "n_items": "many"}', r"not a run record \(n_items"),
    ],
)
def test_a_broken_run_json_is_one_clear_error(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text(content)
    with pytest.raises(InputError, match=match):
        load_run(tmp_path / "r")


def test_parse_run_defaults_to_a_label_run() -> None:
    assert isinstance(parse_run({}), LabelRun)
