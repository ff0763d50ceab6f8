"""``distill --soft``: the mixed KL/CE loss, soft targets from ``pred_probs``, and a real MiniLM run that learns them.

Runtime on 2 CPU cores: about a minute (two short MiniLM LoRA trainings on 60 articles).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

import torch.nn.functional as F  # noqa: E402

from promptclf.data.tables import bbc_sample, write_table  # noqa: E402
from promptclf.distill.options import DistillOptions  # noqa: E402
from promptclf.distill.run import distill, prepare_data  # noqa: E402
from promptclf.distill.soft import soft_loss  # noqa: E402
from promptclf.errors import ConfigError, InputError  # noqa: E402
from promptclf.predict.student import Student  # noqa: E402


def test_soft_loss_mixes_kl_and_ce_per_row() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 1, 2, 1])
    targets = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.0, 0.0], [0.1, 0.1, 0.8], [0.0, 0.0, 0.0]])
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    t = 2.0
    got = soft_loss(logits, labels, targets, mask, t)
    ce = F.cross_entropy(logits, labels, reduction="none")
    rows = []
    for i in range(4):
        if mask[i]:
            p = targets[i] ** (1 / t)
            p = p / p.sum()
            log_q = F.log_softmax(logits[i] / t, -1)
            rows.append(t * t * (p * (p.log() - log_q)).sum())
        else:
            rows.append(ce[i])
    assert got.item() == pytest.approx(torch.stack(rows).mean().item(), rel=1e-5)
    # No soft rows: exactly the usual cross-entropy.
    assert soft_loss(logits, labels, targets, torch.zeros(4), t).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6
    )
    # A label with zero teacher mass contributes 0·log 0 = 0, not NaN.
    one_hot = torch.tensor([[1.0, 0.0, 0.0]] * 4)
    assert math.isfinite(soft_loss(logits, labels, one_hot, torch.ones(4), t).item())
    # The loss is smallest when the student matches the teacher at the temperature.
    p = torch.tensor([[0.6, 0.3, 0.1]])
    match = torch.log(p) * 1.0  # logits whose softmax(z/T)=p_T when T=1... at T: log p is right for any T
    worse = torch.tensor([[3.0, -1.0, -2.0]])
    assert soft_loss(match, labels[:1], p, torch.ones(1), t) < soft_loss(worse, labels[:1], p, torch.ones(1), t)


def _two_topic_file(path: Path, n: int, soft_share: float) -> Path:
    """Business vs sport articles; the teacher says its label with probability 0.6 on ``soft_share`` of rows."""
    df = bbc_sample(400, seed=2)
    df = df[df["label"].isin(["business", "sports"])].head(n)[["text", "label"]].reset_index(drop=True)
    df["pred_label"], df["pred_status"] = df["label"], "ok"
    other = {"business": "sports", "sports": "business"}
    n_soft = int(round(soft_share * len(df)))
    df["pred_probs"] = [
        json.dumps({lab: 0.6, other[lab]: 0.4}) if i < n_soft else "" for i, lab in enumerate(df["label"])
    ]
    return write_table(df, path)


def test_prepare_data_soft_targets(tmp_path: Path) -> None:
    path = _two_topic_file(tmp_path / "l.csv", 40, soft_share=0.5)
    df = pd.read_csv(path, keep_default_na=False)
    d = prepare_data(path, DistillOptions.build(soft=True, test_fraction=0.0))
    assert d.train_soft is not None and len(d.train_soft) == len(d.train_texts)
    by_text = dict(zip(df["text"], df["pred_probs"], strict=True))
    for text, y, vec in zip(d.train_texts, d.train_y, d.train_soft, strict=True):
        if by_text[text]:
            assert vec is not None and vec[y] == pytest.approx(0.6) and sum(vec) == pytest.approx(1.0)
        else:
            assert vec is None  # no distribution: this row trains on its hard label
    assert 0 < d.counts["soft_rows"] < len(d.train_texts)
    # A distribution over more labels than the student has: renormalised over its labels.
    df.loc[0, "pred_probs"] = json.dumps({df.loc[0, "label"]: 0.5, "tech": 0.5})
    write_table(df, path)
    d2 = prepare_data(path, DistillOptions.build(soft=True, test_fraction=0.0))
    vecs = dict(zip(d2.train_texts + d2.val_texts, d2.train_soft + [None] * len(d2.val_texts), strict=True))
    if df.loc[0, "text"] in d2.train_texts:
        assert max(vecs[df.loc[0, "text"]]) == pytest.approx(1.0)
    df.loc[1, "pred_probs"] = "[0.2, 0.8]"
    write_table(df, path)
    with pytest.raises(InputError, match="row 3: pred_probs must be a JSON object"):
        prepare_data(path, DistillOptions.build(soft=True, test_fraction=0.0))
    with pytest.raises(InputError, match="--probs-col"):
        prepare_data(path, DistillOptions.build(soft=True, probs_col="nope", test_fraction=0.0))
    with pytest.raises(ConfigError, match="--soft needs"):
        DistillOptions.build(soft=True, train_on="gold")


@pytest.fixture(scope="module")
def soft_vs_hard(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    work = tmp_path_factory.mktemp("soft")
    data = _two_topic_file(work / "labeled.csv", 60, soft_share=1.0)
    common = dict(
        recipe="minilm-lora",
        epochs=6,
        max_length=48,
        learning_rate=3e-3,
        patience=0,
        batch_size=8,
        test_fraction=0.0,
        val_fraction=0.15,
        seed=0,
    )
    out = {}
    for name, extra in (("hard", {}), ("soft", {"soft": True, "temperature": 2.0})):
        run = distill(data, work / name, DistillOptions.build(**common, **extra))
        out[name] = (work / name, run)
    return out


@pytest.mark.slow
def test_soft_student_moves_toward_the_teachers_probabilities(soft_vs_hard: dict) -> None:
    """Hard labels push p(label) toward 1; the teacher's 0.6 pulls the soft student toward 0.6."""
    df = pd.read_csv(soft_vs_hard["hard"][0].parent / "labeled.csv", keep_default_na=False)
    means = {}
    for name, (folder, _) in soft_vs_hard.items():
        student = Student.load(folder)
        student.temperature = 1.0  # what training learned, before the temperature fitted afterwards
        probs = student.predict_proba(df["text"].tolist())
        j = [student.labels.index(lab) for lab in df["label"]]
        means[name] = float(probs[range(len(j)), j].mean())
    assert means["hard"] > 0.8, means
    assert abs(means["soft"] - 0.6) < abs(means["hard"] - 0.6) and means["soft"] < means["hard"] - 0.1, means


def test_soft_options_saved_and_described(soft_vs_hard: dict) -> None:
    folder, run = soft_vs_hard["soft"]
    assert run.options["soft"] is True and run.options["temperature"] == 2.0
    assert json.loads((folder / "options.json").read_text())["soft"] is True
    assert run.data.soft_rows == run.data.train_rows
    hard_folder, hard_run = soft_vs_hard["hard"]
    assert hard_run.data.soft_rows is None
    assert "soft_rows" not in json.loads((hard_folder / "run.json").read_text())["data"]
    from promptclf.report.load import load_run

    assert "soft labels, T=2" in load_run(folder).describe()
    assert "soft" not in load_run(soft_vs_hard["hard"][0]).describe()


def test_run_folders_from_before_these_options_still_resume() -> None:
    """An options.json written before --soft/--exclude existed compares equal when they are at their defaults."""
    from promptclf.distill.run import _same_options

    now = DistillOptions.build().model_dump(mode="json")
    new = ("soft", "temperature", "probs_col", "exclude", "corrections", "fallback_col")
    old = {k: v for k, v in now.items() if k not in new}
    assert _same_options(old, now) == []
    assert _same_options(old, DistillOptions.build(soft=True).model_dump(mode="json")) == ["soft"]
