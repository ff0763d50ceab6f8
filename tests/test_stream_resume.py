"""``promptclf label`` writes its output chunk by chunk: SIGKILL it mid-run and the finished chunks
are on disk as a valid file; the same command then completes it, every row once, in input order.

The CLI runs as a subprocess with the real SmolLM2 scoring in-process (``--provider local``),
``--chunk-rows 4`` and two items per request, and is killed once two chunks are on disk. No
request is computed twice across the killed run and its rerun: the store's attempt log has at
most one fresh (``ok``) answer per request key, the rerun takes the finished ones from the store.
(``tests/test_resume.py`` kills the chat path, through a real HTTP server, the same way.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from promptclf.store import Store

pytestmark = pytest.mark.slow  # real training / kills: the slow tier

TOPICS = "business,entertainment,politics,sports,tech"
COMPARE = ["id", "text", "pred_label", "pred_status", "pred_reason", "pred_request"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from promptclf.data.tables import bbc_sample

    d = tmp_path_factory.mktemp("stream-resume")
    df = bbc_sample(24, seed=21)[["id", "text", "label"]]
    df["text"] = df["text"].str.replace("\n", " ").str.slice(0, 60)  # one line per row: rows counted by lines
    df.to_csv(d / "news.csv", index=False)
    return d


def _cmd(workdir: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "promptclf", "label", str(workdir / "news.csv"), "-o", str(out), "--provider", "local",
        "--labels", TOPICS, "--batch-size", "2", "--chunk-rows", "4", "--max-chars", "60",
    ]  # fmt: skip


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PROMPTCLF_STORE": str(store), "OMP_NUM_THREADS": "1"}


def _data_rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except OSError:
        return 0


def test_killed_run_leaves_whole_chunks_and_rerun_completes_in_order(workdir: Path) -> None:
    ids = pd.read_csv(workdir / "news.csv", dtype=str)["id"].tolist()
    base = subprocess.run(
        _cmd(workdir, workdir / "baseline.csv"), env=_env(workdir / "baseline.sqlite"),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert base.returncode == 0, base.stderr[-3000:]
    baseline = pd.read_csv(workdir / "baseline.csv", dtype=str, keep_default_na=False)
    assert baseline["id"].tolist() == ids

    out, store = workdir / "killed.csv", workdir / "killed.sqlite"
    proc = subprocess.Popen(_cmd(workdir, out), env=_env(store), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None and _data_rows(out) < 8:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()[1][-2000:]!r}"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    partial = pd.read_csv(out, dtype=str, keep_default_na=False)
    # The killed run's file: whole chunks, an in-order prefix of the input, every row finished.
    assert 8 <= len(partial) < len(ids) and len(partial) % 4 == 0
    assert partial["id"].tolist() == ids[: len(partial)]
    pd.testing.assert_frame_equal(partial[COMPARE], baseline[COMPARE].iloc[: len(partial)])
    fresh_before = sum(1 for a in Store(store).attempts() if a["outcome"] == "ok")
    assert fresh_before >= len(partial) // 2

    res = subprocess.run(_cmd(workdir, out), env=_env(store), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = pd.read_csv(out, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(resumed[COMPARE], baseline[COMPARE])
    fresh = Counter(a["key"] for a in Store(store).attempts() if a["outcome"] == "ok")
    assert max(fresh.values()) == 1, "a request answered before the kill was computed again"
    assert len(fresh) == len(ids) // 2  # every request of the job computed once, over both runs
    usage = json.loads((workdir / "killed.run" / "run.json").read_text())["usage"]
    assert usage["cached_requests"] >= fresh_before
