"""--candidates K: each request lists only the labels nearest to its texts (real all-MiniLM-L6-v2
embeddings), answers are still validated against the whole set, the local model scores only each
text's candidates, pred_candidates is written and eval reports the candidate recall."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.errors import ConfigError, InputError
from promptclf.eval.candidates import candidate_recall
from promptclf.label.labeler import Labeler, label_file
from promptclf.label.options import LabelOptions
from promptclf.providers.base import ScoreRequest, ScoreResult, Usage
from promptclf.testing.answers import parse_prompt
from promptclf.testing.fake_provider import OFF_LIST, FakeChatProvider
from promptclf.testing.sim_teacher import Answer, among_shown

LABELS = {
    "football": "soccer matches, goals and players",
    "cooking": "recipes, food and kitchens",
    "astronomy": "stars, planets and telescopes",
    "finance": "stock markets, banks and money",
    "music": "songs, bands and concerts",
    "medicine": "doctors, diseases and treatments",
    "law": "courts, judges and lawsuits",
    "weather": "rain, storms and forecasts",
    "cars": "automobiles, engines and driving",
    "programming": "software, code and computers",
    "gardening": "plants, flowers and gardens",
    "movies": "films, actors and cinema",
}
NAMES = list(LABELS)
TEXTS = [
    "The striker scored two goals in the final minute.",
    "Add the garlic to the pan and stir the sauce.",
    "The telescope spotted a new planet orbiting a distant star.",
    "Shares fell as the central bank raised interest rates.",
    "The band played their new song to a sold-out concert.",
    "The doctor prescribed antibiotics for the infection.",
    "The judge dismissed the lawsuit in court today.",
    "Heavy rain and storms are forecast for the weekend.",
    "The new engine makes the car faster on the motorway.",
    "The developer fixed a bug in the Python code.",
    "Plant the tulip bulbs in the garden before winter.",
    "The actor won an award for the film.",
]
GOLD = dict(zip(TEXTS, NAMES, strict=True))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One store for the module, so the labels and texts are embedded once."""
    return str(tmp_path_factory.mktemp("candidates") / "store.sqlite")


def _opts(store: str, **kw: object) -> LabelOptions:
    base: dict[str, object] = dict(
        labels=[{"name": k, "description": v} for k, v in LABELS.items()], candidates=3, batch_size=4,
        concurrency=1, store=store, label_col=None, no_cache=True,  # the tests' fakes answer differently
    )  # fmt: skip
    return LabelOptions.build(**(base | kw))


def _df() -> pd.DataFrame:
    return pd.DataFrame({"text": TEXTS, "label": NAMES})


def test_each_request_lists_the_union_of_its_texts_candidates(store_path: str) -> None:
    fake = FakeChatProvider(answer=lambda text, labels: GOLD[text] if GOLD[text] in labels else labels[0])
    res = Labeler(_opts(store_path, label_col="label"), provider=fake, progress=False).label(_df())
    f = res.frame
    cands = {t: json.loads(c) for t, c in zip(f["text"], f["pred_candidates"], strict=True)}
    assert all(len(c) == 3 and len(set(c)) == 3 and set(c) <= set(NAMES) for c in cands.values())
    # These texts are plainly about their label: MiniLM puts it first.
    assert all(c[0] == GOLD[t] for t, c in cands.items())
    assert len(fake.calls) == 3
    for call in fake.calls:
        system, user = call.messages[0]["content"], call.messages[-1]["content"]
        listed = parse_prompt(user)[0]
        union = {lab for t in call.texts for lab in cands[t]}
        assert listed == [n for n in NAMES if n in union]  # the union, in label-set order
        assert not any(n in system for n in NAMES)  # the system message names no label: one cached prefix
        assert f"- {listed[0]}: {LABELS[listed[0]]}" in user  # descriptions are kept
    assert (f["pred_label"] == f["label"]).all() and set(f["pred_status"]) == {"ok"}
    c = res.summary.candidates
    assert c is not None and c["k"] == 3 and c["off_candidate_answers"] == 0
    assert c["candidate_recall"] == 1.0 and c["n_candidate_rows"] == 12
    assert c["mean_shown_labels"] == pytest.approx(
        sum(len(parse_prompt(x.messages[-1]["content"])[0]) for x in fake.calls) / 3
    )


def test_an_answer_outside_the_candidates_is_accepted_and_counted(store_path: str) -> None:
    # A model that answers a label from the set that its prompt did not show.
    fake = FakeChatProvider(answer=lambda text, labels: next(n for n in reversed(NAMES) if n not in labels))
    res = Labeler(_opts(store_path), provider=fake, progress=False).label(_df())
    assert set(res.frame["pred_status"]) == {"ok"}
    assert res.summary.candidates is not None and res.summary.candidates["off_candidate_answers"] == 12
    assert len(fake.calls) == 3  # nothing re-asked: the answers are in the full set


def test_an_answer_off_the_set_is_still_invalid(store_path: str) -> None:
    fake = FakeChatProvider(answer=lambda text, labels: OFF_LIST if text == TEXTS[0] else labels[0])
    f = Labeler(_opts(store_path, max_reasks=1), provider=fake, progress=False).label(_df()).frame
    row = f[f["text"] == TEXTS[0]].iloc[0]
    assert row["pred_status"] == "invalid" and OFF_LIST in row["pred_reason"]
    assert (f["pred_status"] == "ok").sum() == 11


def test_the_schema_enum_is_the_shown_union(store_path: str) -> None:
    from promptclf.label.chat_runner import ChatRunner
    from promptclf.label.jobs import prompt_builder
    from promptclf.label.stream import prepare_job

    labeler = Labeler(_opts(store_path), provider=FakeChatProvider(), progress=False)
    ctx = labeler.context()
    job = prepare_job(ctx.options, _df(), store=ctx.store)
    runner = ChatRunner(ctx.using(FakeChatProvider()), job, prompt_builder(ctx.options, job))  # type: ignore[arg-type]
    for task in runner.first_tasks():
        req = runner.build_request(task)
        enum = req.schema["properties"]["items"]["items"]["properties"]["label"]["enum"]
        assert enum == parse_prompt(req.messages[-1]["content"])[0] == job.candidates.shown(task.rows).names  # type: ignore[union-attr]
        assert len(enum) < len(NAMES)


def test_k_larger_than_the_label_set_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"--candidates 13 is larger than the label set \(12 labels\).*--candidates 12"
    ):
        _opts(str(tmp_path / "s.sqlite"), candidates=13)
    with pytest.raises(ConfigError, match="candidates"):
        _opts(str(tmp_path / "s.sqlite"), candidates=0)
    path = tmp_path / "in.csv"
    _df().to_csv(path, index=False)
    opts = _opts(str(tmp_path / "s.sqlite"), labels=None, label_col="label", candidates=20)
    with pytest.raises(InputError, match="drop --candidates"):  # the set inferred from the label column
        label_file(path, tmp_path / "out.csv", opts, provider=FakeChatProvider(), progress=False)
    r = CliRunner().invoke(main, ["label", str(path), "--labels", "a,b,c", "--candidates", "4", "--dry-run"])
    assert r.exit_code != 0 and "--candidates 4 is larger than the label set (3 labels)" in r.output


def test_multi_label_requests_list_candidates_and_keep_answers_from_the_set(store_path: str) -> None:
    fake = FakeChatProvider(multi_answer=lambda text, labels: [GOLD[text], "movies"])
    opts = _opts(store_path, multi_label=True)
    res = Labeler(opts, provider=fake, progress=False).label(_df())
    f = res.frame
    assert all(
        json.loads(c) == sorted({g, "movies"}, key=NAMES.index) for c, g in zip(f["pred_labels"], NAMES, strict=True)
    )
    assert all(len(parse_prompt(c.messages[-1]["content"])[0]) < len(NAMES) for c in fake.calls)
    assert "zero or more" in fake.calls[0].messages[-1]["content"]


def test_label_file_records_candidates_and_eval_reports_the_recall(tmp_path: Path, store_path: str) -> None:
    path, out = tmp_path / "in.csv", tmp_path / "out.csv"
    df = _df()
    df.loc[0, "label"] = "movies"  # a gold label far from its text: not among its candidates
    df.to_csv(path, index=False)
    opts = _opts(store_path, label_col="label")
    fake = FakeChatProvider(answer=lambda text, labels: labels[0])
    run = label_file(path, out, opts, provider=fake, progress=False)
    assert run.options["candidates"] == 3
    assert run.candidates is not None and run.candidates["candidate_recall"] == pytest.approx(11 / 12)
    from promptclf.cli.label import _fmt_candidates

    assert _fmt_candidates(run.candidates) == [
        f"  candidates: K=3, {run.candidates['mean_shown_labels']} labels shown per request, 0 answers outside them; "
        "gold among the candidates on 91.7% of 12 gold rows"
    ]
    saved = json.loads((tmp_path / "out.run" / "run.json").read_text())
    assert saved["candidates"]["k"] == 3 and saved["candidates"]["n_candidate_rows"] == 12
    r = CliRunner().invoke(main, ["eval", str(out), "--gold-col", "label", "--json", "--n-boot", "0"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)["candidates"]
    assert m["candidate_recall"] == pytest.approx(11 / 12) and m["n_candidate_rows"] == 12 and m["mean_candidates"] == 3
    table = CliRunner().invoke(main, ["eval", str(out), "--gold-col", "label", "--n-boot", "0"])
    assert "candidate recall 91.7%" in table.stdout


def test_candidate_recall_by_hand() -> None:
    gold = ["a", "b", "c", "", "a"]
    cands = ['["a", "b"]', '["a", "c"]', '["c"]', '["a"]', ""]
    status = ["ok", "ok", "shot", "ok", "error"]
    m = candidate_recall(gold, cands, status=status)
    assert m is not None and m["candidate_recall"] == 0.5 and m["n_candidate_rows"] == 2  # shot, no gold, none
    multi = candidate_recall(['["a", "b"]', "c"], ['["a"]', '["c", "d"]'], multi_label=True)
    assert multi is not None and multi["candidate_recall"] == pytest.approx(2 / 3)
    assert multi["candidate_row_recall"] == 0.5
    assert candidate_recall(["a"], [""]) is None


def test_dry_run_counts_the_candidates_prompts(store_path: str) -> None:
    full = Labeler(_opts(store_path, candidates=None), provider=FakeChatProvider(), progress=False).dry_run(_df())
    few = Labeler(_opts(store_path), provider=FakeChatProvider(), progress=False).dry_run(_df())
    assert few.requests == full.requests == 3
    assert few.est_prompt_tokens < 0.8 * full.est_prompt_tokens
    assert len(parse_prompt(few.prompt)[0]) < len(NAMES) == len(parse_prompt(full.prompt)[0])
    assert full.labels_listed is None and few.labels_listed is not None and 3 <= few.labels_listed < len(NAMES)


class NameScores:
    """A scoring provider that gives each label a weight from whether its name is in the text; it records
    every request (the labels it was asked to score)."""

    name = "local"
    model = "name-scores"
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
        rows = []
        for item in request.items:
            w = [1.0 + (lab in item) for lab in request.labels]
            rows.append([v / sum(w) for v in w])
        return ScoreResult(rows, Usage(len(request.items), 0), 0.01)


def test_local_scoring_scores_only_each_texts_candidates(store_path: str) -> None:
    provider = NameScores()
    f = Labeler(_opts(store_path), provider=provider, progress=False).label(_df()).frame
    for cell, probs, label in zip(f["pred_candidates"], f["pred_probs"], f["pred_label"], strict=True):
        cands, p = json.loads(cell), json.loads(probs)
        assert set(p) == set(NAMES) and sum(p.values()) == pytest.approx(1.0, abs=1e-5)
        assert {n for n, v in p.items() if v > 0} == set(cands) and label in cands
    for req in provider.requests:
        assert len(req.labels) == 3 and all(f"{n}" in req.prefix for n in req.labels)
        assert not any(n in req.prefix for n in NAMES if n not in req.labels)  # the prompt lists only them


def test_local_multi_label_asks_only_candidate_labels(store_path: str) -> None:
    from test_multilabel import YesNoScores

    provider = YesNoScores()
    f = Labeler(_opts(store_path, multi_label=True), provider=provider, progress=False).label(_df()).frame
    assert sum(len(r.items) for r in provider.requests) == 12 * 3  # each text asked about its 3 labels only
    for cell, probs in zip(f["pred_candidates"], f["pred_probs"], strict=True):
        p = json.loads(probs)
        assert {n for n, v in p.items() if v > 0} == set(json.loads(cell))


def test_tiny_random_model_scores_candidates(store_path: str, tmp_path: Path) -> None:
    """The real local provider (a 2-layer random-weight Llama): every request scores one text's candidates."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    words = sorted({w for t in [*TEXTS, *LABELS.values(), *NAMES] for w in t.replace(",", " ").split()})
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    cfg = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    folder = tmp_path / "tiny"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    opts = _opts(store_path, provider="local", model=str(folder))
    f = Labeler(opts, progress=False).label(_df()).frame
    assert set(f["pred_status"]) == {"ok"}
    for cell, probs, label in zip(f["pred_candidates"], f["pred_probs"], f["pred_label"], strict=True):
        cands, p = json.loads(cell), json.loads(probs)
        assert label in cands and sum(p[n] for n in cands) == pytest.approx(1.0, abs=1e-4)
        assert all(p[n] == 0 for n in NAMES if n not in cands)


def test_the_simulated_teacher_answers_from_the_labels_shown() -> None:
    ans = Answer("b", {"a": 0.1, "b": 0.6, "c": 0.3}, True)
    kept = among_shown(ans, ["b", "c"])
    assert kept.label == "b" and kept.probs == pytest.approx({"b": 2 / 3, "c": 1 / 3}) and kept.correct
    assert among_shown(ans, ["b", "x"]).probs["x"] == pytest.approx(1e-6 / 0.600001)  # unknown: a sliver
    moved = among_shown(ans, ["a", "c"])
    assert moved.label == "c" and moved.probs == pytest.approx({"a": 0.25, "c": 0.75}) and not moved.correct


def test_batch_api_lines_carry_the_candidates(tmp_path: Path, store_path: str) -> None:
    """--batch-api: the lines are the synchronous requests, each listing its texts' candidates."""
    from promptclf.testing.batch_api import BatchServer

    path, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _df()[["text"]].to_csv(path, index=False)
    labels = tmp_path / "labels.yaml"
    labels.write_text("\n".join(f"{k}: {v}" for k, v in LABELS.items()))
    with BatchServer(gold=GOLD) as server:
        args = ["label", str(path), "-o", str(out), "--labels", str(labels), "--candidates", "3", "--provider"]
        args += ["openai", "--base-url", server.base_url, "--model", "fake-batch", "--batch-size", "4", "--batch-api"]
        args += ["--poll-interval", "0.05", "--batch-min-requests", "1", "-q"]
        env = {"OPENAI_API_KEY": "sk-batch-test", "PROMPTCLF_STORE": store_path}
        res = CliRunner().invoke(main, args, env=env)
        server.api.wait_idle()
    assert res.exit_code == 0, res.output
    dry = CliRunner().invoke(main, [*args[:16], "--dry-run"], env=env)  # up to --batch-size 4
    assert dry.exit_code == 0, dry.output
    assert "# candidates: K=3; " in dry.stdout and "of the 12 labels listed per request" in dry.stdout
    f = pd.read_csv(out, keep_default_na=False)
    assert f["pred_label"].tolist() == NAMES and all(len(json.loads(c)) == 3 for c in f["pred_candidates"])
    run = json.loads((tmp_path / "out.run" / "run.json").read_text())
    assert run["usage"]["batch_requests"] == 3 and run["candidates"]["k"] == 3
    assert run["candidates"]["mean_shown_labels"] < len(NAMES)


@pytest.fixture(scope="module")
def icd() -> tuple[pd.DataFrame, list[dict[str, object]]]:
    """The real 262-label set: ICD-10-CM titles and their blocks, 8 rows labeled."""
    from promptclf.data.taxonomies import icd10cm, icd10cm_labels_yaml
    from promptclf.labels import LabelSet

    pytest.importorskip("yaml")
    full = icd10cm(per_leaf=20, path=False)
    import yaml

    labels = LabelSet.from_dict(yaml.safe_load(icd10cm_labels_yaml(full)))
    return full.sample(n=8, random_state=1)[["text", "label"]].reset_index(drop=True), labels.to_dict()


@pytest.mark.slow
def test_smollm2_scores_each_title_against_its_candidates(icd, store_path: str) -> None:  # type: ignore[no-untyped-def]
    """SmolLM2-135M in process on ICD-10-CM's 262 blocks: all of them (with titles) overflow its context, and
    the error names --candidates; with K=5 every request scores one text's own 5 labels."""
    from promptclf.providers.local.provider import LocalProvider

    df, labels = icd

    class Recording(LocalProvider):
        def __init__(self) -> None:
            super().__init__(threads=1)
            self.requests: list[ScoreRequest] = []

        def score(self, request: ScoreRequest) -> ScoreResult:
            self.requests.append(request)
            return super().score(request)

    provider = Recording()
    base = dict(labels=labels, label_col="label", store=store_path, batch_size=4)
    with pytest.raises(InputError, match="--candidates K"):
        Labeler(LabelOptions.build(**base, provider="local"), provider=provider, progress=False).label(df.head(1))
    provider.requests.clear()
    opts = LabelOptions.build(**base, provider="local", candidates=5)
    res = Labeler(opts, provider=provider, progress=False).label(df)
    f = res.frame
    assert set(f["pred_status"]) == {"ok"}
    by_text = {r.items[0]: r for r in provider.requests}
    for text, cell, probs, label in zip(f["text"], f["pred_candidates"], f["pred_probs"], f["pred_label"], strict=True):
        cands, p = json.loads(cell), json.loads(probs)
        req = by_text[text[:4000]]
        assert sorted(req.labels) == sorted(cands) and label in cands
        assert sum(p[n] for n in cands) == pytest.approx(1.0, abs=1e-4) and sum(p.values()) == pytest.approx(
            1.0, abs=1e-4
        )
    c = res.summary.candidates
    assert c is not None and c["n_candidate_rows"] == 8 and 0 <= c["candidate_recall"] <= 1


@pytest.mark.server
def test_llama_server_answers_from_the_listed_candidates(icd, fault_proxy, store_path: str) -> None:  # type: ignore[no-untyped-def]
    """SmolLM2 behind llama.cpp's server, grammar-constrained to each request's union of candidates."""
    df, labels = icd
    opts = LabelOptions.build(
        labels=labels, label_col="label", store=store_path, provider="openai", model="smollm2",
        base_url=fault_proxy.base_url, candidates=3, batch_size=4, concurrency=1, max_reasks=0, timeout_s=120.0,
        no_cache=True,
    )  # fmt: skip
    f = Labeler(opts, progress=False).label(df.head(4)).frame
    assert set(f["pred_status"]) <= {"ok", "empty", "invalid"}
    sent = [r.body for r in fault_proxy.chat_records() if r.body]
    assert len(sent) == 1
    user = next(m["content"] for m in sent[0]["messages"] if m["role"] == "user")
    listed = parse_prompt(user)[0]
    union = {n for c in f["pred_candidates"] for n in json.loads(c)}
    assert set(listed) == union and 3 <= len(listed) <= 12
    fmt = sent[0].get("response_format") or {}
    if fmt.get("type") == "json_schema":  # the grammar allows only the listed labels
        schema = fmt["json_schema"]["schema"]
        assert schema["properties"]["items"]["items"]["properties"]["label"]["enum"] == listed
    ok = f[f["pred_status"] == "ok"]
    assert ok["pred_label"].isin(listed).all()


def test_every_chunk_has_the_candidates_column(tmp_path: Path, store_path: str) -> None:
    """A chunk with nothing to label (here: empty texts) still writes pred_candidates, empty, so the chunks of
    the output file share their columns."""
    path, out = tmp_path / "in.csv", tmp_path / "out.csv"
    pd.DataFrame({"text": ["", " ", *TEXTS[:4]], "label": ["", "", *NAMES[:4]]}).to_csv(path, index=False)
    opts = _opts(store_path, label_col="label", chunk_rows=2)
    label_file(path, out, opts, provider=FakeChatProvider(answer=lambda t, labels: labels[0]), progress=False)
    f = pd.read_csv(out, keep_default_na=False)
    assert len(f) == 6 and f["pred_candidates"].tolist()[:2] == ["", ""]
    assert all(len(json.loads(c)) == 3 for c in f["pred_candidates"][2:])
    assert f["pred_status"].tolist() == ["error", "error", "ok", "ok", "ok", "ok"]


def test_a_label_tree_counts_its_leaves_and_needs_flat_mode(tmp_path: Path, store_path: str) -> None:
    tree = [
        {"name": "sci", "children": [{"name": "space"}, {"name": "med"}, {"name": "code"}]},
        {"name": "fun", "children": [{"name": "film"}, {"name": "music"}]},
    ]
    with pytest.raises(ConfigError, match=r"larger than the label set \(5 labels\)"):
        LabelOptions.build(labels=tree, candidates=6)
    opts = LabelOptions.build(labels=tree, candidates=3, label_col=None, store=store_path, no_cache=True)
    df = pd.DataFrame({"text": ["The rocket reached orbit.", "The band's new album."]})
    with pytest.raises(InputError, match="--tree-mode flat"):
        Labeler(opts, provider=FakeChatProvider(), progress=False).label(df)
    flat = opts.model_copy(update={"tree_mode": "flat"})
    fake = FakeChatProvider(answer=lambda text, labels: labels[0])
    f = Labeler(flat, provider=fake, progress=False).label(df).frame
    assert set(f["pred_status"]) == {"ok"} and all(len(json.loads(c)) == 3 for c in f["pred_candidates"])
    assert all("/" in n for n in parse_prompt(fake.calls[0].messages[-1]["content"])[0])  # leaves, by path


def test_the_simulated_teacher_over_http_answers_only_from_the_listed_labels(store_path: str) -> None:
    from promptclf.store import Store
    from promptclf.testing.sim_teacher import SimTeacher

    # The teacher's gold for the first text is a label far from it ("movies" for a football text), so its two
    # candidates miss it and the teacher, shown only those, cannot give it (nor "football", which its gold
    # table lacks: a listed label it does not know gets a sliver of probability, never a broken answer).
    texts = TEXTS * 2
    gold = ["movies", *NAMES[1:]] * 2
    st = Store(store_path)
    teacher = SimTeacher(texts, gold, accuracy=1.0, store=st)
    st.close()
    df = pd.DataFrame({"text": TEXTS, "label": gold[:12]})
    with teacher:
        opts = _opts(
            store_path, provider="openai", base_url=teacher.base_url, model="simulated-teacher", candidates=2,
            batch_size=1, label_col="label",
        )  # fmt: skip
        os.environ.setdefault("OPENAI_API_KEY", "sk-test")
        res = Labeler(opts, progress=False).label(df)
        listed = [parse_prompt(r.body["messages"][-1]["content"])[0] for r in teacher.server.chat_records() if r.body]
    f = res.frame
    c = res.summary.candidates
    assert c is not None and c["off_candidate_answers"] == 0
    assert len(listed) == 12 and all(len(x) == 2 for x in listed)
    for cell, pred, g in zip(f["pred_candidates"], f["pred_label"], f["label"], strict=True):
        cands = json.loads(cell)
        assert pred in cands
        assert (pred == g) == (g in cands)  # a perfect teacher is right exactly when the gold label was listed
    assert "movies" not in json.loads(f["pred_candidates"][0]) and f["pred_label"][0] != "movies"
    assert c["candidate_recall"] == pytest.approx(11 / 12)
