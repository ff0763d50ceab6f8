"""Random vs similar few-shot examples: prompt tokens per item, seconds per item and accuracy.

The same BBC News items are labeled with ``--shot-selection random`` and ``similar`` from the
same pool of labeled examples (``--examples``), through

* the local scoring provider (SmolLM2-135M-Instruct in process): random shots share one prefix
  whose key/value cache is reused for every item; similar shots give each item its own prefix,
  so this measures what giving up the shared prefix costs;
* the chat path: llama.cpp's OpenAI-compatible server on the same SmolLM2 through ``--base-url``,
  in batches (similar texts batched together, each request its own nearest examples).

Beside them, with no LLM, the vote of the ``--knn`` nearest labeled neighbours (all-MiniLM-L6-v2
cosine): among the same pool, and leave-one-out over N BBC News texts (``--loo N``, -1: all).

    python bench/bench_shots.py [--items 50] [--shots 2] [--pool 10] [--paths local,server] [--loo N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def knn_vote(idx, sims, labels: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """Majority label of each row's neighbours; a tie goes to the label with the larger summed similarity."""
    out = []
    for row_idx, row_sims in zip(idx, sims, strict=True):
        votes: Counter[str] = Counter()
        weight: Counter[str] = Counter()
        for i, s in zip(row_idx, row_sims, strict=True):
            votes[labels[int(i)]] += 1
            weight[labels[int(i)]] += float(s)
        out.append(max(votes, key=lambda lab: (votes[lab], weight[lab])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=50, help="items labeled per run")
    ap.add_argument("--shots", type=int, default=2, help="examples per class in each prompt")
    ap.add_argument("--pool", type=int, default=10, help="labeled examples per class to pick from")
    ap.add_argument("--batch-size", type=int, default=5, help="items per chat request")
    ap.add_argument("--max-chars", type=int, default=400)
    ap.add_argument("--shot-max-chars", type=int, default=200)
    ap.add_argument("--knn", type=int, default=4, help="neighbours in the no-LLM vote")
    ap.add_argument("--paths", default="local,server", help="comma list of: local, server")
    ap.add_argument(
        "--loo", type=int, default=0, help="also the leave-one-out kNN vote over N BBC News texts (-1: all; slow)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the local model")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import numpy as np

    from promptclf.data.tables import bbc_sample, load_bbc_news
    from promptclf.embeddings import embed, knn
    from promptclf.label.labeler import Labeler
    from promptclf.label.options import LabelOptions
    from promptclf.store import Store

    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-shots-"))
    store_path = work / "store.sqlite"
    n_classes = 5
    df = bbc_sample(a.items + a.pool * n_classes + 50, seed=a.seed)[["text", "label"]].reset_index(drop=True)
    pool = df.groupby("label").head(a.pool).reset_index(drop=True)
    items = df[~df["text"].isin(pool["text"])].head(a.items).reset_index(drop=True)

    # Embeddings: timed cold here (model already loaded), then served from the store to the runs below.
    embed(["warm-up"])
    t0 = time.perf_counter()
    vecs = embed(list(pool["text"]) + list(items["text"]), store=Store(store_path))
    embed_s = time.perf_counter() - t0
    pool_v, item_v = vecs[: len(pool)], vecs[len(pool) :]
    idx, sims = knn(item_v, pool_v, a.knn)
    vote = knn_vote(idx, sims, list(pool["label"]))
    knn_pool_acc = float(np.mean([v == g for v, g in zip(vote, items["label"], strict=True)]))

    common = {
        "shots": a.shots,
        "max_chars": a.max_chars,
        "shot_max_chars": a.shot_max_chars,
        "seed": a.seed,
        "store": str(store_path),
        "no_cache": True,
    }
    rows = []
    paths = [p.strip() for p in a.paths.split(",") if p.strip()]
    if "local" in paths:
        from promptclf.providers.local.provider import LocalProvider

        provider = LocalProvider(threads=a.threads)
        provider.load()
        for sel in ("random", "similar"):
            opts = LabelOptions.build(provider="local", batch_size=8, shot_selection=sel, **common)
            lab = Labeler(opts, provider=provider, progress=False)
            summary = lab.label(items, pool).summary  # the same pool of examples for both selections
            rows.append(("local SmolLM2 (scoring)", sel, lab, summary))
    if "server" in paths:
        from servers import LlamaServer  # tests/servers.py: llama_cpp.server on a free port

        os.environ.setdefault("OPENAI_API_KEY", "sk-local")
        with LlamaServer(n_threads=max(1, a.threads)) as server:
            for sel in ("random", "similar"):
                opts = LabelOptions.build(
                    provider="openai",
                    model="smollm2",
                    base_url=server.base_url,
                    batch_size=a.batch_size,
                    concurrency=1,
                    timeout_s=300.0,
                    max_reasks=0,  # a 135M model on a busy CPU: items it leaves out count as wrong
                    shot_selection=sel,
                    **common,
                )
                lab = Labeler(opts, progress=False)
                summary = lab.label(items, pool).summary  # the same pool of examples for both selections
                rows.append(("llama.cpp SmolLM2 (chat, --base-url)", sel, lab, summary))

    loo = None
    if a.loo:
        everything = load_bbc_news() if a.loo < 0 else bbc_sample(a.loo, seed=a.seed + 1)
        t1 = time.perf_counter()
        all_v = embed(list(everything["text"]), store=Store(store_path), progress=True)
        loo_embed_s = time.perf_counter() - t1
        nidx, nsims = knn(all_v, all_v, a.knn + 1)
        labels = list(everything["label"])
        preds = []
        for r in range(len(all_v)):
            keep = [k for k in range(a.knn + 1) if nidx[r, k] != r][: a.knn]  # the text itself is not a neighbour
            preds.extend(knn_vote(nidx[r : r + 1, keep], nsims[r : r + 1, keep], labels))
        loo = (float(np.mean([p == g for p, g in zip(preds, labels, strict=True)])), len(all_v), loo_embed_s)

    print(f"BBC News: {len(items)} items; pool {a.pool} labeled examples per class ({len(pool)}), {a.shots} per class")
    print(f"in each prompt (random: the same seeded ones; similar: the nearest); items cut to {a.max_chars} chars,")
    print(f"examples to {a.shot_max_chars}. Models: SmolLM2-135M-Instruct (local scoring, {a.threads} thread(s);")
    print("llama.cpp server for the chat path); embeddings all-MiniLM-L6-v2 (128 word pieces).")
    print(
        f"load average at start {tuple(round(x, 2) for x in load_start)}, at end {tuple(round(x, 2) for x in os.getloadavg())}"
    )
    print(
        f"embedding {len(pool) + len(items)} texts cold: {embed_s:.1f}s ({(len(pool) + len(items)) / embed_s:.1f} texts/s)"
    )
    print()
    print(
        f"{'path':38s} {'shots':8s} {'accuracy':>9s} {'coverage':>9s} {'prompt tok/item':>16s} {'s/item':>8s} {'requests':>9s}"
    )
    by: dict[tuple[str, str], dict] = {}
    for path, sel, _lab, s in rows:
        n = s.n_items
        m = s.metrics or {}
        tok = s.usage.prompt_tokens / n
        sec = s.wall_s / n
        by[(path, sel)] = {"tok": tok, "sec": sec}
        print(
            f"{path:38s} {sel:8s} {m['accuracy']:9.1%} {s.coverage:9.1%} {tok:16.0f} {sec:8.2f} {s.usage.requests:9d}"
        )
    print(f"{'no LLM: vote of ' + str(a.knn) + ' nearest in the pool':38s} {'':8s} {knn_pool_acc:9.1%}")
    if loo is not None:
        print(
            f"{'no LLM: vote of ' + str(a.knn) + ' nearest, BBC (LOO)':38s} {'':8s} {loo[0]:9.1%}"
            f"   (n={loo[1]}, embedded in {loo[2]:.0f}s)"
        )
    for path in {p for p, _ in by}:
        if (path, "random") in by and (path, "similar") in by:
            r, s_ = by[(path, "random")], by[(path, "similar")]
            print(
                f"{path}: similar / random = {s_['tok'] / r['tok']:.2f}x prompt tokens per item, "
                f"{s_['sec'] / r['sec']:.2f}x seconds per item"
            )


if __name__ == "__main__":
    main()
