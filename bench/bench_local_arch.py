"""Benchmark the local provider's ways of reusing the prefix cache, per architecture.

Tiny random-weight models (hidden 128, 4 layers, sliding window 64 tokens where the architecture
has one) with SmolLM2's tokenizer: the absolute times say nothing about real models, the ratios
between paths on the same model do. Each item is one ``score()`` call; per architecture, prompt
(zero-shot, and 10-shot with a prefix several windows long) and path, the median seconds per item:

* ``shared``: the default where the masks can be rebuilt (every architecture here): the prefix
  cache is forked (no copy) and every label packed after the item under per-layer-type masks;
* ``copy``: the fallback for models whose masks cannot be rebuilt (flash attention, chunked or
  linear-attention layers): the model's default masks, the prefix cache deep-copied per item and
  repeated once per label;
* ``re-encode``: the default masks and no cache reuse at all: the prefix encoded for every item.

    python bench/bench_local_arch.py               # 12 items per cell
    python bench/bench_local_arch.py --n-items 5 --archs llama,gemma3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402

from promptclf.data.tables import BBC_TOPICS, bbc_sample  # noqa: E402
from promptclf.providers.base import ScoreRequest  # noqa: E402
from promptclf.providers.local.provider import LocalProvider  # noqa: E402

LABELS = list(BBC_TOPICS)
WINDOW = 64


def configs(tok: Any) -> dict[str, tuple[str, Any]]:
    common = {
        "vocab_size": len(tok),
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.eos_token_id,
    }
    t = transformers
    gemma = {"head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": WINDOW}
    return {
        "llama": ("LlamaForCausalLM", t.LlamaConfig(**common)),
        "qwen2": ("Qwen2ForCausalLM", t.Qwen2Config(**common)),
        "mistral": ("MistralForCausalLM", t.MistralConfig(sliding_window=WINDOW, **common)),
        "gemma2": ("Gemma2ForCausalLM", t.Gemma2Config(**gemma, **common)),
        "gemma3": (
            "Gemma3ForCausalLM",
            t.Gemma3TextConfig(layer_types=["sliding_attention"] * 3 + ["full_attention"], **gemma, **common),
        ),
        "phi3": ("Phi3ForCausalLM", t.Phi3Config(sliding_window=WINDOW, **common)),
    }


PATHS = {
    "shared": {"prefix_mode": "shared"},
    "copy": {"prefix_mode": "copy"},
    "re-encode": {"prefix_mode": "copy", "reuse_prefix": False},
}


def requests(n: int, shots: int) -> tuple[str, list[str]]:
    df = bbc_sample(n + 5 * shots, seed=3)
    texts = [" ".join(t.split()[:60]) for t in df.text]
    block = "".join(f"Text: {texts[n + i]}\nLabel: {df.label.iloc[n + i]}\n" for i in range(5 * shots))
    prefix = f"Classify the text into one of these labels: {', '.join(LABELS)}.\n" + block + "Text: "
    return prefix, texts[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-items", type=int, default=12)
    ap.add_argument("--archs", default="llama,qwen2,mistral,gemma2,gemma3,phi3")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = LocalProvider().tokenizer
    prompts = {"zero-shot": requests(args.n_items, 0), "10-shot": requests(args.n_items, 2)}
    print(
        f"tiny random-weight models (hidden 128, 4 layers, window {WINDOW}), SmolLM2 tokenizer; cpu, "
        f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} at start; "
        f"{args.n_items} items of 60 words, one score() call each"
    )
    print(f"{'arch':8s} {'prompt':10s} {'prefix tok':>10s} " + " ".join(f"{p + ' s/item':>16s}" for p in PATHS)
          + "   copy/shared  re-encode/shared  max |dp|")  # fmt: skip
    with tempfile.TemporaryDirectory() as root:
        for name in args.archs.split(","):
            cls, config = configs(tok)[name]
            torch.manual_seed(0)
            folder = os.path.join(root, name)
            getattr(transformers, cls)(config).save_pretrained(folder)
            tok.save_pretrained(folder)
            for pname, (prefix, items) in prompts.items():
                med, probs = {}, {}
                head = 0
                for path, kw in PATHS.items():
                    provider = LocalProvider(model=folder, **kw)  # type: ignore[arg-type]
                    provider.load()
                    head = provider.layout_tokens("", prefix, "\nLabel:")[0]
                    provider.score(ScoreRequest("", prefix, items[:1], "\nLabel:", LABELS))  # prefix encoded, warm
                    times, rows = [], []
                    for text in items:
                        t0 = time.perf_counter()
                        rows += provider.score(ScoreRequest("", prefix, [text], "\nLabel:", LABELS)).probs
                        times.append(time.perf_counter() - t0)
                    med[path], probs[path] = statistics.median(times), rows
                    print(f"  {name} {pname} {path}: {med[path]:.4f} s/item", file=sys.stderr, flush=True)
                diff = max(
                    abs(a - b)
                    for p in probs.values()
                    for ra, rb in zip(p, probs["shared"], strict=True)
                    for a, b in zip(ra, rb, strict=True)
                )
                print(
                    f"{name:8s} {pname:10s} {head:10d} " + " ".join(f"{med[p]:16.4f}" for p in PATHS)
                    + f"   {med['copy'] / med['shared']:10.2f}x  {med['re-encode'] / med['shared']:15.2f}x  {diff:.1e}"
                )  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f} at end (2-core machine shared with other jobs)")


if __name__ == "__main__":
    main()
