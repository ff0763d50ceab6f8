"""Ordinal students, FineWeb-Edu style: does a regression head beat the classification head on a rating scale?

The loop: VADER lexicon entries graded 0-4 by their mean human rating
(``promptclf.data.corpora.vader_ordinal``) are labeled by the simulated teacher
(``promptclf.testing.sim_teacher``: a stand-in for a 70B chat model at 85% accuracy over HTTP on
127.0.0.1, its confidences in token log-probabilities) with ``label --ordinal``; the labeled file's
run folder carries the scale, so ``distill`` trains an ordinal student without being told. MiniLM
(recipe ``minilm-lora``) is distilled twice on the same rows, split and steps: once with the
classification head (score = expected score under its probabilities), once with the regression head
(one output, MSE on the teacher's score). Both, and the teacher, are scored on the same held-out
gold rows (never trained on): MAE of the score, Spearman, within-one and exact accuracy of the
label, F1 at the cut (score >= 3: "positive" on 0-4), and F1 at the cut of the predicted label instead of
the score (``f1_label``). ``--soft`` repeats both heads on the teacher's
distributions (regression: its expected score).

    OMP_NUM_THREADS=2 python bench/bench_ordinal.py --n 1500 --seeds 0 | tee bench/results/ordinal.txt
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from promptclf.data.corpora import vader_ordinal  # noqa: E402
from promptclf.data.tables import write_table  # noqa: E402
from promptclf.distill.options import DistillOptions  # noqa: E402
from promptclf.distill.run import distill  # noqa: E402
from promptclf.eval.ordinal import ordinal_metrics  # noqa: E402
from promptclf.label.labeler import label_file  # noqa: E402
from promptclf.label.options import LabelOptions  # noqa: E402
from promptclf.labels import LabelSet  # noqa: E402

GRADES = ["0", "1", "2", "3", "4"]
CUT = 3.0
COLS = ["mae", "spearman", "within_one", "exact", "f1_cut", "f1_label"]
SCALE = LabelSet.from_names(GRADES, ordinal=True)


def _figures(m: dict, gold: list[str], pred: list[str], status: list[str] | None = None) -> dict[str, float]:
    """The score's figures from ``m``; ``f1_label``: F1 at the cut of the predicted *label*'s score instead."""
    by_label = ordinal_metrics(gold, pred, SCALE, status=status, cut=CUT, n_boot=0)
    return {
        "mae": m["mae_score"], "spearman": m["spearman"] if m["spearman"] is not None else float("nan"),
        "within_one": m["within_one"], "exact": m["exact"], "f1_cut": m["binary"]["f1"],
        "f1_label": by_label["binary"]["f1"],
    }  # fmt: skip


def one_seed(seed: int, a: argparse.Namespace, tmp: Path) -> dict[str, dict[str, float]]:
    from promptclf.testing.sim_teacher import SimTeacher

    df = vader_ordinal(a.n, seed)[["text", "label"]].reset_index(drop=True)
    src = write_table(df, tmp / f"vader{seed}.csv")
    labeled = tmp / f"labeled{seed}.csv"
    t0 = time.perf_counter()
    with SimTeacher(df["text"].tolist(), df["label"].tolist(), accuracy=a.accuracy, seed=seed) as sim:
        opts = LabelOptions(  # type: ignore[call-arg]
            labels=[{"name": g} for g in GRADES], ordinal=True, label_col=None, store=str(tmp / "store.sqlite"),
            provider="openai", base_url=sim.base_url, model="simulated-teacher", batch_size=10,
        )  # fmt: skip
        label_file(src, labeled, opts, progress=False)
    print(f"seed {seed}: labeled {len(df)} rows in {time.perf_counter() - t0:.0f} s", flush=True)
    heads = [(h, False) for h in ("classification", "regression")]
    if a.soft:
        heads += [(h, True) for h in ("classification", "regression")]
    out: dict[str, dict[str, float]] = {}
    test = None
    for head, soft in heads:
        name = f"{head}{' soft' if soft else ''}"
        t0 = time.perf_counter()
        o = DistillOptions.build(
            recipe="minilm-lora", ordinal_head=head, soft=soft, max_length=a.max_length, epochs=a.epochs,
            seed=seed, gold_col="label", test_fraction=a.test_fraction, eval_batch_size=128, threads=a.threads,
        )  # fmt: skip
        run = distill(labeled, tmp / f"student-{seed}-{head}-{int(soft)}", o)
        assert run.ordinal is not None, "the teacher's run folder should make the student ordinal"
        preds = pd.read_csv(run.run_dir / "predictions.csv", keep_default_na=False, dtype=str)  # type: ignore[operator]
        out[name] = _figures(run.ordinal["test"], preds["gold"].tolist(), preds["pred"].tolist())
        out[name]["train_s"] = run.train.time_s or 0.0
        out[name]["steps"] = float(run.train.steps or 0)
        print(
            f"seed {seed}: {name:22s} " + " ".join(f"{c} {out[name][c]:.3f}" for c in COLS)
            + f" | val MAE {run.ordinal['validation']['mae']:.3f} | {run.train.steps} steps, "
            f"train {run.train.time_s:.0f} s, total {time.perf_counter() - t0:.0f} s",
            flush=True,
        )  # fmt: skip
        if test is None:  # the gold test rows (the same split for every head): score the teacher on them
            test = preds
    assert test is not None
    lab = pd.read_csv(labeled, keep_default_na=False, dtype=str).drop_duplicates("text").set_index("text")
    teacher = lab.loc[test["text"]]
    gold, pred, status = test["gold"].tolist(), teacher["pred_label"].tolist(), teacher["pred_status"].tolist()
    m = ordinal_metrics(gold, pred, SCALE, status=status, pred_score=teacher["pred_score"].tolist(), cut=CUT, n_boot=0)
    out["teacher (simulated)"] = _figures(m, gold, pred, status)
    print(
        f"seed {seed}: {'teacher (simulated)':22s} "
        + " ".join(f"{c} {out['teacher (simulated)'][c]:.3f}" for c in COLS)
    )
    print(f"seed {seed}: {len(test)} held-out gold rows", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1500, help="rows (VADER entries)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--accuracy", type=float, default=0.85, help="the simulated teacher's accuracy")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--max-length", type=int, default=16, help="tokens per text (single words and short phrases)")
    ap.add_argument("--test-fraction", type=float, default=0.2, help="gold rows held out for testing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--soft", action="store_true", help="also both heads on the teacher's distributions")
    a = ap.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-simulated")
    print(
        f"load average at start: {os.getloadavg()[0]:.2f}; {a.n} VADER rows graded 0-4; teacher: simulated "
        f"({a.accuracy:.0%}); student MiniLM (minilm-lora), max_length {a.max_length}, {a.epochs:g} epochs",
        flush=True,
    )
    rows: dict[str, dict[str, list[float]]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            for name, figs in one_seed(seed, a, Path(tmp)).items():
                row = rows.setdefault(name, {})
                for k, v in figs.items():
                    row.setdefault(k, []).append(v)
    print(f"\nmedian over {len(a.seeds)} seed(s), held-out gold rows, cut >= {CUT:g} (simulated teacher):")
    print(f"{'':24s}" + "".join(f"{c:>12s}" for c in COLS) + f"{'train s':>10s}")
    for name, row in rows.items():
        med = {k: statistics.median(v) for k, v in row.items()}
        train = f"{med['train_s']:10.0f}" if "train_s" in med else f"{'-':>10s}"
        print(f"{name:24s}" + "".join(f"{med[c]:12.3f}" for c in COLS) + train)
    print(f"\nwall {time.perf_counter() - t0:.0f} s; load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
