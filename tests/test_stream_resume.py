"""``promptclf label`` writes its output chunk by chunk: SIGKILL it mid-run and the finished chunks
are on disk as a valid file; the same command then completes it, every row once, in input order.

The CLI runs as a subprocess against llama.cpp (SmolLM2) through a :class:`FaultProxy` that adds
latency so the run can be killed between chunks (``--chunk-rows 2``, one request per chunk).
No request body may be answered twice across the killed run and its rerun.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from faultproxy import FaultProxy

from promptclf.data import BBC_TOPICS

pytestmark = pytest.mark.server

COMPARE = ["id", "text", "pred_label", "pred_status", "pred_reason", "pred_request"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from promptclf.data import bbc_sample

    d = tmp_path_factory.mktemp("stream-resume")
    df = bbc_sample(6, seed=21)[["id", "text", "label"]]
    df["text"] = df["text"].str.slice(0, 80)
    df.to_csv(d / "news.csv", index=False)
    return d


@pytest.fixture(scope="module")
def proxy(llama_server) -> Iterator[FaultProxy]:
    with FaultProxy(llama_server.root) as p:  # one base URL for every run: it is part of the cache key
        yield p


def _cmd(workdir: Path, proxy: FaultProxy, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "promptclf", "label", str(workdir / "news.csv"), "-o", str(out),
        "--provider", "openai", "--base-url", proxy.base_url, "--model", "smollm2", "--labels", ",".join(BBC_TOPICS),
        "--batch-size", "2", "--chunk-rows", "2", "--concurrency", "1", "--max-chars", "100", "--max-tokens", "40",
        "--max-reasks", "1", "--timeout", "120",
    ]  # fmt: skip


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": "sk-stream-test", "HF_HUB_OFFLINE": "1", "PROMPTCLF_STORE": str(store)}


def test_killed_run_leaves_whole_chunks_and_rerun_completes_in_order(workdir: Path, proxy: FaultProxy) -> None:
    ids = pd.read_csv(workdir / "news.csv", dtype=str)["id"].tolist()
    base = subprocess.run(
        _cmd(workdir, proxy, workdir / "baseline.csv"), env=_env(workdir / "baseline.sqlite"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert base.returncode == 0, base.stderr[-3000:]
    baseline = pd.read_csv(workdir / "baseline.csv", dtype=str, keep_default_na=False)
    assert baseline["id"].tolist() == ids

    out, store = workdir / "killed.csv", workdir / "killed.sqlite"
    proxy.reset()
    proxy.latency_s = 1.0
    try:
        proc = subprocess.Popen(
            _cmd(workdir, proxy, out), env=_env(store), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        # Kill once two answers went back and the third request waits in the proxy: with one
        # request per chunk, at least the first chunk has been appended by then.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if len(proxy.answered_hashes()) >= 2 and len(proxy.chat_records()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()[1][-2000:]!r}"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        partial = pd.read_csv(out, dtype=str, keep_default_na=False)
        proxy.latency_s = 0.0
        res = subprocess.run(_cmd(workdir, proxy, out), env=_env(store), capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    finally:
        proxy.latency_s = 0.0
    # The killed run's file: whole chunks, an in-order prefix of the input, every row finished.
    assert 2 <= len(partial) < len(ids) and len(partial) % 2 == 0
    assert partial["id"].tolist() == ids[: len(partial)]
    assert (partial["pred_status"] != "").all()
    pd.testing.assert_frame_equal(partial[COMPARE], baseline[COMPARE].iloc[: len(partial)])
    # The rerun: every row once, in input order, the same labels as the uninterrupted run.
    resumed = pd.read_csv(out, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(resumed[COMPARE], baseline[COMPARE])
    answered = proxy.answered_hashes()
    assert len(answered) == len(set(answered)), "a request answered before the kill was sent again"
