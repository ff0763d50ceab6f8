"""Interrupt ``promptclf label`` for real (SIGINT, SIGKILL) and resume it with the same command.

The CLI runs as a subprocess against llama.cpp through a :class:`FakeServer` that adds latency
so the run is slow enough to interrupt midway (after the proxy has answered some requests).
Rerunning the same command must give exactly the output of an uninterrupted run (temperature 0,
finished responses served from the SQLite store), and no request body may be answered twice
across the interrupted run and its resumption: nothing is paid for twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from promptclf.data.tables import BBC_TOPICS
from promptclf.testing.fake_server import FakeServer, Upstream

pytestmark = pytest.mark.server

TOPICS = ",".join(BBC_TOPICS)
COMPARE = ["id", "text", "pred_label", "pred_status", "pred_reason", "pred_request"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from promptclf.data.tables import bbc_sample

    d = tmp_path_factory.mktemp("resume")
    df = bbc_sample(8, seed=11)[["id", "text", "label"]]
    df["text"] = df["text"].str.slice(0, 120)
    df.to_csv(d / "news.csv", index=False)
    return d


@pytest.fixture(scope="module")
def proxy(llama_server) -> Iterator[FakeServer]:
    # One proxy (one base URL) for the baseline and the resumed runs: the base URL is part of
    # each request's cache key, so the outputs, request ids included, must match exactly.
    with FakeServer(Upstream(llama_server.root)) as p:
        yield p


def _cmd(workdir: Path, proxy: FakeServer, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "promptclf", "label", str(workdir / "news.csv"), "-o", str(out),
        "--provider", "openai", "--base-url", proxy.base_url, "--model", "smollm2", "--labels", TOPICS,
        "--batch-size", "2", "--concurrency", "1", "--max-chars", "120", "--max-tokens", "40",
        "--max-reasks", "1", "--timeout", "120",
    ]  # fmt: skip


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": "sk-resume-test", "HF_HUB_OFFLINE": "1", "PROMPTCLF_STORE": str(store)}


@pytest.fixture(scope="module")
def baseline(workdir: Path, proxy: FakeServer) -> pd.DataFrame:
    """An uninterrupted run with its own store."""
    out = workdir / "baseline.csv"
    res = subprocess.run(
        _cmd(workdir, proxy, out), env=_env(workdir / "baseline.sqlite"), capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return pd.read_csv(out, dtype=str, keep_default_na=False)


def _default_sigint() -> None:
    """In the child: SIGINT as at a terminal. A test run started in the background by a
    non-interactive shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_and_resume(
    workdir: Path, proxy: FakeServer, sig: signal.Signals, name: str
) -> tuple[int, str, Path, pd.DataFrame | None]:
    store = workdir / f"{name}.sqlite"
    out = workdir / f"{name}.csv"
    proxy.reset()
    proxy.latency_s = 1.0
    try:
        proc = subprocess.Popen(
            _cmd(workdir, proxy, out),
            env=_env(store),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_sigint,
        )
        # Interrupt once two answers went back and the third request is waiting in the proxy
        # (concurrency 1: the first two are in the store by then).
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if len(proxy.answered_hashes()) >= 2 and len(proxy.chat_records()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()[1][-2000:]}"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        first_rc = proc.returncode
        first_answered = len(proxy.answered_hashes())
        partial = pd.read_csv(out, dtype=str, keep_default_na=False) if out.exists() else None
        proxy.latency_s = 0.0
        res = subprocess.run(_cmd(workdir, proxy, out), env=_env(store), capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    finally:
        proxy.latency_s = 0.0
    answered = proxy.answered_hashes()
    assert len(answered) == len(set(answered)), "a request answered in the interrupted run was sent again"
    usage = json.loads((out.with_name(out.stem + ".run") / "run.json").read_text())["usage"]
    assert usage["cached_requests"] >= first_answered >= 2
    return first_rc, err, out, partial


def test_sigint_then_rerun_matches_uninterrupted(workdir: Path, proxy: FakeServer, baseline: pd.DataFrame):
    rc, err, out, partial = _interrupt_and_resume(workdir, proxy, signal.SIGINT, "sigint")
    assert rc == 130, err[-2000:]
    assert "rerun the same command to resume" in err
    # Ctrl-C still writes every row: the finished ones labeled, the rest marked to rerun.
    assert partial is not None and list(partial["id"]) == list(baseline["id"])
    todo = partial[partial["pred_reason"].str.contains("interrupted")]
    assert len(todo) >= 2 and set(todo["pred_status"]) == {"error"}
    resumed = pd.read_csv(out, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(resumed[COMPARE], baseline[COMPARE])


def test_sigkill_then_rerun_matches_uninterrupted(workdir: Path, proxy: FakeServer, baseline: pd.DataFrame):
    rc, _, out, _ = _interrupt_and_resume(workdir, proxy, signal.SIGKILL, "sigkill")
    assert rc == -signal.SIGKILL
    resumed = pd.read_csv(out, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(resumed[COMPARE], baseline[COMPARE])
