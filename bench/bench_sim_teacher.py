"""What the simulated teacher is like: accuracy, where its errors fall, how confident it is.

Builds :class:`promptclf.testing.sim_teacher.SimTeacher` on N BBC News articles (seeded stratified sample) and
prints, all marked "simulated teacher": realised accuracy against the set one, how many errors
go to the most similar class, the error rate by centroid-margin quartile, the chosen label's
probability on right and wrong answers, the AUROC of that probability for telling the two
apart, and the error rate among the 10% least confident answers. It then asks the server over
HTTP for every text (batches of 10, texts clipped to 1,000 characters, as promptclf renders
them) and checks the answers match. Embeddings are cached in the store (default: promptclf's).

    python bench/bench_sim_teacher.py [--n 500] [--accuracy 0.85] [--seed 0] [--store PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptclf.testing.sim_teacher import SimTeacher, norm  # noqa: E402


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties half."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--accuracy", type=float, default=0.85)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", default=None)
    args = ap.parse_args()

    from promptclf.data.tables import bbc_sample
    from promptclf.embeddings import embed
    from promptclf.label.options import default_store
    from promptclf.label.prompts import Item, PromptBuilder
    from promptclf.label.schema import parse_response
    from promptclf.labels import LabelSet
    from promptclf.store import Store

    df = bbc_sample(args.n, seed=args.seed)
    texts, gold = list(df["text"]), list(df["label"])
    store = Store(args.store or default_store())
    t0 = time.perf_counter()
    emb = embed(texts, store=store, progress=True)
    embed_s = time.perf_counter() - t0
    store.close()
    teacher = SimTeacher(texts, gold, accuracy=args.accuracy, seed=args.seed, embeddings=emb)
    answers = [teacher.answers()[norm(t)] for t in texts]
    correct = np.array([a.correct for a in answers])
    conf = np.array([a.probs[a.label] for a in answers])

    cents = np.stack([emb[[g == lab for g in gold]].mean(0) for lab in teacher.labels])
    nearest = 0
    for i, a in enumerate(answers):
        if not a.correct:
            sims = cents @ emb[i]
            sims[teacher.labels.index(gold[i])] = -np.inf
            nearest += teacher.labels[int(np.argmax(sims))] == a.label
    margin = np.array([teacher.margins[teacher._keys.index(norm(t))] for t in texts])
    quart = np.quantile(margin, [0.25, 0.5, 0.75])
    bins = np.digitize(margin, quart)
    low10 = conf <= np.quantile(conf, 0.10)

    # The same answers over HTTP, on prompts as promptclf renders them.
    labels = LabelSet.from_names(teacher.labels)
    prompts = PromptBuilder(labels, max_chars=1000)
    agree = 0
    with teacher:
        for s in range(0, len(texts), 10):
            chunk = texts[s : s + 10]
            body = {
                "model": "simulated-teacher",
                "messages": prompts.batch_messages([Item(k + 1, t) for k, t in enumerate(chunk)]),
            }
            req = urllib.request.Request(f"{teacher.base_url}/chat/completions", data=json.dumps(body).encode())
            with urllib.request.urlopen(req, timeout=60) as resp:
                text = json.load(resp)["choices"][0]["message"]["content"]
            got = parse_response(text, list(range(1, len(chunk) + 1)), labels).labels
            agree += sum(got.get(k + 1) == answers[s + k].label for k in range(len(chunk)))

    n, n_wrong = len(texts), int((~correct).sum())
    print(f"simulated teacher on {n} BBC News articles (seed {args.seed}); load average {os.getloadavg()}")
    print(f"  embedding: {embed_s:.1f}s (all-MiniLM-L6-v2, cached in the store after the first run)")
    print(f"  accuracy: {correct.mean():.4f} (set {args.accuracy}); {n_wrong} wrong")
    print(
        f"  errors to the most similar other class (centroids): {nearest}/{n_wrong} = {nearest / max(1, n_wrong):.1%}"
    )
    rates = ", ".join(f"Q{q + 1} {1 - correct[bins == q].mean():.1%}" for q in range(4))
    print(f"  error rate by margin quartile (Q1 = nearest the class boundary): {rates}")
    print(
        f"  chosen label's probability: mean {conf[correct].mean():.3f} when right, {conf[~correct].mean():.3f} when wrong"
    )
    print(f"  AUROC of 1 - probability for finding its errors: {_auroc(-conf, ~correct):.3f}")
    rate10 = 1 - correct[low10].mean()
    print(
        f"  error rate among the 10% least confident: {rate10:.1%} "
        f"({rate10 / max(1e-9, 1 - correct.mean()):.1f}x its overall error rate)"
    )
    print(f"  answers over HTTP (batches of 10, texts clipped to 1,000 chars) matching: {agree}/{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
