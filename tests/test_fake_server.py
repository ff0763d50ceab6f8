"""The fake OpenAI-compatible server itself: its in-process answers, each fault it injects, its
records, and the batch endpoints; then the labeling engine through it over real HTTP, with the
hosted client (fast tier: no model behind it)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from promptclf.testing.answers import PromptAnswers, hash_answer
from promptclf.testing.batch_api import BatchServer
from promptclf.testing.fake_server import FakeServer, Responder, Upstream
from promptclf.testing.faults import Fault

LABELS = ["alpha", "beta", "gamma"]
PROMPT = (
    "Classify each text below into one of these labels:\n- alpha\n- beta\n- gamma\n"
    "Texts to classify:\n[1] first text\n[2] second text\n[3] third text\n"
)


def _post(url: str, body: dict[str, Any], key: str | None = None, timeout: float = 5) -> tuple[int, dict, Any]:
    req = urllib.request.Request(url + "/chat/completions", json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def _chat() -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": PROMPT}]}


def _items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(payload["choices"][0]["message"]["content"])["items"]


@pytest.fixture
def srv() -> Any:
    with FakeServer(Responder(PromptAnswers())) as s:
        yield s


def test_answers_from_the_prompt_and_records_each_request(srv: FakeServer) -> None:
    status, _, payload = _post(srv.base_url, _chat())
    assert status == 200
    want = [hash_answer(t, LABELS) for t in ("first text", "second text", "third text")]
    assert [e["label"] for e in _items(payload)] == want and payload["usage"]["prompt_tokens"] > 0
    _post(srv.base_url, _chat())
    # The server marks an answer delivered after its last write returns, which can be a moment after the
    # client has read it: wait for that, not for a fixed time.
    deadline = time.monotonic() + 5
    while len(srv.answered_hashes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(srv.answered_hashes()) == 2 and srv.duplicates == 1  # the same body answered twice
    with urllib.request.urlopen(srv.base_url + "/models", timeout=5) as r:
        assert json.loads(r.read())["data"][0]["id"] == "fake-model"


def test_status_faults_with_retry_after_and_a_rule(srv: FakeServer) -> None:
    srv.enqueue(Fault("status", 429, retry_after=2), Fault("status", 503))
    status, headers, body = _post(srv.base_url, _chat())
    assert status == 429 and headers["Retry-After"] == "2" and body["error"]["code"] == "rate_limit_exceeded"
    assert _post(srv.base_url, _chat())[0] == 503
    srv.rule = lambda req: Fault("status", 500) if req.index % 2 else None
    assert [_post(srv.base_url, _chat())[0] for _ in range(4)] == [200, 500, 200, 500]
    assert [r.fault for r in srv.chat_records()][:2] == ["status", "status"]


def test_timeouts_and_dropped_connections_end_without_an_answer(srv: FakeServer) -> None:
    srv.enqueue(Fault("timeout", hold_s=0.5), Fault("drop"))
    t0 = time.monotonic()
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        _post(srv.base_url, _chat(), timeout=5)
    assert time.monotonic() - t0 >= 0.5
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        _post(srv.base_url, _chat())
    assert [r.status for r in srv.chat_records()] == [None, None]


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (Fault("drop_items", ids=(2,)), lambda items: [e["id"] for e in items] == [1, 3]),
        (Fault("dup_items", ids=(1,), labels=("alpha", "beta")), lambda items: [e["id"] for e in items].count(1) == 2),
        (Fault("bad_id", ids=(3,)), lambda items: 1003 in [e["id"] for e in items]),
        (Fault("off_label", ids=(1,), label="zeta"), lambda items: {"id": 1, "label": "zeta"} in items),
        (Fault("reorder"), lambda items: [e["id"] for e in items] == [3, 2, 1]),
    ],
)
def test_content_faults_edit_the_answer(srv: FakeServer, fault: Fault, check: Any) -> None:
    srv.enqueue(fault)
    _, _, payload = _post(srv.base_url, _chat())
    assert check(_items(payload))
    rec = srv.chat_records()[0]
    assert rec.applied and rec.upstream is not None and rec.content == payload["choices"][0]["message"]["content"]


def test_truncated_answer_is_not_json(srv: FakeServer) -> None:
    srv.enqueue(Fault("truncate"))
    _, _, payload = _post(srv.base_url, _chat())
    with pytest.raises(ValueError):
        json.loads(payload["choices"][0]["message"]["content"])


def test_a_key_is_required_when_asked() -> None:
    with FakeServer(Responder(PromptAnswers()), require_key="sk-right") as s:
        assert _post(s.base_url, _chat(), key="sk-wrong")[0] == 401
        assert _post(s.base_url, _chat(), key="sk-right")[0] == 200


def test_proxy_to_another_fake_and_an_unreachable_upstream(srv: FakeServer) -> None:
    with FakeServer(Upstream(srv.root)) as proxy:
        proxy.enqueue(Fault("drop_items", ids=(1,)))
        _, _, payload = _post(proxy.base_url, _chat())
        assert [e["id"] for e in _items(payload)] == [2, 3] and proxy.forwarded == 1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    with FakeServer(Upstream(f"http://127.0.0.1:{dead}")) as proxy:
        status, _, body = _post(proxy.base_url, _chat())
        assert status == 502 and "unreachable" in body["error"]["message"] and proxy.forwarded == 0


def test_bad_requests_get_a_4xx(srv: FakeServer) -> None:
    req = urllib.request.Request(srv.base_url + "/chat/completions", b"not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400
    assert _post(srv.base_url, {**_chat(), "stream": True})[0] == 400


def test_batch_endpoints_answer_every_line() -> None:
    import openai

    texts = {"first text": "beta", "second text": "gamma"}
    with BatchServer(gold=texts) as s:
        client = openai.OpenAI(base_url=s.base_url, api_key="sk-x")
        lines = [
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": _chat()} for i in range(2)
        ]
        f = client.files.create(
            file=("in.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode()), purpose="batch"
        )
        b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        s.api.wait_idle()
        b = client.batches.retrieve(b.id)
        assert b.status == "completed" and b.request_counts is not None and b.request_counts.completed == 2
        out = [json.loads(x) for x in client.files.content(b.output_file_id or "").text.splitlines()]
        first = json.loads(out[0]["response"]["body"]["choices"][0]["message"]["content"])["items"]
        assert [e["label"] for e in first][:2] == ["beta", "gamma"]
        assert len(s.api.answered) == 2 and s.api.creates == [b.id]


def test_the_engine_over_http_through_the_fake_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hosted client (ChatOpenAI) against the fake server, with a missing item and a 500 injected:
    every row labeled as the answerer says, one re-ask, one transport retry."""
    from promptclf.label.labeler import Labeler
    from promptclf.label.options import LabelOptions

    df = pd.DataFrame({"text": [f"news item {i}" for i in range(6)]})
    with FakeServer(Responder(PromptAnswers())) as s:
        s.enqueue(Fault("drop_items", ids=(2,)), Fault("status", 500))
        opts = LabelOptions(
            provider="openai", base_url=s.base_url, model="fake-model", labels=[{"name": n} for n in LABELS],
            label_col=None, batch_size=3, concurrency=1, retry_max_wait_s=0.01, top_logprobs=0,
            store=str(tmp_path / "s.sqlite"),
        )  # fmt: skip
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        res = Labeler(opts, progress=False).label(df)
    assert res.frame["pred_label"].tolist() == [hash_answer(t, LABELS) for t in df["text"]]
    assert res.summary.usage.reasks == 1 and res.summary.usage.transport_retries == 1
