"""``predict --engine ray`` against the single-process ``predict``, on one sharded corpus, in one run.

Corpus: ``--rows`` rows in ``--shards`` Parquet shards (default 1,000,000 in 100), each text two
BBC News sentences of one topic (as in bench_million.py). Each configuration predicts the first
``--predict-shards`` shards (default: all) with the same student, dtype and batch size:

- ``single``: ``promptclf predict`` on those shards, one process after another (torch's threads on every core);
- ``ray1`` / ``ray2``: ``promptclf predict --engine ray --workers 1`` / ``2`` on a folder of those shards
  (a local Ray cluster started by the command; one worker gets every core's threads, two get one each).

For each: rows/s over the whole command (start-up included), rows/s after the first prediction came
back (steady state: cluster start and student loads left out), and peak memory (the process for
``single``; each worker actor's peak RSS for Ray). Then a projection on paper for 100M and 1B
documents from the measured per-worker rate: stated as projected, never as measured.

    python bench/bench_ray.py --student STUDENT [--rows 1000000 --shards 100 --predict-shards 4]
    python bench/bench_ray.py --gpu --student STUDENT      # on a GPU machine: single vs one GPU worker per GPU

Without ``--student`` a MiniLM LoRA student is trained here first (a few minutes on 2 cores). Figures go to
stdout with the load average (save as bench/results/ray.txt); raw numbers to ``--raw`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_million import TOPICS, load, sentences  # noqa: E402

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def write_corpus(folder: Path, rows: int, shards: int, seed: int = 0) -> None:
    """``rows`` rows ``id,text,label`` in ``shards`` Parquet files (row groups of 5,000)."""
    import pandas as pd

    by_topic: dict[str, list[str]] = {}
    for s, t in sentences().items():
        by_topic.setdefault(t, []).append(s)
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-rows // shards)
    for k in range(shards):
        lo, hi = k * per, min(rows, (k + 1) * per)
        ids, texts, labels = [], [], []
        for i in range(lo, hi):
            topic = TOPICS[rng.randrange(len(TOPICS))]
            pool = by_topic[topic]
            ids.append(f"d{i}")
            texts.append(f"{rng.choice(pool)} {rng.choice(pool)}")
            labels.append(topic)
        df = pd.DataFrame({"id": ids, "text": texts, "label": labels})
        df.to_parquet(folder / f"shard-{k:04d}.parquet", index=False, row_group_size=5000)


def train_student(work: Path, gpu: bool) -> Path:
    """A MiniLM LoRA student on 2,000 generated rows (60 steps, 64 tokens)."""
    import pandas as pd

    tmp = work / "train"
    write_corpus(tmp, 2000, 1, seed=7)
    df = pd.read_parquet(tmp / "shard-0000.parquet")
    df["pred_label"], df["pred_status"] = df["label"], "ok"
    df.to_csv(work / "train.csv", index=False)
    out = work / "student"
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "promptclf", "distill", str(work / "train.csv"), "-o", str(out), "--max-steps", "60",
         "--max-length", "64", "--test-fraction", "0.1"],
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    if res.returncode != 0:
        sys.exit(res.stderr[-3000:])
    print(f"student trained in {time.perf_counter() - t0:.0f}s: {res.stdout.strip().splitlines()[0]}")
    return out


def timed(cmd: list[str], log: Path) -> tuple[int, float, float]:
    """Run ``cmd``; (exit code, wall seconds, peak RSS in MB of the process itself)."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=ENV, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    return os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss / 1024


def run_single(student: Path, shards: list[Path], work: Path, a: argparse.Namespace) -> dict[str, Any]:
    """``promptclf predict`` over the same rows as one Parquet file: the baseline a user has without Ray."""
    import pyarrow.parquet as pq

    src = work / f"single-input-{len(shards)}.parquet"
    if not src.exists():
        with pq.ParquetWriter(src, pq.read_schema(shards[0])) as w:
            for s in shards:
                w.write_table(pq.read_table(s))
    out = work / "single.parquet"
    cmd = [sys.executable, "-m", "promptclf", "predict", str(student), str(src), "-o", str(out), "-q",
           "--dtype", a.dtype, "--batch-size", str(a.batch_size)]  # fmt: skip
    rc, wall, peak = timed(cmd, work / "single.log")
    log = (work / "single.log").read_text()
    if rc != 0:
        sys.exit(f"single predict failed:\n{log[-3000:]}")
    rows = pq.ParquetFile(out).metadata.num_rows
    rate = float(log.split(" items/s")[0].rsplit("(", 1)[1])  # predict's own rate, after the model loaded
    return {
        "config": "single",
        "workers": 1,
        "rows": rows,
        "wall_s": wall,
        "steady_s": rows / rate,
        "peak_rss_mb": [peak],
    }


def run_ray(student: Path, folder: Path, work: Path, workers: int | None, a: argparse.Namespace) -> dict[str, Any]:
    tag = f"ray{workers or 'auto'}"
    out = work / tag
    cmd = [sys.executable, "-m", "promptclf", "predict", str(student), str(folder), "-o", str(out), "--engine", "ray",
           "--dtype", a.dtype, "--batch-size", str(a.batch_size)]  # fmt: skip
    if workers:
        cmd += ["--workers", str(workers)]
    rc, wall, _ = timed(cmd, work / f"{tag}.log")
    if rc != 0:
        sys.exit(f"{tag} failed:\n{(work / f'{tag}.log').read_text()[-3000:]}")
    s = json.loads((out / "_promptclf_predict.json").read_text())
    first = s["first_row_s"] or 0.0
    return {
        "config": tag, "workers": s["workers"], "gpus_per_worker": s["gpus_per_worker"], "rows": s["rows"],
        "wall_s": wall, "steady_s": s["wall_s"] - first, "first_row_s": first,
        "peak_rss_mb": sorted(s["worker_peak_rss_mb"].values()),
    }  # fmt: skip


def project(per_worker: float, gpu: bool, price: float) -> list[str]:
    """Hours and dollars for 100M and 1B documents on N workers at ``per_worker`` docs/s each (paper only)."""
    kind = "GPU" if gpu else "CPU-core"
    lines = [f"projection (NOT measured): {per_worker:,.1f} docs/s per {kind} worker, ${price:.2f} per worker-hour"]
    for docs in (100_000_000, 1_000_000_000):
        for n in (1, 8, 64, 512) if not gpu else (1, 8, 64):
            hours = docs / (per_worker * n) / 3600
            lines.append(
                f"  {docs / 1e6:>6,.0f}M docs on {n:>3} {kind} workers: {hours:>9,.1f} h  ${hours * n * price:>10,.0f}"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--predict-shards", type=int, help="shards each configuration predicts (default: all)")
    ap.add_argument("--student", help="student run folder or export (default: train one here)")
    ap.add_argument("--gpu", action="store_true", help="GPU machine: single vs Ray with one worker per GPU")
    ap.add_argument("--dtype", help="predict --dtype (default: int8 on CPU, float32 on GPU)")
    ap.add_argument("--batch-size", type=int, help="(default: 32 on CPU, 256 on GPU)")
    ap.add_argument(
        "--configs", help="comma list of single,ray1,ray2,rayauto (default: single,ray1,ray2; GPU: single,rayauto)"
    )
    ap.add_argument("--cpu-hour", type=float, default=0.05, help="$ per CPU core-hour for the projection")
    ap.add_argument("--gpu-hour", type=float, default=2.50, help="$ per GPU-hour for the projection")
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    ap.add_argument("--raw", help="write the raw measurements here (JSON)")
    a = ap.parse_args()
    a.dtype = a.dtype or ("float32" if a.gpu else "int8")
    a.batch_size = a.batch_size or (256 if a.gpu else 32)
    configs = (a.configs or ("single,rayauto" if a.gpu else "single,ray1,ray2")).split(",")
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_ray_"))
    print(f"# bench_ray: {a.rows:,} rows in {a.shards} shards; {load()}; python {sys.version.split()[0]}")
    corpus = work / "corpus"
    if not corpus.exists():
        t0 = time.perf_counter()
        write_corpus(corpus, a.rows, a.shards)
        print(f"corpus: {a.rows:,} rows in {a.shards} Parquet shards written in {time.perf_counter() - t0:.0f}s")
    student = Path(a.student) if a.student else train_student(work, a.gpu)
    shards = sorted(corpus.glob("*.parquet"))[: a.predict_shards or a.shards]
    subset = work / f"subset{len(shards)}"
    if not subset.exists():
        subset.mkdir()
        for s in shards:
            (subset / s.name).symlink_to(s)
    import pyarrow.parquet as pq

    n_rows = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    measured = "all of it" if len(shards) == a.shards else f"a SUBSET: the first {len(shards)} shards"
    print(
        f"each configuration predicts {measured} = {n_rows:,} rows; student {student}; --dtype {a.dtype} "
        f"--batch-size {a.batch_size}; {os.cpu_count()} CPUs"
    )
    results = []
    for c in configs:
        print(f"\n## {c}\nbefore: {load()}", flush=True)
        if c == "single":
            r = run_single(student, shards, work, a)
        else:
            r = run_ray(student, subset, work, None if c == "rayauto" else int(c.removeprefix("ray")), a)
        r["load_after"] = load()
        results.append(r)
        print(
            f"{c}: {r['rows']:,} rows, {r['workers']} worker(s); whole command {r['wall_s']:.1f}s = "
            f"{r['rows'] / r['wall_s']:,.1f} rows/s; steady {r['rows'] / r['steady_s']:,.1f} rows/s"
            + (f" (first prediction after {r['first_row_s']:.1f}s)" if "first_row_s" in r else "")
            + f"; peak RSS per {'process' if c == 'single' else 'worker'} {', '.join(f'{m:.0f}' for m in r['peak_rss_mb'])} MB"
        )
        print(f"after:  {r['load_after']}", flush=True)
    base = next((r for r in results if r["config"] == "single"), None)
    print("\n## summary (measured, one run; the machine is shared, see the load averages)")
    for r in results:
        ratio = (
            f"  x{(r['rows'] / r['steady_s']) / (base['rows'] / base['steady_s']):.2f} vs single (steady)"
            if base
            else ""
        )
        print(
            f"{r['config']:>8}: steady {r['rows'] / r['steady_s']:8,.1f} rows/s, whole {r['rows'] / r['wall_s']:8,.1f} rows/s{ratio}"
        )
    rays = [r for r in results if r["config"] != "single"]
    if rays:
        best = max(rays, key=lambda r: r["rows"] / r["steady_s"])
        per_worker = best["rows"] / best["steady_s"] / best["workers"]
        print(
            f"\nper-worker rate (measured, {best['config']} steady state / {best['workers']} workers): {per_worker:,.1f} docs/s"
        )
        for line in project(per_worker, a.gpu, a.gpu_hour if a.gpu else a.cpu_hour):
            print(line)
        print(
            "  (texts here are ~2 sentences, 64-token student; rate scales ~inversely with tokens per document: "
            "FineWeb-Edu's classifier reads up to 512 tokens)"
        )
    if a.raw:
        Path(a.raw).write_text(json.dumps({"args": vars(a), "rows": n_rows, "results": results}, indent=2))
    print(f"\nwork folder: {work}")


if __name__ == "__main__":
    main()
