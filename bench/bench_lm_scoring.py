"""Benchmark LM-head scoring for distilled causal students: all labels packed behind one prompt vs one sequence per label.

``promptclf.distill.models.score_lm`` (used by ``predict`` and by evaluation during training for
``--head lm`` students) runs each text's prompt once with every label's answer tokens packed
after it under a 4-D mask. The reference, ``_score_lm_unpacked``, runs the prompt once per
label. Both are timed on SmolLM2-135M-Instruct (real weights, CPU, float32) over BBC News
articles with the 5 BBC topics, and their scores compared.

    python bench/bench_lm_scoring.py                 # 32 texts, batches of 8, 256 tokens
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from promptclf.data.tables import BBC_TOPICS, bbc_sample  # noqa: E402
from promptclf.distill.models import DEFAULT_LM_PROMPT, PromptParts, _score_lm_unpacked, score_lm  # noqa: E402
from promptclf.providers.local.provider import LocalProvider  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-texts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    provider = LocalProvider()
    provider.load()
    model, tok = provider._lm, provider.tokenizer
    tok.pad_token = tok.pad_token or tok.eos_token
    labels = list(BBC_TOPICS)
    parts = PromptParts.build(tok, DEFAULT_LM_PROMPT, labels)
    texts = bbc_sample(args.n_texts, seed=3).text.tolist()
    batches = [texts[i : i + args.batch_size] for i in range(0, len(texts), args.batch_size)]

    def run(fn):  # type: ignore[no-untyped-def]
        with torch.inference_mode():
            return torch.cat([fn(model, tok, parts, b, args.max_length) for b in batches])

    results, times = {}, {"packed": [], "one sequence per label": []}
    for _ in range(args.repeats):
        for name, fn in (("packed", score_lm), ("one sequence per label", _score_lm_unpacked)):
            t0 = time.perf_counter()
            results[name] = run(fn)
            times[name].append(time.perf_counter() - t0)
    print(
        f"SmolLM2-135M on {provider.device}, {len(texts)} BBC texts, {len(labels)} labels, "
        f"batches of {args.batch_size}, max {args.max_length} tokens, {args.repeats} repeats"
    )
    print(f"{'scoring':26s} {'median s':>9s} {'texts/s':>8s}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, s in med.items():
        print(f"{name:26s} {s:9.2f} {len(texts) / s:8.1f}")
    print(f"speed-up of packed: {med['one sequence per label'] / med['packed']:.2f}x")
    diff = (results["packed"] - results["one sequence per label"]).abs().max().item()
    print(f"largest difference between the two (log-prob): {diff:.2e}")


if __name__ == "__main__":
    main()
