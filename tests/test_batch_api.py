"""``label --batch-api``: a job sent as a provider batch, against a local files + batches API.

The server (:class:`promptclf.testing.batch_api.BatchServer`) implements the OpenAI (and Together) batch endpoints;
its lines are answered by the real llama.cpp server in the happy-path test and, for the fault
tests, by its documented deterministic oracle (a real model takes minutes per request on the
loaded test machine). Faults: a batch that fails, one that expires part-way, lines that come
back with errors, output lines in another order, and a run SIGKILLed while polling, then
resumed: no second batch is created and the same batch is polled.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.data.tables import BBC_TOPICS
from promptclf.testing.batch_api import BatchServer, Faults
from promptclf.testing.fake_server import FakeServer, Responder

TOPICS = ",".join(BBC_TOPICS)
COLS = ["id", "pred_label", "pred_status", "pred_request"]
PRICES = {
    "openai/smollm2": {"input": 1.0, "output": 2.0, "batch_input": 0.5, "batch_output": 1.0, "cached_input": 0.25}
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from promptclf.data.tables import bbc_sample

    d = tmp_path_factory.mktemp("batch")
    df = bbc_sample(8, seed=11)[["id", "text", "label"]]
    df["text"] = df["text"].str.slice(0, 120)
    df.to_csv(d / "news.csv", index=False)
    (d / "prices.json").write_text(json.dumps(PRICES))
    return d


@pytest.fixture(scope="module")
def oracle_server(workdir: Path) -> Iterator[BatchServer]:
    df = pd.read_csv(workdir / "news.csv")
    with BatchServer(gold=dict(zip(df.text, df.label, strict=True))) as s:
        yield s


def _args(workdir: Path, server: BatchServer, out: Path, *extra: str) -> list[str]:
    return [
        "label", str(workdir / "news.csv"), "-o", str(out), "--provider", "openai", "--base-url", server.base_url,
        "--model", "smollm2", "--labels", TOPICS, "--batch-size", "2", "--max-chars", "120", "--max-tokens", "40",
        "--max-reasks", "1", "--batch-api", "--poll-interval", "0.05", "--prices", str(workdir / "prices.json"),
        "-q", *extra,
    ]  # fmt: skip


def _run(workdir: Path, server: BatchServer, out: Path, store: Path, *extra: str, faults: Faults | None = None):
    server.api.faults = faults or Faults()
    env = {"OPENAI_API_KEY": "sk-batch-test", "PROMPTCLF_STORE": str(store)}
    res = CliRunner().invoke(main, _args(workdir, server, out, *extra), env=env)
    server.api.wait_idle()
    return res


def _read(out: Path) -> pd.DataFrame:
    return pd.read_csv(out, dtype=str, keep_default_na=False)


def _run_json(out: Path) -> dict:
    return json.loads((out.with_name(out.stem + ".run") / "run.json").read_text())


def _lines(server: BatchServer, batch_id: str) -> list[dict]:
    b = server.api.batches[batch_id]
    return b.lines


@pytest.fixture(scope="module")
def baseline(workdir: Path, oracle_server: BatchServer) -> pd.DataFrame:
    """A fault-free batch run: every row labeled with its gold label by the oracle."""
    out = workdir / "baseline.csv"
    res = _run(workdir, oracle_server, out, workdir / "baseline.sqlite")
    assert res.exit_code == 0, res.output
    return _read(out)


@pytest.mark.slow
def test_batch_run_labels_every_row_at_the_batch_price_and_caches(workdir, oracle_server, baseline):
    gold = pd.read_csv(workdir / "news.csv", dtype=str)
    assert list(baseline["pred_label"]) == list(gold["label"])
    assert set(baseline["pred_status"]) == {"ok"}
    rec = _run_json(workdir / "baseline.csv")
    u = rec["usage"]
    assert u["batch_requests"] == 4 and u["requests"] == 4 and u["cached_requests"] == 0
    # Every response at the batch rates of the price table: $0.5 in, $1 out per 1M tokens.
    expected = (u["prompt_tokens"] * 0.5 + u["completion_tokens"] * 1.0) / 1e6
    assert rec["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert rec["cost_usd"] < (u["prompt_tokens"] * 1.0 + u["completion_tokens"] * 2.0) / 1e6

    # A rerun finds every line cached: no upload, no batch, nothing paid.
    creates, uploads = len(oracle_server.api.creates), len(oracle_server.api.uploads)
    again = workdir / "again.csv"
    res = _run(workdir, oracle_server, again, workdir / "baseline.sqlite")
    assert res.exit_code == 0, res.output
    assert (len(oracle_server.api.creates), len(oracle_server.api.uploads)) == (creates, uploads)
    assert _read(again)[COLS].equals(baseline[COLS])
    rec2 = _run_json(again)
    assert rec2["usage"]["cached_requests"] == 4 and rec2["cost_usd"] == 0.0
    assert rec2["cost_per_1k"] == pytest.approx(rec["cost_per_1k"])  # listed at the batch price too


def test_output_lines_in_another_order_land_on_their_rows(workdir, oracle_server, baseline):
    out = workdir / "shuffled.csv"
    res = _run(workdir, oracle_server, out, workdir / "shuffled.sqlite", faults=Faults(shuffle=True))
    assert res.exit_code == 0, res.output
    bid = oracle_server.api.creates[-1]
    written = [
        json.loads(x)["custom_id"]
        for x in oracle_server.api.files[oracle_server.api.batches[bid].obj["output_file_id"]].decode().splitlines()
    ]
    assert written != [line["custom_id"] for line in _lines(oracle_server, bid)]  # really reordered
    assert _read(out)[COLS].equals(baseline[COLS])


def test_a_failed_batch_marks_its_rows_and_a_rerun_submits_a_new_one(workdir, oracle_server, baseline):
    out, store = workdir / "failed.csv", workdir / "failed.sqlite"
    posts = oracle_server.api.chat_posts
    res = _run(workdir, oracle_server, out, store, faults=Faults(fail=True))
    assert res.exit_code == 7, res.output  # no row labeled: a failure a script can see
    assert "no row was labeled" in res.output and "would send 8 rows again" in res.output
    df = _read(out)
    assert set(df["pred_status"]) == {"error"} and len(df) == 8  # every row present, none silently lost
    assert df["pred_reason"].str.contains("failed: enqueued token limit reached").all()
    assert oracle_server.api.chat_posts == posts  # nothing sent synchronously at twice the price
    failed_id = oracle_server.api.creates[-1]
    res = _run(workdir, oracle_server, out, store)
    assert res.exit_code == 0, res.output
    assert oracle_server.api.creates[-1] != failed_id
    assert _read(out)[COLS].equals(baseline[COLS])


def test_an_expired_batch_keeps_its_answers_and_the_rest_go_synchronously(workdir, oracle_server, baseline):
    out, store = workdir / "expired.csv", workdir / "expired.sqlite"
    posts, creates = oracle_server.api.chat_posts, len(oracle_server.api.creates)
    res = _run(workdir, oracle_server, out, store, faults=Faults(expire_after=3))
    assert res.exit_code == 0, res.output
    assert len(oracle_server.api.creates) == creates + 1
    assert oracle_server.api.chat_posts == posts + 1  # the one unanswered line, under --batch-min-requests
    assert _read(out)[COLS].equals(baseline[COLS])
    u = _run_json(out)["usage"]
    assert u["batch_requests"] == 3 and u["requests"] == 4
    with sqlite3.connect(store) as db:
        errors = [r[0] for r in db.execute("SELECT error FROM attempts WHERE outcome='error'")]
    assert len(errors) == 1 and "batch_expired" in errors[0]


def test_unanswered_lines_go_to_a_follow_up_batch_when_there_are_enough(workdir, oracle_server, baseline):
    out = workdir / "follow.csv"
    posts, creates = oracle_server.api.chat_posts, len(oracle_server.api.creates)
    res = _run(
        workdir,
        oracle_server,
        out,
        workdir / "follow.sqlite",
        "--batch-min-requests",
        "1",
        faults=Faults(expire_after=2),
    )
    assert res.exit_code == 0, res.output
    first, second = oracle_server.api.creates[creates:]
    assert oracle_server.api.chat_posts == posts
    # The follow-up holds exactly the lines the first batch left unanswered.
    unanswered = sorted(x["custom_id"] for x in _lines(oracle_server, first)[2:])
    assert sorted(x["custom_id"] for x in _lines(oracle_server, second)) == unanswered
    assert _read(out)[COLS].equals(baseline[COLS])


def test_lines_that_come_back_with_errors_are_retried(workdir, oracle_server, baseline):
    out, store = workdir / "lineerr.csv", workdir / "lineerr.sqlite"
    posts = oracle_server.api.chat_posts
    res = _run(workdir, oracle_server, out, store, faults=Faults(line_errors={0, 2}))
    assert res.exit_code == 0, res.output
    assert oracle_server.api.chat_posts == posts + 2
    assert _read(out)[COLS].equals(baseline[COLS])
    with sqlite3.connect(store) as db:
        errors = [r[0] for r in db.execute("SELECT error FROM attempts WHERE outcome='error'")]
    assert len(errors) == 2 and all("HTTP 500" in e for e in errors)


def test_cached_prompt_tokens_are_read_recorded_and_priced(workdir, oracle_server):
    out, store = workdir / "cachedtok.csv", workdir / "cachedtok.sqlite"
    res = _run(workdir, oracle_server, out, store, faults=Faults(report_cached=64))
    assert res.exit_code == 0, res.output
    rec = _run_json(out)
    u = rec["usage"]
    assert u["cached_prompt_tokens"] == 4 * 64
    # Batch rates, with no batch_cached_input in the table: cached tokens cost the batch input rate.
    assert rec["cost_usd"] == pytest.approx((u["prompt_tokens"] * 0.5 + u["completion_tokens"] * 1.0) / 1e6)
    with sqlite3.connect(store) as db:
        assert [r[0] for r in db.execute("SELECT cached_prompt_tokens FROM responses")] == [64] * 4
    # Synchronously the cached rate applies: $0.25 instead of $1 per 1M for those tokens.
    out2 = workdir / "cachedtok-sync.csv"
    env = {"OPENAI_API_KEY": "sk-batch-test", "PROMPTCLF_STORE": str(workdir / "cachedtok-sync.sqlite")}
    oracle_server.api.faults = Faults(report_cached=64)
    args = [a for a in _args(workdir, oracle_server, out2) if a != "--batch-api"]
    res = CliRunner().invoke(main, args, env=env)
    assert res.exit_code == 0, res.output
    rec = _run_json(out2)
    u = rec["usage"]
    assert u["cached_prompt_tokens"] == 4 * 64 and u["batch_requests"] == 0
    expected = ((u["prompt_tokens"] - 256) * 1.0 + 256 * 0.25 + u["completion_tokens"] * 2.0) / 1e6
    assert rec["cost_usd"] == pytest.approx(expected)


def test_together_dialect(workdir):
    df = pd.read_csv(workdir / "news.csv")
    with BatchServer(gold=dict(zip(df.text, df.label, strict=True)), dialect="together") as server:
        out = workdir / "together.csv"
        args = _args(workdir, server, out)
        args[args.index("openai")] = "together"
        env = {"TOGETHER_API_KEY": "tk-batch-test", "PROMPTCLF_STORE": str(workdir / "together.sqlite")}
        res = CliRunner().invoke(main, args, env=env)
        assert res.exit_code == 0, res.output
        assert len(server.api.creates) == 1 and len(server.api.uploads) == 1
        assert list(_read(out)["pred_label"]) == list(df["label"])


def test_refused_where_there_is_no_batch_endpoint(workdir, tmp_path):
    res = CliRunner().invoke(
        main, ["label", str(workdir / "news.csv"), "--provider", "local", "--batch-api", "--labels", TOPICS]
    )
    assert res.exit_code == 2 and "the local model has none" in res.output
    # --provider auto with no key resolves to the local model: refused before any work.
    res = CliRunner().invoke(
        main, ["label", str(workdir / "news.csv"), "--batch-api", "--labels", TOPICS, "-o", str(tmp_path / "a.csv")],
        env={"OPENAI_API_KEY": None, "TOGETHER_API_KEY": None, "OPENAI_BASE_URL": None, "PROMPTCLF_STORE": str(tmp_path / "a.sqlite")},
    )  # fmt: skip
    assert res.exit_code == 2 and "needs a provider with a batch endpoint" in res.output, res.output

    # A server without batch endpoints (like llama.cpp, vLLM or Ollama): GET /v1/batches is a 404.
    with FakeServer(Responder(lambda body: {})) as srv:  # chat only: GET /v1/batches is a 404
        res = CliRunner().invoke(
            main, ["label", str(workdir / "news.csv"), "--base-url", srv.base_url, "--batch-api", "--labels", TOPICS, "-o", str(tmp_path / "x.csv")],
            env={"PROMPTCLF_STORE": str(tmp_path / "s.sqlite")},
        )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "has no batch endpoints" in res.output and "drop --batch-api" in res.output


@pytest.mark.slow
def test_killed_while_polling_resumes_the_same_batch(workdir, oracle_server, baseline):
    """SIGKILL the CLI while it polls a held batch; the rerun polls that batch and creates none."""
    out, store = workdir / "killed.csv", workdir / "killed.sqlite"
    hold = threading.Event()
    oracle_server.api.faults = Faults(hold=hold)
    creates, answered = len(oracle_server.api.creates), len(oracle_server.api.answered)
    cmd = [sys.executable, "-m", "promptclf", *_args(workdir, oracle_server, out)]
    env = {**os.environ, "OPENAI_API_KEY": "sk-batch-test", "PROMPTCLF_STORE": str(store), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (
                len(oracle_server.api.creates) > creates
                and oracle_server.api.retrieves.count(oracle_server.api.creates[-1]) >= 3
            ):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        batch_id = oracle_server.api.creates[-1]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert len(oracle_server.api.answered) == answered  # held: nothing answered before the kill
    polls = len(oracle_server.api.retrieves)
    hold.set()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(oracle_server.api.creates) == creates + 1  # no second batch
    assert set(oracle_server.api.retrieves[polls:]) == {batch_id}  # the same batch polled
    assert len(oracle_server.api.answered) == answered + 4  # each line answered once
    assert _read(out)[COLS].equals(baseline[COLS])


@pytest.mark.slow
@pytest.mark.server
def test_real_model_answers_the_batch_lines(workdir, llama_server):
    """The same path with SmolLM2 (llama.cpp) answering each line: every row is accounted for."""
    with BatchServer(llama_server.root) as server:
        out, store = workdir / "real.csv", workdir / "real.sqlite"
        df4 = pd.read_csv(workdir / "news.csv").head(4)
        df4.to_csv(workdir / "news4.csv", index=False)
        args = _args(workdir, server, out)
        args[1] = str(workdir / "news4.csv")
        res = CliRunner().invoke(main, args, env={"OPENAI_API_KEY": "sk-batch-test", "PROMPTCLF_STORE": str(store)})
        server.api.wait_idle()
        assert res.exit_code == 0, res.output
        df = _read(out)
        assert len(df) == 4 and set(df["pred_status"]) <= {"ok", "empty", "invalid"}
        assert (df["pred_status"] == "ok").any()
        assert len(server.api.creates) == 1 and _run_json(out)["usage"]["batch_requests"] >= 1
        posts = server.api.chat_posts
        res = CliRunner().invoke(main, args, env={"OPENAI_API_KEY": "sk-batch-test", "PROMPTCLF_STORE": str(store)})
        assert res.exit_code == 0, res.output
        assert len(server.api.creates) == 1 and server.api.chat_posts == posts  # all from the store
        assert _read(out)[COLS].equals(df[COLS])
