"""Build a real-size causal LM with random weights from a config, for speed and memory measurements.

No hub is needed: the shapes are written here, the tokenizer is any local tokenizer folder (for
example SmolLM2's, saved with ``save_pretrained``; the vocabulary is resized to it). Random weights
give real timings and memory, never accuracy.

    python bench/make_random_model.py --shape llama-3.2-3b --tokenizer /tmp/tok --out /tmp/llama3b
"""

from __future__ import annotations

import argparse
import time

SHAPES = {
    # hidden, layers, heads, kv heads, intermediate (published configs of these models)
    "llama-3.2-1b": (2048, 16, 32, 8, 8192),
    "llama-3.2-3b": (3072, 28, 24, 8, 8192),
    "llama-3-8b": (4096, 32, 32, 8, 14336),
    "tiny": (64, 2, 4, 2, 128),
}


def build(shape: str, tokenizer: str, out: str, device: str = "cpu") -> None:
    """Write ``out`` (config, bfloat16 safetensors, tokenizer) for a ``shape`` Llama with random weights."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, kv, inter = SHAPES[shape]
    tok = AutoTokenizer.from_pretrained(tokenizer)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=shape.startswith("llama-3.2"),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    t0 = time.perf_counter()
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"{shape}: {n / 1e9:.2f}B parameters, random bfloat16, written to {out} in {time.perf_counter() - t0:.1f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.2-3b")
    ap.add_argument("--tokenizer", required=True, help="a local tokenizer folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu", help="where to initialise the weights (cuda is much faster)")
    args = ap.parse_args()
    build(args.shape, args.tokenizer, args.out, args.device)


if __name__ == "__main__":
    main()
