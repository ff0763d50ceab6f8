"""Benchmark the ONNX export: throughput and time to the first prediction, PyTorch vs ONNX Runtime.

One run measures four ways to run the same MiniLM LoRA student (recipe ``minilm-lora``) on BBC News
texts it never saw: PyTorch float32, PyTorch int8 (``--dtype int8``, dynamic quantization), ONNX
float32 and ONNX int8 (``promptclf export --int8``). Throughput is measured in one process, the four
engines in turn within each repeat so that they share the machine's load; time to the first prediction
is a fresh ``python`` process that loads the student and predicts one text (imports included), as
``promptclf predict`` would. Medians; the load average is printed with each figure, because this
machine's 2 cores are shared. Also: accuracy on the gold labels, and agreement with PyTorch float32.

    python bench/bench_export.py                        # trains a student first (about a minute)
    python bench/bench_export.py --student runs/student # an existing MiniLM distill run

Figures go to stdout and bench/results/export.txt; progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("torch fp32", "torch int8", "onnx fp32", "onnx int8")

FIRST = """
import sys, time
t0 = time.perf_counter()
from promptclf.predict.loader import load_predictor
p = load_predictor(sys.argv[1], dtype=sys.argv[2], threads=int(sys.argv[3]))
p.predict(["Shares fell sharply after the profit warning."])
print(time.perf_counter() - t0)
"""


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _train(work: Path, rows: int) -> Path:
    from promptclf.data.tables import bbc_sample, write_table
    from promptclf.distill.options import DistillOptions
    from promptclf.distill.run import distill

    df = bbc_sample(rows, seed=0)[["id", "text", "label"]]
    data = write_table(df, work / "train.csv")
    opts = DistillOptions.build(recipe="minilm-lora", train_on="gold", epochs=1, patience=0)
    distill(data, work / "student", opts)
    return work / "student"


def _engines(run: Path, work: Path) -> dict[str, tuple[Path, str]]:
    """engine name -> (folder, dtype to load it with)."""
    from promptclf.export.onnx_export import export_onnx
    from promptclf.export.options import ExportOptions

    fp32 = export_onnx(run, work / "onnx-fp32", ExportOptions())
    int8 = export_onnx(run, work / "onnx-int8", ExportOptions(int8=True))
    for res in (fp32, int8):
        p = res.manifest.parity
        assert p is not None
        print(
            f"export {res.manifest.precision}: {res.manifest.export_s}s, {(res.manifest.model_bytes or 0) / 1e6:.1f} MB; "
            f"vs PyTorch on {p.texts} probe texts: max |dp| {p.max_abs_diff:.2g}, same label {p.same_label:.0%}"
        )
    return {
        "torch fp32": (run, "float32"),
        "torch int8": (run, "int8"),
        "onnx fp32": (fp32.folder, "float32"),
        "onnx int8": (int8.folder, "float32"),
    }


def _first_prediction(folder: Path, dtype: str, threads: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", FIRST, str(folder), dtype, str(threads)],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", help="an existing MiniLM distill run folder (default: train one)")
    ap.add_argument("--train-rows", type=int, default=600, help="BBC articles to train on (gold labels, 1 epoch)")
    ap.add_argument("--texts", type=int, default=400, help="BBC articles to predict (not trained on)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "export.txt"))
    a = ap.parse_args()

    import numpy as np
    import torch

    from promptclf.data.tables import load_bbc_news
    from promptclf.predict.loader import load_predictor

    torch.set_num_threads(a.threads)
    lines: list[str] = []
    start_load = _load()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = Path(a.student) if a.student else _train(work, a.train_rows)
        engines = _engines(run, work)
        train_ids = set()
        if not a.student:  # predict texts it never saw (a given run may have seen some)
            import pandas as pd

            train_ids = set(pd.read_csv(work / "train.csv")["id"])
        df = load_bbc_news(dedupe=True)
        df = df[~df["id"].isin(train_ids)].sample(frac=1.0, random_state=7).head(a.texts)
        texts, gold = df["text"].tolist(), np.array(df["label"].tolist())

        students = {
            name: load_predictor(folder, dtype=dtype, threads=a.threads) for name, (folder, dtype) in engines.items()
        }
        rates: dict[str, list[float]] = {n: [] for n in ENGINES}
        loads: dict[str, list[str]] = {n: [] for n in ENGINES}
        probs: dict[str, np.ndarray] = {}
        for s in students.values():
            s.predict_proba(texts[: a.batch_size], batch_size=a.batch_size)  # warm-up
        for rep in range(a.repeats):
            for name, s in students.items():
                print(f"repeat {rep + 1}/{a.repeats}: {name}", file=sys.stderr)
                t0 = time.perf_counter()
                probs[name] = s.predict_proba(texts, batch_size=a.batch_size)
                rates[name].append(len(texts) / (time.perf_counter() - t0))
                loads[name].append(_load())
        first: dict[str, list[float]] = {n: [] for n in ENGINES}
        first_loads: dict[str, list[str]] = {n: [] for n in ENGINES}
        for rep in range(a.repeats):
            for name, (folder, dtype) in engines.items():
                print(f"first prediction {rep + 1}/{a.repeats}: {name}", file=sys.stderr)
                first[name].append(_first_prediction(folder, dtype, a.threads))
                first_loads[name].append(_load())

        labels = students["torch fp32"].labels
        ref = probs["torch fp32"]
        base = statistics.median(rates["torch fp32"])
        lines.append(
            f"== ONNX export vs PyTorch: MiniLM LoRA student ({'given run' if a.student else f'{a.train_rows} BBC articles, gold, 1 epoch'}), "
            f"max_length {students['torch fp32'].spec.max_length}, {len(texts)} unseen BBC texts, batch {a.batch_size}, "
            f"{a.threads} threads, {a.repeats} repeats (medians)"
        )
        lines.append(f"load average (1/5/15 min) at start: {start_load}")
        lines.append(
            f"{'engine':<11} {'items/s':>8} {'vs torch fp32':>14} {'first pred s':>13} {'accuracy':>9} "
            f"{'same label':>11} {'max |dp|':>9}  load during throughput / first-prediction runs"
        )
        for name in ENGINES:
            p = probs[name]
            rate = statistics.median(rates[name])
            acc = float((np.array(labels)[p.argmax(-1)] == gold).mean())
            same = float((p.argmax(-1) == ref.argmax(-1)).mean())
            lines.append(
                f"{name:<11} {rate:>8.1f} {rate / base:>13.2f}x {statistics.median(first[name]):>13.2f} {acc:>9.3f} "
                f"{same:>10.1%} {float(np.abs(p - ref).max()):>9.2g}  {', '.join(loads[name])} / {', '.join(first_loads[name])}"
            )
        lines.append(f"load average (1/5/15 min) at end: {_load()}")
        lines.append(
            "same label and max |dp|: against PyTorch float32 on the same texts; accuracy: against BBC gold labels"
        )
    text = "\n".join(lines)
    print(text)
    Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
