"""Label confidence from chat providers' token logprobs (promptclf.label.confidence) and where it ends up.

Unit checks of the alignment on hand-written token lists; then the engine end to end against
real servers: the simulated teacher (promptclf.testing.sim_teacher), whose answers carry a known
distribution per text, so every row's ``pred_prob`` has an exact expected value, behind the
fault proxy (reordered answers, re-asks, the cache, a server that rejects logprobs); and
llama.cpp, to show its server returns logprobs in json_object mode and that they survive a
reordered answer.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from promptclf.label.confidence import compact_logprobs, item_confidence
from promptclf.label.labeler import Labeler
from promptclf.label.options import LabelOptions
from promptclf.labels import LabelSet
from promptclf.providers.base import normalize_logprobs
from promptclf.store import Store
from promptclf.testing.fake_server import FakeServer, Upstream
from promptclf.testing.faults import Fault
from promptclf.testing.sim_teacher import SimTeacher  # noqa: E402

LABELS = LabelSet.from_names(["business", "politics", "sport", "sports", "tech"])


def _tok(t: str, p: float, alts: list[tuple[str, float]] = ()) -> dict:  # type: ignore[assignment]
    return {"token": t, "logprob": math.log(p), "top_logprobs": [{"token": a, "logprob": math.log(q)} for a, q in alts]}


def _answer(*items: tuple[int, list[dict]]) -> tuple[str, list[dict]]:
    """An answer ``{"items": [...]}`` whose label values are the given tokens; structure tokens are certain."""
    toks = [_tok('{"items": [', 1.0)]
    for n, (k, label_toks) in enumerate(items):
        toks.append(_tok(("" if n == 0 else ", ") + f'{{"id": {k}, "label": "', 1.0))
        toks.extend(label_toks)
        toks.append(_tok('"}', 1.0))
    toks.append(_tok("]}", 1.0))
    return "".join(t["token"] for t in toks), toks


def test_prob_is_the_product_of_the_label_tokens_and_alternatives_give_the_distribution():
    text, toks = _answer(
        (1, [_tok("pol", 0.6, [("pol", 0.6), ("tech", 0.2), ("bus", 0.1), ("xyz", 0.05)]), _tok("itics", 0.9)]),
        (2, [_tok("tech", 0.8)]),  # no alternatives listed: no distribution
    )
    conf = item_confidence(text, toks, {1: "politics", 2: "tech"}, LABELS)
    assert conf[1].prob == pytest.approx(0.54)
    total = 0.54 + 0.2 + 0.1
    assert conf[1].probs == pytest.approx({"business": 0.1 / total, "politics": 0.54 / total, "tech": 0.2 / total})
    assert conf[2].prob == pytest.approx(0.8) and conf[2].probs is None


def test_items_are_matched_by_id_not_position_and_ambiguous_alternatives_are_skipped():
    # Item 2 first; "sport" is a prefix of "sports": the alternative "sport" names neither alone,
    # but a token that closes the string ('sport"') is complete and names "sport".
    text, toks = _answer(
        (2, [_tok("sports", 0.7, [("sports", 0.7), ("sport", 0.2), ("tech", 0.05)])]),
        (1, [_tok("bus", 0.9, [("bus", 0.9), ('sport"', 0.04)]), _tok("iness", 0.5)]),
    )
    conf = item_confidence(text, toks, {1: "business", 2: "sports"}, LABELS)
    assert conf[1].prob == pytest.approx(0.45) and conf[2].prob == pytest.approx(0.7)
    assert set(conf[2].probs or {}) == {"sports", "tech"}  # "sport" was ambiguous
    assert set(conf[1].probs or {}) == {"business", "sport"}


def test_token_straddling_the_label_start_and_split_utf8_bytes():
    labels = LabelSet.from_names(["café", "tech"])
    e = "é".encode()
    text = '{"items": [{"id": 1, "label": "café"}]}'
    toks = [
        _tok('{"items": [{"id": 1, "label":', 1.0),
        _tok(' "caf', 0.5, [(' "caf', 0.5), (' "tech', 0.3), (" tech", 0.1)]),  # the last lacks the quote: skipped
        {"token": "\\xc3", "bytes": [e[0]], "logprob": math.log(0.8), "top_logprobs": []},
        {"token": "\\xa9", "bytes": [e[1]], "logprob": 0.0, "top_logprobs": []},
        _tok('"}]}', 1.0),
    ]
    conf = item_confidence(text, toks, {1: "café"}, labels)
    assert conf[1].prob == pytest.approx(0.4)
    assert conf[1].probs == pytest.approx({"café": 0.4 / 0.7, "tech": 0.3 / 0.7})
    # The compact form kept in the store gives the same answer.
    compact = compact_logprobs(text, toks)
    assert compact is not None and item_confidence(text, compact, {1: "café"}, labels) == conf
    assert [bool(t.get("top_logprobs")) for t in compact] == [False, True, False, False, False]


def test_no_probability_when_tokens_do_not_spell_the_answer():
    text, toks = _answer((1, [_tok("tech", 0.8)]))
    assert item_confidence(text.replace("tech", "business"), toks, {1: "business"}, LABELS) == {}
    assert item_confidence(text, None, {1: "tech"}, LABELS) == {}
    assert compact_logprobs(text + "x" * 5, toks) is None


def test_normalize_logprobs_reads_both_shapes():
    chat = {"content": [{"token": "a", "logprob": -0.1, "top_logprobs": []}], "refusal": None}
    assert normalize_logprobs(chat) == chat["content"]
    legacy = {"tokens": ["a", "b"], "token_logprobs": [-0.1, -0.2], "top_logprobs": [{"a": -0.1, "c": -2.0}, None]}
    out = normalize_logprobs(legacy)
    assert out is not None and [t["token"] for t in out] == ["a", "b"]
    assert out[0]["top_logprobs"] == [{"token": "a", "logprob": -0.1}, {"token": "c", "logprob": -2.0}]
    assert normalize_logprobs(None) is None and normalize_logprobs({"content": None}) is None


def test_an_old_store_opens_and_keeps_logprobs(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)  # the responses table as the first release wrote it
    db.execute(
        "CREATE TABLE responses (key TEXT PRIMARY KEY, provider TEXT NOT NULL, model TEXT NOT NULL, "
        "request TEXT NOT NULL, response TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, "
        "completion_tokens INTEGER NOT NULL, latency_s REAL NOT NULL, cost_usd REAL NOT NULL, created REAL NOT NULL)"
    )
    db.execute("INSERT INTO responses VALUES ('old', 'openai', 'm', '{}', 'text', 1, 2, 0.1, 0.0, 0)")
    db.commit()
    db.close()
    store = Store(path)
    old = store.get("old")
    assert old is not None and old.response == "text" and old.logprobs is None
    lp = [{"token": "x", "logprob": -0.5}]
    store.put("new", "openai", "m", {}, "x", 1, 1, 0.1, 0.0, 0, lp)
    new = store.get("new")
    assert new is not None and new.logprobs == lp
    store.close()


# -- end to end against the simulated teacher, through the fault proxy ---------------------------


@pytest.fixture(scope="module")
def news() -> pd.DataFrame:
    from promptclf.data.tables import bbc_sample

    df = bbc_sample(30, seed=21)[["id", "text", "label"]].reset_index(drop=True)
    df["text"] = df["text"].str.slice(0, 300)
    return df


@pytest.fixture(scope="module")
def teacher(news: pd.DataFrame):
    with SimTeacher(list(news["text"]), list(news["label"]), accuracy=0.8, seed=3) as t:
        yield t


@pytest.fixture()
def proxy(teacher: SimTeacher):
    with FakeServer(Upstream(teacher.base_url.removesuffix("/v1"))) as p:
        yield p


def _label(proxy: FakeServer, df: pd.DataFrame, store: Path, **kw: object) -> tuple[pd.DataFrame, Labeler]:
    opts = LabelOptions(
        provider="openai", base_url=proxy.base_url, model="simulated-teacher", batch_size=6, store=str(store), **kw
    )
    labeler = Labeler(opts, progress=False)
    return labeler.label(df).frame, labeler


def _assert_oracle(out: pd.DataFrame, teacher: SimTeacher, without: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    """Every row has its own text's probability (exactly what the teacher put in the logprobs),
    except the rows in ``without``, which must have none."""
    assert set(out["pred_status"]) == {"ok"}
    for i, text, lab, p, cell in zip(
        out.index, out["text"], out["pred_label"], out["pred_prob"], out["pred_probs"], strict=True
    ):
        a = teacher.answer_for(text)
        assert lab == a.label
        if i in without:
            assert pd.isna(p) and cell == "", i
            continue
        assert p == pytest.approx(a.probs[lab], abs=2e-6)
        probs = json.loads(cell)
        top = sorted(a.probs, key=a.probs.get, reverse=True)[:5]
        total = sum(a.probs[k] for k in top)
        assert probs == pytest.approx({k: a.probs[k] / total for k in top}, abs=2e-6)


def test_reordered_answers_keep_each_rows_probability(proxy: FakeServer, teacher: SimTeacher, news, tmp_path):
    proxy.rule = lambda req: Fault("reorder")
    out, _ = _label(proxy, news, tmp_path / "s.sqlite")
    recs = proxy.chat_records()
    assert recs and all(r.fault == "reorder" and r.applied for r in recs)
    first = json.loads(recs[0].content or "{}")["items"]
    assert [e["id"] for e in first] == [6, 5, 4, 3, 2, 1]  # the answer really was reversed
    _assert_oracle(out, teacher)
    assert out["pred_prob"].nunique() > 10  # distinct values, so a mix-up would show


def test_reasked_items_get_the_reasks_probability(proxy: FakeServer, teacher: SimTeacher, news, tmp_path):
    proxy.enqueue(Fault("drop_items", ids=(2, 5)), Fault("off_label", ids=(1,)))
    out, labeler = _label(proxy, news, tmp_path / "s.sqlite", concurrency=1)
    assert labeler.stats.reasks == 3
    # Rows 1, 4 (batch 1) and 6 (batch 2) were re-asked: each has its re-ask's probability. The
    # proxy re-serialised the two edited answers, so their tokens no longer spell them and
    # the rows labelled from them get no probability: none is invented.
    _assert_oracle(out, teacher, without={0, 2, 3, 5, 7, 8, 9, 10, 11})


def test_cached_answers_give_the_same_probabilities(proxy: FakeServer, teacher: SimTeacher, news, tmp_path):
    store = tmp_path / "s.sqlite"
    first, _ = _label(proxy, news, store)
    sent = len(proxy.chat_records())
    again, labeler = _label(proxy, news, store)
    assert len(proxy.chat_records()) == sent and labeler.stats.cached_requests == labeler.stats.requests
    pd.testing.assert_frame_equal(first, again)
    _assert_oracle(again, teacher)


def test_a_server_that_rejects_logprobs_still_labels(proxy: FakeServer, teacher: SimTeacher, news, tmp_path, caplog):
    def reject(req):
        if (req.body or {}).get("logprobs"):
            return Fault("status", status=400, body={"error": {"message": "logprobs are not supported", "type": "x"}})
        return None

    proxy.rule = reject
    out, labeler = _label(proxy, news, tmp_path / "s.sqlite", concurrency=1)
    assert set(out["pred_status"]) == {"ok"}
    assert out["pred_prob"].isna().all() and set(out["pred_probs"]) == {""}  # never invented
    with_lp = [r for r in proxy.chat_records() if (r.body or {}).get("logprobs")]
    assert len(with_lp) == 1 and with_lp[0].status == 400  # asked once, then remembered for the run
    assert labeler.stats.failed_requests == 0
    said = [r for r in caplog.records if "rejected token log-probabilities" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"


def test_top_logprobs_zero_asks_for_none(proxy: FakeServer, news, tmp_path):
    out, _ = _label(proxy, news.head(6), tmp_path / "s.sqlite", top_logprobs=0)
    assert not any("logprobs" in (r.body or {}) for r in proxy.chat_records())
    assert out["pred_prob"].isna().all() and set(out["pred_probs"]) == {""}


# -- llama.cpp ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.server
def test_llama_cpp_logprobs_in_json_object_mode_survive_a_reordered_answer(fault_proxy: FakeServer, tmp_path):
    """llama.cpp returns token logprobs with json_object mode; with every answer reversed by the
    proxy, each row gets the probability its own item had in the server's original answer."""
    from promptclf.label.schema import parse_response

    df = pd.DataFrame(
        {
            "text": [
                "Shares in the bank rose after profits beat forecasts.",
                "The striker scored twice in the cup final.",
                "MPs voted on the new budget in parliament.",
                "The new phone has a faster chip and better camera.",
            ],
            "label": ["business", "sport", "politics", "tech"],
        }
    )
    fault_proxy.rule = lambda req: Fault("reorder")
    opts = LabelOptions(
        provider="openai", base_url=fault_proxy.base_url, model="smollm2", batch_size=2, concurrency=1,
        store=str(tmp_path / "s.sqlite"), max_reasks=0, timeout_s=600,
    )  # fmt: skip
    labeler = Labeler(opts, progress=False)
    out = labeler.label(df).frame
    labels = labeler.job.labels  # type: ignore[union-attr]
    # Answers that reached the engine (a loaded machine may time a request out and retry it).
    recs = [r for r in fault_proxy.chat_records() if r.status == 200 and r.delivered]
    assert len(recs) == 2
    checked = 0
    for i, rec in enumerate(recs):  # concurrency 1, no re-asks: request i holds rows 2i, 2i+1
        body = rec.body or {}
        assert body.get("logprobs") is True and body.get("top_logprobs") == 5
        assert body["response_format"]["type"] == "json_object"
        choice = (rec.upstream or {})["choices"][0]
        original, tokens = choice["message"]["content"], choice["logprobs"]["content"]
        assert tokens and "".join(t["token"] for t in tokens).strip() == original.strip()
        parsed = parse_response(original, [1, 2], labels)
        expected = item_confidence(original, tokens, parsed.labels, labels)
        if len(parsed.labels) == 2:
            assert rec.applied and rec.content != original  # the answer the engine saw was reversed
        for k, conf in expected.items():
            row = 2 * i + k - 1
            assert out["pred_label"][row] == parsed.labels[k]
            assert out["pred_prob"][row] == pytest.approx(conf.prob, abs=1e-6)
            checked += 1
    assert checked >= 2, "llama.cpp gave too few labelled items to check"
