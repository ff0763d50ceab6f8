"""``torchrun --nproc_per_node 2 -m promptclf distill``: real MiniLM LoRA on BBC News in 2 CPU processes (gloo).

Checks that the DDP student loads and predicts like a single-process one trained with the same
effective batch (2 processes x 8 = 1 x 16) and seed, that only rank 0 writes and prints, and that
a run whose torchrun is SIGKILLed after a checkpoint takes its workers with it and resumes from it.

"Like a single-process one" means: the same run-folder files, the same label set, every test row
predicted, and on the gold test rows the same label on at least 85% of rows and accuracy within
0.1. Not bit-identical: each rank draws its own dropout masks and pads its own half-batch.

Runtime on 2 loaded CPU cores (load average ~15): about 8 minutes (five torchrun launches, one in-process run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("peft")
psutil = pytest.importorskip("psutil")  # installed with accelerate

from promptclf.data.tables import bbc_sample, write_table  # noqa: E402
from promptclf.distill.options import DistillOptions  # noqa: E402
from promptclf.distill.run import distill  # noqa: E402
from promptclf.runs import load_run  # noqa: E402

pytestmark = pytest.mark.slow  # several processes training for real: the slow tier

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--recipe", "minilm-lora", "--max-length", "64", "--patience", "0", "--test-fraction", "0.25"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"  # one thread per rank: 2 ranks on 2 cores
    env.pop("PROMPTCLF_DEBUG", None)
    return env


def _torchrun() -> list[str]:
    # --standalone: a local rendezvous on a free port, so tests never collide on 29500
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "promptclf"]


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 BBC rows; the teacher label is the gold one (the runs are compared with each other, not with gold)."""
    df = bbc_sample(160, seed=7)[["id", "text", "label"]].copy()
    df["pred_label"], df["pred_status"] = df["label"], "ok"
    return write_table(df, tmp_path_factory.mktemp("ddp") / "labeled.csv")


@pytest.fixture(scope="module")
def ddp_run(labeled: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = labeled.parent / "ddp"
    cmd = [*_torchrun(), "distill", str(labeled), "-o", str(out), *COMMON, "--epochs", "1", "--batch-size", "8"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_ddp_student_loads_and_predicts_like_a_single_process_one(
    labeled: Path, ddp_run: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    from promptclf.predict.student import Student

    out2, res = ddp_run
    run2 = load_run(out2)
    assert run2.train.processes == 2 and run2.train.effective_batch_size == 16
    # rank 0 alone prints: one summary on stdout, one copy of each log line on stderr
    assert res.stdout.count("gold test (") == 1, res.stdout
    assert res.stderr.count("[distill] training minilm") == 1, res.stderr
    assert "x 2 processes (batch 8/process, 16 per step)" in res.stderr
    log = [json.loads(line) for line in (out2 / "train_log.jsonl").read_text().splitlines()]
    assert sum("eval_macro_f1" in r for r in log) == 1  # one evaluation (1 epoch), logged once, not once per rank

    out1 = labeled.parent / "single"
    opts = DistillOptions.build(
        recipe="minilm-lora", max_length=64, patience=0, test_fraction=0.25, epochs=1, batch_size=16
    )
    run1 = distill(labeled, out1, opts)
    assert run1.train.processes == 1 and run1.train.effective_batch_size == 16
    assert run1.train.steps == run2.train.steps  # the same number of optimizer steps

    assert sorted(p.name for p in out1.iterdir()) == sorted(p.name for p in out2.iterdir())
    assert run1.labels == run2.labels and run1.data == run2.data  # same split on every rank
    p1 = pd.read_csv(out1 / "predictions.csv", keep_default_na=False)
    p2 = pd.read_csv(out2 / "predictions.csv", keep_default_na=False)
    assert p1["text"].tolist() == p2["text"].tolist() and len(p2) == run2.n_items > 30

    student = Student.load(out2)
    again = student.predict(p2["text"].tolist(), batch_size=5)
    assert [lab for lab, _ in again] == p2["pred"].tolist()  # the saved DDP student reloads to its own predictions
    same = (p1["pred"] == p2["pred"]).mean()
    assert same >= 0.85, (same, run1.metrics["accuracy"], run2.metrics["accuracy"])
    assert abs(run1.metrics["accuracy"] - run2.metrics["accuracy"]) <= 0.1
    majority = p2["gold"].value_counts().iloc[0] / len(p2)
    assert run2.metrics["accuracy"] > majority + 0.2  # it learned something, not a constant


def test_ddp_run_killed_after_a_checkpoint_resumes(labeled: Path, tmp_path: Path) -> None:
    out = tmp_path / "resume"
    args = ["distill", str(labeled), "-o", str(out), *COMMON, "--max-steps", "12", "--eval-steps", "3"]
    args += ["--batch-size", "8", "--logging-steps", "1"]
    # its own session, so that one killpg reaches torchrun and both workers
    proc = subprocess.Popen(
        [*_torchrun(), *args], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    ckpt = out / "checkpoints" / "checkpoint-3"
    deadline = time.time() + 600
    try:
        while not (ckpt / "trainer_state.json").exists():
            assert proc.poll() is None, f"training exited early: {proc.stderr.read() if proc.stderr else ''}"
            assert time.time() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.05)
        time.sleep(1.0)  # a step or so past the checkpoint
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 2, workers
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # torchrun puts each worker in a session of its own: they must die with it (parent-death signal),
    # not train on as orphans beside the rerun
    gone, alive = psutil.wait_procs(workers, timeout=30)
    for w in alive:
        w.kill()
    assert not alive, f"workers outlived torchrun: {alive}"
    assert not (out / "run.json").exists()  # killed mid-training
    killed_log = (out / "train_log.jsonl").read_text().splitlines()
    assert killed_log, "the killed run logged no step"

    res = subprocess.run([*_torchrun(), *args], env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from" in res.stderr and "checkpoint-" in res.stderr
    assert "resumed at step" in res.stderr
    run = load_run(out)
    assert run.train.resumed_from_step >= 3 and run.train.steps == 12
    assert run.train.processes == 2
    assert run.train.time_s > run.train.session_time_s  # includes the killed session's time
    # the resumed session logged steps after the checkpoint only, not from step 1 again
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    resumed = steps[len(killed_log) :]
    assert resumed and min(resumed) > run.train.resumed_from_step, steps


SCRIPT = """
from promptclf.distill import distributed
from promptclf.distill.options import DistillData
from promptclf.distill.run import _same_data_on_every_rank
from promptclf.errors import TrainingError

distributed.setup()
r = distributed.rank()
print(f"rank {r}: broadcast {distributed.broadcast(f'from {r}')}; gathered {distributed.all_gather(r)}; "
      f"any {distributed.any_rank(r == 1)} {distributed.any_rank(False)}", flush=True)
same = DistillData(labels=["a", "b"], train_texts=["x", "y"], train_y=[0, 1], val_texts=["v"], val_y=[0])
_same_data_on_every_rank(same)
other = DistillData(labels=["a", "b"], train_texts=["x", "y" if r == 0 else "z"], train_y=[0, 1], val_texts=["v"], val_y=[0])
try:
    _same_data_on_every_rank(other)
except TrainingError as exc:
    print(f"rank {r}: refused: {exc}", flush=True)
distributed.teardown()
"""


def test_collectives_and_a_rank_with_other_data_is_refused(tmp_path: Path) -> None:
    """Real gloo collectives in 2 processes; ranks that prepared different training data stop with the reason."""
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for r in (0, 1):
        assert f"rank {r}: broadcast from 0; gathered [0, 1]; any True False" in res.stdout, res.stdout
        assert f"rank {r}: refused: the ranks prepared different training data" in res.stdout, res.stdout
    assert "every rank must read the same input file" in res.stdout


def test_qlora_lm_head_in_two_processes(tmp_path: Path) -> None:
    """QLoRA (real bitsandbytes 4-bit layers on CPU) with the LM head under torchrun: each rank scores its share
    of the validation texts and the gathered metric is the one a single process computes over all of them."""
    pytest.importorskip("bitsandbytes")
    import random

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from promptclf.resources import smollm2_gguf

    model_dir = tmp_path / "tinyllama"
    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tok), max_position_embeddings=512, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rng = random.Random(0)
    words = {"sport": "goal match team league cup final", "business": "shares profit market bank bond trade"}
    rows = [
        {"text": " ".join(rng.choices(words[lab].split(), k=rng.randint(4, 9))), "pred_label": lab}
        for lab in ("sport", "business")
        for _ in range(32)
    ]
    data = write_table(pd.DataFrame(rows), tmp_path / "two.csv")
    out = tmp_path / "q"
    cmd = [*_torchrun(), "distill", str(data), "-o", str(out), "--student", str(model_dir), "--method", "qlora"]
    cmd += ["--head", "lm", "--allow-cpu", "--max-steps", "16", "--eval-steps", "8", "--lr", "1e-2"]
    cmd += ["--batch-size", "4", "--max-length", "32", "--patience", "0", "--val-fraction", "0.25"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    run = load_run(out)
    tr = run.train
    assert tr.processes == 2 and tr.effective_batch_size == 8 and tr.steps == 16
    assert run.data.val_rows == 16  # an even share for each rank: 8 texts each
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval_macro_f1" in r]
    assert [r["step"] for r in evals] == [8, 16]  # once per evaluation, not once per rank
    if tr.reload_same_labels:  # the reloaded student gives the trained one's labels: metrics must agree
        assert tr.best_val_macro_f1 == pytest.approx(run.metrics_validation["macro_f1"], abs=1e-9)
