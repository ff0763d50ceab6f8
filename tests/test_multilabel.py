"""Multi-label: the label set and its cells, the list answers of chat providers (validated and re-asked
like single labels), the pred_labels column, the run's labels.json, and the multi-label metrics of eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import f1_score, hamming_loss

from promptclf.cli import main
from promptclf.errors import ConfigError, InputError
from promptclf.eval.multilabel import multilabel_metrics
from promptclf.label.labeler import Labeler, label_file
from promptclf.label.options import LabelOptions
from promptclf.label.schema import parse_response, response_schema
from promptclf.labels import LabelSet, infer_labels, load_labels_file, split_labels
from promptclf.providers.base import ScoreRequest, ScoreResult, Usage
from promptclf.testing.answers import hash_multi_answer, is_multi_label, parse_prompt
from promptclf.testing.fake_provider import OFF_LIST, FakeChatProvider

NAMES = ["business", "politics", "sport", "tech"]
MULTI = LabelSet.from_names(NAMES, multi_label=True)


def test_cells_split_as_json_lists_or_semicolons() -> None:
    assert split_labels('["sport", "tech"]') == ["sport", "tech"]
    assert split_labels(" sport ; tech;") == ["sport", "tech"]
    assert split_labels("[]") == [] and split_labels("") == [] and split_labels(None) == []
    assert split_labels("sport") == ["sport"]
    assert MULTI.normalize_all("Tech;sport;cooking") == (["sport", "tech"], ["cooking"])
    s = infer_labels(["sport;tech", '["business"]', "", "tech"], multi_label=True)
    assert s.names == ["business", "sport", "tech"] and s.multi_label


def test_labels_json_keeps_the_flag_and_old_files_read(tmp_path: Path) -> None:
    f = tmp_path / "labels.json"
    f.write_text(json.dumps(MULTI.file_data()))
    back = load_labels_file(f)
    assert back.multi_label and back.names == NAMES
    single = LabelSet.from_names(NAMES)
    assert single.file_data() == single.to_dict()  # a single-label run's labels.json is unchanged
    f.write_text(json.dumps(single.file_data()))
    assert not load_labels_file(f).multi_label
    with pytest.raises(InputError, match="both ordinal and multi-label"):
        LabelSet.from_names(["1", "2"], ordinal=True, multi_label=True)


def test_options_refuse_what_assumes_one_label() -> None:
    with pytest.raises(ConfigError, match="zero-shot"):
        LabelOptions.build(multi_label=True, shots=2)
    with pytest.raises(ConfigError, match="--ordinal"):
        LabelOptions.build(multi_label=True, ordinal=True)


def test_schema_and_parsing_of_list_answers() -> None:
    schema = response_schema(MULTI)
    item = schema["properties"]["items"]["items"]
    assert item["required"] == ["id", "labels"] and item["properties"]["labels"]["items"]["enum"] == NAMES
    text = json.dumps(
        {"items": [{"id": 1, "labels": ["Sport", "tech"]}, {"id": 2, "labels": []}, {"id": 3, "labels": ["x"]}]}
    )
    p = parse_response(text, [1, 2, 3, 4], MULTI)
    assert p.sets == {1: ["sport", "tech"], 2: []} and p.labels == {1: "sport;tech", 2: ""}
    assert p.invalid == {3: "x"} and p.missing == [4] and p.retry_ids == [3, 4]
    dup = '{"items": [{"id": 1, "labels": ["sport"]}, {"id": 1, "labels": ["sport", "tech"]}]}'
    assert parse_response(dup, [1], MULTI).conflicting == [1]
    same = '{"items": [{"id": 1, "labels": ["sport"]}, {"id": 1, "labels": ["Sport"]}]}'
    assert parse_response(same, [1], MULTI).sets == {1: ["sport"]}
    cut = '{"items": [{"id": 1, "labels": ["tech", "sport"]}, {"labels": [], "id": 2}, {"id": 3, "labels": ["spo'
    salvaged = parse_response(cut, [1, 2, 3], MULTI)
    assert salvaged.salvaged and salvaged.sets == {1: ["sport", "tech"], 2: []} and salvaged.missing == [3]


def _texts(n: int) -> list[str]:
    return [f"text number {i} about {'x' * (i % 5)}" for i in range(n)]


def _opts(tmp_path: Path, **kw: object) -> LabelOptions:
    base: dict[str, object] = dict(
        labels=[{"name": n} for n in NAMES], multi_label=True, label_col=None, batch_size=4, concurrency=1,
        store=str(tmp_path / "s.sqlite"),
    )  # fmt: skip
    return LabelOptions(**(base | kw))  # type: ignore[arg-type]


def test_label_run_writes_label_sets(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": _texts(40)})
    fake = FakeChatProvider()
    f = Labeler(_opts(tmp_path), provider=fake, progress=False).label(df).frame
    want = [hash_multi_answer(t, NAMES) for t in df["text"]]
    assert [json.loads(c) for c in f["pred_labels"]] == want
    assert f["pred_label"].tolist() == [";".join(w) for w in want]
    assert set(f["pred_status"]) == {"ok"} and any(not w for w in want) and any(len(w) > 1 for w in want)
    user = fake.calls[0].messages[-1]["content"]
    assert is_multi_label(user) and parse_prompt(user)[0] == NAMES and "zero or more" in user


@pytest.mark.parametrize("fault", ["missing", "conflicting", "off_list", "truncated", "prose", "empty"])
def test_bad_list_answers_are_reasked(tmp_path: Path, fault: str) -> None:
    df = pd.DataFrame({"text": _texts(8)})
    fake = FakeChatProvider(faults=[fault])  # the first request only
    f = Labeler(_opts(tmp_path), provider=fake, progress=False).label(df).frame
    assert set(f["pred_status"]) == {"ok"}, f[["pred_status", "pred_reason"]]
    assert [json.loads(c) for c in f["pred_labels"]] == [hash_multi_answer(t, NAMES) for t in df["text"]]
    assert len(fake.calls) > 2  # the bent request's items went again
    if fault == "off_list":
        assert "not labels from the list" in fake.calls[2].messages[-1]["content"]


def test_off_list_to_the_end_is_invalid(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": _texts(3)})
    fake = FakeChatProvider(faults=lambda i, texts: "off_list" if texts[0] == df["text"][0] else None)
    f = Labeler(_opts(tmp_path, max_reasks=1), provider=fake, progress=False).label(df).frame
    assert f["pred_status"][0] == "invalid" and OFF_LIST in f["pred_reason"][0] and f["pred_labels"][0] == ""
    assert f["pred_status"][1] == "ok"


def test_label_file_records_multi_label_and_eval_reads_it(tmp_path: Path) -> None:
    texts = _texts(30)
    gold = [hash_multi_answer(t, NAMES) for t in texts]
    gold[0] = ["sport"] if gold[0] != ["sport"] else ["tech"]  # one wrong answer
    path = tmp_path / "in.csv"
    pd.DataFrame(
        {"text": texts, "label": [";".join(g) if k % 2 and g else json.dumps(g) for k, g in enumerate(gold)]}
    ).to_csv(path, index=False)
    opts = _opts(tmp_path, labels=None, label_col="label")
    run = label_file(path, tmp_path / "out.csv", opts, provider=FakeChatProvider(), progress=False)
    labels_json = json.loads((tmp_path / "out.run" / "labels.json").read_text())
    assert labels_json["multi_label"] is True and run.options["multi_label"] is True
    m = run.metrics
    assert m is not None and m["multi_label"] and m["n_scored"] == 30
    assert m["subset_accuracy"] == pytest.approx(29 / 30)
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "out.csv"), "--gold-col", "label", "--json", "--n-boot", "50"])
    assert r.exit_code == 0, r.output
    e = json.loads(r.stdout)
    assert e["multi_label"] and e["subset_accuracy"] == pytest.approx(29 / 30) and e["micro_f1"] == m["micro_f1"]
    table = CliRunner().invoke(main, ["eval", str(tmp_path / "out.csv"), "--gold-col", "label", "--n-boot", "0"])
    assert "micro-F1" in table.stdout and "Hamming loss" in table.stdout and "labels per row" in table.stdout
    rep = CliRunner().invoke(main, ["report", str(tmp_path / "out.run"), "-o", str(tmp_path / "rep")])
    assert rep.exit_code == 0, rep.output
    row = json.loads((tmp_path / "rep" / "report.json").read_text())["runs"][0]
    assert row["accuracy"] == pytest.approx(29 / 30) and "multi-label: subset accuracy" in row["description"]


def test_unknown_gold_label_names_it(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    pd.DataFrame({"text": ["a b", "c d"], "label": ["sport", "sport;cooking"]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="'cooking'"):
        label_file(path, tmp_path / "o.csv", _opts(tmp_path, label_col="label"), provider=FakeChatProvider())
    scored = tmp_path / "scored.csv"
    pd.DataFrame({"gold": ["sport", "sport;cooking"], "pred_label": ["sport", "sport"]}).to_csv(scored, index=False)
    r = CliRunner().invoke(main, ["eval", str(scored), "--gold-col", "gold", "--multi-label", "--labels", "sport,tech"])
    assert r.exit_code == 2 and "'cooking'" in r.output and "row 1" in r.output and "--labels" in r.output


def test_metrics_by_hand() -> None:
    s = LabelSet.from_names(["a", "b", "c"], multi_label=True)
    gold = ['["a","b"]', "a", "[]", "c", "b;c"]
    pred = ["a;b", "a;c", "[]", "", "b"]
    status = ["ok", "ok", "ok", "error", "ok"]
    m = multilabel_metrics(gold, pred, s, status, n_boot=0)
    # tp/fp/fn per label: a 2/0/0, b 2/0/0, c 0/1/2 (row 3 is an error: it predicts nothing)
    assert m["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    assert m["macro_f1"] == pytest.approx((1 + 1 + 0) / 3)
    # rows: 1, 2*1/(1+2), 1 (none and none), 0, 2*1/(2+1)
    assert m["samples_f1"] == pytest.approx((1 + 2 / 3 + 1 + 0 + 2 / 3) / 5)
    assert m["subset_accuracy"] == pytest.approx(2 / 5)
    assert m["hamming_loss"] == pytest.approx(3 / 15)
    assert m["cardinality"] == {"gold": pytest.approx(6 / 5), "pred": pytest.approx(5 / 5)}
    assert m["per_label"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2, "predicted": 1}
    assert m["coverage"] == pytest.approx(4 / 5)


def test_metrics_match_scikit_learn_and_cis_cover() -> None:
    rng = np.random.default_rng(1)
    names = ["a", "b", "c", "d"]
    y = rng.random((300, 4)) < 0.35
    p = y ^ (rng.random((300, 4)) < 0.15)

    def cells(m: np.ndarray) -> list[str]:
        return [json.dumps([n for n, v in zip(names, row, strict=True) if v]) for row in m]

    out = multilabel_metrics(cells(y), cells(p), LabelSet.from_names(names, multi_label=True), n_boot=300)
    assert out["micro_f1"] == pytest.approx(f1_score(y, p, average="micro"))
    assert out["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    assert out["samples_f1"] == pytest.approx(f1_score(y, p, average="samples", zero_division=1.0))
    assert out["hamming_loss"] == pytest.approx(hamming_loss(y, p))
    for k in ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss"):
        lo, hi = out[f"{k}_ci"]
        assert lo < out[k] < hi and hi - lo < 0.2


def _char_tokens(text: str, weak: dict[int, float]) -> list[dict[str, object]]:
    """One token per character, certain except at the positions in ``weak`` (position -> probability)."""
    return [
        {"token": ch, "logprob": float(np.log(weak.get(i, 1.0))), "bytes": list(ch.encode())}
        for i, ch in enumerate(text)
    ]


def test_each_chosen_label_gets_its_probability() -> None:
    from promptclf.label.confidence import set_confidence

    text = '{"items": [{"id": 1, "labels": ["sport", "tech"]}, {"labels": [], "id": 2}, {"id": 3, "labels": ["tech"]}]}'
    t1 = text.index('"tech"') + 1  # the first character of item 1's "tech"
    t3 = text.rindex('"tech"') + 2  # the second character of item 3's "tech"
    tokens = _char_tokens(text, {t1: 0.6, t3: 0.5, text.index("sport") + 4: 0.9})
    conf = set_confidence(text, tokens, {1: ["sport", "tech"], 2: [], 3: ["tech"]}, MULTI)
    assert conf[1].probs == {"sport": pytest.approx(0.9), "tech": pytest.approx(0.6)}
    assert conf[1].prob == pytest.approx(0.6)  # the least sure label of the set
    assert conf[3].probs == {"tech": pytest.approx(0.5)} and 2 not in conf
    assert set_confidence(text, tokens[:-1], {1: ["sport"]}, MULTI) == {}  # tokens that do not spell the text


def test_a_run_with_logprobs_writes_per_label_probabilities(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": _texts(12)})
    f = Labeler(_opts(tmp_path), provider=FakeChatProvider(logprobs=True), progress=False).label(df).frame
    for labels_cell, probs_cell, prob in zip(f["pred_labels"], f["pred_probs"], f["pred_prob"], strict=True):
        chosen = json.loads(labels_cell)
        assert (json.loads(probs_cell) if probs_cell else {}) == {n: 1.0 for n in chosen}
        assert (prob == 1.0) if chosen else np.isnan(prob)


def test_synthetic_bbc_multilabel_set() -> None:
    from promptclf.data.corpora import bbc_multilabel

    df = bbc_multilabel(60, seed=1, none_share=0.2)
    sets = [split_labels(c) for c in df["label"]]
    assert len(df) == 60 and df["text"].is_unique
    assert all(len(s) == len(set(s)) <= 3 and set(s) <= {"business", "politics", "sports", "tech"} for s in sets)
    assert any(not s for s in sets) and any(len(s) == 3 for s in sets)
    assert bbc_multilabel(60, seed=1, none_share=0.2).equals(df)


class YesNoScores:
    """A scoring provider whose P(yes) is 0.8 when the asked label's name is in the text, else 0.3, and
    0.6 for the content-free inputs; it records every request."""

    name = "local"
    model = "yes-no"
    kind = "scoring"
    base_url = None
    shot_attention = "full"
    max_item_tokens = None

    def __init__(self) -> None:
        self.requests: list[ScoreRequest] = []

    def load(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def layout_tokens(self, system: str, prefix: str, suffix: str) -> tuple[int, int]:
        return self.count_tokens(system + prefix), self.count_tokens(suffix)

    def score(self, request: ScoreRequest) -> ScoreResult:
        self.requests.append(request)
        asked = request.prefix.split('Does the label "')[1].split('"')[0]
        rows = []
        for item in request.items:
            p = 0.6 if item in ("N/A", "", "[MASK]") else 0.8 if asked in item else 0.3
            rows.append([p, 1 - p])
        return ScoreResult(rows, Usage(len(request.items), 0), 0.01)


def test_local_scoring_asks_yes_no_per_label(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": ["sport and tech news", "nothing here", "politics", "tech tech", "business"]})
    provider = YesNoScores()
    f = Labeler(_opts(tmp_path, batch_size=2), provider=provider, progress=False).label(df).frame
    assert [json.loads(c) for c in f["pred_labels"]] == [["sport", "tech"], [], ["politics"], ["tech"], ["business"]]
    assert f["pred_label"][0] == "sport;tech" and set(f["pred_status"]) == {"ok"}
    assert json.loads(f["pred_probs"][0]) == {"business": 0.3, "politics": 0.3, "sport": 0.8, "tech": 0.8}
    assert f["pred_prob"].tolist() == pytest.approx([0.7] * 5)  # the least sure decision: 0.3 -> no at 0.7
    assert len(provider.requests) == 4 * 3  # every label's question for each of the 3 batches
    assert all(r.labels == ["yes", "no"] and r.examples is None for r in provider.requests)
    assert 'Does the label "business" apply' in provider.requests[0].prefix
    assert "answer only yes or no" in provider.requests[0].system


def test_local_scoring_calibrates_each_label(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": ["sport and tech news", "nothing here"]})
    provider = YesNoScores()
    labeler = Labeler(_opts(tmp_path, calibrate=True), provider=provider, progress=False)
    f = labeler.label(df).frame
    hit, miss = (0.8 / 0.6) / (0.8 / 0.6 + 0.2 / 0.4), (0.3 / 0.6) / (0.3 / 0.6 + 0.7 / 0.4)
    assert json.loads(f["pred_probs"][0]) == pytest.approx(
        {"business": miss, "politics": miss, "sport": hit, "tech": hit}
    )
    assert labeler.calibration is not None and labeler.calibration.probs == pytest.approx({n: 0.6 for n in NAMES})
    assert len(provider.requests) == 4 * 2  # the content-free inputs once per label, then the batch per label


def test_dry_run_counts_every_labels_questions(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": ["one two three", "four five"]})
    est = Labeler(_opts(tmp_path, batch_size=1), provider=YesNoScores(), progress=False).dry_run(df)
    assert est.requests == 4 * 2 and 'Does the label "business"' in est.prompt and est.tokens_exact


@pytest.mark.slow
def test_local_model_labels_multi_label_rows(tmp_path: Path) -> None:
    """SmolLM2-135M, in process: every row gets a set (possibly empty) and a P(yes) for every label."""
    from promptclf.data.corpora import bbc_multilabel

    df = bbc_multilabel(4, seed=2, chars=200)
    opts = LabelOptions(  # type: ignore[call-arg]
        provider="local", multi_label=True, labels=[{"name": n} for n in ("business", "politics", "sports", "tech")],
        batch_size=4, store=str(tmp_path / "s.sqlite"),
    )  # fmt: skip
    f = Labeler(opts, progress=False).label(df).frame
    assert set(f["pred_status"]) == {"ok"}
    for cell, probs in zip(f["pred_labels"], f["pred_probs"], strict=True):
        p = json.loads(probs)
        assert set(p) == {"business", "politics", "sports", "tech"}
        assert json.loads(cell) == [n for n, v in p.items() if v >= 0.5]


@pytest.mark.slow
@pytest.mark.server
def test_real_chat_model_answers_with_lists(llama_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SmolLM2 behind llama.cpp's OpenAI-compatible server, grammar-constrained to the list schema."""
    from promptclf.data.corpora import bbc_multilabel

    df = bbc_multilabel(4, seed=3, chars=200)
    path, out = tmp_path / "in.csv", tmp_path / "out.csv"
    df.to_csv(path, index=False)
    args = [str(path), "-o", str(out), "--multi-label", "--labels", "business,politics,sports,tech"]
    args += ["--base-url", llama_server.base_url, "--model", "smollm2", "--batch-size", "4", "--quiet"]
    res = CliRunner().invoke(main, ["label", *args], env={"OPENAI_API_KEY": "sk-test"})
    assert res.exit_code == 0, res.output
    f = pd.read_csv(out, keep_default_na=False)
    assert len(f) == 4 and (f["pred_status"] == "ok").any()
    for cell, st in zip(f["pred_labels"], f["pred_status"], strict=True):
        if st == "ok":
            assert set(json.loads(cell)) <= {"business", "politics", "sports", "tech"}
    ev = CliRunner().invoke(main, ["eval", str(out), "--gold-col", "label", "--n-boot", "0"])
    assert ev.exit_code == 0 and "micro-F1" in ev.output


def test_review_ranks_row_label_decisions(tmp_path: Path) -> None:
    """A multi-label file with known wrong decisions and a probability for every label (as the local model
    gives): the queue names the doubted label and puts the decisions the LLM was unsure of, and got wrong, first."""
    from promptclf.data.corpora import bbc_multilabel

    df = bbc_multilabel(48, seed=4, chars=150)
    gold = [split_labels(c) for c in df["label"]]
    topics = ["business", "politics", "sports", "tech"]
    pred, probs = [], []
    for i, g in enumerate(gold):
        p = {n: 0.97 if n in g else 0.03 for n in topics}
        extra = next((n for n in topics if n not in g), None)
        if i % 6 == 0 and extra:  # a wrong label added, with little confidence
            p[extra] = 0.55
        pred.append([n for n in topics if p[n] >= 0.5])
        probs.append(json.dumps(p))
    path = tmp_path / "ml.csv"
    frame = df.assign(pred_labels=[json.dumps(x) for x in pred], pred_label=[";".join(x) for x in pred])
    frame.assign(pred_probs=probs, pred_status="ok").to_csv(path, index=False)
    out = tmp_path / "queue.csv"
    args = ["review", str(path), "-o", str(out), "--multi-label", "--gold-col", "label", "--top", "5", "--folds", "3"]
    r = CliRunner().invoke(main, [*args, "--store", str(tmp_path / "s.sqlite")])
    assert r.exit_code == 0, r.output
    q = pd.read_csv(out, keep_default_na=False)
    assert len(q) == 5 and {"review_label", "review_decision", "suggested_labels"} <= set(q.columns)
    for _, top in q.iterrows():
        row_pred = set(pred[int(top["review_row"])])
        assert top["review_decision"] == ("in" if top["review_label"] in row_pred else "out")
        assert set(json.loads(top["suggested_labels"])) == row_pred ^ {top["review_label"]}
    assert all(q["review_reasons"])
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["multi_label"] and summary["n_ranked"] == 48 * 4 and summary["signals"]["confidence"] == 48 * 4
    g = summary["gold"]
    assert g["n_wrong"] == sum(1 for i, x in enumerate(gold) if len(pred[i]) != len(x)) == 8
    assert g["at"]["top 5"]["precision"] == 1.0  # the unsure added labels come first
    plain = CliRunner().invoke(main, ["review", str(path), "-o", str(tmp_path / "q2.csv")])
    assert plain.exit_code == 2 and "--multi-label" in plain.output


def test_batch_api_answers_lists(tmp_path: Path) -> None:
    """--batch-api: the lines are the synchronous multi-label requests; the answers become label sets."""
    from promptclf.testing.batch_api import BatchServer

    texts = _texts(6)
    path, out = tmp_path / "in.csv", tmp_path / "out.csv"
    pd.DataFrame({"text": texts}).to_csv(path, index=False)
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps({"openai/fake-batch": {"input": 1.0, "output": 2.0, "batch_input": 0.5, "batch_output": 1.0}})
    )
    with BatchServer(gold={"unused": "x"}) as server:
        args = [
            "label",
            str(path),
            "-o",
            str(out),
            "--multi-label",
            "--labels",
            ",".join(NAMES),
            "--provider",
            "openai",
        ]
        args += ["--base-url", server.base_url, "--model", "fake-batch", "--batch-size", "3", "--batch-api"]
        args += ["--poll-interval", "0.05", "--prices", str(prices), "-q"]
        env = {"OPENAI_API_KEY": "sk-batch-test", "PROMPTCLF_STORE": str(tmp_path / "s.sqlite")}
        res = CliRunner().invoke(main, args, env=env)
        server.api.wait_idle()
    assert res.exit_code == 0, res.output
    f = pd.read_csv(out, keep_default_na=False)
    assert [json.loads(c) for c in f["pred_labels"]] == [hash_multi_answer(t, NAMES) for t in texts]
    run = json.loads((tmp_path / "out.run" / "run.json").read_text())
    assert run["usage"]["batch_requests"] == 2
