"""``label --batch-api`` end to end against the local batch API (promptclf.testing.batch_api, oracle answerer).

Measures the client side of a batch run: building and uploading the JSONL, polling, reading
the output file back, parsing, validating and caching every line, writing the labeled file;
then the rerun, which must find every line in the store (no upload, no batch). The answerer is
the batch server's deterministic oracle, so the figures are the engine's, not a model's. Also
prints what ``--dry-run`` estimates for the same job on gpt-4o-mini: synchronous price, batch
price, and the prompt-cache saving with 10 shots per class.

    python bench/bench_batch_api.py --rows 20000 | tee bench/results/batch_api.txt
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd  # noqa: E402

from promptclf.data.tables import BBC_TOPICS, bbc_sample  # noqa: E402
from promptclf.testing.batch_api import BatchServer  # noqa: E402


def _rows(n: int) -> pd.DataFrame:
    base = bbc_sample(500, seed=0)[["text", "label"]].reset_index(drop=True)
    texts, labels = [], []
    for i in range(n):
        t, lab = base.text[i % len(base)], base.label[i % len(base)]
        texts.append(f"#{i} " + " ".join(t.split())[:300])  # one line, distinct per row: distinct requests
        labels.append(lab)
    return pd.DataFrame({"id": range(n), "text": texts, "label": labels})


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, peak_kb, proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=10)
    a = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}  cpus: {os.cpu_count()}")
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    df = _rows(a.rows)
    df.to_csv(work / "rows.csv", index=False)
    with BatchServer(gold=dict(zip(df.text, df.label, strict=True))) as server:
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "PROMPTCLF_STORE": str(work / "store.sqlite")}
        cmd = [
            sys.executable, "-m", "promptclf", "label", str(work / "rows.csv"), "-o", str(work / "out.csv"),
            "--provider", "openai", "--base-url", server.base_url, "--model", "oracle", "--labels", ",".join(BBC_TOPICS),
            "--batch-size", str(a.batch_size), "--max-chars", "300", "--batch-api", "--poll-interval", "0.5", "-q",
        ]  # fmt: skip
        wall, peak_kb, _ = _run(cmd, env)
        out = pd.read_csv(work / "out.csv", dtype=str, keep_default_na=False)
        ok = (out.pred_status == "ok").mean()
        agree = (out.pred_label == out.label).mean()
        rec = json.loads((work / "out.run" / "run.json").read_text())
        lines = sum(b.obj["request_counts"]["total"] for b in server.api.batches.values())
        print(f"rows {a.rows:,}, batch size {a.batch_size}: {lines:,} lines in {len(server.api.creates)} batch(es)")
        print(f"first run: {wall:.1f}s wall, {a.rows / wall:,.0f} rows/s, peak RSS {peak_kb / 1024:,.0f} MB (client)")
        print(
            f"  ok {ok:.1%}, equal to the oracle's label {agree:.1%}, batch_requests {rec['usage']['batch_requests']:,}"
        )
        creates = len(server.api.creates)
        wall2, _, _ = _run(cmd, env)
        rec2 = json.loads((work / "out.run" / "run.json").read_text())
        print(
            f"rerun: {wall2:.1f}s wall, {rec2['usage']['cached_requests']:,} of {rec2['usage']['requests']:,} requests "
            f"from the store, new batches {len(server.api.creates) - creates}, spent ${rec2['cost_usd']:.4f}"
        )
    # What --dry-run says for the same job on gpt-4o-mini with 10 shots per class.
    small = df.head(min(a.rows, 10_000))
    small.to_csv(work / "dry.csv", index=False)
    for extra in ([], ["--batch-api"]):
        dry = [
            sys.executable, "-m", "promptclf", "label", str(work / "dry.csv"), "--provider", "openai",
            "--labels", ",".join(BBC_TOPICS), "--shots", "10", "--batch-size", str(a.batch_size), "--dry-run", *extra,
        ]  # fmt: skip
        res = subprocess.run(dry, env={**env, "OPENAI_BASE_URL": ""}, capture_output=True, text=True)
        notes = [
            x for x in res.stdout.splitlines() if x.startswith("# ") and ("cost" in x or "cache" in x or "batch" in x)
        ]
        print(f"dry run, gpt-4o-mini, {len(small):,} rows, 10 shots/class{' --batch-api' if extra else ''}:")
        for x in notes:
            print("  " + x)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
