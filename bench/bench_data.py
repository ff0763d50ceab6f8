"""The real data sets shipped in packages: rows, labels, levels, label cardinality and load time.

For each set of :mod:`promptclf.data.taxonomies` (and the synthetic BBC multi-label stand-in, for
comparison) it prints the rows, the distinct labels, the levels of the tree, the mean labels per
text and the share of texts with none / with several, and the load time: cold (a fresh Python
process parses the package's file; median of ``--repeats``) and warm (the parse cached, the same
process asked again). Results go to stdout, one table; the load average is printed beside them.

    python bench/bench_data.py | tee bench/results/data.txt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETS = {
    "icd10cm (tree, all)": "tx.icd10cm()",
    "icd10cm (tree, per_leaf=20)": "tx.icd10cm(per_leaf=20)",
    "icd10cm-flat (per_leaf=20)": "tx.icd10cm(per_leaf=20, path=False)",
    "hpo (multi-label)": "tx.hpo_multilabel()",
    "bbc-multilabel (synthetic)": "bbc_multilabel(300, none_share=0.1)",
}

SNIPPET = """
import json, time, sys
t0 = time.perf_counter()
from promptclf.data import taxonomies as tx
from promptclf.data.corpora import bbc_multilabel
df = {expr}
cold = time.perf_counter() - t0
t1 = time.perf_counter()
df = {expr}
warm = time.perf_counter() - t1
print(json.dumps({{"cold": cold, "warm": warm, "labels": df["label"].tolist()}}))
"""


def stats(labels: list[str]) -> dict[str, float]:
    from promptclf.labels import split_labels

    multi = any(str(x).startswith("[") for x in labels)
    sets = [split_labels(x) if multi else [x] for x in labels]
    names = {n for s in sets for n in s}
    sizes = [len(s) for s in sets]
    return {
        "rows": len(labels),
        "labels": len(names),
        "levels": max(n.count("/") + 1 for n in names),
        "top": len({n.split("/")[0] for n in names}),
        "mean": statistics.fmean(sizes),
        "none": sum(1 for k in sizes if k == 0) / len(sizes),
        "several": sum(1 for k in sizes if k >= 2) / len(sizes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="cold loads per set (fresh processes)")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| set | rows | labels | levels (top) | labels per text | none | 2+ | cold load s (median) | warm s |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, expr in SETS.items():
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run(
                [sys.executable, "-c", SNIPPET.format(expr=expr)], capture_output=True, text=True, check=True
            )
            runs.append(json.loads(out.stdout))
        s = stats(runs[0]["labels"])
        cold = statistics.median(r["cold"] for r in runs)
        warm = statistics.median(r["warm"] for r in runs)
        print(
            f"| {name} | {s['rows']:,} | {s['labels']} | {s['levels']} ({s['top']}) | {s['mean']:.3f} | "
            f"{s['none']:.1%} | {s['several']:.1%} | {cold:.2f} | {warm:.2f} |",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
