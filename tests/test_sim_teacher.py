"""The simulated teacher (promptclf.testing.sim_teacher): a real HTTP server answering batched prompts from gold labels.

Checked: the accuracy it realises over HTTP on prompts rendered by promptclf (clipped texts
included), where its errors go (the most similar class, near class boundaries), that its
token logprobs are less confident on its errors, that answers do not depend on the batch, and
``promptclf label --base-url`` end to end against its CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from promptclf.label.confidence import item_confidence
from promptclf.label.prompts import Item, PromptBuilder
from promptclf.label.schema import parse_response, response_schema
from promptclf.labels import LabelSet
from promptclf.testing.sim_teacher import SimTeacher, norm


@pytest.fixture(scope="module")
def table() -> tuple[list[str], list[str], np.ndarray]:
    from promptclf.data.tables import bbc_sample
    from promptclf.embeddings import embed

    df = bbc_sample(100, seed=5)
    texts = [t[:300] for t in df["text"]]  # short texts keep the embedding quick
    return texts, list(df["label"]), embed(texts)


@pytest.fixture(scope="module")
def teacher(table):
    texts, gold, emb = table
    with SimTeacher(texts, gold, accuracy=0.85, seed=0, embeddings=emb) as t:
        yield t


def _post(base_url: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"{base_url}/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def _ask(teacher: SimTeacher, texts: list[str], labels: LabelSet, max_chars: int = 200) -> tuple[dict, dict]:
    """One batched request as promptclf renders it; (parsed labels by id, confidence by id)."""
    prompts = PromptBuilder(labels, max_chars=max_chars)
    messages = prompts.batch_messages([Item(k + 1, t) for k, t in enumerate(texts)])
    body = {
        "model": "simulated-teacher",
        "messages": messages,
        "response_format": {"type": "json_object", "schema": response_schema(labels)},
        "logprobs": True,
        "top_logprobs": 5,
        "max_tokens": 2000,
    }
    out = _post(teacher.base_url, body)
    text = out["choices"][0]["message"]["content"]
    parsed = parse_response(text, list(range(1, len(texts) + 1)), labels)
    assert out["usage"]["completion_tokens"] == len(out["choices"][0]["logprobs"]["content"])
    assert out["usage"]["prompt_tokens"] > sum(len(t) for t in texts) // 8
    conf = item_confidence(text, out["choices"][0]["logprobs"]["content"], parsed.labels, labels)
    return parsed.labels, conf


@pytest.fixture(scope="module")
def asked(teacher, table):
    """Every text asked once over HTTP in batches of 10, texts clipped to 200 characters."""
    texts, gold, _ = table
    labels = LabelSet.from_names(sorted(set(gold)))
    got: dict[int, tuple[str, float]] = {}
    for s in range(0, len(texts), 10):
        answer, conf = _ask(teacher, texts[s : s + 10], labels)
        for k, lab in answer.items():
            got[s + k - 1] = (lab, conf[k].prob)
    return got


def test_realised_accuracy_is_the_set_one(teacher, table, asked):
    texts, gold, _ = table
    assert len(asked) == len(texts)  # every clipped text was found in the gold table
    assert teacher.stats.unmatched == 0
    acc = np.mean([asked[i][0] == gold[i] for i in range(len(texts))])
    assert abs(acc - 0.85) <= 1 / len(texts) + 1e-9, acc


def test_errors_go_to_the_most_similar_class_near_the_boundary(teacher, table):
    texts, gold, emb = table
    answers = teacher.answers()

    cents = np.stack([emb[[g == lab for g in gold]].mean(0) for lab in teacher.labels])
    wrong_nearest, n_wrong = 0, 0
    for i, t in enumerate(texts):
        a = answers[norm(t)]
        if a.correct:
            continue
        n_wrong += 1
        sims = cents @ emb[i]
        sims[teacher.labels.index(gold[i])] = -np.inf
        wrong_nearest += teacher.labels[int(np.argmax(sims))] == a.label
    assert n_wrong == round(0.15 * len(answers))
    assert wrong_nearest >= 0.8 * n_wrong, (wrong_nearest, n_wrong)
    correct = np.array([answers[k].correct for k in teacher._keys])
    low = teacher.margins <= np.median(teacher.margins)
    assert (1 - correct[low].mean()) > 2 * (1 - correct[~low].mean())


def test_logprobs_are_less_confident_on_errors(teacher, table, asked):
    texts, gold, _ = table

    right = [p for i, (lab, p) in asked.items() if lab == gold[i]]
    wrong = [p for i, (lab, p) in asked.items() if lab != gold[i]]
    assert np.mean(wrong) < np.mean(right), (np.mean(wrong), np.mean(right))
    # The draw itself, over many texts (a 100-text table has only 15 errors to average).
    sims = np.array([0.5, 0.3, 0.2, 0.1, 0.0])
    draws = {
        w: np.array([(a := teacher._answer(f"t{i}", sims, 0, w)).probs[a.label] for i in range(2000)])
        for w in (False, True)
    }
    assert draws[True].mean() < draws[False].mean() - 0.1
    auroc = (draws[False][:, None] > draws[True][None, :]).mean()
    assert 0.7 < auroc < 0.9, auroc  # separable, but not perfectly: an LLM is often sure when wrong
    for i, (lab, p) in asked.items():  # the logprobs carry exactly the teacher's distribution
        a = teacher.answers()[norm(texts[i])]
        assert p == pytest.approx(a.probs[lab], abs=1e-6)
        if not a.correct:  # the true label gets the largest share of the rest
            rest = {k: v for k, v in a.probs.items() if k != lab}
            assert max(rest, key=rest.get) == gold[i]


def test_answers_do_not_depend_on_the_batch_or_the_process(teacher, table):
    texts, gold, emb = table
    labels = LabelSet.from_names(sorted(set(gold)))
    alone, conf_alone = _ask(teacher, [texts[7]], labels)
    mixed, conf_mixed = _ask(teacher, [texts[3], texts[50], texts[7]], labels, max_chars=4000)
    assert alone[1] == mixed[3] and conf_alone[1] == conf_mixed[3]
    same = SimTeacher(texts, gold, accuracy=0.85, seed=0, embeddings=emb)
    other = SimTeacher(texts, gold, accuracy=0.85, seed=1, embeddings=emb)
    assert same.answers() == teacher.answers()
    assert {k for k, a in other.answers().items() if not a.correct} != {
        k for k, a in teacher.answers().items() if not a.correct
    }


@pytest.mark.slow
def test_label_cli_against_the_sim_teacher_cli(tmp_path: Path):
    """``promptclf label --base-url`` against ``python -m promptclf.testing.sim_teacher``, both as subprocesses."""
    from promptclf.data.tables import bbc_sample

    df = bbc_sample(24, seed=11)[["id", "text", "label"]]
    df["text"] = df["text"].str.slice(0, 300)
    gold_csv = tmp_path / "gold.csv"
    df.to_csv(gold_csv, index=False)
    env = {**os.environ, "OPENAI_API_KEY": "sk-sim", "PROMPTCLF_STORE": str(tmp_path / "store.sqlite")}
    server = subprocess.Popen(
        [sys.executable, "-m", "promptclf.testing.sim_teacher", "--gold", str(gold_csv), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1"), base_url
        out = tmp_path / "labeled.csv"
        run = subprocess.run(
            [sys.executable, "-m", "promptclf", "label", str(gold_csv), "--provider", "openai", "--base-url", base_url,
             "--model", "simulated-teacher", "--batch-size", "8", "--max-chars", "200", "-o", str(out), "-q"],
            env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
    finally:
        server.terminate()
        server.wait(timeout=10)
    labeled = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(labeled["id"]) == list(df["id"]) and set(labeled["pred_status"]) == {"ok"}
    from promptclf.store import Store

    # The server cached its embeddings in the store: the oracle reads the same vectors.
    oracle = SimTeacher(list(df["text"]), list(df["label"]), accuracy=0.85, seed=0, store=Store(env["PROMPTCLF_STORE"]))
    for text, lab, p, dist in zip(
        labeled["text"], labeled["pred_label"], labeled["pred_prob"], labeled["pred_probs"], strict=True
    ):
        a = oracle.answer_for(text)
        assert lab == a.label and float(p) == pytest.approx(a.probs[lab], abs=2e-6)
        probs = json.loads(dist)
        assert set(probs) == set(a.probs) and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    record = json.loads((tmp_path / "labeled.run" / "run.json").read_text())
    assert record["metrics"]["accuracy"] == pytest.approx(np.mean(labeled["pred_label"] == df["label"]))
    assert abs(record["metrics"]["accuracy"] - 0.85) <= 1 / 24 + 1e-9
