"""The whole loop on BBC News with a simulated teacher: label → review → distill (4 ways) → report.

A 70B teacher cannot run here, so the simulated teacher (``promptclf.testing.sim_teacher``) stands in for it: a real
OpenAI-compatible server on 127.0.0.1 that answers from the gold labels at 85% accuracy, errs
toward the most similar class near class boundaries, and returns logprobs (lower confidence on
wrong answers). Every figure below is measured against that SIMULATED teacher.

Steps, each through the ``promptclf`` CLI as a user runs it (subprocesses):

1. a seeded stratified BBC News sample, split into a training pool and a gold test split; the
   test split is labeled by the teacher only to measure the teacher, never trained on;
2. ``promptclf label --provider openai --base-url <simulated teacher>`` on both;
3. ``promptclf review`` on the training pool's labels (top 10%, precision with gold);
4. ``promptclf distill`` four MiniLM LoRA students on the pool: hard labels, ``--soft``,
   ``--exclude`` the flagged rows, and ``--corrections`` (the flagged rows corrected from gold,
   as a person checking the queue would);
5. ``promptclf report`` over the teacher's test run and the students.

Targets: (1) a student on the teacher's labels is at least as accurate as the teacher on the
gold test rows; (2) the review queue's top 10% holds wrong labels at >= 3x the teacher's error rate.

    OMP_NUM_THREADS=1 python bench/bench_loop.py > bench/results/loop.txt   # ~18 min on 2 cores at load ~17
    python bench/bench_loop.py --n 250 --epochs 0.5                          # a quick look (plumbing only)

Figures go to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # promptclf from this checkout

from promptclf.data.tables import bbc_sample, read_table, stratified_split, write_table  # noqa: E402
from promptclf.testing.sim_teacher import SimTeacher  # noqa: E402

T = "simulated teacher"


def _say(msg: str) -> None:
    print(f"[bench_loop] {msg}", file=sys.stderr, flush=True)


def _cli(args: list[str], env: dict[str, str]) -> str:
    """Run ``promptclf ARGS``; its stderr (progress) passes through; returns stdout."""
    t0 = time.perf_counter()
    _say("promptclf " + " ".join(args))
    res = subprocess.run(
        [sys.executable, "-m", "promptclf", *args], env=env, stdout=subprocess.PIPE, stderr=sys.stderr, text=True
    )
    if res.returncode != 0:
        raise SystemExit(f"promptclf {args[0]} failed with exit code {res.returncode}")
    _say(f"  done in {time.perf_counter() - t0:.0f}s")
    return res.stdout


def _cli_parallel(jobs: dict[str, list[str]], env: dict[str, str]) -> None:
    """Run several ``promptclf`` commands at once (each with its own stderr log beside nothing else)."""
    procs = {}
    for name, args in jobs.items():
        _say("promptclf " + " ".join(args) + "   [concurrently]")
        procs[name] = subprocess.Popen([sys.executable, "-m", "promptclf", *args], env=env, stdout=subprocess.DEVNULL)
    failed = [name for name, pr in procs.items() if pr.wait() != 0]
    if failed:
        raise SystemExit(f"promptclf distill failed for: {', '.join(failed)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="BBC News articles sampled (stratified)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="gold test split, never trained on")
    p.add_argument("--accuracy", type=float, default=0.85, help="the simulated teacher's accuracy")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--top", default="10%", help="review queue size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sequential", action="store_true", help="train the students one after another (default: all four at once)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per student when training concurrently")
    p.add_argument("--work", help="folder for data, runs and the report (default: a temporary one)")
    a = p.parse_args()

    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_loop_") as tmp:
        work = Path(a.work) if a.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs = work / "runs"
        store = str(work / "store.sqlite")
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "TOGETHER_API_KEY")}
        env["PROMPTCLF_STORE"] = store

        df = bbc_sample(a.n, seed=a.seed)[["id", "text", "label"]]
        train_pos, test_pos = stratified_split(df["label"].tolist(), a.test_fraction, seed=a.seed)
        train_csv = write_table(df.iloc[train_pos].reset_index(drop=True), work / "pool.csv")
        test_csv = write_table(df.iloc[test_pos].reset_index(drop=True), work / "test.csv")
        _say(f"BBC News: {len(train_pos)} pool / {len(test_pos)} gold test articles in {work}")

        from promptclf.store import Store

        st = Store(store)  # the teacher's embeddings are cached here, so the review reuses them
        teacher = SimTeacher(df["text"].tolist(), df["label"].tolist(), accuracy=a.accuracy, seed=a.seed, store=st)
        st.close()
        label_common = ["--provider", "openai", "--model", "simulated-teacher", "--batch-size", "10"]
        label_common += ["--concurrency", "4", "--max-chars", "1500", "--store", store, "-q"]
        t0 = time.perf_counter()
        with teacher:
            label_common += ["--base-url", teacher.base_url]
            _cli(["label", str(train_csv), "-o", str(runs / "teacher-pool.csv"), "--name", f"{T} (pool)"]
                 + label_common, env)  # fmt: skip
            _cli(["label", str(test_csv), "-o", str(runs / "teacher-test.csv"), "--name", T] + label_common, env)
        label_s = time.perf_counter() - t0

        pool_lab = read_table(runs / "teacher-pool.csv")
        test_lab = read_table(runs / "teacher-test.csv")
        test_run = json.loads((runs / "teacher-test.run" / "run.json").read_text())

        t0 = time.perf_counter()
        queue = work / "review.csv"
        review_out = _cli(
            ["review", str(runs / "teacher-pool.csv"), "-o", str(queue), "--gold-col", "label", "--top", a.top,
             "--store", store],
            env,
        )  # fmt: skip
        review_s = time.perf_counter() - t0
        summary = json.loads(queue.with_suffix(".json").read_text())
        q = read_table(queue)
        # A person checks every flagged row against the article and writes the right label where it is wrong.
        q["corrected"] = [g if g != lab else "" for g, lab in zip(q["label"], q["pred_label"], strict=True)]
        checked = write_table(q, work / "review.checked.csv")

        common = ["--recipe", "minilm-lora", "--epochs", f"{a.epochs:g}", "--max-length", str(a.max_length)]
        common += ["--eval", str(runs / "teacher-test.csv"), "--gold-col", "label", "--seed", str(a.seed)]
        students = {
            "hard": [],
            "soft": ["--soft", "--temperature", f"{a.temperature:g}"],
            "flagged removed": ["--exclude", str(queue)],
            "flagged corrected": ["--corrections", str(checked)],
        }
        outs = {name: runs / f"student-{name.replace(' ', '-')}" for name in students}
        jobs = {
            name: ["distill", str(runs / "teacher-pool.csv"), "-o", str(outs[name]), "--name", f"student, {name}",
                   "--restart", *common, *extra]
            for name, extra in students.items()
        }  # fmt: skip
        t0 = time.perf_counter()
        if a.sequential:
            for args in jobs.values():
                _cli(args, env)
        else:
            # On a shared 2-core machine four 1-thread trainings finish sooner than four 2-thread ones in a row.
            _cli_parallel({n: [*args, "--threads", str(a.threads)] for n, args in jobs.items()}, env)
        distill_s = time.perf_counter() - t0
        results = {name: (out, json.loads((out / "run.json").read_text())) for name, out in outs.items()}

        report_dir = work / "report"
        _cli(["report", str(runs / "teacher-test.run"), *[str(o) for o, _ in results.values()], "-o", str(report_dir),
              "--title", f"The loop on BBC News with a {T} (not a real LLM)"], env)  # fmt: skip

        # ------------------------------------------------------------------ figures
        ok_pool = pool_lab["pred_status"] == "ok"
        pool_err = float((pool_lab["pred_label"] != pool_lab["label"]).mean())
        teacher_acc = float((test_lab["pred_label"] == test_lab["label"]).mean())
        has_probs = float((pool_lab["pred_probs"] != "").mean()) if "pred_probs" in pool_lab.columns else 0.0
        g = summary["gold"]
        at10 = g["at"]["10%"]
        print(f"== The loop on BBC News with a {T} (an OpenAI-compatible server answering from gold; NOT a real LLM)")
        print(
            f"settings: {a.n} articles (seed {a.seed}), {len(train_pos)} pool / {len(test_pos)} gold test rows; "
            f"{T} accuracy asked {a.accuracy}; students: MiniLM LoRA (recipe minilm-lora), epochs {a.epochs:g}, "
            f"max_length {a.max_length}, soft T={a.temperature:g}; review: top {a.top}, 5 folds, 10 neighbours; "
            + (
                "students trained one after another"
                if a.sequential
                else f"4 students trained at once, {a.threads} torch thread(s) each"
            )
            + f", {distill_s:.0f}s for all four"
        )
        print(
            f"{T} labels: pool {int(ok_pool.sum())}/{len(pool_lab)} ok, error rate on the pool {pool_err:.4f}; "
            f"rows with pred_probs {has_probs:.1%}; labeling {label_s:.0f}s"
        )
        print(
            f"{T} accuracy on the {len(test_lab)} gold test rows: {teacher_acc:.4f} "
            f"(run.json: {test_run['metrics']['accuracy']:.4f})"
        )
        print(f"review ({review_s:.0f}s): " + " | ".join(line for line in review_out.strip().splitlines()[:-1]))
        ratio = at10["precision"] / g["error_rate"] if g["error_rate"] else float("nan")
        print(
            f"review queue top 10% (k={at10['k']}): precision {at10['precision']:.4f} vs {T} error rate "
            f"{g['error_rate']:.4f} on the reviewed rows -> {ratio:.2f}x (recall {at10['recall']})"
        )
        best = 0.0
        print(f"students (MiniLM LoRA on the {T}'s pool labels), accuracy on the {len(test_lab)} gold test rows:")
        for name, (_, run) in results.items():
            m, tr, d = run["metrics"], run["train"], run["data"]
            best = max(best, m["accuracy"])
            ci = m.get("accuracy_ci") or [float("nan"), float("nan")]
            print(
                f"  {name:18s} accuracy {m['accuracy']:.4f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})  macro-F1 "
                f"{m['macro_f1']:.4f}  vs {T} {m['accuracy'] - teacher_acc:+.4f}  agreement with {T} "
                f"{run['teacher_agreement']:.4f}  train rows {d['train_rows']}"
                + "".join(f", {k} {d[k]}" for k in ("soft_rows", "excluded", "corrected") if k in d)
                + f"  train {tr['time_s']:.0f}s ({tr['examples_per_s']} ex/s)"
            )
        hard = results["hard"][1]["metrics"]["accuracy"]
        print(
            f"target 1 (a student >= the {T} on gold test rows): hard {hard:.4f}, best {best:.4f} vs {T} "
            f"{teacher_acc:.4f} -> {'MET' if best >= teacher_acc else 'NOT MET'}"
            f" (hard-label student {'meets' if hard >= teacher_acc else 'misses'} it alone)"
        )
        print(
            f"target 2 (review top 10% >= 3x the {T}'s error rate): {ratio:.2f}x -> {'MET' if ratio >= 3 else 'NOT MET'}"
        )
        print(f"report: {report_dir / 'index.html'} (every figure from the {T})")
        print(f"load average (1/5/15 min) at the end: {os.getloadavg()} (machine shared with other work)")
        print(f"total wall {time.perf_counter() - t_all:.0f}s")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
