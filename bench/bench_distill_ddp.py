"""Distillation in one process against two (``torchrun --nproc_per_node 2``, gloo, CPU).

The same MiniLM LoRA student (recipe ``minilm-lora``) on the same BBC News rows, with one
process at ``--batch-size 2B`` (1 thread, then 2 threads) and with two 1-thread processes at
``--batch-size B`` each (the same effective batch, the same seed, so the same number of optimizer
steps). Prints, for each: the
command's wall time, the training time and examples/s from ``run.json``, gold-test accuracy and
macro-F1; then the share of test rows both students label the same and the largest difference
in the predicted label's probability.

On a machine with as many cores as processes two ranks can train up to ~2x faster; on a shared
2-core machine they compete for the same cores (the load average is printed with the figures).

    python bench/bench_distill_ddp.py [--rows 300] [--epochs 1] [--batch 8]

Figures go to stdout (save as bench/results/distill_ddp.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=8, help="per-process batch of the 2-process run")
    args = ap.parse_args()

    import pandas as pd

    from promptclf.data.tables import bbc_sample, write_table

    work = Path(tempfile.mkdtemp(prefix="ddp-bench-"))
    df = bbc_sample(args.rows, seed=11)[["id", "text", "label"]].copy()
    df["pred_label"], df["pred_status"] = df["label"], "ok"
    data = write_table(df, work / "labeled.csv")
    common = ["--recipe", "minilm-lora", "--max-length", "64", "--patience", "0", "--test-fraction", "0.25"]
    common += ["--epochs", str(args.epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    print(
        f"# {args.rows} BBC rows, MiniLM LoRA, {args.epochs:g} epoch(s), max_length 64, effective batch {2 * args.batch}"
    )
    print(f"# cores {os.cpu_count()}, load average before {os.getloadavg()}")
    runs = {}
    one = [sys.executable, "-m", "promptclf"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "promptclf"]
    for name, launcher, batch, threads in (
        ("1 process, 1 thread", one, 2 * args.batch, 1),
        ("1 process, 2 threads", one, 2 * args.batch, 2),  # the same 2 cores as the two 1-thread ranks
        ("2 processes", two, args.batch, 1),
    ):
        out = work / name.replace(" ", "_").replace(",", "")
        t0 = time.perf_counter()
        cmd = [*launcher, "distill", str(data), "-o", str(out), *common, "--batch-size", str(batch)]
        cmd += ["--threads", str(threads)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode:
            sys.exit(f"{name} failed:\n{res.stderr[-3000:]}")
        run = json.loads((out / "run.json").read_text())
        runs[name] = (out, run)
        tr, m = run["train"], run["metrics"]
        print(
            f"{name:21s} batch {batch:2d}/process  steps {tr['steps']}  command {wall:6.1f} s  train {tr['time_s']:6.1f} s  "
            f"{tr['examples_per_s']:6.2f} examples/s  test accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
            f"(n={m['n_gold']})"
        )
    p1 = pd.read_csv(runs["1 process, 1 thread"][0] / "predictions.csv", keep_default_na=False)
    p2 = pd.read_csv(runs["2 processes"][0] / "predictions.csv", keep_default_na=False)
    assert p1["text"].tolist() == p2["text"].tolist()
    same = (p1["pred"] == p2["pred"]).mean()
    print(
        f"2 processes vs 1 process, 1 thread: same label on {same:.4f} of {len(p1)} test rows; max |prob difference| {(p1['prob'] - p2['prob']).abs().max():.4f}"
    )
    print(f"# load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
