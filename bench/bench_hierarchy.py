"""Hierarchy vs flat on a real label tree: tokens per item and accuracy at every level.

Tree: ICD-10-CM (``promptclf.data.taxonomies.icd10cm``, from the ``simple-icd-10-cm`` package): diagnosis
titles labelled ``chapter/block``; the labels file lists the chapters and, as their children, the blocks
that occur in the sample, each with its official title as description. ``--tree-mode hierarchy`` asks
for the chapter first, then for the chosen chapter's blocks; ``--tree-mode flat`` lists every block (by
path) in one prompt. Both runs label the same rows from the same labels file.

Teachers:

* **simulated teacher** (``promptclf.testing.sim_teacher`` behind its HTTP server, at ``--accuracy``):
  it decides each text once over the leaves and answers each stage from the labels the prompt shows
  (``promptclf.testing.sim_tree``), so its accuracy is the same both ways by construction; with it only
  the tokens and requests compare. Its token counts are its estimate (4.2 characters a token).
* **SmolLM2-135M** (``--local N``, the embedded local model in process, on the first N rows): the local
  provider scores every label shown (flat: all leaves per item; hierarchy: the chapters, then the chosen
  chapter's blocks), so both tokens (its own tokenizer) and accuracy compare.

    python bench/bench_hierarchy.py [--rows 600] [--per-leaf 10] [--batch-size 10] [--local 40] [--out FILE]

Figures, with the load average, go to stdout (and ``--out``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # promptclf from this checkout

from promptclf.data.taxonomies import icd10cm, icd10cm_tree_yaml  # noqa: E402
from promptclf.label.labeler import Labeler  # noqa: E402
from promptclf.label.options import LabelOptions  # noqa: E402
from promptclf.labels import parse_labels  # noqa: E402


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def run(df: Any, tree_file: Path, mode: str, store: Path, **kw: Any) -> dict[str, Any]:
    """Label ``df`` with the tree in ``mode``; the figures of its summary."""
    labels = parse_labels(str(tree_file)).to_dict()
    opts = LabelOptions(labels=labels, tree_mode=mode, store=str(store), **kw)  # type: ignore[arg-type]
    labeler = Labeler(opts, progress=False)
    t0 = time.perf_counter()
    labeler.label(df)
    wall = time.perf_counter() - t0
    s = labeler.summary()
    m = s.metrics or {}
    n = s.n_items
    return {
        "mode": mode,
        "n": n,
        "requests": s.usage.requests,
        "prompt_per_item": s.usage.prompt_tokens / n,
        "completion_per_item": s.usage.completion_tokens / n,
        "coverage": s.coverage,
        "levels": m.get("levels") or [],
        "wall_s": wall,
    }


def show(r: dict[str, Any]) -> str:
    lv = " ".join(
        f"L{x['level']} {100 * x['accuracy']:.1f}% (CI {100 * x['accuracy_ci'][0]:.1f}-{100 * x['accuracy_ci'][1]:.1f})"
        for x in r["levels"]
    )
    return (
        f"  {r['mode']:<9} {r['n']:>4} items  {r['requests']:>4} requests  tokens/item {r['prompt_per_item']:8.1f} "
        f"prompt + {r['completion_per_item']:5.1f} completion  coverage {100 * r['coverage']:.1f}%  {lv}  "
        f"{r['wall_s']:.1f}s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--per-leaf", type=int, default=10, help="at most this many titles per block (seeded)")
    ap.add_argument("--min-per-leaf", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--accuracy", type=float, default=0.85, help="the simulated teacher's accuracy")
    ap.add_argument("--local", type=int, default=0, help="also label the first N rows with SmolLM2 (0: skip)")
    ap.add_argument(
        "--local-chapters",
        default="A00-B99,C00-D49,I00-I99,J00-J99",
        help="the local model's second tree: these chapters only (the whole tree's flat prompt may not fit its context)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()

    lines: list[str] = []

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)
        if a.out:  # written as it goes: a long local run cut short keeps its figures
            a.out.write_text("\n".join(lines) + "\n")

    df = icd10cm(n=a.rows, per_leaf=a.per_leaf, min_per_leaf=a.min_per_leaf, seed=a.seed)
    work = Path(tempfile.mkdtemp(prefix="bench_hierarchy_"))
    tree_file = work / "icd10cm_tree.yaml"
    tree_file.write_text(icd10cm_tree_yaml(df))
    tree = parse_labels(str(tree_file)).tree
    assert tree is not None
    n_leaves, n_top = len(tree.leaves), len(tree.roots)
    say(
        f"ICD-10-CM tree (simple-icd-10-cm): {len(df)} titles, {n_top} chapters, {n_leaves} blocks in the sample "
        f"(<= {a.per_leaf} titles per block, blocks with >= {a.min_per_leaf}), seed {a.seed}"
    )
    say(f"start: {load()}")

    from promptclf.testing.sim_teacher import SimTeacher

    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    say(
        f"simulated teacher (accuracy {a.accuracy}; one decision per text, so accuracy is equal both ways by construction), batch size {a.batch_size}:"
    )
    with SimTeacher(list(df["text"]), list(df["label"]), accuracy=a.accuracy, seed=a.seed) as t:
        for mode in ("hierarchy", "flat"):
            r = run(
                df, tree_file, mode, work / f"sim-{mode}.sqlite", provider="openai", base_url=t.base_url,
                model="simulated-teacher", batch_size=a.batch_size, concurrency=4, label_col="label",
            )  # fmt: skip
            say(show(r))
    say(f"after the simulated teacher: {load()}")

    if a.local:
        from promptclf.errors import InputError

        sub = icd10cm(
            chapters=a.local_chapters.split(","), per_leaf=a.per_leaf, min_per_leaf=a.min_per_leaf, seed=a.seed
        )
        sub_file = work / "icd10cm_subtree.yaml"
        sub_file.write_text(icd10cm_tree_yaml(sub))
        sub_tree = parse_labels(str(sub_file)).tree
        assert sub_tree is not None
        for name, data, tfile, t in (("whole tree", df, tree_file, tree), ("sub-tree", sub, sub_file, sub_tree)):
            sample = data.head(a.local)
            say(
                f"SmolLM2-135M-Instruct (local provider, in process, CPU), {name} ({len(t.roots)} chapters, "
                f"{len(t.leaves)} blocks), first {len(sample)} rows:"
            )
            for mode in ("hierarchy", "flat"):
                try:
                    r = run(
                        sample, tfile, mode, work / f"local-{name[:3]}-{mode}.sqlite", provider="local", batch_size=8,
                        max_chars=300, label_col="label",
                    )  # fmt: skip
                except InputError as exc:  # the flat prompt may not fit the model's context
                    say(f"  {mode:<9} refused: {exc}")
                    continue
                say(show(r))
            say(f"  {load()}")


if __name__ == "__main__":
    main()
