"""Is a distilled student's confidence worth trusting, and does temperature scaling fix it?

For two data sets built from packages, a pool is labeled by the simulated teacher (a stand-in for a
70B chat model at 85% accuracy: its answers, with their probabilities, taken straight from its answer
table, which is what its HTTP server sends) and a MiniLM LoRA student (recipe ``minilm-lora``) is
distilled on those labels. Then, on held-out gold rows, the student's calibration before temperature
scaling (T = 1), after a plain fit on the validation split's teacher labels, and after the noise-aware
fit ``distill`` makes and stores in the run (:mod:`promptclf.distill.calibrate`): ECE (15 bins), AUROC of
the confidence for correctness, and the rows kept at 95% accuracy.
The teacher's own calibration on the same rows is printed beside.

Sets: ``bbc5`` (BBC News, five topics) and ``sentiment`` (VADER lexicon entries, positive vs negative).

    OMP_NUM_THREADS=2 python bench/bench_student_calibration.py | tee bench/results/student_calibration.txt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from promptclf.data.corpora import vader_polarity  # noqa: E402
from promptclf.data.tables import bbc_sample, write_table  # noqa: E402
from promptclf.distill.options import DistillOptions  # noqa: E402
from promptclf.distill.run import distill  # noqa: E402
from promptclf.eval.calibration import apply_temperature, calibration, fit_temperature  # noqa: E402
from promptclf.predict.student import Student  # noqa: E402

SETS = {
    "bbc5": (lambda n, s: bbc_sample(n, seed=s)[["text", "label"]].reset_index(drop=True), 64, 1),
    "sentiment": (vader_polarity, 16, 2),
}


def _val_probs(student: Student, texts: list[str]) -> np.ndarray:
    """The student's probabilities at T = 1 (its temperature is set to 1 by the caller)."""
    return student.predict_proba(texts)


def line(name: str, correct: np.ndarray, conf: np.ndarray) -> str:
    c = calibration(correct, conf)
    keep = next(p for p in c.coverage if round(p.target, 2) == 0.95)
    kept = f"{keep.coverage:.1%} (>= {keep.threshold:.3f})" if keep.reachable else "not reachable"
    auroc = "-" if c.auroc is None else f"{c.auroc:.3f}"
    return (
        f"  {name:28s} accuracy {c.accuracy:.3f}  mean conf {c.mean_confidence:.3f}  ECE {c.ece:.3f}  "
        f"AUROC {auroc}  kept at 95%: {kept}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=int, default=600, help="teacher-labeled rows to distil on")
    ap.add_argument("--test", type=int, default=300, help="held-out gold rows")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from promptclf.testing.sim_teacher import SimTeacher

    print(f"load average at start: {os.getloadavg()[0]:.2f}; pool {a.pool}, test {a.test}; teacher: simulated (85%)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (make, max_length, epochs) in SETS.items():
            t0 = time.perf_counter()
            df = make(a.pool + a.test, a.seed)
            pool, test = df.iloc[: a.pool].copy(), df.iloc[a.pool :].reset_index(drop=True)
            sim = SimTeacher(df["text"].tolist(), df["label"].tolist(), accuracy=0.85, seed=a.seed)
            ans = [sim.answer_for(t) for t in pool["text"]]
            pool["pred_label"] = [x.label for x in ans]
            pool["pred_prob"] = [x.probs[x.label] for x in ans]
            pool["pred_probs"] = [json.dumps(x.probs) for x in ans]
            pool["pred_status"] = "ok"
            data = write_table(pool.drop(columns=["label"]), Path(tmp) / f"{name}.csv")  # no gold in training
            opts = DistillOptions.build(recipe="minilm-lora", epochs=epochs, max_length=max_length)
            run = distill(data, Path(tmp) / f"{name}-student", opts)
            student = Student.load(Path(tmp) / f"{name}-student")
            fitted = student.temperature
            gold = test["label"].to_numpy()
            student.temperature = 1.0
            raw = student.predict_proba(test["text"].tolist())
            labels = np.array(student.labels)
            # The plain fit (teacher labels taken as right), from the validation rows distill saved.
            val = pd.read_csv(Path(tmp) / f"{name}-student" / "validation.csv", keep_default_na=False)
            val_y = np.array([list(labels).index(v) for v in val["label"]])
            val_raw = _val_probs(student, val["text"].tolist())
            plain = fit_temperature(val_raw, val_y)
            t_ans = [sim.answer_for(t) for t in test["text"]]
            ts = run.temperature_scaling
            print(f"\n== {name}: {len(pool)} pool rows, {len(test)} gold test rows, {time.perf_counter() - t0:.0f} s; "
                  f"{ts.n if ts else '?'} validation rows (teacher labels) ==")  # fmt: skip
            print(line("teacher (simulated)", np.array([x.label for x in t_ans]) == gold,
                       np.array([x.probs[x.label] for x in t_ans])))  # fmt: skip
            print(line("student, T = 1", labels[raw.argmax(1)] == gold, raw.max(1)))
            for what, t in ((f"plain fit, T = {plain:.2f}", plain), (f"noise-aware, T = {fitted:.2f}", fitted)):
                cal = apply_temperature(raw, t)
                print(line(f"student, {what}", labels[cal.argmax(1)] == gold, cal.max(1)))
            if ts is not None:
                print(f"  noise-aware fit: validation labels taken as right {ts.label_accuracy:.1%} of the time "
                      f"({ts.label_accuracy_from})")  # fmt: skip
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
