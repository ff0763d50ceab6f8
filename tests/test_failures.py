"""Failures a hosted API really produces, injected by a proxy in front of a real llama.cpp server.

Every test runs the labeling engine (ChatOpenAI → FakeServer → llama.cpp on SmolLM2) and
checks the promises of docs/ARCHITECTURE.md: no row is lost, every row ends with a status
and, when it is not ``ok``, a reason; transport failures are retried (Retry-After honoured,
a bad key never); broken answers are re-asked for exactly the items they broke.

Assertions never depend on what the 135M model answers: the proxy breaks the items it is
told to (by item id), so which rows must be re-asked is known whatever the model said.
"""

from __future__ import annotations

import json

import httpx
import pandas as pd
import pytest

from promptclf.data.tables import BBC_TOPICS
from promptclf.errors import AuthenticationError
from promptclf.label.labeler import Labeler
from promptclf.label.options import LabelOptions
from promptclf.labels import parse_labels
from promptclf.testing.fake_server import FakeServer, Upstream
from promptclf.testing.faults import Fault, edit_content

pytestmark = pytest.mark.server

TOPICS = ",".join(BBC_TOPICS)
STATUSES = {"ok", "empty", "invalid", "error", "shot"}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Six short BBC News texts (titles plus the start of the article): cheap prompts."""
    from promptclf.data.tables import bbc_sample

    return [t[:140] for t in bbc_sample(6, seed=3)["text"]]


def _options(proxy: FakeServer, tmp_path, **kw: object) -> LabelOptions:
    base: dict[str, object] = {
        "provider": "openai",
        "model": "smollm2",
        "base_url": proxy.base_url,
        "labels": parse_labels(TOPICS).to_dict(),
        "label_col": None,
        "batch_size": 3,
        "concurrency": 1,
        "max_retries": 3,
        "max_reasks": 1,
        "retry_max_wait_s": 0.5,
        "timeout_s": 30.0,
        "max_chars": 140,
        "store": str(tmp_path / "store.sqlite"),
    }
    base.update(kw)
    return LabelOptions(**base)  # type: ignore[arg-type]


def _label(proxy: FakeServer, tmp_path, texts: list[str], **kw: object) -> tuple[pd.DataFrame, Labeler]:
    labeler = Labeler(_options(proxy, tmp_path, **kw), progress=False)
    out = labeler.label(pd.DataFrame({"text": texts})).frame
    return out, labeler


def _check_complete(out: pd.DataFrame, texts: list[str]) -> None:
    """No row lost, input order kept, every row has a known status and non-ok rows a reason."""
    assert list(out["text"]) == texts
    assert set(out["pred_status"]) <= STATUSES
    assert all(out["pred_status"] != "")
    bad = out[out["pred_status"] != "ok"]
    assert all(bad["pred_reason"].str.len() > 0), bad
    ok = out[out["pred_status"] == "ok"]
    assert set(ok["pred_label"]) <= set(TOPICS.split(","))


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")


# --- the proxy itself ---------------------------------------------------------------------


def test_edit_content_breaks_exactly_the_named_items():
    answer = json.dumps(
        {"items": [{"id": 1, "label": "sport"}, {"id": 2, "label": "tech"}, {"id": 3, "label": "tech"}]}
    )

    def ids(text: str) -> list[object]:
        return [(e["id"], e["label"]) for e in json.loads(text)["items"]]

    assert ids(edit_content(answer, Fault("drop_items", ids=(2,)))) == [(1, "sport"), (3, "tech")]
    assert ids(edit_content(answer, Fault("off_label", ids=(1,), label="weather"))) == [
        (2, "tech"),
        (3, "tech"),
        (1, "weather"),
    ]
    assert ids(edit_content(answer, Fault("bad_id", ids=(3,))))[-1] == (1003, "tech")
    assert ids(edit_content(answer, Fault("dup_items", ids=(2,), labels=("sport", "tech"))))[-2:] == [
        (2, "sport"),
        (2, "tech"),
    ]
    assert ids(edit_content(answer, Fault("dup_items", ids=(3,))))[-2:] == [(3, "tech"), (3, "tech")]
    cut = edit_content(answer, Fault("truncate"))
    assert cut is not None and cut.startswith('{"items": [{"id": 1, "label": "sport"}, {')
    with pytest.raises(ValueError):
        json.loads(cut)
    assert edit_content("not json", Fault("drop_items")) is None


def test_proxy_forwards_counts_and_injects(fault_proxy: FakeServer):
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 4,
        "temperature": 0,
    }
    url = f"{fault_proxy.base_url}/chat/completions"
    fault_proxy.enqueue(Fault("status", status=429, retry_after=3), Fault("drop"), Fault("status", status=503))
    with httpx.Client(timeout=60) as client:
        r = client.post(url, json=body)
        assert r.status_code == 429 and r.headers["retry-after"] == "3"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        with pytest.raises(httpx.TransportError):
            client.post(url, json=body)
        assert client.post(url, json=body).status_code == 503
        ok = client.post(url, json=body)
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] is not None
        assert client.get(f"{fault_proxy.base_url}/models").status_code == 200  # not a chat request: no fault
    recs = fault_proxy.chat_records()
    assert [r.fault for r in recs] == ["status", "drop", "status", None]
    assert [r.status for r in recs] == [429, None, 503, 200]
    assert fault_proxy.received == 5 and fault_proxy.forwarded == 2  # the chat 200 and GET /models
    assert len({r.body_hash for r in recs}) == 1 and fault_proxy.answered_hashes() == [recs[0].body_hash]


# --- transport failures: retried, nothing lost ----------------------------------------------


def test_429_waits_for_retry_after(fault_proxy: FakeServer, tmp_path, texts):
    fault_proxy.enqueue(Fault("status", status=429, retry_after=2))
    out, labeler = _label(fault_proxy, tmp_path, texts[:3], max_reasks=0, retry_max_wait_s=10)
    _check_complete(out, texts[:3])
    assert "error" not in set(out["pred_status"])
    first, second = fault_proxy.chat_records()[:2]
    assert first.status == 429 and second.body_hash == first.body_hash  # the same request, retried
    waited = second.started - first.finished
    assert 1.9 <= waited <= 6.0, f"Retry-After: 2 but the client waited {waited:.2f}s"
    assert labeler.stats.transport_retries == 1


def test_5xx_timeouts_and_dropped_connections_are_retried(fault_proxy: FakeServer, tmp_path, texts):
    fault_proxy.enqueue(
        Fault("status", status=500),
        Fault("status", status=502),
        Fault("drop"),
        Fault("timeout", hold_s=25),
    )
    # the held request outlives the 15 s client timeout; a one-item answer takes ~1 s on 2 cores
    out, labeler = _label(fault_proxy, tmp_path, texts[:1], batch_size=1, max_retries=4, max_reasks=0, timeout_s=15)
    _check_complete(out, texts[:1])
    assert "error" not in set(out["pred_status"])  # the fifth attempt got through
    recs = fault_proxy.chat_records()
    assert [r.fault for r in recs[:5]] == ["status", "status", "drop", "timeout", None]
    assert len({r.body_hash for r in recs[:4]}) == 1  # transport retries resend the same request ...
    # ... except that after a timeout a server is asked again without logprobs (llama-cpp-python never
    # answers a logprobs request whose answer reaches max_tokens), so its retry differs in exactly that
    assert recs[0].body and recs[0].body.get("logprobs") and recs[4].body and "logprobs" not in recs[4].body
    assert {k: v for k, v in recs[0].body.items() if k not in ("logprobs", "top_logprobs")} == recs[4].body
    assert recs[4].status == 200 and labeler.stats.transport_retries == 4


def test_persistent_500_marks_rows_error_with_reason(fault_proxy: FakeServer, tmp_path, texts):
    fault_proxy.rule = lambda req: Fault("status", status=500)
    # The circuit breaker (tests/test_breaker.py) would stop this run; set high, the rows end as errors.
    out, labeler = _label(fault_proxy, tmp_path, texts, max_retries=2, concurrency=2, breaker_failures=1000)
    _check_complete(out, texts)
    assert set(out["pred_status"]) == {"error"}
    assert all("500" in r and "2 retries" in r for r in out["pred_reason"]), list(out["pred_reason"])
    # 2 batches x (1 try + 2 retries), and no re-ask of a failed request
    assert len(fault_proxy.chat_records()) == 6 and fault_proxy.forwarded == 0
    assert labeler.stats.failed_requests == 2


def test_bad_key_fails_at_once_naming_the_env_var(llama_server, tmp_path, texts):
    with FakeServer(Upstream(llama_server.root), require_key="sk-the-right-key") as proxy:
        with pytest.raises(AuthenticationError, match="OPENAI_API_KEY") as err:
            _label(proxy, tmp_path, texts, max_retries=5)
        assert len(proxy.chat_records()) == 1  # concurrency 1: the first 401 stops the run, no retry
        assert proxy.forwarded == 0
    partial = err.value.partial
    assert partial is not None and list(partial["text"]) == texts and set(partial["pred_status"]) == {"error"}


# --- broken answers: the broken items are re-asked, nothing lost ----------------------------


def _on_first_request(proxy: FakeServer, fault: Fault) -> None:
    """Break the answer to the first request every time it is sent (a transport retry of it too)."""
    first: list[str] = []

    def rule(req):  # type: ignore[no-untyped-def]
        if not first:
            first.append(req.body_hash)
        return fault if req.body_hash == first[0] else None

    proxy.rule = rule


def _rows_asked_after(proxy: FakeServer, first: int, texts: list[str]) -> set[int]:
    """Input rows whose text appears in a later chat request (re-asks; resends of the first ones excluded)."""
    recs = proxy.chat_records()
    seen = {r.body_hash for r in recs[:first]}
    later = [r.text() for r in recs[first:] if r.body_hash not in seen]
    return {i for i, t in enumerate(texts) if any(t in body for body in later)}


def test_truncated_json_keeps_whole_items_and_reasks_the_rest(fault_proxy: FakeServer, tmp_path, texts):
    _on_first_request(fault_proxy, Fault("truncate"))
    out, labeler = _label(fault_proxy, tmp_path, texts[:3])
    _check_complete(out, texts[:3])
    assert fault_proxy.chat_records()[0].applied
    # At most one item survives the cut, so at least two of the three rows were asked again.
    assert len(_rows_asked_after(fault_proxy, 1, texts[:3])) >= 2
    assert labeler.stats.reasks >= 2


@pytest.mark.parametrize(
    "fault",
    [
        Fault("drop_items", ids=(2,)),
        Fault("bad_id", ids=(2,)),
        Fault("dup_items", ids=(2,), labels=("business", "politics")),
    ],
    ids=["missing", "out-of-range-id", "conflicting-duplicate"],
)
def test_broken_item_is_reasked(fault_proxy: FakeServer, tmp_path, texts, fault: Fault):
    _on_first_request(fault_proxy, fault)
    out, _ = _label(fault_proxy, tmp_path, texts[:3])
    _check_complete(out, texts[:3])
    assert fault_proxy.chat_records()[0].applied
    assert 1 in _rows_asked_after(fault_proxy, 1, texts[:3])  # row 1 was item id 2 of the first batch


def test_exact_duplicate_is_not_a_problem(fault_proxy: FakeServer, tmp_path, texts):
    # one response whose item 2 is "business" twice: accepted once, not re-asked
    _on_first_request(fault_proxy, Fault("dup_items", ids=(2,), labels=("business", "business")))
    out, _ = _label(fault_proxy, tmp_path, texts[:3], max_reasks=1)
    _check_complete(out, texts[:3])
    assert (out["pred_status"].iat[1], out["pred_label"].iat[1]) == ("ok", "business")
    assert 1 not in _rows_asked_after(fault_proxy, 1, texts[:3])


def test_off_list_label_is_reasked_with_feedback_then_invalid(fault_proxy: FakeServer, tmp_path, texts):
    # Every request answers item 1 with an off-list label, re-asks included.
    fault_proxy.rule = lambda req: Fault("off_label", ids=(1,), label="weather")
    out, _ = _label(fault_proxy, tmp_path, texts[:3], max_reasks=1)
    _check_complete(out, texts[:3])
    assert out["pred_status"].iat[0] == "invalid"
    assert "weather" in out["pred_reason"].iat[0]
    reasks = [r.text() for r in fault_proxy.chat_records()[1:]]
    assert any(texts[0] in t and "'weather'" in t for t in reasks), "the re-ask should quote the bad answer"


def test_off_list_label_once_is_recovered(fault_proxy: FakeServer, tmp_path, texts):
    _on_first_request(fault_proxy, Fault("off_label", ids=(1,), label="weather"))
    out, _ = _label(fault_proxy, tmp_path, texts[:3], max_reasks=1)
    _check_complete(out, texts[:3])
    # the grammar-constrained re-ask can only give a listed label: ok, or empty if the model
    # numbered its answer wrongly, but never invalid
    assert out["pred_status"].iat[0] in {"ok", "empty"}
    assert 0 in _rows_asked_after(fault_proxy, 1, texts[:3])


def test_answer_cut_at_max_tokens_is_salvaged_or_reasked(fault_proxy: FakeServer, tmp_path, texts):
    """A real length-limited completion (finish_reason=length; the SDK raises on it) is not a
    failed request: its complete items are kept, the rest re-asked, then marked empty."""
    out, labeler = _label(fault_proxy, tmp_path, texts, max_tokens=16, max_reasks=1)
    _check_complete(out, texts)
    assert labeler.stats.failed_requests == 0
    assert "error" not in set(out["pred_status"])
    empty = out[out["pred_status"] == "empty"]
    assert len(empty) > 0 and all(empty["pred_reason"].str.contains("no usable answer|left this item out"))
    assert labeler.stats.reasks > 0
