"""Benchmark the local provider: items/second zero-shot vs 10-shot, and what prefix reuse buys.

Runs SmolLM2-135M-Instruct (the embedded default) on BBC News test articles:

* zero-shot: instruction listing the labels, then the article;
* 10-shot with prefix reuse: the same plus 10 examples per class (50 other BBC articles,
  each cut to ``--shot-chars`` characters) before the article; the shared prefix is encoded
  once and its key/value cache reused; the exact prompt (``shot_attention="full"``);
* 10-shot, answer-only (``shot_attention="answer"``, opt-in): the same prefix,
  but the article is encoded without the examples and only the answer attends to them;
* 10-shot without reuse (``reuse_prefix=False``): the prefix re-encoded for every item, on the
  first ``--no-reuse-items`` items only (it is slow).

Every item is one ``score()`` call (as the engine's smallest batch would be), each item cut to
``--max-item-tokens`` tokens. Prints per-item medians, items/s (prefix encoding included),
the 10-shot/zero-shot ratios of median seconds per item, accuracy against gold, and how often
the two 10-shot settings agree.

    python bench/bench_local.py                 # 40 items, 512 tokens each: ~5 min on 2 cores
    python bench/bench_local.py --n-items 10    # quicker look
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from promptclf.data.tables import BBC_TOPICS, load_bbc_news  # noqa: E402
from promptclf.providers.base import ScoreRequest  # noqa: E402
from promptclf.providers.local.provider import LocalProvider  # noqa: E402

SYSTEM = "You are a news editor who files every article under exactly one topic."
LABELS = list(BBC_TOPICS)


def instruction() -> str:
    return f"Classify the news article into one of these topics: {', '.join(LABELS)}.\n\n"


def shots_block(shots: list[tuple[str, str]], chars: int) -> str:
    blocks = [f"Text: {' '.join(text.split())[:chars]}\nLabel: {label}" for text, label in shots]
    return "Examples:\n\n" + "\n\n".join(blocks) + "\n\nNow the article to classify.\n\n"


def run(
    provider: LocalProvider, prefix: str, items: list[str], gold: list[str], examples: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Score items one ``score()`` call each; return timing, tokens and accuracy."""
    times, correct, tokens, preds = [], 0, 0, []
    t_all = time.perf_counter()
    for text, want in zip(items, gold, strict=True):
        req = ScoreRequest(
            system=SYSTEM, prefix=prefix + "Text: ", items=[text], suffix="\nLabel:", labels=LABELS, examples=examples
        )
        res = provider.score(req)
        times.append(res.latency_s)
        tokens += res.usage.prompt_tokens
        probs = res.probs[0]
        preds.append(LABELS[max(range(len(LABELS)), key=probs.__getitem__)])
        correct += preds[-1] == want
        print(f"  {len(times):3d}/{len(items)} {res.latency_s:6.2f}s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t_all
    return {
        "n": len(items),
        "wall_s": wall,
        "items_per_s": len(items) / wall,
        "first_s": times[0],
        "median_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "accuracy": correct / len(items),
        "prompt_tokens": tokens,
        "preds": preds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-items", type=int, default=40)
    ap.add_argument("--shots-per-class", type=int, default=10)
    ap.add_argument("--shot-chars", type=int, default=300)
    ap.add_argument("--max-item-tokens", type=int, default=512)
    ap.add_argument("--no-reuse-items", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    df = load_bbc_news().sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
    shot_rows = df.groupby("label", sort=False).head(args.shots_per_class)
    test = df.drop(index=shot_rows.index).head(args.n_items)
    # Interleave the classes so no topic is systematically the last example before the item.
    shots = [
        (shot_rows[shot_rows.label == lab].iloc[i].text, lab) for i in range(args.shots_per_class) for lab in LABELS
    ]
    items, gold = test.text.tolist(), test.label.tolist()

    provider = LocalProvider(max_item_tokens=args.max_item_tokens)
    provider.load()
    zero_prefix = instruction()
    few_prefix = instruction() + shots_block(shots, args.shot_chars)
    item_tokens = [min(provider.count_tokens(t), args.max_item_tokens) for t in items]
    print(
        f"model {provider.model} on {provider.device}, threads {provider.threads}, load {provider.load_s:.1f}s; "
        f"{len(items)} items, median {statistics.median(item_tokens):.0f} tokens (cut at {args.max_item_tokens}); "
        f"10-shot prefix {provider.count_tokens(few_prefix)} tokens ({len(shots)} shots x {args.shot_chars} chars)"
    )

    print("zero-shot ...", file=sys.stderr)
    zero = run(provider, zero_prefix, items, gold)
    print("10-shot, prefix reused ...", file=sys.stderr)
    few = run(provider, few_prefix, items, gold)
    print("10-shot, prefix reused, answer-only attention to the examples ...", file=sys.stderr)
    span = (len(zero_prefix), len(few_prefix))
    provider.shot_attention = "answer"
    answer = run(provider, few_prefix, items, gold, examples=span)
    provider.shot_attention = "full"
    k = min(args.no_reuse_items, len(items))
    print(f"10-shot, prefix re-encoded per item ({k} items) ...", file=sys.stderr)
    no_reuse = run(
        LocalProvider(max_item_tokens=args.max_item_tokens, reuse_prefix=False), few_prefix, items[:k], gold[:k]
    )

    print(f"{'setting':34s} {'items':>5s} {'items/s':>8s} {'median s/item':>14s} {'first s':>8s} {'accuracy':>9s}")
    for name, r in (
        ("zero-shot", zero),
        ("10-shot, prefix reused", few),
        ("10-shot, reused, answer-only", answer),
        ("10-shot, prefix re-encoded", no_reuse),
    ):
        print(
            f"{name:34s} {r['n']:5d} {r['items_per_s']:8.3f} {r['median_s']:14.2f} {r['first_s']:8.2f} "
            f"{r['accuracy']:9.1%}"
        )
    print(f"ratio 10-shot/zero-shot median s/item (reuse): {few['median_s'] / zero['median_s']:.2f}x")
    print(f"ratio 10-shot answer-only/zero-shot median s/item: {answer['median_s'] / zero['median_s']:.2f}x")
    print(f"ratio 10-shot without/with reuse median s/item: {no_reuse['median_s'] / few['median_s']:.2f}x")
    agree = sum(a == b for a, b in zip(answer["preds"], few["preds"], strict=True)) / len(items)
    print(f"answer-only and full attention give the same label on {agree:.0%} of items")
    half = 1.96 * (0.25 / len(items)) ** 0.5
    print(f"95% CI half-width of an accuracy near 50% on {len(items)} items: ±{half:.0%}")
    print(f"chance accuracy: {1 / len(LABELS):.0%}")


if __name__ == "__main__":
    main()
