"""The circuit breaker (promptclf.providers.breaker) and the exit codes of ``promptclf label``.

The breaker's rule is checked on a fake clock; the runs go through the real HTTP client against
a dead port on 127.0.0.1 (nothing listening), the fake OpenAI-compatible server, and the same
server answering 500 to one request in six.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.errors import (
    CoverageError,
    NoLabelsError,
    ProviderConnectionError,
    ProviderUnavailableError,
    TransientProviderError,
)
from promptclf.label.labeler import Labeler, label_file
from promptclf.label.options import LabelOptions
from promptclf.label.outcome import check_outcome
from promptclf.label.stream import UNSENT
from promptclf.providers.breaker import CircuitBreaker
from promptclf.runs import LabelSummary
from promptclf.testing.answers import PromptAnswers
from promptclf.testing.fake_server import FakeServer, Responder
from promptclf.testing.faults import Fault

LABELS = ["alpha", "beta", "gamma"]
_ITEM = re.compile(r"^\[(\d+)\] (.*)$", re.M)


def answer(text: str) -> str:
    return LABELS[zlib.crc32(text.encode("utf-8")) % len(LABELS)]


class Server(FakeServer):
    """The fake server on 127.0.0.1, labeling every item by a hash of its text.

    ``fail_every``: answer HTTP ``status`` to every n-th request; ``die_after``: answer that many
    requests, then stop listening (connections are refused from then on). ``items`` counts each
    item text answered with 200; ``requests`` every request received."""

    def __init__(self, port: int = 0, fail_every: int = 0, die_after: int | None = None, status: int = 500) -> None:
        self.answers = PromptAnswers(lambda text, labels: answer(text))
        self.die_after = die_after
        super().__init__(Responder(self._respond), port=port, keep_alive=die_after is None)
        if fail_every:
            self.rule = lambda req: Fault("status", status) if (req.index + 1) % fail_every == 0 else None
        self.start()

    def _respond(self, body: dict[str, Any]) -> dict[str, Any]:
        out = self.answers(body)
        if self.die_after is not None and self.answers.requests >= self.die_after:
            threading.Thread(target=self.stop, daemon=True).start()
        return out

    @property
    def items(self) -> Counter[str]:
        return self.answers.texts

    @property
    def requests(self) -> int:
        return self.received


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


def dead_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")


def opts(tmp_path: Path, base_url: str, **kw: object) -> LabelOptions:
    base: dict[str, object] = {
        "provider": "openai",
        "model": "m",
        "base_url": base_url,
        "labels": [{"name": n} for n in LABELS],
        "label_col": None,
        "batch_size": 10,
        "concurrency": 4,
        "max_reasks": 0,
        "top_logprobs": 0,
        "timeout_s": 10.0,
        "store": str(tmp_path / "store.sqlite"),
    }
    base.update(kw)
    return LabelOptions(**base)  # type: ignore[arg-type]


def write_rows(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "rows.csv"
    pd.DataFrame({"text": [f"row {i} about thing {i * 7 % 13}" for i in range(n)]}).to_csv(src, index=False)
    return src


# --- the rule, on a fake clock --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def down() -> ProviderConnectionError:
    return ProviderConnectionError("connection failed: refused")


def test_trips_on_count_and_window_not_before():
    clock = Clock()
    b = CircuitBreaker(failures=5, window_s=10, target="openai at http://x/v1", clock=clock)
    for _ in range(20):  # many failures, but all within the window: a blip the retries ride out
        assert not b.record_failure(down())
    clock.t = 10.0
    assert b.record_failure(down())
    assert "openai at http://x/v1" in b.reason and "21 times" in b.reason
    with pytest.raises(ProviderUnavailableError, match="rerun the same command"):
        b.check()


def test_success_resets_and_other_failures_are_neutral():
    clock = Clock()
    b = CircuitBreaker(failures=3, window_s=0, clock=clock)
    b.record_failure(down())
    b.record_failure(TransientProviderError("server error (HTTP 503)", status=503))
    b.record_success()
    b.record_failure(down())
    b.record_failure(down())
    # a 429 and a timeout say the server is there: they neither count nor reset
    b.record_failure(TransientProviderError("rate limited (HTTP 429)", status=429))
    b.record_failure(TransientProviderError("request timed out"))
    assert not b.tripped
    assert b.record_failure(TransientProviderError("server error (HTTP 500)", status=500))


def test_a_request_out_of_retries_lifts_the_window():
    clock = Clock()
    b = CircuitBreaker(failures=3, window_s=3600, clock=clock)
    for _ in range(3):
        b.record_failure(down())
    assert not b.tripped
    with pytest.raises(ProviderUnavailableError):
        b.exhausted(down(), attempts=7)
    b2 = CircuitBreaker(failures=10, window_s=3600, clock=clock)
    b2.record_failure(down())
    b2.record_success()
    b2.record_failure(down())
    b2.exhausted(down(), attempts=2)  # a success came between this request's attempts: not down
    assert not b2.tripped
    b2.record_failure(down())
    b2.exhausted(down(), attempts=2)  # two failures: still fewer than 3
    b2.record_failure(down())
    with pytest.raises(ProviderUnavailableError):  # a sequential client: all its attempts failed
        b2.exhausted(down(), attempts=3)


def test_sleep_ends_at_once_on_a_trip():
    b = CircuitBreaker(failures=1, window_s=0)
    threading.Timer(0.2, lambda: b.record_failure(down())).start()
    start = time.perf_counter()
    with pytest.raises(ProviderUnavailableError):
        b.sleep(30)
    assert time.perf_counter() - start < 5


# --- real runs --------------------------------------------------------------------------------


def test_dead_url_stops_fast_leaves_rows_unsent_and_a_rerun_labels_each_once(tmp_path: Path):
    """2,000 rows against a port where nothing listens stop within seconds (the window is 2 s here,
    10 s by default: bench/bench_breaker.py measures the default); every row is written ``unsent``;
    the same command against a live server then labels every row, each exactly once."""
    port = dead_port()
    src = write_rows(tmp_path, 2000)
    out = tmp_path / "out.csv"
    o = opts(tmp_path, f"http://127.0.0.1:{port}/v1", breaker_window_s=2.0, chunk_rows=500)
    start = time.perf_counter()
    with pytest.raises(ProviderUnavailableError) as err:
        label_file(src, out, o, progress=False)
    took = time.perf_counter() - start
    assert took < 30, took
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "--base-url" in msg and "2,000 rows left unsent" in msg
    assert "\n" not in msg
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) == 2000 and set(df["pred_status"]) == {UNSENT}
    assert all("rerun the same command" in r for r in df["pred_reason"])

    live = Server(port=port)
    try:
        run = label_file(src, out, o, progress=False)
    finally:
        live.stop()
    df = pd.read_csv(out, keep_default_na=False)
    assert set(df["pred_status"]) == {"ok"} and run.coverage == 1.0 and run.rerun_rows == 0
    assert list(df["pred_label"]) == [answer(t) for t in df["text"]]
    assert len(live.items) == 2000 and set(live.items.values()) == {1}


def test_server_dying_mid_run_then_resumed_labels_every_row_exactly_once(tmp_path: Path):
    src = write_rows(tmp_path, 400)
    out = tmp_path / "out.csv"
    first = Server(die_after=8)
    port = first.port
    o = opts(tmp_path, first.base_url, breaker_window_s=1.0, concurrency=2)
    with pytest.raises(ProviderUnavailableError):
        label_file(src, out, o, progress=False)
    first.stop()
    df = pd.read_csv(out, keep_default_na=False)
    done = set(df.loc[df["pred_status"] == "ok", "text"])
    assert 0 < len(done) < 400 and set(df["pred_status"]) == {"ok", UNSENT}  # nothing marked error
    assert set(first.items) >= done

    second = Server(port=port)
    try:
        run = label_file(src, out, o, progress=False)
    finally:
        second.stop()
    assert run.statuses == {"ok": 400}
    # the rerun sent only what the first run did not get back; together, every row once
    assert set(second.items).isdisjoint(set(first.items))
    assert set(first.items.values()) == {1} and set(second.items.values()) == {1}
    assert len(first.items) + len(second.items) == 400


def test_flaky_server_does_not_trip(tmp_path: Path):
    """One answer in six is a 500 (about 17%): transport retries absorb it and no row is lost."""
    flaky = Server(fail_every=6)
    try:
        o = opts(tmp_path, flaky.base_url, retry_max_wait_s=0.2, breaker_window_s=0.0)
        labeler = Labeler(o, progress=False)
        df = labeler.label(pd.DataFrame({"text": [f"text {i}" for i in range(600)]})).frame
    finally:
        flaky.stop()
    assert set(df["pred_status"]) == {"ok"}
    assert labeler.stats.transport_retries >= 10  # the faults happened, and were retried


def test_server_answering_500_to_everything_trips(tmp_path: Path):
    broken = Server(fail_every=1)
    try:
        o = opts(tmp_path, broken.base_url, breaker_window_s=0.5, retry_max_wait_s=0.2)
        with pytest.raises(ProviderUnavailableError, match="HTTP 500") as err:
            Labeler(o, progress=False).label(pd.DataFrame({"text": [f"t {i}" for i in range(300)]}))
    finally:
        broken.stop()
    partial = err.value.partial
    assert partial is not None and len(partial) == 300 and set(partial["pred_status"]) == {UNSENT}
    assert broken.requests < 100  # stopped, not 30 requests x 7 attempts


@pytest.mark.slow
def test_batch_api_against_a_dead_url_trips(tmp_path: Path):
    src = write_rows(tmp_path, 50)
    o = opts(tmp_path, f"http://127.0.0.1:{dead_port()}/v1", batch_api=True, breaker_window_s=0.5)
    start = time.perf_counter()
    with pytest.raises(ProviderUnavailableError, match="--base-url"):
        label_file(src, tmp_path / "out.csv", o, progress=False)
    assert time.perf_counter() - start < 30
    df = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert set(df["pred_status"]) == {UNSENT}


# --- exit codes -------------------------------------------------------------------------------


def summary(**kw: Any) -> LabelSummary:
    return LabelSummary(**{"n_items": 10, "statuses": {"ok": 10}, "coverage": 1.0, **kw})


def test_check_outcome():
    check_outcome(summary())
    with pytest.raises(NoLabelsError, match="send 10 rows again") as err:
        check_outcome(summary(statuses={"error": 10}, coverage=0.0, rerun_rows=10))
    assert err.value.exit_code == 7
    check_outcome(summary(statuses={"ok": 9, "error": 1}, coverage=0.9), min_coverage=0.9)
    with pytest.raises(CoverageError, match="below --min-coverage") as err2:
        check_outcome(summary(statuses={"ok": 8, "error": 2}, coverage=0.8), min_coverage=0.9)
    assert err2.value.exit_code == 8


def _cli(args: list[str]) -> Any:
    from promptclf.cli import main

    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_cli_exit_codes(tmp_path: Path, server: Server):
    src = write_rows(tmp_path, 30)
    common = ["--provider", "openai", "--model", "m", "--labels", ",".join(LABELS), "--top-logprobs", "0",
              "--store", str(tmp_path / "s.sqlite")]  # fmt: skip
    ok = _cli(["label", str(src), "-o", str(tmp_path / "a.csv"), "--base-url", server.base_url, *common])
    assert ok.exit_code == 0, ok.output
    dead = f"http://127.0.0.1:{dead_port()}/v1"
    res = _cli(["label", str(src), "-o", str(tmp_path / "b.csv"), "--base-url", dead, "--breaker-window-s", "0.5",
                *common])  # fmt: skip
    assert res.exit_code == 4, res.output
    assert "stopped sending" in res.output and "30 rows left unsent" in res.output
    # a server that is up but rejects every request (a wrong model name: 404): no row ok -> 7
    wrong = Server(fail_every=1, status=404)
    try:
        res = _cli(["label", str(src), "-o", str(tmp_path / "c.csv"), "--base-url", wrong.base_url, *common])
    finally:
        wrong.stop()
    assert res.exit_code == 7, res.output
    assert "no row was labeled" in res.output and "rerun: 30 rows" in res.output
    # a flaky server with no retries: some rows error; --min-coverage 1 -> 8
    flaky = Server(fail_every=2)
    try:
        res = _cli(["label", str(src), "-o", str(tmp_path / "d.csv"), "--base-url", flaky.base_url,
                    "--max-retries", "0", "--min-coverage", "1", "--concurrency", "1", *common])  # fmt: skip
    finally:
        flaky.stop()
    assert res.exit_code == 8, res.output
    assert "below --min-coverage" in res.output
