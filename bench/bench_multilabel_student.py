"""A multi-label student against its teacher: MiniLM distilled from a simulated multi-label teacher's labels.

Data: ``promptclf.data.corpora.bbc_multilabel``, a synthetic stand-in (joined openings of 1-3 BBC articles of
different topics, labeled with all of them; 10% of rows an article of a topic outside the set, gold ``[]``).
Openings are cut to ``--chars`` characters so that every topic of a row fits in the student's ``--max-length``
tokens.

Teacher: the simulated multi-label teacher (``promptclf.testing.answers.noisy_multi_answer`` behind the fake
OpenAI-compatible server, each (text, label) decision wrong with probability ``--error``), run through the
real ``promptclf label --multi-label`` CLI, so the labeled file has its label run beside it and ``distill``
reads multi-label from the run. A chat answer without logprobs has no ``pred_probs``; for ``--soft`` this
script gives the simulated teacher per-label probabilities the way ``sim_teacher`` gives single-label ones:
a label it chose gets Beta(8, 1) when the decision is right and Beta(4, 1.5) when wrong, a label it left out
one minus that (so it is confident, more so when right). Every figure is "simulated teacher".

``--dataset hpo``: the Human Phenotype Ontology set (``promptclf.data.taxonomies.hpo_multilabel``, a real
multi-label set: curator definitions of phenotype terms labeled with every organ system above them, 23 labels,
some rows ``[]``), with the same simulated teacher (its labels file gives each organ system's definition).

Student: MiniLM with the minilm-lora recipe (``--max-length``, ``--epochs`` overridden), trained twice on the
same rows: hard targets (the teacher's sets) and ``--soft`` (its per-label probabilities). Both are scored
on the same held-out gold rows (``--test-fraction`` of the rows, never trained on) with the teacher's own
figures on those rows beside them.

    python bench/bench_multilabel_student.py [--dataset bbc|hpo] [--rows 500] [--error 0.05] [--seeds 0] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # promptclf from this checkout

from promptclf.data.corpora import bbc_multilabel  # noqa: E402
from promptclf.data.taxonomies import hpo_categories, hpo_label_name, hpo_labels_yaml, hpo_multilabel  # noqa: E402
from promptclf.labels import split_labels  # noqa: E402
from promptclf.testing.answers import PromptAnswers, noisy_multi_answer  # noqa: E402
from promptclf.testing.fake_server import FakeServer, Responder  # noqa: E402

TOPICS = ["business", "politics", "sports", "tech"]
FIGS = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def label_with_teacher(work: Path, df: pd.DataFrame, labels: str, error: float, seed: int) -> Path:
    """The real `label --multi-label` CLI against the simulated teacher; returns the labeled file."""
    truth = {str(t): split_labels(g) for t, g in zip(df["text"], df["label"], strict=True)}
    src = work / "multilabel.csv"
    df.to_csv(src, index=False)
    out = work / "labeled.csv"
    answers = PromptAnswers(multi_answer=noisy_multi_answer(truth, error, seed=seed))
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "PROMPTCLF_STORE": str(work / "store.sqlite"),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    with FakeServer(Responder(answers)) as server:
        cmd = [
            sys.executable, "-m", "promptclf", "label", str(src), "-o", str(out), "--multi-label",
            "--labels", labels, "--base-url", server.base_url, "--model", "simulated-multilabel-teacher",
            "--batch-size", "10", "--concurrency", "4", "--quiet",
        ]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def add_teacher_probs(labeled: Path, topics: list[str], seed: int) -> int:
    """Per-label probabilities for the simulated teacher (module docstring), written to ``pred_probs``."""
    df = pd.read_csv(labeled, keep_default_na=False)
    rng = np.random.default_rng(seed + 1000)
    cells = []
    for gold_cell, pred_cell in zip(df["label"], df["pred_labels"], strict=True):
        if not str(pred_cell).strip():
            cells.append("")
            continue
        gold, chosen = set(split_labels(gold_cell)), set(split_labels(pred_cell))
        probs = {}
        for lab in topics:
            right = (lab in chosen) == (lab in gold)
            conf = rng.beta(8, 1) if right else rng.beta(4, 1.5)
            probs[lab] = round(float(conf if lab in chosen else 1.0 - conf), 6)
        cells.append(json.dumps(probs))
    df["pred_probs"] = cells
    df.to_csv(labeled, index=False)
    return sum(1 for c in cells if c)


def fmt(m: dict, k: str) -> str:
    v, ci = m.get(k), m.get(f"{k}_ci")
    if v is None:
        return "-"
    return f"{v:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["bbc", "hpo"], default="bbc")
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--chars", type=int, default=150, help="characters of each article's opening")
    p.add_argument("--error", type=float, default=0.05, help="the simulated teacher's per-label error rate")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--patience", type=int, default=1, help="early stopping (the recipe's 1; 0 = off)")
    p.add_argument("--test-fraction", type=float, default=0.3)
    a = p.parse_args()

    from promptclf.distill.options import DistillOptions
    from promptclf.distill.run import distill

    t_start = time.perf_counter()
    if a.dataset == "hpo":
        topics = [hpo_label_name(t.name) for t in hpo_categories()]
        print(
            f"# bench_multilabel_student: HPO (real multi-label set: curator definitions of phenotype terms, labeled "
            f"with every organ system above them), {a.rows} rows; {len(topics)} labels"
        )
    else:
        topics = TOPICS
        print(
            f"# bench_multilabel_student: synthetic multi-label set (joined BBC article openings, {a.chars} chars "
            f"each), {a.rows} rows; labels {', '.join(TOPICS)}"
        )
    print(
        f"# teacher: simulated multi-label teacher, per-label error {a.error:.0%}, fake OpenAI-compatible server; "
        "soft targets: simulated per-label probabilities (Beta(8,1) right, Beta(4,1.5) wrong)"
    )
    print(f"# student: MiniLM (minilm-lora recipe), max_length {a.max_length}, {a.epochs:g} epochs; {load()}")
    summary: dict[str, dict[str, list[float]]] = {}
    for seed in (int(s) for s in a.seeds.split(",") if s.strip()):
        if a.dataset == "hpo":
            df = hpo_multilabel(a.rows, seed=seed)
        else:
            df = bbc_multilabel(a.rows, seed=seed, chars=a.chars, none_share=0.1)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            t0 = time.perf_counter()
            labels = ",".join(topics)
            if a.dataset == "hpo":  # names with spaces, and each organ system's HPO definition: a labels file
                (work / "labels.yaml").write_text(hpo_labels_yaml())
                labels = str(work / "labels.yaml")
            labeled = label_with_teacher(work, df, labels, a.error, seed)
            n_probs = add_teacher_probs(labeled, topics, seed)
            print(
                f"\n## seed {seed}: labeled {len(df)} rows in {time.perf_counter() - t0:.0f}s ({n_probs} with pred_probs)"
            )
            teacher_done = False
            for kind in ("hard", "soft"):
                opts = DistillOptions.build(
                    recipe="minilm-lora", max_length=a.max_length, epochs=a.epochs, seed=seed,
                    test_fraction=a.test_fraction, soft=kind == "soft", threads=os.cpu_count(), patience=a.patience,
                )  # fmt: skip
                t1 = time.perf_counter()
                run = distill(labeled, work / f"student-{kind}", opts)
                wall = time.perf_counter() - t1
                m, ml = run.metrics or {}, run.multi_label or {}
                if not teacher_done:
                    t = ml["teacher_on_test"]
                    print(f"{'teacher (simulated)':<22} n {t['n']}  " + "  ".join(f"{k} {fmt(t, k)}" for k in FIGS))
                    summary.setdefault("teacher (simulated)", {}).setdefault("micro_f1", []).append(t["micro_f1"])
                    for k in FIGS[1:]:
                        summary["teacher (simulated)"].setdefault(k, []).append(t[k])
                    teacher_done = True
                print(f"{'student ' + kind:<22} n {m['n_scored']}  " + "  ".join(f"{k} {fmt(m, k)}" for k in FIGS))
                half = ml.get("test_at_0_5") or {}
                print(
                    f"{'':<22} micro-F1 at 0.5 thresholds {half.get('micro_f1', float('nan')):.3f} "
                    f"(tuned: {m['micro_f1']:.3f}); thresholds "
                    + ", ".join(f"{k} {v:.2f}" for k, v in ml["thresholds"].items())
                    + f"; agreement with teacher (same set) {run.teacher_agreement:.3f}; "
                    f"{run.train.steps} steps, train {run.train.time_s:.0f}s, total {wall:.0f}s; {load()}"
                )
                row = summary.setdefault(f"student {kind}", {})
                for k in FIGS:
                    row.setdefault(k, []).append(m[k])
                row.setdefault("train_s", []).append(run.train.time_s)
    print(f"\nmedian over seeds {a.seeds}, held-out gold rows (simulated teacher):")
    print(f"{'':<22}" + "".join(f"{k:>17}" for k in (*FIGS, "train_s")))
    for name, figs in summary.items():
        cells = [f"{statistics.median(figs[k]):17.3f}" if k in figs else f"{'-':>17}" for k in (*FIGS, "train_s")]
        print(f"{name:<22}" + "".join(cells))
    print(f"\nwall {time.perf_counter() - t_start:.0f}s; {load()}")


if __name__ == "__main__":
    main()
