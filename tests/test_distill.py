"""``promptclf distill`` / ``predict``: real MiniLM LoRA on BBC News, real 4-bit QLoRA on a tiny random Llama.

Runtime on 2 CPU cores: a few minutes (the MiniLM run is shared by several tests).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from click.testing import CliRunner  # noqa: E402

from promptclf.cli import main  # noqa: E402
from promptclf.data.tables import BBC_TOPICS, bbc_sample, write_table  # noqa: E402
from promptclf.distill.options import DistillOptions, load_recipe, recipe_names  # noqa: E402
from promptclf.distill.run import distill, prepare_data  # noqa: E402
from promptclf.errors import ConfigError, InputError, TrainingError  # noqa: E402
from promptclf.runs import DistillRun, LabelRun, load_run

REPO = Path(__file__).resolve().parents[1]
TOPICS = sorted(BBC_TOPICS)


def _teacher_file(path: Path, n: int, seed: int) -> Path:
    """BBC rows with a simulated teacher: ~10% wrong labels, ~5% invalid (status 'invalid', no label)."""
    df = bbc_sample(n, seed=seed)[["id", "text", "label"]].copy()
    rng = random.Random(seed)
    pred, status = [], []
    for gold in df["label"]:
        r = rng.random()
        if r < 0.05:
            pred.append("")
            status.append("invalid")
        elif r < 0.15:
            pred.append(rng.choice([t for t in TOPICS if t != gold]))
            status.append("ok")
        else:
            pred.append(gold)
            status.append("ok")
    df["pred_label"], df["pred_status"] = pred, status
    return write_table(df, path)


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """One real MiniLM LoRA run: 400 BBC rows, 25% gold test held out, ~270 train rows, 2 epochs."""
    work = tmp_path_factory.mktemp("minilm")
    data = _teacher_file(work / "labeled.csv", 400, seed=3)
    # the label run behind the labels, as 'promptclf label' leaves it beside the file: distill records it
    LabelRun(provider="openai", model="gpt-4o-mini", n_items=400, cost_usd=0.03, cost_per_1k=0.075).save(
        work / "labeled.run"
    )
    opts = DistillOptions.build(
        recipe="minilm-lora", epochs=2, max_length=64, test_fraction=0.25, learning_rate=2e-3, patience=0
    )
    run = distill(data, work / "student", opts)
    return data, work / "student", run


@pytest.mark.slow
def test_minilm_lora_beats_majority_by_a_wide_margin(minilm_run: tuple[Path, Path, DistillRun]) -> None:
    _, out, run = minilm_run
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    majority = preds["gold"].value_counts().iloc[0] / len(preds)
    assert run.metrics["n_gold"] == len(preds) == run.n_items > 80
    assert run.metrics["accuracy"] >= majority + 0.4, (run.metrics["accuracy"], majority)
    assert run.train.last_loss < run.train.first_loss
    assert 0.0 <= run.teacher_agreement <= 1.0 and run.teacher_agreement_on == "test"


def test_run_folder_contract(minilm_run: tuple[Path, Path, DistillRun]) -> None:
    _, out, run = minilm_run
    for name in ("run.json", "options.json", "labels.json", "student.json", "train_log.jsonl", "predictions.csv"):
        assert (out / name).exists(), name
    val = pd.read_csv(out / "validation.csv", keep_default_na=False)  # what label --threshold auto measures on
    assert list(val.columns) == ["text", "label", "label_source", "pred", "prob"] and len(val) == counts_val(run)
    assert (
        set(val["label"]) <= set(TOPICS)
        and (val["label_source"] == "teacher").all()
        and val["prob"].between(0, 1).all()
    )
    assert (out / "adapter_model.safetensors").exists() and not (out / "checkpoints").exists()
    assert run.kind == "distill" and run.labels == TOPICS == json.loads((out / "labels.json").read_text())
    assert run.gold_col == "label" and run.output == "predictions.csv"
    for key in ("time_s", "examples_per_s", "peak_memory_mb", "hourly_price_usd", "train_cost_usd"):
        assert getattr(run.train, key) is not None and getattr(run.train, key) >= 0, key
    assert run.train.hourly_price_usd == 0.10  # CPU default
    ts = run.temperature_scaling  # fitted on the validation split, never worse in NLL there
    assert ts is not None and ts.n == counts_val(run) and ts.temperature > 0
    assert ts.nll_after is not None and ts.nll_before is not None and ts.nll_after <= ts.nll_before + 1e-9
    # the teacher's labels are noisy: the fit takes them as right as often as the teacher agrees with gold
    assert ts.label_accuracy_from is not None and ts.label_accuracy_from.startswith("gold")
    assert ts.label_accuracy is not None and 0.5 < ts.label_accuracy < 1.0
    assert run.inference.items_per_s > 0 and run.inference.cost_per_1k > 0
    counts = run.data
    assert (counts.not_ok or 0) > 0  # invalid rows were skipped, not trained on
    assert (counts.train_rows or 0) + (counts.val_rows or 0) + (counts.test_rows or 0) <= (counts.input_rows or 0)
    assert DistillOptions(**json.loads((out / "options.json").read_text())).epochs == 2
    assert run.teacher is not None and run.teacher.run == str((out.parent / "labeled.run").resolve())
    assert (run.teacher.provider, run.teacher.model, run.teacher.prompt) == ("openai", "gpt-4o-mini", "zero-shot")
    assert (run.teacher.cost_usd, run.teacher.cost_per_1k) == (0.03, 0.075)


def counts_val(run: DistillRun) -> int:
    return run.data.val_rows or 0


def test_predict_applies_the_fitted_temperature(minilm_run: tuple[Path, Path, DistillRun]) -> None:
    import numpy as np

    from promptclf.eval.calibration import apply_temperature
    from promptclf.predict.student import Student

    _, out, run = minilm_run
    assert run.temperature_scaling is not None
    student = Student.load(out)
    assert student.temperature == pytest.approx(run.temperature_scaling.temperature)
    texts = ["the match ended in a draw", "shares fell sharply on the stock market"]
    scaled = student.predict_proba(texts)
    student.temperature = 1.0
    raw = student.predict_proba(texts)
    assert np.allclose(scaled, apply_temperature(raw, run.temperature_scaling.temperature), atol=1e-5)


def test_reload_gives_identical_predictions(minilm_run: tuple[Path, Path, DistillRun]) -> None:
    from promptclf.predict.student import Student

    _, out, run = minilm_run
    assert run.train.reload_same_labels and run.train.reload_max_abs_diff < 1e-5
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    again = Student.load(out).predict(preds["text"].tolist(), batch_size=7)  # other batching, same answers
    assert [lab for lab, _ in again] == preds["pred"].tolist()
    assert max(abs(p - q) for (_, p), q in zip(again, preds["prob"], strict=True)) < 1e-4


def test_cli_predict_writes_every_row(minilm_run: tuple[Path, Path, DistillRun], tmp_path: Path) -> None:
    from promptclf.predict.student import Student

    _, out, _ = minilm_run
    new = bbc_sample(30, seed=99)[["id", "text"]]
    new.loc[3, "text"] = ""  # an empty text still gets a row and a label
    write_table(new, tmp_path / "new.csv")
    res = CliRunner().invoke(
        main, ["predict", str(out), str(tmp_path / "new.csv"), "-o", str(tmp_path / "p.csv"), "--probs"]
    )
    assert res.exit_code == 0, res.output
    got = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert list(got["id"]) == list(new["id"])
    assert set(got["pred_label"]) <= set(TOPICS)
    prob_cols = [f"prob_{t}" for t in TOPICS]
    assert ((got[prob_cols].sum(axis=1) - 1).abs() < 1e-3).all()
    direct = Student.load(out).predict(new["text"].tolist())
    assert [lab for lab, _ in direct] == got["pred_label"].tolist()


def test_rerun_of_finished_run_returns_it_and_changed_options_are_refused(
    minilm_run: tuple[Path, Path, DistillRun],
) -> None:
    data, out, run = minilm_run
    opts = DistillOptions(**json.loads((out / "options.json").read_text()))
    assert distill(data, out, opts).created == run.created  # no retraining
    with pytest.raises(ConfigError, match="different options.*epochs"):
        distill(data, out, opts.model_copy(update={"epochs": 5}))


# --- data preparation (no model) ---------------------------------------------------------------


def test_prepare_data_keeps_evaluation_rows_out_of_training(tmp_path: Path) -> None:
    data_path = _teacher_file(tmp_path / "l.csv", 200, seed=1)
    df = pd.read_csv(data_path, keep_default_na=False)
    d = prepare_data(data_path, DistillOptions(test_fraction=0.2))
    train, val, test = set(d.train_texts), set(d.val_texts), set(d.test_texts)
    assert not (train & val) and not (train & test) and not (val & test)
    invalid = set(df.loc[df["pred_status"] != "ok", "text"])
    assert not (invalid & (train | val))
    assert len(test) == d.counts["test_rows"] > 30
    # --eval: rows of the eval file never train, even when they also sit in the input file
    write_table(df.head(50)[["text", "label"]], tmp_path / "gold.csv")
    d2 = prepare_data(data_path, DistillOptions(eval_file=str(tmp_path / "gold.csv")))
    assert not (set(d2.train_texts) | set(d2.val_texts)) & set(df.head(50)["text"])
    assert len(d2.test_texts) == 50
    # --train-on gold uses the gold column; no status filtering
    d3 = prepare_data(data_path, DistillOptions(train_on="gold", test_fraction=0.0))
    assert len(d3.train_texts) + len(d3.val_texts) == len(df)


# --- bad input ----------------------------------------------------------------------------------


def _tiny_table(path: Path, labels: list[str]) -> Path:
    return write_table(
        pd.DataFrame({"text": [f"text number {i}" for i in range(len(labels))], "pred_label": labels}), path
    )


def test_one_class_is_refused(tmp_path: Path) -> None:
    p = _tiny_table(tmp_path / "a.csv", ["sport"] * 10)
    with pytest.raises(TrainingError, match="only one class \\('sport', 10 rows\\)"):
        prepare_data(p, DistillOptions())


def test_class_with_one_row_is_trained_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    p = _tiny_table(tmp_path / "a.csv", ["sport"] * 10 + ["tech"] * 10 + ["politics"])
    d = prepare_data(p, DistillOptions(test_fraction=0.0))
    pol = d.labels.index("politics")
    assert d.train_y.count(pol) == 1 and pol not in d.val_y
    said = capsys.readouterr().err + caplog.text
    assert "'politics'" in said and "no validation row" in said


def test_exclude_leaving_one_row_of_a_class_still_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = ["sport"] * 10 + ["tech"] * 10 + ["politics"] * 3
    p = _tiny_table(tmp_path / "a.csv", labels)
    flagged = write_table(pd.DataFrame({"text": ["text number 20", "text number 21"]}), tmp_path / "review.csv")
    d = prepare_data(p, DistillOptions(test_fraction=0.0, exclude=str(flagged)))
    assert d.counts["excluded"] == 2 and "politics" in d.labels
    assert d.train_texts.count("text number 22") == 1


def test_missing_column_via_cli(tmp_path: Path) -> None:
    p = _tiny_table(tmp_path / "a.csv", ["sport", "tech"] * 5)
    res = CliRunner().invoke(main, ["distill", str(p), "-o", str(tmp_path / "o"), "--text-col", "body"])
    assert res.exit_code == 2
    assert "no column 'body' (set --text-col)" in res.output and "'text', 'pred_label'" in res.output


def test_unknown_student_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from promptclf.distill.models import resolve_student

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="could not be found locally.*needs network"):
        resolve_student("nobody-here/no-such-model-xyz")
    with pytest.raises(InputError, match="no such folder"):
        resolve_student(str(tmp_path / "missing" / "model"))


def test_qlora_without_gpu_is_refused_unless_allowed(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    p = _tiny_table(tmp_path / "a.csv", ["sport", "tech"] * 10)
    res = CliRunner().invoke(main, ["distill", str(p), "-o", str(tmp_path / "o"), "--method", "qlora"])
    assert res.exit_code == TrainingError.exit_code
    assert "needs a CUDA GPU" in res.output and "--allow-cpu" in res.output


def test_options_and_recipes() -> None:
    assert {"minilm-lora", "llama-3.2-3b-qlora", "llama-3-8b-qlora", "qwen2.5-7b-qlora", "smollm2-qlora"} <= set(
        recipe_names()
    )
    for name in recipe_names():
        DistillOptions.build(recipe=name)  # every packaged recipe validates
    o = DistillOptions.build(recipe="qwen2.5-7b-qlora", epochs=1, max_length=256)
    assert (o.head, o.method, o.epochs, o.max_length) == ("lm", "qlora", 1, 256)  # options override the recipe
    assert load_recipe("llama-3-8b-qlora")["student"] == "meta-llama/Meta-Llama-3-8B"
    with pytest.raises(ConfigError, match="epoch"):
        DistillOptions.build(epoch=3)  # extra="forbid": a typo is an error, not silently ignored
    with pytest.raises(ConfigError, match="causal LM"):
        DistillOptions.build(head="lm")  # MiniLM has no LM head to answer with
    with pytest.raises(ConfigError, match="no such file or packaged recipe"):
        DistillOptions.build(recipe="nope")


# --- QLoRA on a tiny random-weight Llama (real bitsandbytes 4-bit layers on CPU) -----------------


SPORT = ["goal", "match", "team", "league", "striker", "coach", "cup", "final", "season", "win", "player", "scored"]
MONEY = [
    "shares",
    "profit",
    "market",
    "bank",
    "bond",
    "investors",
    "revenue",
    "economy",
    "price",
    "trade",
    "sales",
    "firm",
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide Llama with random weights and the SmolLM2 tokenizer, saved as a model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from promptclf.resources import smollm2_gguf

    folder = tmp_path_factory.mktemp("tinyllama")
    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def two_topic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    rows = []
    for i in range(64):
        lab, words = ("sport", SPORT) if i % 2 else ("business", MONEY)
        rows.append({"text": " ".join(rng.choices(words, k=rng.randint(4, 9))), "pred_label": lab})
    return write_table(pd.DataFrame(rows), tmp_path_factory.mktemp("two") / "two.csv")


@pytest.mark.slow
@pytest.mark.parametrize("head", ["cls", "lm"])
def test_qlora_tiny_llama_trains_saves_reloads(
    head: str, tiny_llama: Path, two_topic_file: Path, tmp_path: Path
) -> None:
    import torch

    from promptclf.predict.student import Student

    out = tmp_path / f"q-{head}"
    opts = DistillOptions.build(
        student=str(tiny_llama),
        method="qlora",
        head=head,
        allow_cpu=True,
        max_steps=16,
        eval_steps=8,
        logging_steps=1,
        learning_rate=1e-2,
        batch_size=8,
        max_length=32,
        patience=0,
        val_fraction=0.25,
    )
    run = distill(two_topic_file, out, opts)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses
    assert (
        run.train.reload_same_labels and run.train.reload_max_abs_diff < 5e-3
    )  # bnb CPU kernels differ slightly between the trained and a fresh 4-bit model
    # the adapter really wraps 4-bit layers
    student = Student.load(out)
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in student.model.modules())
    texts = ["goal team cup", "bank shares profit", "season final win", "market price trade"]
    a, b = student.predict_proba(texts), Student.load(out).predict_proba(texts)
    assert (a == b).all()  # two loads: bit-identical
    assert torch.allclose(torch.tensor(a.sum(-1)), torch.ones(len(texts)), atol=1e-5)
    assert {lab for lab, _ in student.predict(texts)} <= {"business", "sport"}


# --- resume after a hard kill ------------------------------------------------------------------


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path: Path) -> None:
    data = _teacher_file(tmp_path / "l.csv", 120, seed=5)
    out = tmp_path / "run"
    args = [
        "distill",
        str(data),
        "-o",
        str(out),
        "--max-steps",
        "30",
        "--eval-steps",
        "4",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--patience",
        "0",
        "--lr",
        "1e-3",
    ]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "promptclf", *args], env=env, stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoints" / "checkpoint-4"
    deadline = time.time() + 240
    try:
        while not (ckpt / "trainer_state.json").exists():
            assert proc.poll() is None, f"training exited early: {proc.stderr.read() if proc.stderr else ''}"
            assert time.time() < deadline, "no checkpoint within 4 minutes"
            time.sleep(0.05)
        time.sleep(0.5)  # let it get a few steps past the checkpoint
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "run.json").exists()  # killed mid-training, not finished

    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "resuming from" in res.output and "checkpoint-" in res.output
    run = load_run(out)
    assert run.train.resumed_from_step >= 4 and run.train.steps == 30
    assert run.train.time_s > run.train.session_time_s  # includes the killed session's time


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_packed_lm_scores_match_one_sequence_per_label(impl: str, tiny_llama: Path) -> None:
    """score_lm packs all labels behind one prompt; the numbers must equal scoring each label alone."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from promptclf.distill.models import DEFAULT_LM_PROMPT, PromptParts, _score_lm_unpacked, score_lm
    from promptclf.providers.local.provider import LocalProvider

    labels = ["sport", "sports", "business", "science and technology"]  # shared prefixes, 1-4 tokens
    texts = ["goal", "the bank raised rates again after a long meeting", "a new chip for phones"]
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.pad_token = tok.pad_token or tok.eos_token
    parts = PromptParts.build(tok, DEFAULT_LM_PROMPT, labels)
    assert len({len(a) for a in parts.answers}) > 1
    tiny = LlamaForCausalLM.from_pretrained(tiny_llama, attn_implementation=impl).eval()
    real = LocalProvider()  # SmolLM2-135M with real weights (sdpa), shared with other tests in this process
    real.load()
    for model in (tiny, real._lm) if impl == "sdpa" else (tiny,):
        with torch.inference_mode():
            packed = score_lm(model, tok, parts, texts, max_length=64)
            alone = _score_lm_unpacked(model, tok, parts, texts, max_length=64)
        assert packed.shape == (len(texts), len(labels))
        assert torch.allclose(packed, alone, atol=1e-4), (packed, alone)
        # texts cut at max_length, in a batch with one that is not cut
        with torch.inference_mode():
            short = score_lm(model, tok, parts, texts, max_length=40)
            short_alone = _score_lm_unpacked(model, tok, parts, texts, max_length=40)
        assert torch.allclose(short, short_alone, atol=1e-4) and not torch.allclose(short[1], packed[1])
