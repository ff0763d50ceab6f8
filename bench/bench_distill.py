"""Benchmark the distillation student: accuracy, training time, prediction throughput.

Default: the MiniLM student (recipe ``minilm-lora`` unless overridden) trained on the gold
labels of deduplicated BBC News, tested on a seeded stratified held-out 20%.
Targets on 2 CPU cores: accuracy >= 0.95, prediction >= 40 texts/s, training within ~10 min.

    python bench/bench_distill.py                        # MiniLM on BBC gold labels
    python bench/bench_distill.py --method full --epochs 2
    python bench/bench_distill.py --teacher-labels labeled.csv   # train on a labeled file's teacher labels
    python bench/bench_distill.py --gpu                  # QLoRA on an 8B-shaped Llama + SmolLM2 (CUDA only)

Figures go to stdout; training progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from promptclf.data.tables import load_bbc_news, write_table  # noqa: E402
from promptclf.distill.options import DistillOptions  # noqa: E402
from promptclf.distill.run import distill  # noqa: E402

# Llama-3-8B's real shape (meta-llama/Meta-Llama-3-8B config.json); weights are random here.
LLAMA3_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    tie_word_embeddings=False,
)


def _throughput(run_dir: Path, texts: list[str], batch_size: int, dtype: str, repeats: int = 3):
    """(median texts/second of Student.predict over ``repeats`` passes after a warm-up batch, predicted labels)."""
    from promptclf.predict.student import Student

    student = Student.load(run_dir, dtype=dtype)
    student.predict(texts[:batch_size], batch_size=batch_size)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        preds = student.predict(texts, batch_size=batch_size)
        rates.append(len(texts) / (time.perf_counter() - t0))
    return statistics.median(rates), [lab for lab, _ in preds]


def _overrides(a: argparse.Namespace) -> dict[str, object]:
    keys = ("method", "epochs", "max_length", "learning_rate", "batch_size", "lora_r", "lora_alpha", "threads")
    return {k: getattr(a, k) for k in keys if getattr(a, k) is not None}


def bench_cpu(a: argparse.Namespace, work: Path) -> None:
    import pandas as pd
    import torch

    if a.teacher_labels:
        data_path = Path(a.teacher_labels)
        opts = DistillOptions.build(recipe=a.recipe, train_on="teacher", seed=a.seed, **_overrides(a))
        title = f"MiniLM student on teacher labels of {data_path}"
    else:
        df = load_bbc_news(dedupe=True)[["id", "text", "label"]]
        data_path = write_table(df, work / "bbc.csv")
        opts = DistillOptions.build(recipe=a.recipe, train_on="gold", seed=a.seed, **_overrides(a))
        title = f"MiniLM student on BBC News gold labels ({len(df)} deduplicated articles, 20% held out)"
    out = work / "student"
    t0 = time.perf_counter()
    run = distill(data_path, out, opts, restart=True)
    wall = time.perf_counter() - t0
    tr, m = run.train, run.metrics
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False) if run.output else None
    print(f"== {title}")
    print(
        f"torch threads: {torch.get_num_threads()}   options: method={opts.method} epochs={opts.epochs} "
        f"max_length={opts.max_length} lr={opts.lr():g} batch={opts.batch_size} lora_r={opts.lora_r}"
    )
    print(f"rows: {run.data.model_dump_json()}")
    if m:
        majority = preds["gold"].value_counts().iloc[0] / len(preds)
        print(
            f"held-out accuracy: {m['accuracy']:.4f}   macro-F1: {m['macro_f1']:.4f}   "
            f"(majority-class baseline {majority:.4f}; n={m['n_gold']})"
        )
    if run.teacher_agreement is not None:
        print(f"agreement with teacher ({run.teacher_agreement_on}): {run.teacher_agreement:.4f}")
    print(
        f"training: {tr.time_s:.1f}s for {tr.steps} steps / {tr.epochs} epochs "
        f"({tr.examples_per_s} examples/s), peak RSS {tr.peak_memory_mb:.0f} MB, "
        f"cost ${tr.train_cost_usd:.4f} at ${tr.hourly_price_usd}/h"
    )
    print(f"load average during run (1/5/15 min): {os.getloadavg()}")
    print(f"distill wall (incl. loading, evaluation): {wall:.1f}s")
    texts = preds["text"].tolist() if preds is not None else []
    if texts:
        gold = preds["gold"].tolist()
        for dtype in ("float32", "int8"):
            for bs in (32, 64):
                rate, labs = _throughput(out, texts, bs, dtype)
                acc = sum(a == b for a, b in zip(labs, gold, strict=True)) / len(gold)
                print(
                    f"prediction {dtype:7s} batch {bs}: {rate:.1f} texts/s (median of 3 passes over "
                    f"{len(texts)} texts), accuracy {acc:.4f}"
                )
    print(f"run.json inference: {run.inference}")


def _bbc_file(work: Path, n: int) -> Path:
    from promptclf.data.tables import bbc_sample

    return write_table(bbc_sample(n, seed=0)[["id", "text", "label"]], work / f"bbc{n}.csv")


def _random_llama_8b(folder: Path) -> Path:
    """An 8B-shaped Llama with random bf16 weights, saved with the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from promptclf.resources import smollm2_gguf

    if (folder / "config.json").exists():
        return folder
    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = LlamaConfig(**LLAMA3_8B, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.set_default_dtype(torch.bfloat16)  # build in bf16 directly: 16 GB, not 32 GB, of GPU memory
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return folder


def _smollm2_folder(folder: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptclf.resources import smollm2_gguf

    if (folder / "config.json").exists():
        return folder
    gguf = smollm2_gguf()
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    return folder


def bench_gpu(a: argparse.Namespace, work: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    if not torch.cuda.is_available():
        print("== GPU section skipped: CUDA is not available on this machine")
        return
    data = _bbc_file(work, 400)
    models = {
        "llama-3-8b-shape (random)": _random_llama_8b(work / "llama8b"),
        "SmolLM2-135M": _smollm2_folder(work / "smollm2"),
    }
    print(f"== QLoRA on {torch.cuda.get_device_name(0)}")
    for name, path in models.items():
        tok = AutoTokenizer.from_pretrained(path)
        for padding in ("dynamic", "max_length"):
            opts = DistillOptions.build(
                student=str(path),
                method="qlora",
                head="cls",
                train_on="gold",
                max_length=512,
                batch_size=4,
                grad_accum=1,
                max_steps=a.gpu_steps,
                eval_steps=a.gpu_steps,
                patience=0,
                padding=padding,
                seed=a.seed,
            )
            out = work / f"gpu-{path.name}-{padding}"
            run = distill(data, out, opts, restart=True)
            tr = run.train
            import pandas as pd

            texts = pd.read_csv(data, keep_default_na=False)["text"].tolist()
            real = statistics.mean(min(len(ids), 512) for ids in tok(texts, add_special_tokens=True)["input_ids"])
            per_seq = real if padding == "dynamic" else 512
            print(
                f"{name:28s} padding={padding:10s} peak {tr.peak_memory_mb / 1024:.2f} GiB  "
                f"{tr.examples_per_s:.2f} ex/s  ~{tr.examples_per_s * real:.0f} real tokens/s  "
                f"(~{tr.examples_per_s * per_seq:.0f} processed tokens/s)  train {tr.time_s:.1f}s  "
                f"predict {run.items_per_s:.1f} items/s"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="minilm-lora")
    p.add_argument("--method", choices=["lora", "full"])
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-length", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lora-r", type=int)
    p.add_argument("--lora-alpha", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher-labels", help="train on this labeled file's teacher labels instead of BBC gold")
    p.add_argument("--gpu", action="store_true", help="also run the QLoRA GPU section (skipped without CUDA)")
    p.add_argument("--gpu-only", action="store_true")
    p.add_argument("--gpu-steps", type=int, default=20)
    p.add_argument("--work", help="folder for data and run folders (default: a temporary one)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_distill_") as tmp:
        work = Path(a.work) if a.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not a.gpu_only:
            bench_cpu(a, work)
        if a.gpu or a.gpu_only:
            bench_gpu(a, work)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
