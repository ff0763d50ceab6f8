"""Does the review queue's fitted weighting beat its best single signal on data of different kinds?

For each data set the simulated teacher (``promptclf.testing.sim_teacher``: a stand-in for a 70B
chat model at 85% accuracy, answering over HTTP on 127.0.0.1; its confidences come back as token
log-probabilities) labels every row through ``promptclf``'s own chat path; then ``review`` ranks
the rows twice, with fitted weights and with equal weights, and the gold labels score the ranking:
precision at 10% (share of truly wrong labels among the top 10%) for each signal alone, the equal
mean and the fitted combination.

Data sets, all built from packages (``promptclf.data.corpora``):

* ``topic``: BBC News, five topics;
* ``sentiment``: VADER lexicon entries, positive vs negative (words and short phrases, rated by
  10 people each);
* ``skewed``: BBC tech vs every other topic, 1:9 (a spam-like skew; no spam corpus ships here);
* ``intensity``: VADER entries, strong vs mild sentiment: a set where the sentence embeddings
  behind two of the three signals carry little of the answer.

    OMP_NUM_THREADS=2 python bench/bench_review.py --n 1000 --seeds 0 1 | tee bench/results/review.txt
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

from promptclf.data.corpora import bbc_skewed, vader_intensity, vader_polarity  # noqa: E402
from promptclf.data.tables import bbc_sample, write_table  # noqa: E402
from promptclf.label.labeler import Labeler  # noqa: E402
from promptclf.label.options import LabelOptions  # noqa: E402
from promptclf.review.options import ReviewOptions  # noqa: E402
from promptclf.review.queue import review  # noqa: E402
from promptclf.store import Store  # noqa: E402

SETS = {
    "topic": lambda n, s: bbc_sample(n, seed=s)[["text", "label"]].reset_index(drop=True),
    "sentiment": vader_polarity,
    "skewed": bbc_skewed,
    "intensity": vader_intensity,
}


def label(df: pd.DataFrame, store: Path, base_url: str) -> pd.DataFrame:
    labels = [{"name": n} for n in sorted(set(df["label"]))]
    opts = LabelOptions(  # type: ignore[call-arg]
        labels=labels, label_col=None, max_chars=600, store=str(store), provider="openai", base_url=base_url,
        model="simulated-teacher", batch_size=10,
    )  # fmt: skip
    return Labeler(opts, progress=False).label(df[["text"]]).frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="rows per data set")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--accuracy", type=float, default=0.85, help="the simulated teacher's accuracy")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    a = ap.parse_args()
    from promptclf.testing.sim_teacher import SimTeacher

    os.environ.setdefault("OPENAI_API_KEY", "sk-simulated")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {a.n} rows per set; teacher: simulated ({a.accuracy:.0%})")
    cols = ["confidence", "student", "neighbours", "equal weights", "fitted"]
    table: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store.sqlite"
        cache = Store(store)  # the teacher's embeddings, reused by the review
        for name in a.sets:
            for seed in a.seeds:
                t0 = time.perf_counter()
                df = SETS[name](a.n, seed)
                with SimTeacher(
                    df["text"].tolist(), df["label"].tolist(), accuracy=a.accuracy, seed=seed, store=cache
                ) as sim:
                    out = label(df, store, sim.base_url)
                out["gold"] = df["label"].to_numpy()
                path = write_table(pd.concat([df[["text"]], out.drop(columns=["text"], errors="ignore")], axis=1),
                                   Path(tmp) / f"{name}{seed}.csv")  # fmt: skip
                res = review(path, ReviewOptions.build(gold_col="gold", store=str(store)), progress=False)
                g = res.summary["gold"]
                by = g["by_signal_at_10%"]
                got = {k: by[k]["precision"] for k in cols[:4] if k in by}
                got["fitted"] = g["at"]["10%"]["precision"]
                w = res.summary["weights"]
                row = table.setdefault(name, {c: [] for c in cols})
                for c in cols:
                    row[c].append(got.get(c, float("nan")))
                print(
                    f"{name:9s} seed {seed}: error rate {g['error_rate']:.3f} | precision at 10%: "
                    + ", ".join(f"{c} {got.get(c, float('nan')):.3f}" for c in cols)
                    + " | weights " + ", ".join(f"{k} {v:.2f}" for k, v in w["weights"].items())
                    + f" | {time.perf_counter() - t0:.0f} s",
                    flush=True,
                )  # fmt: skip
    print("\nmedian over seeds, precision at 10% (simulated teacher):")
    print(f"{'set':10s} " + " ".join(f"{c:>14s}" for c in cols) + "  fitted >= best single?")
    for name, row in table.items():
        med = {c: statistics.median(v) for c, v in row.items()}
        best = max(med[c] for c in cols[:3])
        verdict = "yes" if med["fitted"] >= best else f"no ({med['fitted'] - best:+.3f})"
        print(f"{name:10s} " + " ".join(f"{med[c]:14.3f}" for c in cols) + f"  {verdict}")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
