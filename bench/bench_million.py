"""A million rows: ``promptclf label`` against an instant local server, ``promptclf predict`` with a
MiniLM student, and a labeling run killed at 60% and resumed.

Data: N rows generated from BBC News sentences (each text two sentences of one article's topic,
label = the topic), written as CSV. The server (``promptclf.testing``'s fake server answering from the prompt, a real HTTP server
on 127.0.0.1 in this process) answers every batch at once: the topic of the item's first
sentence, except for one item in ten (by a hash) which gets another label, so accuracy ~90%.

1. **label**: ``promptclf label`` as a subprocess (the CLI a user runs, progress bar on) over
   all N rows; items/s over the whole command (start-up, the scan for shots/labels and writing
   included) and the process's peak RSS (``wait4``), with its RSS sampled as it goes.
   Targets: >= 1,000 items/s and < 2 GB on 2 cores.
2. **resume**: the same command with a fresh store, SIGKILLed once the server has answered 60%
   of the items, then rerun to the end: request bodies the server received twice (target 0),
   the partial file (whole rows, an in-order prefix of the input), and the final file (every row
   once, in input order).
3. **predict**: a MiniLM LoRA student (trained here in a couple of minutes on 2,000 rows, or
   ``--student DIR``) predicts ``--predict-rows`` rows with ``--dtype int8``: items/s and RSS
   sampled through the run (target: flat, < 1.5 GB).

    python bench/bench_million.py [--rows 1000000] [--predict-rows 50000] [--skip-predict]

Figures go to stdout (save as bench/results/million.txt); the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # promptclf from this checkout

from promptclf.testing.answers import PromptAnswers  # noqa: E402
from promptclf.testing.fake_server import FakeServer, Responder  # noqa: E402


@dataclass
class Instant:
    """The fake server answering each prompt at once, and its answer counters."""

    server: FakeServer
    answers: PromptAnswers

    @property
    def items(self) -> int:
        return self.answers.items

    @property
    def requests(self) -> int:
        return self.answers.requests

    @property
    def base_url(self) -> str:
        return self.server.base_url


TOPICS = ["business", "entertainment", "politics", "sports", "tech"]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def sentences() -> dict[str, str]:
    """BBC News sentences (40-220 characters) -> their article's topic."""
    from promptclf.data.tables import load_bbc_news

    out: dict[str, str] = {}
    for text, topic in zip(*[load_bbc_news()[c].tolist() for c in ("text", "label")], strict=True):
        for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split("\n")[1:])):
            s = s.strip()
            if 40 <= len(s) <= 220 and "[" not in s:
                out.setdefault(s, topic)
    return out


def generate(path: Path, n: int, sents: dict[str, str], seed: int = 0) -> None:
    """``n`` rows ``id,text,label`` written in blocks (two same-topic sentences per text)."""
    import pandas as pd

    by_topic: dict[str, list[str]] = {}
    for s, t in sents.items():
        by_topic.setdefault(t, []).append(s)
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        for start in range(0, n, 100_000):
            rows = []
            for i in range(start, min(n, start + 100_000)):
                topic = TOPICS[rng.randrange(len(TOPICS))]
                pool = by_topic[topic]
                rows.append((f"r{i}", f"{rng.choice(pool)} {rng.choice(pool)}", topic))
            pd.DataFrame(rows, columns=["id", "text", "label"]).to_csv(f, index=False, header=start == 0)


def make_answer(sents: dict[str, str]):
    heads = {s[:60]: t for s, t in sents.items()}

    def answer(text: str, labels: list[str]) -> str:
        topic = heads.get(text[:60]) or labels[zlib.crc32(text.encode()) % len(labels)]
        if zlib.crc32(text.encode()) % 10 == 0:  # one in ten wrong, deterministically
            topic = labels[(labels.index(topic) + 1) % len(labels)] if topic in labels else labels[0]
        return topic

    return answer


class Watch:
    """Run a command; sample its RSS every ``every`` s (with ``progress()``); peak RSS via wait4."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path, progress, every: float = 1.0) -> None:
        self.log = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        self.t0 = time.perf_counter()
        self.samples: list[tuple[float, int, float]] = []  # (seconds, progress, RSS MB)
        self._progress = progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)
        self._thread.start()

    def _sample(self, every: float) -> None:
        status = Path(f"/proc/{self.proc.pid}/status")
        while not self._stop.wait(every):
            try:
                rss = next(int(ln.split()[1]) for ln in status.read_text().splitlines() if ln.startswith("VmRSS"))
            except (OSError, StopIteration, ValueError):
                continue
            self.samples.append((time.perf_counter() - self.t0, self._progress(), rss / 1024))

    def wait(self) -> tuple[int, float, float]:
        """(return code, wall seconds, peak RSS MB)."""
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - self.t0
        self._stop.set()
        self.log.close()
        return self.proc.returncode, wall, usage.ru_maxrss / 1024

    def rss_points(self, total: int, marks=(0.1, 0.25, 0.5, 0.75, 0.95)) -> str:
        out = []
        for m in marks:
            hit = next((s for s in self.samples if s[1] >= m * total), None)
            if hit:
                out.append(f"{hit[1]:,} rows {hit[2]:.0f} MB")
        return "; ".join(out)


def label_cmd(src: Path, out: Path, base_url: str, a: argparse.Namespace) -> list[str]:
    return [
        sys.executable, "-m", "promptclf", "label", str(src), "-o", str(out), "--provider", "openai",
        "--base-url", base_url, "--model", "instant", "--labels", ",".join(TOPICS), "--batch-size", str(a.batch_size),
        "--concurrency", str(a.concurrency), "--max-reasks", "1", "--chunk-rows", str(a.chunk_rows),
    ]  # fmt: skip


def bench_label(work: Path, src: Path, n: int, srv: Instant, a: argparse.Namespace) -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "PROMPTCLF_STORE": str(work / "label.sqlite")}
    out = work / "labeled.csv"
    print(f"\n## label: {n:,} rows, batch size {a.batch_size}, concurrency {a.concurrency}, chunks of {a.chunk_rows:,}")
    print(f"before: {load()}")
    base = srv.items
    w = Watch(label_cmd(src, out, srv.base_url, a), env, work / "label.log", lambda: srv.items - base)
    rc, wall, peak = w.wait()
    assert rc == 0, (work / "label.log").read_text()[-3000:]
    run = json.loads((work / "labeled.run" / "run.json").read_text())
    print(f"after:  {load()}")
    print(
        f"label: {n:,} rows in {wall:.1f}s = {n / wall:,.0f} items/s (whole command: start-up, scan, labeling, "
        f"writing); engine items/s from run.json {run['items_per_s']:,.0f}; peak RSS {peak:.0f} MB"
    )
    print(f"label: RSS as it went: {w.rss_points(n)}")
    print(
        f"label: {run['usage']['requests']:,} requests ({srv.requests:,} reached the server), statuses "
        f"{run['statuses']}, accuracy {run['metrics']['accuracy']:.4f} on {run['metrics']['n_scored']:,} gold rows"
    )
    target = "meets" if n / wall >= 1000 and peak < 2048 else "misses"
    print(f"label: target >= 1,000 items/s and < 2 GB: {target}")


def bench_resume(work: Path, src: Path, n: int, srv: Instant, a: argparse.Namespace) -> None:
    import pandas as pd

    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "PROMPTCLF_STORE": str(work / "resume.sqlite")}
    out = work / "resumed.csv"
    print(f"\n## resume: {n:,} rows, SIGKILL at 60% of the items answered, then the same command again")
    print(f"before: {load()}")
    srv.server.reset()
    base = srv.items
    w = Watch(label_cmd(src, out, srv.base_url, a), env, work / "kill.log", lambda: srv.items - base, every=0.2)
    while w.proc.poll() is None and srv.items - base < 0.6 * n:
        time.sleep(0.02)
    os.kill(w.proc.pid, signal.SIGKILL)
    rc, wall, _ = w.wait()
    answered = srv.items - base
    sent_first = len(srv.server.chat_records())
    partial = pd.read_csv(out, dtype=str, keep_default_na=False) if out.exists() else pd.DataFrame()
    ids = [f"r{i}" for i in range(len(partial))]
    prefix = list(partial.get("id", [])) == ids and bool(
        (partial.get("pred_status", pd.Series([], dtype=str)) != "").all()
    )
    print(
        f"killed (rc {rc}) after {wall:.1f}s, {answered:,} items answered ({answered / n:.0%}), {sent_first:,} requests; "
        f"the partial file has {len(partial):,} whole rows, {'an in-order prefix of the input' if prefix else 'NOT a prefix'}"
    )
    base2 = srv.items
    w2 = Watch(label_cmd(src, out, srv.base_url, a), env, work / "resume.log", lambda: srv.items - base2)
    rc2, wall2, peak2 = w2.wait()
    assert rc2 == 0, (work / "resume.log").read_text()[-3000:]
    final = pd.read_csv(out, dtype=str, keep_default_na=False, usecols=["id", "pred_status"])
    in_order = list(final["id"]) == [f"r{i}" for i in range(n)]
    run = json.loads((work / "resumed.run" / "run.json").read_text())
    dup = srv.server.duplicates
    print(
        f"rerun: {wall2:.1f}s, {run['usage']['cached_requests']:,} requests from the store, "
        f"{len(srv.server.chat_records()) - sent_first:,} sent; peak RSS {peak2:.0f} MB"
    )
    print(
        f"resume: request bodies received twice: {dup} (target 0); final file {len(final):,} rows, every row once "
        f"in input order: {in_order}; statuses {run['statuses']}"
    )
    print(f"after:  {load()}")


def bench_predict(work: Path, src: Path, sents: dict[str, str], a: argparse.Namespace) -> None:
    import pandas as pd

    student = Path(a.student) if a.student else work / "student"
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    if not a.student:
        train = work / "train.csv"
        generate(train, 2000, sents, seed=7)
        df = pd.read_csv(train, dtype=str)
        df["pred_label"], df["pred_status"] = df["label"], "ok"
        df.to_csv(train, index=False)
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", "promptclf", "distill", str(train), "-o", str(student), "--max-steps", str(a.train_steps),
             "--max-length", "64", "--threads", str(a.threads), "--test-fraction", "0.1"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        print(f"\n## predict: student trained in {time.perf_counter() - t0:.0f}s: {res.stdout.strip().splitlines()[0]}")
    n = a.predict_rows
    part = work / f"predict{n}.parquet"
    pd.read_csv(src, dtype=str, nrows=n).to_parquet(part, index=False, row_group_size=10_000)
    out = work / "predicted.csv"
    print(
        f"## predict: {n:,} rows (Parquet, row groups of 10,000) with --dtype int8, {a.threads} threads, "
        f"--chunk-rows {a.predict_chunk_rows:,}"
    )
    print(f"before: {load()}")

    def rows_done() -> int:
        try:
            with open(out, "rb") as f:
                return max(0, sum(1 for _ in f) - 1)
        except OSError:
            return 0

    cmd = [sys.executable, "-m", "promptclf", "predict", str(student), str(part), "-o", str(out), "--dtype", "int8",
           "--chunk-rows", str(a.predict_chunk_rows)]  # fmt: skip
    w = Watch(cmd, env, work / "predict.log", rows_done, every=2.0)
    rc, wall, peak = w.wait()
    assert rc == 0, (work / "predict.log").read_text()[-3000:]
    log = (work / "predict.log").read_text()
    rate = re.findall(r"\(([\d.]+) items/s\)", log)
    print(f"after:  {load()}")
    print(
        f"predict: {n:,} rows in {wall:.1f}s (whole command) = {n / wall:,.0f} rows/s; predicting {rate[-1] if rate else '?'} items/s; peak RSS {peak:.0f} MB"
    )
    print(f"predict: RSS as it went: {w.rss_points(n, marks=(0.05, 0.2, 0.4, 0.6, 0.8, 0.95))}")
    later = [s[2] for s in w.samples if s[1] >= 0.05 * n]
    if later:
        print(
            f"predict: RSS after the first chunk: min {min(later):.0f} MB, max {max(later):.0f} MB (target flat, < 1,536 MB)"
        )
    if n:
        print(f"predict: at this rate 1,000,000 rows would take {1_000_000 / (n / wall) / 60:.0f} minutes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--chunk-rows", type=int, default=10_000)
    ap.add_argument("--predict-rows", type=int, default=50_000)
    ap.add_argument("--predict-chunk-rows", type=int, default=8192, help="predict --chunk-rows")
    ap.add_argument("--student", help="an existing student run folder (default: train one here)")
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-label", action="store_true")
    ap.add_argument("--skip-resume", action="store_true")
    ap.add_argument("--skip-predict", action="store_true")
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    a = ap.parse_args()
    print(f"# bench_million: N = {a.rows:,}; {load()}; python {sys.version.split()[0]}")
    sents = sentences()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        src = work / f"rows{a.rows}.csv"
        t0 = time.perf_counter()
        generate(src, a.rows, sents)
        print(
            f"generated {a.rows:,} rows from {len(sents):,} BBC sentences in {time.perf_counter() - t0:.1f}s "
            f"({src.stat().st_size / 1e6:.0f} MB CSV)"
        )
        answers = PromptAnswers(make_answer(sents))
        with FakeServer(Responder(answers)) as server:
            srv = Instant(server, answers)
            if not a.skip_label:
                bench_label(work, src, a.rows, srv, a)
            if not a.skip_resume:
                bench_resume(work, src, a.rows, srv, a)
        if not a.skip_predict:
            bench_predict(work, src, sents, a)


if __name__ == "__main__":
    main()
