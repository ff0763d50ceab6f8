"""--calibrate: contextual calibration (Zhao et al. 2021) in the scoring runner.

The math is checked on a hand-computed example; the runner logic (one content-free request
per job, cached; raw scores stay what the store holds; labels and pred_prob calibrated) on
a scoring provider with known scores; that the content-free inputs go through exactly the
items' prompt on the real SmolLM2 (few-shot, so the prompt has examples in it); options
saved; and the refusal for chat providers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.data.tables import write_table
from promptclf.errors import ConfigError
from promptclf.label.labeler import Labeler, label_file
from promptclf.label.options import LabelOptions
from promptclf.label.scoring_runner import CONTENT_FREE, contextual_calibration
from promptclf.providers.base import ScoreRequest, ScoreResult, Usage

LABELS = ["a", "b", "c"]


def test_math_on_a_hand_computed_example() -> None:
    # mean content-free distribution: (0.5+0.7)/2, (0.25+0.2)/2, (0.25+0.1)/2 = 0.6, 0.225, 0.175
    # 0.6/0.6 = 1, 0.3/0.225 = 4/3, 0.1/0.175 = 4/7; sum 61/21 -> 21/61, 28/61, 12/61
    out = contextual_calibration([[0.6, 0.3, 0.1]], [[0.5, 0.25, 0.25], [0.7, 0.2, 0.1]])
    assert out[0] == pytest.approx([21 / 61, 28 / 61, 12 / 61], abs=1e-12)
    # the argmax moved from the label the prompt favours anyway to the one the item raised most
    # a content-free input itself comes out uniform
    assert contextual_calibration([[0.6, 0.3, 0.1]], [[0.6, 0.3, 0.1]])[0] == pytest.approx([1 / 3] * 3)


def test_math_guards_a_label_with_no_content_free_mass() -> None:
    out = contextual_calibration([[0.5, 0.5]], [[1.0, 0.0]])
    assert sum(out[0]) == pytest.approx(1.0) and out[0][1] > 0.99


# --- the runner ------------------------------------------------------------------------------

CONTENT_FREE_SCORES = {"N/A": [0.5, 0.4, 0.1], "": [0.7, 0.2, 0.1], "[MASK]": [0.6, 0.3, 0.1]}  # mean .6 .3 .1
ITEM_SCORES = [0.5, 0.3, 0.2]  # raw argmax a; calibrated .5/.6, .3/.3, .2/.1 -> c with 2/(5/6+1+2)


class KnownScores:
    """A scoring provider with fixed, known scores that records every request it gets."""

    name = "local"
    model = "known-scores"
    kind = "scoring"
    base_url = None
    shot_attention = "full"
    max_item_tokens = None

    def load(self) -> None:
        pass

    def layout_tokens(self, system: str, prefix: str, suffix: str) -> tuple[int, int]:
        return self.count_tokens(system + prefix), self.count_tokens(suffix)

    def __init__(self) -> None:
        self.requests: list[ScoreRequest] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def score(self, request: ScoreRequest) -> ScoreResult:
        self.requests.append(request)
        rows = [CONTENT_FREE_SCORES.get(item, ITEM_SCORES) for item in request.items]
        return ScoreResult(rows, Usage(len(request.items), 0), 0.01)


def _frame(n: int = 12) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"item {i}" for i in range(n)], "label": [LABELS[i % 3] for i in range(n)]})


def test_runner_calibrates_labels_and_pred_prob() -> None:
    provider = KnownScores()
    opts = LabelOptions(labels=[{"name": n} for n in LABELS], calibrate=True, batch_size=5)
    labeler = Labeler(opts, provider=provider, progress=False)
    result = labeler.label(_frame())
    out = result.frame
    first, *batches = provider.requests
    assert first.items == list(CONTENT_FREE)
    assert len(batches) == 3  # 12 items in batches of 5; the content-free request is one more, once per job
    for b in batches:
        assert (b.system, b.prefix, b.suffix, b.labels, b.examples) == (
            first.system, first.prefix, first.suffix, first.labels, first.examples,
        )  # fmt: skip
    assert set(out["pred_label"]) == {"c"}
    assert out["pred_prob"].tolist() == [round(2 / (5 / 6 + 1 + 2), 6)] * 12
    assert labeler.calibration is not None
    assert labeler.calibration.probs == pytest.approx({"a": 0.6, "b": 0.3, "c": 0.1})
    assert result.summary.calibration is not None
    assert result.summary.calibration.content_free == ["N/A", "", "[MASK]"]


def test_store_keeps_raw_scores_and_the_content_free_request() -> None:
    opts = LabelOptions(labels=[{"name": n} for n in LABELS], calibrate=True)
    Labeler(opts, provider=KnownScores(), progress=False).label(_frame())
    again = KnownScores()
    Labeler(opts, provider=again, progress=False).label(_frame())
    assert again.requests == []  # items and content-free inputs both came from the store
    raw = KnownScores()
    out = Labeler(opts.model_copy(update={"calibrate": False}), provider=raw, progress=False).label(_frame()).frame
    assert raw.requests == []  # the cached scores are the raw ones: uncalibrated labels come back
    assert set(out["pred_label"]) == {"a"} and out["pred_prob"].tolist() == [0.5] * 12


def test_no_calibration_sends_no_content_free_request() -> None:
    provider = KnownScores()
    Labeler(LabelOptions(labels=[{"name": n} for n in LABELS]), provider=provider, progress=False).label(_frame())
    assert all(r.items != list(CONTENT_FREE) for r in provider.requests)


def test_options_and_calibration_saved_in_the_run_folder(tmp_path: Path) -> None:
    write_table(_frame(), tmp_path / "in.csv")
    opts = LabelOptions(labels=[{"name": n} for n in LABELS], calibrate=True)
    rec = label_file(tmp_path / "in.csv", tmp_path / "out.csv", opts, progress=False, provider=KnownScores())
    run_dir = Path(rec.run_dir)
    assert json.loads((run_dir / "options.json").read_text())["calibrate"] is True
    run = json.loads((run_dir / "run.json").read_text())
    assert run["options"]["calibrate"] is True
    assert run["calibration"]["probs"] == pytest.approx({"a": 0.6, "b": 0.3, "c": 0.1})
    from promptclf.report.build import build_report

    doc = json.loads(build_report([run_dir], tmp_path / "report")["json"].read_text())
    assert doc["runs"][0]["description"] == "zero-shot, calibrated"


def test_dry_run_counts_the_content_free_request() -> None:
    opts = LabelOptions(labels=[{"name": n} for n in LABELS], batch_size=5)
    plain = Labeler(opts, provider=KnownScores(), progress=False).dry_run(_frame())
    cal = Labeler(opts.model_copy(update={"calibrate": True}), provider=KnownScores(), progress=False).dry_run(_frame())
    assert cal.requests == plain.requests + 1
    assert cal.est_prompt_tokens > plain.est_prompt_tokens


# --- refusal for chat providers --------------------------------------------------------------


def test_refused_with_a_chat_provider_named() -> None:
    with pytest.raises(ConfigError, match="--calibrate needs a scoring provider"):
        LabelOptions.build(provider="openai", calibrate=True)
    with pytest.raises(ConfigError, match="--calibrate needs a scoring provider"):
        LabelOptions.build(base_url="http://127.0.0.1:1/v1", calibrate=True)


def test_refused_when_auto_picks_a_chat_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    labeler = Labeler(LabelOptions(calibrate=True), progress=False)
    with pytest.raises(ConfigError, match="provider openai is a chat provider"):
        labeler.label(_frame())


def test_cli_refuses_in_one_line(tmp_path: Path) -> None:
    write_table(_frame(), tmp_path / "in.csv")
    result = CliRunner().invoke(main, ["label", str(tmp_path / "in.csv"), "--provider", "openai", "--calibrate"])
    assert result.exit_code == 2
    assert "--calibrate needs a scoring provider" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "in.labeled.csv").exists()


# --- through the real prompt, on SmolLM2 -----------------------------------------------------


class Recording:
    """The real LocalProvider, with every request it is sent kept for inspection."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.requests: list[ScoreRequest] = []
        self.name, self.model, self.kind = "local", inner.model, "scoring"  # type: ignore[attr-defined]
        self.shot_attention = inner.shot_attention  # type: ignore[attr-defined]
        self.base_url, self.max_item_tokens = None, inner.max_item_tokens  # type: ignore[attr-defined]
        self.load, self.layout_tokens = inner.load, inner.layout_tokens  # type: ignore[attr-defined]

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)  # type: ignore[attr-defined, no-any-return]

    def score(self, request: ScoreRequest) -> ScoreResult:
        self.requests.append(request)
        return self.inner.score(request)  # type: ignore[attr-defined, no-any-return]


@pytest.mark.slow
def test_content_free_inputs_go_through_the_real_prompt() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from promptclf.data.tables import bbc_sample
    from promptclf.providers.local.provider import LocalProvider

    df = bbc_sample(10, seed=1)[["text", "label"]]
    df["text"] = df["text"].str.slice(0, 300)  # short items: seconds on a busy CPU
    local = LocalProvider(threads=1)
    provider = Recording(local)
    opts = LabelOptions(provider="local", shots=1, calibrate=True, shot_max_chars=120, batch_size=4)
    labeler = Labeler(opts, provider=provider, progress=False)
    out = labeler.label(df).frame

    # The job's own prompt, built independently of the runner.
    assert labeler.prompts is not None
    parts = labeler.prompts.score_parts()
    assert "Examples:" in parts.prefix  # a few-shot prompt: the examples are in what content-free inputs see
    first, *batches = provider.requests
    assert first.items == ["N/A", "", "[MASK]"]
    assert (first.system, first.prefix, first.suffix, first.examples) == (
        parts.system, parts.prefix, parts.suffix, parts.examples,
    )  # fmt: skip
    assert all((b.system, b.prefix, b.suffix) == (first.system, first.prefix, first.suffix) for b in batches)

    # The calibration is the mean of what the real model gives those inputs in that prompt.
    cf = local.score(ScoreRequest(parts.system, parts.prefix, list(CONTENT_FREE), parts.suffix, first.labels)).probs
    assert labeler.calibration is not None
    mean = [sum(col) / 3 for col in zip(*cf, strict=True)]
    assert list(labeler.calibration.probs.values()) == pytest.approx(mean, abs=1e-5)

    # Each item's label and pred_prob are its raw scores divided by that mean, renormalised.
    scored = out[out["pred_status"] == "ok"]
    assert len(scored) == len(df) - 5  # one shot per class
    raw = [p for b in batches for p in local.score(b).probs]
    cal = contextual_calibration(raw, cf)
    want = [(first.labels[max(range(len(p)), key=lambda k: p[k])], max(p)) for p in cal]
    assert scored["pred_label"].tolist() == [w[0] for w in want]
    assert scored["pred_prob"].tolist() == pytest.approx([w[1] for w in want], abs=1e-4)
    # pred_probs (the full distribution) is the calibrated one too.
    dists = [json.loads(cell) for cell in scored["pred_probs"]]
    assert [[d[lab] for lab in first.labels] for d in dists] == [pytest.approx(p, abs=1e-4) for p in cal]
