"""The chat engine through the in-process fake provider: every fault a model or server commits,
and what the engine must do about it, in milliseconds.

Each test states what the fake does to which request and checks the outcome row by row: the
label the answerer gives, or the reason a row has none; the counts in the summary; the store
(resume never pays twice, an error is never cached). The real path (a model behind llama.cpp,
HTTP) is covered by the slow tier.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from promptclf.errors import AuthenticationError
from promptclf.label.labeler import Labeler, LabelResult
from promptclf.label.options import LabelOptions
from promptclf.testing.answers import hash_answer, parse_prompt
from promptclf.testing.fake_provider import FAULTS, FakeChatProvider

LABELS = ["business", "sport", "tech"]


def _frame(n: int = 12) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"text number {i} about things" for i in range(n)]})


def _opts(tmp_path: Path, **kw: object) -> LabelOptions:
    base: dict[str, object] = {
        "labels": [{"name": n} for n in LABELS],
        "label_col": None,
        "batch_size": 4,
        "concurrency": 1,
        "retry_max_wait_s": 0.01,
        "top_logprobs": 0,
        "store": str(tmp_path / "store.sqlite"),
    }
    base.update(kw)
    return LabelOptions(**base)  # type: ignore[arg-type]


def _run(tmp_path: Path, fake: FakeChatProvider, df: pd.DataFrame | None = None, **kw: object) -> LabelResult:
    return Labeler(_opts(tmp_path, **kw), provider=fake, progress=False).label(_frame() if df is None else df)


def _want(df: pd.DataFrame) -> list[str]:
    return [hash_answer(t, LABELS) for t in df["text"]]


def test_clean_run_labels_every_row_in_input_order(tmp_path: Path) -> None:
    fake = FakeChatProvider()
    res = _run(tmp_path, fake)
    assert res.frame["pred_label"].tolist() == _want(_frame())
    assert set(res.frame["pred_status"]) == {"ok"}
    assert len(fake.calls) == 3 and [len(c.ids) for c in fake.calls] == [4, 4, 4]
    s = res.summary
    assert s.coverage == 1.0 and s.usage.requests == 3 and s.usage.reasks == 0 and s.usage.prompt_tokens > 0


def test_shuffled_and_duplicated_answers_are_matched_by_id(tmp_path: Path) -> None:
    fake = FakeChatProvider(faults=["shuffled", "duplicated", None])
    res = _run(tmp_path, fake)
    assert res.frame["pred_label"].tolist() == _want(_frame())
    assert res.summary.usage.reasks == 0 and len(fake.calls) == 3


@pytest.mark.parametrize("fault", ["missing", "off_list", "conflicting"])
def test_bad_items_are_reasked_alone_and_counted(tmp_path: Path, fault: str) -> None:
    fake = FakeChatProvider(faults=[fault])  # only the first request is bent
    res = _run(tmp_path, fake)
    assert res.frame["pred_label"].tolist() == _want(_frame())
    assert res.summary.usage.reasks == 1 and len(fake.calls) == 4
    reask = fake.calls[3]
    bad_row = 3 if fault == "missing" else 0  # the last item left out, or the first one mislabelled
    assert reask.texts == [_frame()["text"][bad_row]]
    assert "attempt 2" in reask.messages[-1]["content"]
    if fault == "off_list":
        assert "'not-a-label'" in reask.messages[-1]["content"]  # the re-ask says what was wrong


@pytest.mark.parametrize("fault", ["empty", "truncated", "prose"])
def test_unusable_json_is_paid_not_cached_and_reasked(tmp_path: Path, fault: str) -> None:
    fake = FakeChatProvider(faults=[fault])
    res = _run(tmp_path, fake)
    assert res.frame["pred_label"].tolist() == _want(_frame())
    s = res.summary
    assert s.usage.requests == len(fake.calls)  # the bad answer was paid for and counted
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        errors = db.execute("select count(*) from attempts where outcome = 'error'").fetchone()[0]
        cached = db.execute("select count(*) from responses").fetchone()[0]
    assert cached == len(fake.calls) - errors  # the unusable answer is not in the cache
    if fault == "truncated":  # the complete items before the cut are kept; only the rest are re-asked
        assert s.usage.reasks < 4 and errors == 0
    else:
        assert s.usage.reasks == 4 and errors == 1


def test_reasks_stop_at_the_cap_with_a_reason_per_row(tmp_path: Path) -> None:
    fake = FakeChatProvider(faults=lambda i, texts: "off_list")  # every answer mislabels its first item
    res = _run(tmp_path, fake, _frame(4), max_reasks=2)
    f = res.frame
    assert f["pred_status"].tolist() == ["invalid", "ok", "ok", "ok"]
    assert "not in the label set (after 2 re-asks)" in f["pred_reason"][0]
    assert f["pred_label"][0] == "" or pd.isna(f["pred_label"][0])
    assert len(fake.calls) == 3 and res.summary.usage.reasks == 2


def test_missing_items_past_the_cap_say_they_were_left_out(tmp_path: Path) -> None:
    fake = FakeChatProvider(faults=lambda i, texts: "missing")
    res = _run(tmp_path, fake, _frame(2), max_reasks=1, batch_size=2)
    assert res.frame["pred_status"].tolist() == ["ok", "empty"]
    assert "left this item out (after 1 re-asks)" in res.frame["pred_reason"][1]


@pytest.mark.parametrize("fault", ["429", "500", "timeout", "connection"])
def test_transient_faults_are_retried_not_reasked(tmp_path: Path, fault: str) -> None:
    fake = FakeChatProvider(faults=[fault, fault], retry_after=0.0)
    res = _run(tmp_path, fake)
    assert res.frame["pred_label"].tolist() == _want(_frame())
    u = res.summary.usage
    assert u.transport_retries == 2 and u.reasks == 0 and u.failed_requests == 0
    assert fake.calls[2].ids == fake.calls[0].ids  # the same request again


def test_retry_after_is_waited_up_to_the_cap(tmp_path: Path) -> None:
    import time

    fake = FakeChatProvider(faults=["429"], retry_after=0.3)
    t0 = time.monotonic()
    _run(tmp_path / "a", fake, _frame(4), retry_max_wait_s=5.0)
    assert time.monotonic() - t0 >= 0.3
    slow = FakeChatProvider(faults=["429"], retry_after=30.0)  # a server asking for more than the cap
    t0 = time.monotonic()
    res = _run(tmp_path / "b", slow, _frame(4), retry_max_wait_s=0.2)
    assert 0.2 <= time.monotonic() - t0 < 5 and res.summary.coverage == 1.0


def test_a_request_out_of_retries_fails_its_rows_only_and_is_never_cached(tmp_path: Path) -> None:
    fake = FakeChatProvider(faults=lambda i, texts: "500" if texts[0] == "text number 4 about things" else None)
    res = _run(tmp_path, fake, max_retries=2, breaker_failures=100)
    f = res.frame
    assert f["pred_status"].tolist() == ["ok"] * 4 + ["error"] * 4 + ["ok"] * 4
    assert "after 2 retries" in f["pred_reason"][4]
    assert res.summary.usage.failed_requests == 1 and res.summary.rerun_rows == 4
    # a rerun sends only the failed batch (nothing paid twice) and, with the server well, labels it
    again = FakeChatProvider()
    res2 = _run(tmp_path, again)
    assert [c.texts for c in again.calls] == [f["text"][4:8].tolist()]
    assert res2.frame["pred_label"].tolist() == _want(_frame())
    assert res2.summary.usage.cached_requests == 2


@pytest.mark.parametrize("fault", ["bad_key", "bad_request"])
def test_a_rejected_request_is_never_retried(tmp_path: Path, fault: str) -> None:
    fake = FakeChatProvider(faults=[fault] * 10)
    if fault == "bad_key":
        with pytest.raises(AuthenticationError, match="FAKE_API_KEY"):
            _run(tmp_path, fake)
        assert len(fake.calls) == 1  # stopped at once: no retry, no other batch sent
    else:
        res = _run(tmp_path, fake)
        assert res.frame["pred_status"].tolist()[:4] == ["error"] * 4
        assert res.summary.usage.transport_retries == 0


def test_resume_never_pays_twice(tmp_path: Path) -> None:
    first = FakeChatProvider()
    _run(tmp_path, first, _frame(20))
    second = FakeChatProvider()
    res = _run(tmp_path, second, _frame(24))  # four new rows: one new batch
    assert len(second.calls) == 1 and second.calls[0].texts == _frame(24)["text"][20:].tolist()
    assert res.summary.usage.cached_requests == 5 and res.frame["pred_label"].tolist() == _want(_frame(24))


def test_concurrent_requests_with_faults_lose_no_row(tmp_path: Path) -> None:
    kinds = [f for f in FAULTS if f not in ("bad_key", "bad_request", "timeout")]
    fake = FakeChatProvider(faults=lambda i, texts: kinds[i % len(kinds)] if i < 40 else None)
    df = _frame(200)
    res = _run(tmp_path, fake, df, concurrency=8, batch_size=5, max_reasks=3)
    f = res.frame
    assert len(f) == 200 and f["text"].tolist() == df["text"].tolist()
    assert f["pred_status"].notna().all() and (f["pred_status"] != "").all()
    ok = f["pred_status"] == "ok"
    assert ok.sum() >= 195
    assert (f.loc[ok, "pred_label"] == pd.Series(_want(df))[ok]).all()
    assert (f.loc[~ok, "pred_reason"].str.len() > 0).all()


def test_logprobs_give_a_confidence(tmp_path: Path) -> None:
    fake = FakeChatProvider(logprobs=True)
    res = _run(tmp_path, fake, _frame(4), top_logprobs=5)
    assert res.frame["pred_prob"].notna().all()


def test_parse_prompt_reads_back_the_packaged_template(tmp_path: Path) -> None:
    fake = FakeChatProvider()
    _run(tmp_path, fake, _frame(3))
    labels, items = parse_prompt(fake.calls[0].messages[-1]["content"])
    assert labels == LABELS and [t for _, t in items] == _frame(3)["text"].tolist()


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        FakeChatProvider(faults=["nope"])  # type: ignore[list-item]
