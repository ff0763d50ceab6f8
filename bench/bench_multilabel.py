"""Multi-label labeling end to end, against a simulated multi-label teacher.

Data: ``promptclf.data.corpora.bbc_multilabel``, a synthetic stand-in (no real multi-label text set
ships in a package here): each row joins the openings of 1-3 BBC articles of different topics and is
labeled with all of them; 10% of the rows are an article of a topic outside the label set, gold ``[]``.

Teacher: ``promptclf.testing.answers.noisy_multi_answer`` behind the fake OpenAI-compatible server
(``PromptAnswers`` + ``FakeServer``): it reads promptclf's multi-label batch prompt back and gets each
(text, label) decision wrong with a fixed probability (a true topic left out or a false one added),
independently per label. So the figures measure the pipeline (prompt, list answers, parsing,
``pred_labels``, eval), not a model: with error rate e, Hamming loss should come out near e.

The real CLI runs (``promptclf label --multi-label --base-url ...`` then ``promptclf eval --json``) in
a subprocess; the figures, with the load average, go to stdout.

With ``--local N``, the local model (SmolLM2-135M, in process) also labels the first N rows, asking
each label's yes/no (threshold 0.5), without and with ``--calibrate`` (contextual calibration per
label); the second run reuses the first one's scores from the store and adds the content-free passes.

    python bench/bench_multilabel.py [--rows 300] [--error-rates 0.05,0.1] [--batch-size 10] [--local 40]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # promptclf from this checkout

from promptclf.data.corpora import bbc_multilabel  # noqa: E402
from promptclf.labels import split_labels  # noqa: E402
from promptclf.testing.answers import PromptAnswers, noisy_multi_answer  # noqa: E402
from promptclf.testing.fake_server import FakeServer, Responder  # noqa: E402

TOPICS = ["business", "politics", "sports", "tech"]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def run_one(work: Path, src: Path, truth: dict[str, list[str]], error: float, a: argparse.Namespace) -> dict:
    answers = PromptAnswers(multi_answer=noisy_multi_answer(truth, error, seed=a.seed))
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-bench",
        "PROMPTCLF_STORE": str(work / f"store-{error}.sqlite"),
        "PYTHONPATH": str(ROOT),
    }
    out = work / f"labeled-{error}.csv"
    with FakeServer(Responder(answers)) as server:
        cmd = [
            sys.executable, "-m", "promptclf", "label", str(src), "-o", str(out), "--multi-label",
            "--labels", ",".join(TOPICS), "--base-url", server.base_url, "--model", "sim-multilabel",
            "--batch-size", str(a.batch_size), "--concurrency", "4", "--quiet",
        ]  # fmt: skip
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    ev = subprocess.run(
        [sys.executable, "-m", "promptclf", "eval", str(out), "--gold-col", "label", "--json", "--n-boot", "1000"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-3000:]
    m = json.loads(ev.stdout)
    run = json.loads((work / f"labeled-{error}.run" / "run.json").read_text())
    return {"metrics": m, "wall": wall, "run": run, "requests": answers.requests}


def run_local(work: Path, df: object, calibrate: bool) -> tuple[dict, float]:
    from promptclf.label.labeler import Labeler
    from promptclf.label.options import LabelOptions

    opts = LabelOptions(  # type: ignore[call-arg]
        provider="local", multi_label=True, labels=[{"name": n} for n in TOPICS], calibrate=calibrate,
        batch_size=8, max_chars=600, store=str(work / "local.sqlite"),
    )  # fmt: skip
    labeler = Labeler(opts, progress=False)
    t0 = time.perf_counter()
    labeler.label(df)  # type: ignore[arg-type]
    wall = time.perf_counter() - t0
    metrics = labeler.summary().metrics
    assert metrics is not None
    return metrics, wall


def pct(v: float, ci: list[float] | None) -> str:
    return f"{100 * v:.1f}%" + (f" (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=300)
    p.add_argument("--error-rates", default="0.05,0.1")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--local", type=int, default=0, help="rows labeled by the local model too (0: none)")
    a = p.parse_args()
    df = bbc_multilabel(a.rows, seed=a.seed, none_share=0.1)
    truth = {str(t): split_labels(g) for t, g in zip(df["text"], df["label"], strict=True)}
    gold = [split_labels(g) for g in df["label"]]
    card = sum(len(v) for v in gold) / len(gold)
    print(f"# bench_multilabel: {len(df)} rows, synthetic multi-label set (joined BBC article openings)")
    print(f"# labels {', '.join(TOPICS)}; gold labels per row {card:.2f}; rows with gold [] {sum(not v for v in gold)}")
    print("# teacher: simulated multi-label teacher (fixed per-label error rate), fake OpenAI-compatible server")
    print(f"# {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "multilabel.csv"
        df.to_csv(src, index=False)
        for err in (float(x) for x in a.error_rates.split(",") if x.strip()):
            r = run_one(work, src, truth, err, a)
            m = r["metrics"]
            st = r["run"]["statuses"]
            print(f"\n## per-label error rate {err:.2f}: {m['n_scored']} rows scored, statuses {st}")
            print(f"micro-F1         {pct(m['micro_f1'], m['micro_f1_ci'])}")
            print(f"macro-F1         {pct(m['macro_f1'], m['macro_f1_ci'])}")
            print(f"sample-F1        {pct(m['samples_f1'], m['samples_f1_ci'])}")
            print(
                f"subset accuracy  {pct(m['subset_accuracy'], m['subset_accuracy_ci'])}  (expected (1-e)^4 = {(1 - err) ** 4:.1%})"
            )
            print(f"Hamming loss     {pct(m['hamming_loss'], m['hamming_loss_ci'])}  (expected e = {err:.1%})")
            c = m["cardinality"]
            print(f"labels per row   predicted {c['pred']:.2f}  gold {c['gold']:.2f}")
            for lab, v in m["per_label"].items():
                print(f"  {lab:<9} P {v['precision']:.3f} R {v['recall']:.3f} F1 {v['f1']:.3f} support {v['support']}")
            u = r["run"]["usage"]
            print(
                f"run: {r['wall']:.1f}s wall for the label command ({r['requests']} requests reached the server, "
                f"{u['reasks']} items re-asked); {load()}"
            )
        if a.local:
            small = df.head(a.local)
            print(
                f"\n## local model SmolLM2-135M-Instruct (in process, CPU), yes/no per label at P(yes) >= 0.5: {len(small)} rows"
            )
            for calibrate in (False, True):
                m, wall = run_local(work, small, calibrate)
                c = m["cardinality"]
                print(
                    f"{'calibrated' if calibrate else 'raw':<10}  micro-F1 {pct(m['micro_f1'], m['micro_f1_ci'])}  "
                    f"macro-F1 {pct(m['macro_f1'], None)}  subset accuracy {pct(m['subset_accuracy'], None)}  "
                    f"Hamming loss {pct(m['hamming_loss'], None)}  labels per row {c['pred']:.2f} (gold {c['gold']:.2f})  "
                    f"{wall:.0f}s; {load()}"
                )
                print("            per-label F1 " + ", ".join(f"{k} {v['f1']:.2f}" for k, v in m["per_label"].items()))


if __name__ == "__main__":
    main()
