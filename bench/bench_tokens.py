"""Prompt tokens per item: few-shot (10 shots per class) on BBC News, batch size 1 vs 10.

Batching pays the instructions and the few-shot examples once per request instead of once
per item. This renders the engine's real prompts (``promptclf.label.prompts.PromptBuilder`` with
the packaged templates and default options) for the same items at both batch sizes and
counts their tokens with the SmolLM2 tokenizer, chat template included.
Target: batch 10 costs <= 20% of batch 1's prompt tokens per item.

    python bench/bench_tokens.py [--items 200] [--shots 10] [--seed 0]

Figures go to stdout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from promptclf.resources import smollm2_gguf

    gguf = smollm2_gguf()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def count_messages(tok, messages: list[dict[str, str]]) -> int:  # type: ignore[no-untyped-def]
    """Tokens of the whole prompt as the server sees it (chat template applied)."""
    if getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        if hasattr(ids, "keys"):  # newer transformers return a BatchEncoding
            ids = ids["input_ids"]
        return len(ids)
    return sum(len(tok.encode(m["content"], add_special_tokens=False)) for m in messages)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200, help="items to render (not shots)")
    ap.add_argument("--shots", type=int, default=10, help="few-shot examples per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-sizes", default="1,10")
    args = ap.parse_args()

    from promptclf.data.tables import load_bbc_news
    from promptclf.label.options import LabelOptions
    from promptclf.label.prompts import Item, PromptBuilder, select_shots
    from promptclf.labels import infer_labels

    opts = LabelOptions()  # the engine's defaults: max_chars, shot_max_chars, templates
    df = load_bbc_news()
    texts, gold = df["text"].tolist(), df["label"].tolist()
    labels = infer_labels(gold)
    shots, _ = select_shots(texts, gold, args.shots, labels, args.seed)
    shot_rows = {s.row for s in shots}
    pool = [t for i, t in enumerate(texts) if i not in shot_rows]
    import random

    items = random.Random(args.seed).sample(pool, args.items)
    builder = PromptBuilder(labels, shots, max_chars=opts.max_chars, shot_max_chars=opts.shot_max_chars)

    t0 = time.perf_counter()
    tok = load_tokenizer()
    load_s = time.perf_counter() - t0

    print(
        f"BBC News, {len(labels.names)} classes, {args.shots} shots per class ({len(shots)} shots), {args.items} items"
    )
    print(f"tokenizer: SmolLM2-135M-Instruct (GGUF), loaded in {load_s:.1f}s; chat template applied")
    per_item: dict[int, float] = {}
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        totals = []
        for start in range(0, len(items), bs):
            chunk = items[start : start + bs]
            msgs = builder.batch_messages([Item(k + 1, t) for k, t in enumerate(chunk)])
            totals.append(count_messages(tok, msgs))
        per_item[bs] = sum(totals) / len(items)
        print(
            f"batch {bs:>3}: {len(totals)} requests, median {statistics.median(totals):,.0f} prompt tokens/request, "
            f"{per_item[bs]:,.1f} prompt tokens/item"
        )
    sizes = sorted(per_item)
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        ratio = per_item[hi] / per_item[lo]
        verdict = "meets" if ratio <= 0.20 else "misses"
        print(f"batch {hi} / batch {lo} tokens per item: {ratio:.1%} ({verdict} the <= 20% target)")


if __name__ == "__main__":
    main()
