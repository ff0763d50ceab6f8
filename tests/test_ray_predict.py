"""``predict --engine ray`` on a real local Ray cluster (127.0.0.1) with a real MiniLM student.

Slow tier. Three failures a corpus run meets, each checked on the output itself (every input row
once, in input order, with the prediction a single process gives it):

- the driver killed mid-run (SIGKILL): the rerun skips the finished shards and writes the rest;
  the input is a ``save_to_disk`` dataset folder, read as its Arrow shards, through the CLI's own
  local cluster;
- a worker actor killed mid-run (SIGKILL): Ray restarts it and runs its batch again;
- a corrupt shard: one error naming it, exit code 2, the other shards written; through the CLI
  attached to a running cluster with ``--address``.

About 3-6 minutes on 2 busy cores, most of it Ray starting worker processes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from promptclf.data.tables import bbc_sample  # noqa: E402
from promptclf.predict.options import RayOptions  # noqa: E402
from promptclf.predict.ray_engine import predict_shards, start_local_cluster  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _env() -> dict[str, str]:
    """This process's environment as it is now (a cluster started here may have set RAY_AUTH_MODE)."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def ray_student(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's shared student where the suite has one, else a MiniLM LoRA trained briefly here."""
    try:
        return Path(request.getfixturevalue("student"))
    except pytest.FixtureLookupError:
        pass
    pytest.importorskip("peft")
    from promptclf.data.tables import write_table
    from promptclf.distill.options import DistillOptions
    from promptclf.distill.run import distill

    work = tmp_path_factory.mktemp("ray_student")
    df = bbc_sample(40, seed=2)[["text", "label"]]
    df["text"] = df["text"].str.slice(0, 200)
    df["pred_label"], df["pred_status"] = df["label"], "ok"
    data = write_table(df, work / "teacher.csv")
    opts = DistillOptions.build(recipe="minilm-lora", max_steps=2, max_length=32, test_fraction=0.2, patience=0)
    distill(data, work / "student", opts)
    return work / "student"


def _rows(n: int, seed: int) -> pd.DataFrame:
    """``n`` rows (BBC texts, repeated as needed) with a unique ``id`` to check order and uniqueness."""
    base = bbc_sample(None, seed=seed)
    df = base.iloc[np.arange(n) % len(base)][["text", "label"]].reset_index(drop=True)
    df["text"] = df["text"].str.slice(0, 300)
    df.insert(0, "id", [f"s{seed}-{i}" for i in range(n)])
    return df


@functools.lru_cache(maxsize=2)
def _loaded(student: Path) -> Any:
    from promptclf.predict.student import Student

    return Student.load(student)


def _reference(student: Path, texts: list[str]) -> np.ndarray:
    """What a single process predicts for ``texts`` (the Ray output must say the same)."""
    return _loaded(student).predict_proba(texts, batch_size=64)


def _check_output(out: Path, expected: dict[str, pd.DataFrame], student: Path) -> None:
    """Every shard whole: its input rows once each, in order, all columns; and at 25 rows spread over each
    shard (first and last included), the prediction a single process gives that row's text."""
    labels = _loaded(student).labels
    for name, src in expected.items():
        got = pd.read_parquet(out / name)
        assert got["id"].tolist() == src["id"].tolist(), f"{name}: rows lost, repeated or out of order"
        assert got["text"].tolist() == src["text"].tolist()
        at = np.unique(np.linspace(0, len(src) - 1, 25).round().astype(int))
        got = got.iloc[at]
        ref = _reference(student, src["text"].iloc[at].tolist())
        top2 = np.sort(ref, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 1e-4  # a near-tie may fall either way in another batch
        want = np.array([labels[j] for j in ref.argmax(1)])
        assert (got["pred_label"].to_numpy()[clear] == want[clear]).all(), f"{name}: predictions differ"
        assert np.allclose(got["pred_prob"].to_numpy(), ref.max(1), atol=1e-4)


def _wait_for(cond: Any, timeout: float, what: str) -> None:
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def _outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.parquet") if not p.name.startswith("."))


def test_driver_killed_mid_run_then_rerun_skips_finished_shards(ray_student: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    df = _rows(2000, seed=1)
    datasets.Dataset.from_pandas(df).save_to_disk(str(tmp_path / "ds"), num_shards=8)
    names = [f"data-{i:05d}-of-00008.arrow" for i in range(8)]
    expected = {}
    start = 0
    for name in names:
        n = len(datasets.Dataset.from_file(str(tmp_path / "ds" / name)))
        expected[name.replace(".arrow", ".parquet")] = df.iloc[start : start + n].reset_index(drop=True)
        start += n
    assert start == len(df)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "promptclf", "predict", str(ray_student), str(tmp_path / "ds"), "-o", str(out),
           "--engine", "ray", "--workers", "2", "--batch-rows", "16"]  # fmt: skip
    # Small batches: shards finish one by one, seconds apart, so the kill after the second lands mid-run on
    # any machine (with the default 512 rows a batch spans several 250-row shards, which then finish together).
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: len(_outputs(out)) >= 2 or proc.poll() is not None, 900, "two finished shards")
        tree = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Ray's workers may outlive the driver for a moment and finish a shard in it: end them all first,
    # so the shards counted as done before the rerun are exactly those that were.
    for p in tree:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(tree, timeout=30)
    done_before = _outputs(out)
    assert 2 <= len(done_before) < 8, f"the kill came too late to test a resume: {len(done_before)} of 8 done"
    mtimes = {p: p.stat().st_mtime_ns for p in done_before}
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "_promptclf_predict.json").read_text())
    status = {s["name"]: s["status"] for s in summary["shards"]}
    assert sorted(n for n, s in status.items() if s == "skipped") == sorted(
        p.name.replace(".parquet", ".arrow") for p in done_before
    )
    assert {p: p.stat().st_mtime_ns for p in done_before} == mtimes  # finished shards untouched
    assert summary["rows"] == sum(
        len(expected[n.replace(".arrow", ".parquet")]) for n, s in status.items() if s == "done"
    )
    assert "[predict ray] shards 8/8" in res.stderr
    assert not list(out.rglob(".*.tmp"))
    _check_output(out, expected, ray_student)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray cluster started in this process as the CLI starts one; yields its address (127.0.0.1)."""
    start_local_cluster(num_cpus=2, object_store_mb=256)
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:"), address
        yield address
    finally:
        ray.shutdown()


def _write_shards(folder: Path, n_shards: int, rows: int, seed: int) -> dict[str, pd.DataFrame]:
    folder.mkdir(parents=True)
    df = _rows(n_shards * rows, seed)
    expected = {}
    for i in range(n_shards):
        part = df.iloc[i * rows : (i + 1) * rows].reset_index(drop=True)
        part.to_parquet(folder / f"part-{i:03d}.parquet", index=False, row_group_size=max(1, rows // 3))
        expected[f"part-{i:03d}.parquet"] = part
    return expected


def _actor_pids() -> list[int]:
    """This process's Ray worker processes that hold a student (their title names the actor class)."""
    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "ShardPredictor" in " ".join(p.cmdline()):
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


def test_worker_killed_mid_run_output_complete_each_row_once(ray_student: Path, tmp_path: Path, cluster: str) -> None:
    expected = _write_shards(tmp_path / "corpus", 6, 1000, seed=2)
    out = tmp_path / "out"
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(predict_shards(ray_student, tmp_path / "corpus", out, RayOptions(workers=2), progress=False))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()

    # Kill a worker once its student is loaded (its memory past 500 MB): from then on it predicts batches.
    def loaded() -> list[int]:
        pids = []
        for pid in _actor_pids():
            try:
                if psutil.Process(pid).memory_info().rss > 500 * 1024**2:
                    pids.append(pid)
            except psutil.Error:
                continue
        return pids

    _wait_for(lambda: len(loaded()) >= 2 or not t.is_alive(), 900, "two workers with the student loaded")
    time.sleep(2)
    victims = loaded()
    assert victims and t.is_alive(), "the run ended before a worker could be killed"
    os.kill(victims[0], signal.SIGKILL)
    t.join(900)
    assert not t.is_alive(), "the run did not finish after the kill"
    assert not errors, errors
    run = result[0]
    assert [s.status for s in run.shards] == ["done"] * 6
    assert run.rows == 6000
    assert not psutil.pid_exists(victims[0]) or psutil.Process(victims[0]).status() == psutil.STATUS_ZOMBIE
    _check_output(out, expected, ray_student)


def test_corrupt_shard_is_named_once_and_the_others_finish(ray_student: Path, tmp_path: Path, cluster: str) -> None:
    corpus = tmp_path / "corpus"
    expected = _write_shards(corpus, 3, 200, seed=3)
    # Two more formats in the same folder, and one Parquet file cut in half.
    extra = _rows(150, seed=4)
    extra.iloc[:80].to_csv(corpus / "more.csv", index=False)
    extra.iloc[80:].to_json(corpus / "more2.jsonl", orient="records", lines=True)
    expected["more.parquet"] = extra.iloc[:80].reset_index(drop=True)
    expected["more2.parquet"] = extra.iloc[80:].reset_index(drop=True)
    good = (corpus / "part-001.parquet").read_bytes()
    (corpus / "part-999.parquet").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "promptclf", "predict", str(ray_student), str(corpus), "-o", str(out),
         "--engine", "ray", "--address", cluster],
        env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("promptclf: error")]
    assert len(errors) == 1 and "1 of 6 shards failed: part-999.parquet" in errors[0], res.stderr[-2000:]
    assert "part-001.parquet:" not in errors[0]
    assert "1 failed" in res.stderr  # the progress line counts it
    assert sorted(p.name for p in _outputs(out)) == sorted(expected)
    summary = json.loads((out / "_promptclf_predict.json").read_text())
    assert {s["name"]: s["status"] for s in summary["shards"]}["part-999.parquet"] == "failed"
    _check_output(out, expected, ray_student)


def test_export_folder_on_ray_matches_onnx_in_process(ray_student: Path, tmp_path: Path, cluster: str) -> None:
    """``predict --engine ray`` takes an ONNX export folder too: every row once, in order, as ONNX Runtime says."""
    pytest.importorskip("onnxruntime")
    from promptclf.export.onnx_export import export_onnx
    from promptclf.export.onnx_student import OnnxStudent

    exported = export_onnx(ray_student, tmp_path / "onnx").folder
    expected = _write_shards(tmp_path / "corpus", 2, 150, seed=5)
    out = tmp_path / "out"
    run = predict_shards(exported, tmp_path / "corpus", out, RayOptions(workers=1), progress=False)
    assert [s.status for s in run.shards] == ["done"] * 2 and run.rows == 300
    onnx = OnnxStudent.load(exported)
    for name, src in expected.items():
        got = pd.read_parquet(out / name)
        assert got["id"].tolist() == src["id"].tolist()
        ref = onnx.predict_proba(src["text"].tolist())
        assert got["pred_label"].tolist() == [onnx.labels[j] for j in ref.argmax(1)]
        assert np.allclose(got["pred_prob"].to_numpy(), ref.max(1), atol=1e-5)
