"""Benchmark the local provider's batched path: items/s with N items per forward pass vs one.

Runs on whatever device torch finds (CUDA: the model loads in bfloat16; CPU: float32, and the
script says so). The default model is the embedded SmolLM2-135M-Instruct; on a GPU pass a 3-8B
model folder with ``--model``. BBC News articles, zero-shot and 10-shot (2 examples per class,
each cut to 300 characters), ``--batch-size`` items per ``score()`` call (the engine's batch),
scored once with ``items_per_pass=1`` (the CPU default) and once with ``--items-per-pass`` (the
CUDA default, 8). The prefix is encoded before timing starts. Prints items/s, the speed-up, and
the largest probability difference between the two paths (they compute the same scores).

    python bench/bench_local_gpu.py                              # SmolLM2, 24 items
    python bench/bench_local_gpu.py --model /models/Llama-3.1-8B-Instruct --n-items 200
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from promptclf.data.tables import BBC_TOPICS, bbc_sample  # noqa: E402
from promptclf.providers.base import ScoreRequest  # noqa: E402
from promptclf.providers.local.provider import LocalProvider  # noqa: E402

LABELS = list(BBC_TOPICS)
SYSTEM = "You are a news editor who files every article under exactly one topic."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder, .gguf or hub id (default: embedded SmolLM2)")
    ap.add_argument("--n-items", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=16, help="items per score() call")
    ap.add_argument("--items-per-pass", type=int, default=8)
    ap.add_argument("--max-item-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    df = bbc_sample(args.n_items + 10, seed=5)
    items = df.text.tolist()[: args.n_items]
    shots = "".join(
        f"Text: {' '.join(t.split())[:300]}\nLabel: {lab}\n\n"
        for t, lab in zip(df.text[args.n_items :], df.label[args.n_items :], strict=True)
    )
    instr = f"Classify the news article into one of these topics: {', '.join(LABELS)}.\n\n"
    prompts = {"zero-shot": instr + "Text: ", "10-shot": instr + "Examples:\n\n" + shots + "Text: "}

    one = LocalProvider(model=args.model, items_per_pass=1, max_item_tokens=args.max_item_tokens, threads=args.threads)
    one.load()
    many = LocalProvider(
        model=args.model, items_per_pass=args.items_per_pass, max_item_tokens=args.max_item_tokens, threads=args.threads
    )
    many.load()  # shares the loaded model
    dev = one.device
    where = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "CPU (no CUDA device found)"
    print(
        f"model {one.model} on {dev}: {where}; dtype {one.dtype}; prefix reuse {one.plan.mode}; "
        f"{args.n_items} BBC items cut at {args.max_item_tokens} tokens, {args.batch_size} per score() call; "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    print(f"{'prompt':10s} {'prefix tok':>10s} {'1/pass it/s':>12s} {f'{args.items_per_pass}/pass it/s':>12s}"
          f" {'speed-up':>9s} {'max |dp|':>9s}")  # fmt: skip
    for name, prefix in prompts.items():
        head = one.layout_tokens(SYSTEM, prefix, "\nLabel:")[0]
        rates, probs = [], []
        for provider in (one, many):
            provider.score(ScoreRequest(SYSTEM, prefix, items[:1], "\nLabel:", LABELS))  # encode the prefix
            rows: list[list[float]] = []
            t0 = time.perf_counter()
            for k in range(0, len(items), args.batch_size):
                req = ScoreRequest(SYSTEM, prefix, items[k : k + args.batch_size], "\nLabel:", LABELS)
                rows += provider.score(req).probs
                print(f"  {name} {provider.items_per_pass}/pass: {len(rows)}/{len(items)}", file=sys.stderr)
            rates.append(len(items) / (time.perf_counter() - t0))
            probs.append(rows)
        diff = max(abs(a - b) for ra, rb in zip(*probs, strict=True) for a, b in zip(ra, rb, strict=True))
        print(f"{name:10s} {head:10d} {rates[0]:12.2f} {rates[1]:12.2f} {rates[1] / rates[0]:8.2f}x {diff:9.1e}")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
