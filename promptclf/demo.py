"""The whole loop offline: BBC News → local LLM labels (zero- and few-shot) → MiniLM students → report.

Everything ships in packages (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, BBC News), so the
demo needs no key and no network. The sample is split once, stratified:

* ``train.csv``: the pool the student learns from, labeled few-shot by the LLM (the teacher);
* ``test.csv``: gold rows every run is scored on, so LLM and student numbers compare the
  same items. The LLM labels it zero-shot and few-shot (shots drawn from ``train.csv``).

Two students are trained: one on the few-shot LLM labels, one on the gold labels (the
ceiling for this student and data size). ``report/index.html`` puts it all side by side.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DemoSize:
    n_items: int  # articles sampled from BBC News
    test_fraction: float
    shots: int  # examples per class in the few-shot prompt
    max_chars: int  # item text in the prompt (title + first sentences carry the topic)
    epochs: float
    max_length: int  # student tokens per text


# Sized for 2 CPU cores: the local LLM scores roughly one item per second or two, so the LLM
# passes (test set twice, training pool once) dominate; MiniLM trains in a minute or two.
FULL = DemoSize(n_items=250, test_fraction=0.3, shots=2, max_chars=300, epochs=8, max_length=96)
QUICK = DemoSize(n_items=40, test_fraction=0.3, shots=1, max_chars=200, epochs=6, max_length=64)


log = logging.getLogger(__name__)


def _say(msg: str) -> None:
    log.info(msg)


def _trainable(labeled: Path) -> Path:
    """``labeled``, or a copy without the classes the teacher used fewer than twice.

    A weak teacher (SmolLM2-135M is one) may give a class a single label; a student cannot
    train and validate on one example, and distill rightly refuses. The demo drops those
    rows and says so rather than stopping; both students train on the same rows.
    """
    from .data.tables import read_table, write_table

    df = read_table(labeled)
    ok = df["pred_status"].str.lower() == "ok"
    counts = df.loc[ok, "pred_label"].value_counts()
    rare = sorted(str(lab) for lab, n in counts.items() if n < 2)
    if not rare:
        return labeled
    _say(f"the teacher used {', '.join(rare)} fewer than twice; leaving those rows out of training")
    out = labeled.with_name(labeled.stem + ".trainable.csv")
    write_table(df[~(ok & df["pred_label"].isin(rare))].reset_index(drop=True), out)
    return out


def run_demo(out_dir: str | Path = "demo", quick: bool = False, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Run the demo into ``out_dir``; returns the report paths plus ``runs`` (run folders) and ``seconds``.

    LLM runs always run the model (no response cache), so their speed is measured; finished
    student folders are reused on a rerun.
    """
    from .data.tables import bbc_sample, stratified_split, write_table
    from .distill.options import DistillOptions
    from .distill.run import distill
    from .label.labeler import label_file
    from .label.options import LabelOptions
    from .report.build import build_report

    t0 = time.perf_counter()
    size = QUICK if quick else FULL
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = bbc_sample(size.n_items, seed=seed)
    train_pos, test_pos = stratified_split(df["label"].tolist(), size.test_fraction, seed=seed)
    train_csv, test_csv = out / "train.csv", out / "test.csv"
    write_table(df.iloc[train_pos].reset_index(drop=True), train_csv)
    write_table(df.iloc[test_pos].reset_index(drop=True), test_csv)
    _say(f"BBC News sample: {len(train_pos)} train / {len(test_pos)} test articles in {out}")

    common: dict[str, Any] = {
        "provider": "local",
        "label_col": "label",
        "max_chars": size.max_chars,
        "seed": seed,
        "store": str(out / "store.sqlite"),
        "no_cache": True,  # the report compares speed: every run must really run the model
    }
    few = f"few-shot-{size.shots}"
    runs = out / "runs"
    _say("labeling the test set zero-shot with the local LLM")
    label_file(test_csv, runs / "zero-shot.csv", LabelOptions.build(**common, shots=0), "zero-shot", progress)
    _say(f"labeling the test set {few} (examples from train.csv)")
    few_opts = LabelOptions.build(**common, shots=size.shots, examples=str(train_csv))
    label_file(test_csv, runs / f"{few}.csv", few_opts, few, progress)
    _say(f"labeling the training pool {few}: the teacher's labels")
    label_file(train_csv, runs / f"{few}-train.csv", few_opts, f"{few}-train", progress)

    teacher_file = _trainable(runs / f"{few}-train.csv")
    student = {"epochs": size.epochs, "max_length": size.max_length, "seed": seed, "gold_col": "label"}
    eval_file = str(runs / f"{few}.csv")  # gold + the teacher's test labels → agreement on test rows
    _say(f"distilling a MiniLM student on the {few} labels")
    distill(
        teacher_file,
        runs / f"student-{few}",
        DistillOptions.build(recipe="minilm-lora", **student, train_on="teacher", eval_file=eval_file),
    )
    _say("distilling a MiniLM student on the gold labels (the ceiling)")
    distill(
        teacher_file,
        runs / "student-gold",
        DistillOptions.build(recipe="minilm-lora", **student, train_on="gold", eval_file=eval_file),
    )
    run_dirs = [runs / "zero-shot.run", runs / f"{few}.run", runs / f"student-{few}", runs / "student-gold"]
    title = "promptclf demo: prompting vs fine-tuning on BBC News" + (" (quick)" if quick else "")
    paths: dict[str, Any] = dict(build_report(run_dirs, out / "report", title=title))
    paths["runs"] = run_dirs
    paths["seconds"] = time.perf_counter() - t0
    return paths
