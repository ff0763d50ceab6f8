"""``promptclf export --format onnx`` and predicting from an export folder.

Fast tier: a tiny random-weight BERT (built from a config, with all-MiniLM-L6-v2's tokenizer) distilled
for two LoRA steps, so the real distill -> export -> ONNX Runtime path runs in seconds. Parity with PyTorch
is a property of the export, not of the weights, so random weights test it; whether int8 keeps the labels
depends on real weights and is checked on a real MiniLM student in the slow tier.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("peft")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from click.testing import CliRunner  # noqa: E402

from promptclf.cli import main  # noqa: E402
from promptclf.data.tables import bbc_sample, read_table, write_table  # noqa: E402
from promptclf.errors import InputError, MissingDependencyError  # noqa: E402
from promptclf.export.onnx_export import default_output, export_onnx  # noqa: E402
from promptclf.export.onnx_student import OnnxStudent  # noqa: E402
from promptclf.export.options import ExportOptions  # noqa: E402
from promptclf.predict.loader import load_predictor  # noqa: E402
from promptclf.predict.student import Student  # noqa: E402

LONG = " ".join(["Markets rallied as the central bank held rates and the pound rose against the dollar."] * 20)


def _tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's tokenizer, saved as a model folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from promptclf.resources import minilm_path

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, architectures=["BertModel"],
        initializer_range=0.5,  # large random weights: peaked probabilities, so parity is not checked on ~uniform ones
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real distill run folder: the tiny BERT with LoRA, two steps on 60 BBC rows (texts cut to 300 chars)."""
    from promptclf.distill.options import DistillOptions
    from promptclf.distill.run import distill

    work = tmp_path_factory.mktemp("tinyexport")
    base = _tiny_bert(work / "tiny-bert")
    df = bbc_sample(60, seed=4)[["id", "text", "label"]]
    df["text"] = df["text"].str.slice(0, 300)
    df["pred_label"], df["pred_status"] = df["label"], "ok"
    data = write_table(df, work / "teacher.csv")
    opts = DistillOptions.build(
        recipe="minilm-lora", student=str(base), max_steps=2, max_length=48, test_fraction=0.2, patience=0
    )
    distill(data, work / "student", opts)
    return work / "student"


@pytest.fixture(scope="module")
def exported(tiny_run: Path) -> Path:
    return export_onnx(tiny_run).folder


def _texts() -> list[str]:
    df = bbc_sample(40, seed=11)
    return [*df["text"].str.slice(0, 400).tolist(), "", "ok", LONG, "Économie — 日本"]


def test_export_folder_contract(tiny_run: Path, exported: Path) -> None:
    assert exported == default_output(tiny_run, ExportOptions()) == tiny_run.parent / "student-onnx"
    for name in ("model.onnx", "tokenizer.json", "labels.json", "options.json", "export.json"):
        assert (exported / name).is_file(), name
    manifest = json.loads((exported / "export.json").read_text())
    student = Student.load(tiny_run)
    assert manifest["labels"] == student.labels == json.loads((exported / "labels.json").read_text())
    assert manifest["temperature"] == pytest.approx(student.temperature)
    assert manifest["precision"] == "float32" and manifest["max_length"] == 48
    assert sorted(manifest["inputs"]) == ["attention_mask", "input_ids", "token_type_ids"]
    assert manifest["parity"]["max_abs_diff"] <= 1e-4 and manifest["parity"]["same_label"] == 1.0
    assert not list(tiny_run.parent.glob(".student-onnx.tmp*"))  # the temporary folder was renamed


@pytest.mark.parametrize("temperature", ["fitted", 1.0])
def test_onnx_float32_matches_pytorch(tiny_run: Path, exported: Path, temperature: str | float) -> None:
    texts = _texts()
    student, onnx = Student.load(tiny_run), OnnxStudent.load(exported)
    if temperature != "fitted":
        student.temperature = onnx.temperature = float(temperature)
    torch_p = student.predict_proba(texts, batch_size=8)
    onnx_p = onnx.predict_proba(texts, batch_size=5)  # other batches, other padding
    assert onnx_p.shape == (len(texts), len(onnx.labels))
    if temperature != "fitted":
        assert torch_p.max() > 0.6  # far from uniform: a wrong graph would show
    assert float(np.abs(onnx_p - torch_p).max()) <= 1e-4
    assert np.allclose(onnx_p.sum(-1), 1.0, atol=1e-5)
    assert [lab for lab, _ in onnx.predict(texts)] == [onnx.labels[j] for j in torch_p.argmax(-1)]


def test_onnx_applies_the_run_temperature(tiny_run: Path, exported: Path, tmp_path: Path) -> None:
    from promptclf.eval.calibration import apply_temperature

    onnx = OnnxStudent.load(exported)
    texts = _texts()[:6]
    onnx.temperature = 1.0
    raw = onnx.predict_proba(texts)
    # a run whose distill fitted T=2.5: the export records it and the ONNX student applies it
    import shutil

    run = tmp_path / "hot"
    shutil.copytree(tiny_run, run)
    rec = json.loads((run / "run.json").read_text())
    rec["temperature_scaling"] = {**(rec.get("temperature_scaling") or {}), "temperature": 2.5}
    (run / "run.json").write_text(json.dumps(rec))
    hot = OnnxStudent.load(export_onnx(run, tmp_path / "hot-onnx").folder)
    assert hot.temperature == 2.5
    assert np.allclose(hot.predict_proba(texts), apply_temperature(raw, 2.5), atol=1e-5)


def test_int8_export_is_smaller_and_loads(tiny_run: Path, exported: Path, tmp_path: Path) -> None:
    import logging

    root_handlers = list(logging.getLogger().handlers)
    res = export_onnx(tiny_run, tmp_path / "int8", ExportOptions(int8=True))
    assert logging.getLogger().handlers == root_handlers  # the quantizer's logging.warning() left no handler
    assert res.manifest.precision == "int8" and res.manifest.parity is not None
    assert (res.folder / "model.onnx").stat().st_size < (exported / "model.onnx").stat().st_size
    assert not (res.folder / "model.fp32.onnx").exists()
    # the feed-forward output projections (fed by GELU) and the head (fed by the pooler's tanh) stay float32
    assert len(res.manifest.float32_nodes) == 2 + 1
    p = OnnxStudent.load(res.folder).predict_proba(_texts())
    assert p.shape[1] == len(res.manifest.labels) and np.allclose(p.sum(-1), 1.0, atol=1e-5)


def test_reexport_replaces_an_export_and_refuses_other_folders(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    export_onnx(tiny_run, out)
    (out / "stale.txt").write_text("from the earlier export")
    export_onnx(tiny_run, out)
    assert not (out / "stale.txt").exists() and (out / "model.onnx").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an export folder; choose another -o"):
        export_onnx(tiny_run, other)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="is the run folder itself"):
        export_onnx(tiny_run, tiny_run)


def test_load_predictor_dispatches(tiny_run: Path, exported: Path) -> None:
    assert isinstance(load_predictor(exported), OnnxStudent)
    assert isinstance(load_predictor(tiny_run), Student)
    with pytest.raises(InputError, match="leave --dtype out"):
        load_predictor(exported, dtype="int8")


def test_cli_export_then_predict_every_row(tiny_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli-onnx"
    res = runner.invoke(main, ["export", str(tiny_run), "--format", "onnx", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().endswith(str(out)) and "same label 100%" in res.stderr
    df = bbc_sample(25, seed=5)[["id", "text"]]
    df.loc[3, "text"] = ""  # an empty text is predicted too, never dropped
    src = write_table(df, tmp_path / "in.csv")
    res = runner.invoke(main, ["predict", str(out), str(src), "-o", str(tmp_path / "pred.csv"), "--probs", "-q"])
    assert res.exit_code == 0, res.output
    got = read_table(tmp_path / "pred.csv")
    assert got["id"].tolist() == df["id"].tolist()
    want = Student.load(tiny_run).predict(df["text"].tolist())
    assert got["pred_label"].tolist() == [lab for lab, _ in want]
    assert max(abs(float(p) - q) for p, (_, q) in zip(got["pred_prob"], want, strict=True)) <= 1e-4
    labels = json.loads((out / "labels.json").read_text())
    assert [c for c in got.columns if c.startswith("prob_")] == [f"prob_{lab}" for lab in labels]


def test_cli_bad_inputs_one_line(tiny_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    cases = [
        (["export", str(tmp_path / "nope")], "no such run folder"),
        (["export", str(tmp_path)], "not a student run folder, no student.json"),
        (["export", str(tiny_run), "--format", "tflite"], "Invalid value for '--format'"),
    ]
    for args, msg in cases:
        res = runner.invoke(main, args)
        assert res.exit_code == 2 and msg in res.stderr, (args, res.output)
        assert "Traceback" not in res.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "export.json").write_text("{not json")
    src = write_table(pd.DataFrame({"text": ["a", "b"]}), tmp_path / "in.csv")
    res = runner.invoke(main, ["predict", str(broken), str(src), "-o", str(tmp_path / "p.csv"), "-q"])
    assert res.exit_code == 2 and "unreadable export manifest" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1


def test_lm_head_and_qlora_students_are_refused_with_what_is_supported(tmp_path: Path) -> None:
    for method, head, what in (("lora", "lm", "LM-head"), ("qlora", "cls", "QLoRA")):
        run = tmp_path / f"{method}-{head}"
        run.mkdir()
        spec = {"base": "smollm2", "base_path": "/x", "method": method, "head": head, "labels": ["a", "b"]}
        (run / "student.json").write_text(json.dumps({**spec, "max_length": 64}))
        with pytest.raises(InputError, match=f"{what}.*export supports encoder students"):
            export_onnx(run)


def test_missing_onnx_names_the_extra(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'promptclf\[onnx\]'"):
        export_onnx(tiny_run, tmp_path / "x")
    assert not (tmp_path / "x").exists()


# --- slow tier: a real MiniLM LoRA student ----------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_student(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """A real MiniLM LoRA student (400 BBC articles, gold labels, 2 epochs) and 300 BBC texts it never saw,
    with their gold labels."""
    from promptclf.data.tables import load_bbc_news
    from promptclf.distill.options import DistillOptions
    from promptclf.distill.run import distill

    work = tmp_path_factory.mktemp("minilm-export")
    train = bbc_sample(400, seed=3)[["id", "text", "label"]]
    data = write_table(train, work / "train.csv")
    opts = DistillOptions.build(recipe="minilm-lora", train_on="gold", epochs=2, patience=0)
    distill(data, work / "student", opts)
    unseen = load_bbc_news(dedupe=True)
    unseen = unseen[~unseen["id"].isin(set(train["id"]))].sample(300, random_state=1)
    return work / "student", unseen["text"].tolist(), unseen["label"].tolist()


@pytest.mark.slow
def test_real_minilm_float32_parity_and_int8_keeps_the_labels(
    minilm_student: tuple[Path, list[str], list[str]], tmp_path: Path
) -> None:
    """float32 ONNX matches PyTorch; int8 moves probabilities by a few hundredths, so it may flip a near-tie
    but never a clear call, and it costs no accuracy worth naming on texts the student never saw."""
    run, texts, gold = minilm_student
    student = Student.load(run)
    ref = student.predict_proba(texts)
    fp32 = OnnxStudent.load(export_onnx(run, tmp_path / "fp32").folder).predict_proba(texts, batch_size=16)
    assert float(np.abs(fp32 - ref).max()) <= 1e-4
    int8 = OnnxStudent.load(export_onnx(run, tmp_path / "int8", ExportOptions(int8=True)).folder)
    p8 = int8.predict_proba(texts)
    kept = p8.argmax(-1) == ref.argmax(-1)
    top2 = np.sort(ref, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) >= 0.2
    assert kept[clear].all(), f"int8 flips {int((~kept[clear]).sum())} of {int(clear.sum())} clear calls"
    assert kept.mean() >= 0.97, f"int8 gives PyTorch float32's label on {kept.mean():.1%} of {len(texts)} texts"
    names = np.array(student.labels)
    acc32 = float((names[ref.argmax(-1)] == np.array(gold)).mean())
    acc8 = float((names[p8.argmax(-1)] == np.array(gold)).mean())
    assert acc8 >= acc32 - 0.02, (acc32, acc8)
    assert (tmp_path / "int8" / "model.onnx").stat().st_size < 0.5 * (tmp_path / "fp32" / "model.onnx").stat().st_size
