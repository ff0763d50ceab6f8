"""Label trees: the YAML format and its errors, hierarchical labelling stage by stage (each prompt lists
only siblings; pred_label is the path; pred_prob the product of the stages'), --tree-mode flat, the run's
labels.json, per-level eval, and the simulated teacher answering a stage from the labels it is shown."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from promptclf.errors import InputError
from promptclf.label.labeler import Labeler, label_file
from promptclf.label.options import LabelOptions
from promptclf.label_tree import LabelTree, at_level
from promptclf.labels import LabelSet, load_labels_file, parse_labels
from promptclf.testing.answers import parse_prompt
from promptclf.testing.fake_provider import FakeChatProvider

TREE_YAML = """\
- name: sci
  description: science and technology
  children:
    - name: space
      description: astronomy and spaceflight
    - name: med
      description: medicine
- name: rec
  children:
    - name: autos
    - name: sport
      children:
        - name: hockey
        - name: baseball
- name: misc
"""
LEAVES = ["sci/space", "sci/med", "rec/autos", "rec/sport/hockey", "rec/sport/baseball", "misc"]


def _tree(tmp_path: Path, text: str = TREE_YAML) -> LabelSet:
    f = tmp_path / "tree.yaml"
    f.write_text(text)
    return parse_labels(str(f))


def tree_answer(gold: dict[str, str]):  # type: ignore[no-untyped-def]
    """An answerer that knows each text's leaf path and answers with the shown label on it (the
    path itself when the prompt lists paths); records every label list it was shown."""
    shown: list[list[str]] = []

    def answer(text: str, labels: list[str]) -> str:
        shown.append(list(labels))
        path = gold[text]
        if path in labels:
            return path
        return next(p for p in path.split("/") if p in labels)

    answer.shown = shown  # type: ignore[attr-defined]
    return answer


def test_yaml_tree_loads_as_leaf_paths_with_stages(tmp_path: Path) -> None:
    s = _tree(tmp_path)
    assert s.names == LEAVES and s.tree is not None and s.tree.depth == 3
    assert s.stage().names == ["sci", "rec", "misc"]
    assert s.stage("rec/sport").names == ["hockey", "baseball"]
    assert s.normalize("hockey") == "rec/sport/hockey" and s.normalize("SCI/space") == "sci/space"
    assert at_level("rec/sport/hockey", 2) == "rec/sport" and at_level("misc", 2) == "misc"
    # labels.json round trip: the tree, marked as one
    f = tmp_path / "labels.json"
    f.write_text(json.dumps(s.file_data()))
    assert json.loads(f.read_text())["tree"] is True
    back = load_labels_file(f)
    assert back.names == LEAVES and back.tree == s.tree
    assert LabelSet.from_dict(s.to_dict()).tree == s.tree


@pytest.mark.parametrize(
    "text, match",
    [
        ("- name: a\n  children:\n    - name: x\n    - name: x\n- name: b\n", "duplicate leaf 'a/x'.*rename one"),
        ("- name: a\n  children: []\n- name: b\n", "empty children list; give it children, or drop"),
        ("- name: a\n  children:\n    - name: x/y\n- name: b\n", "contains '/'.*rename it"),
        ("- name: a\n  children:\n    - name: Space\n    - name: space\n- name: b\n", "duplicate leaf"),
        (
            "- name: a\n  children:\n    - name: x\n      aliases: [z]\n    - name: y\n      aliases: [z]\n- name: b\n",
            "children of 'a'.*ambiguous.*rename one",
        ),
    ],
)
def test_bad_trees_name_the_fix(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        _tree(tmp_path, text)


def test_ambiguous_bare_leaf_name_in_gold_asks_for_the_path(tmp_path: Path) -> None:
    s = _tree(tmp_path, "- name: a\n  children:\n    - name: other\n    - name: x\n- name: b\n  children:\n"
              "    - name: other\n    - name: y\n")  # fmt: skip
    assert s.normalize("other") is None and s.normalize("a/other") == "a/other"
    df = pd.DataFrame({"text": ["t1", "t2"], "label": ["other", "x"]})
    opts = LabelOptions(labels=s.to_dict(), store=str(tmp_path / "s.sqlite"))
    with pytest.raises(InputError, match=r"'other' names several leaves \(a/other, b/other\): write the path"):
        Labeler(opts, provider=FakeChatProvider(), progress=False).label(df)


def _data(n: int = 24) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"text number {i}" for i in range(n)], "label": [LEAVES[i % 6] for i in range(n)]})


def test_hierarchy_asks_stage_by_stage_with_siblings_only(tmp_path: Path) -> None:
    df = _data()
    gold = dict(zip(df["text"], df["label"], strict=True))
    answer = tree_answer(gold)
    fake = FakeChatProvider(answer, logprobs=True)
    opts = LabelOptions(
        labels=_tree(tmp_path).to_dict(), label_col="label", batch_size=5, concurrency=1,
        store=str(tmp_path / "s.sqlite"),
    )  # fmt: skip
    res = Labeler(opts, provider=fake, progress=False).label(df)
    out = res.frame
    assert out["pred_label"].tolist() == df["label"].tolist() and set(out["pred_status"]) == {"ok"}
    # every prompt listed one node's children, never a leaf path
    lists = {tuple(x) for x in answer.shown}
    assert lists == {("sci", "rec", "misc"), ("space", "med"), ("autos", "sport"), ("hockey", "baseball")}
    # the system message names only the siblings too
    for call in fake.calls:
        labels, _ = parse_prompt(call.messages[1]["content"])
        assert all(lab in call.messages[0]["content"] for lab in labels) and "/" not in call.messages[0]["content"]
    # a 3-level leaf took three stages, its probability the product of theirs (each certain here)
    assert out["pred_prob"].between(0.99, 1.0).all()
    assert res.summary.metrics is not None and res.summary.metrics["accuracy"] == 1.0


def test_flat_mode_lists_every_leaf_by_path(tmp_path: Path) -> None:
    df = _data(12)
    answer = tree_answer(dict(zip(df["text"], df["label"], strict=True)))
    opts = LabelOptions(
        labels=_tree(tmp_path).to_dict(), tree_mode="flat", batch_size=6, concurrency=1,
        store=str(tmp_path / "s.sqlite"),
    )  # fmt: skip
    out = Labeler(opts, provider=FakeChatProvider(answer), progress=False).label(df).frame
    assert {tuple(x) for x in answer.shown} == {tuple(LEAVES)}
    assert out["pred_label"].tolist() == df["label"].tolist()


def test_a_stage_failure_keeps_its_status_and_names_the_stage(tmp_path: Path) -> None:
    df = _data(6)
    gold = dict(zip(df["text"], df["label"], strict=True))

    def answer(text: str, labels: list[str]) -> str:
        return "nonsense" if "space" in labels else tree_answer(gold)(text, labels)

    opts = LabelOptions(
        labels=_tree(tmp_path).to_dict(), batch_size=6, concurrency=1, max_reasks=1,
        store=str(tmp_path / "s.sqlite"),
    )  # fmt: skip
    out = Labeler(opts, provider=FakeChatProvider(answer), progress=False).label(df).frame
    sci = out[df["label"].str.startswith("sci/")]
    assert set(sci["pred_status"]) == {"invalid"} and sci["pred_reason"].str.startswith("stage 'sci': ").all()
    rest = out[~df["label"].str.startswith("sci/")]
    assert rest["pred_label"].tolist() == df["label"][rest.index].tolist()


def test_label_file_saves_the_tree(tmp_path: Path) -> None:
    df = _data(12)
    path = tmp_path / "in.csv"
    df.to_csv(path, index=False)
    answer = tree_answer(dict(zip(df["text"], df["label"], strict=True)))
    opts = LabelOptions(labels=_tree(tmp_path).to_dict(), concurrency=1, store=str(tmp_path / "s.sqlite"))
    run = label_file(path, tmp_path / "out.csv", opts, provider=FakeChatProvider(answer), progress=False)
    saved = json.loads((Path(run.run_dir) / "labels.json").read_text())
    assert saved["tree"] is True and LabelTree.parse(saved["labels"]) == _tree(tmp_path).tree


def test_eval_reports_every_level(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from promptclf.cli import main
    from promptclf.eval.hierarchy import level_metrics

    s = _tree(tmp_path)
    gold = ["sci/space", "hockey", "rec/sport/baseball", "misc", "rec/autos", "sci/med"]
    pred = ["sci/med", "rec/sport/hockey", "rec/autos", "misc", "rec/autos", "not-a-label"]
    lv = level_metrics(gold, pred, s, n_boot=0)
    assert [x["level"] for x in lv] == [1, 2, 3]
    # level 1: sci, rec, rec, misc, rec right, the off-list answer wrong: 5 of 6; level 2: rec/sport,
    # misc, rec/autos right (sci/space vs sci/med and rec/sport vs rec/autos now differ): 3 of 6; leaves: 3 of 6
    assert [round(x["accuracy"], 4) for x in lv] == [round(5 / 6, 4), 0.5, 0.5]
    assert lv[0]["n_labels"] == 3 and lv[1]["n_labels"] == 5 and lv[2]["n_labels"] == 6
    # through the CLI, the run's labels.json beside the file says it is a tree
    df = pd.DataFrame({"text": [f"t{i}" for i in range(6)], "label": gold, "pred_label": pred})
    df.to_csv(tmp_path / "x.csv", index=False)
    run = tmp_path / "x.run"
    run.mkdir()
    (run / "labels.json").write_text(json.dumps(s.file_data()))
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "x.csv"), "--gold-col", "label", "--json", "--n-boot", "0"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)
    assert [round(x["accuracy"], 4) for x in m["levels"]] == [round(x["accuracy"], 4) for x in lv]
    table = CliRunner().invoke(main, ["eval", str(tmp_path / "x.csv"), "--gold-col", "label", "--n-boot", "0"])
    assert "3 (leaf)" in table.output and "83.3%" in table.output


def test_simulated_teacher_answers_each_stage_from_the_labels_shown(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from promptclf.testing.sim_teacher import SimTeacher

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    n = 60
    gold = [LEAVES[i % 6] for i in range(n)]
    texts = [f"item {i} about {g.replace('/', ' ')}" for i, g in enumerate(gold)]
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, 16)).astype(np.float32) + np.eye(6, 16, dtype=np.float32)[[i % 6 for i in range(n)]] * 3
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    df = pd.DataFrame({"text": texts, "label": gold})
    tree = _tree(tmp_path).to_dict()
    runs = {}
    with SimTeacher(texts, gold, accuracy=0.7, seed=0, embeddings=emb) as t:
        for mode in ("hierarchy", "flat"):
            opts = LabelOptions(
                labels=tree, tree_mode=mode, provider="openai", base_url=t.base_url, model="simulated-teacher",
                batch_size=10, concurrency=2, store=str(tmp_path / f"{mode}.sqlite"),
            )  # fmt: skip
            runs[mode] = Labeler(opts, progress=False).label(df)
        decided = [t.answer_for(x).label for x in texts]
    h, f = runs["hierarchy"].frame, runs["flat"].frame
    assert set(h["pred_status"]) == {"ok"} == set(f["pred_status"])
    # one decision per text: both ways reach the teacher's leaf, with the same probability
    assert h["pred_label"].tolist() == decided == f["pred_label"].tolist()
    assert np.allclose(h["pred_prob"], f["pred_prob"], atol=1e-4)
    assert 0.6 <= runs["hierarchy"].summary.metrics["accuracy"] <= 0.8  # type: ignore[index]
    assert runs["hierarchy"].summary.usage.requests > runs["flat"].summary.usage.requests


class PathScores:
    """A scoring provider that gives 0.7 to the label on each text's gold path (the rest shared equally);
    it records every request's labels."""

    name = "local"
    model = "path-scores"
    kind = "scoring"
    base_url = None
    shot_attention = "full"
    max_item_tokens = None

    def __init__(self, gold: dict[str, str]) -> None:
        self.gold = gold
        self.requests: list[list[str]] = []

    def load(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def layout_tokens(self, system: str, prefix: str, suffix: str) -> tuple[int, int]:
        return self.count_tokens(system + prefix), self.count_tokens(suffix)

    def score(self, request):  # type: ignore[no-untyped-def]
        from promptclf.providers.base import ScoreResult, Usage

        self.requests.append(list(request.labels))
        rows = []
        for item in request.items:
            parts = self.gold[item].split("/")
            hit = next(k for k, lab in enumerate(request.labels) if lab in parts)
            n = len(request.labels)
            rows.append([0.7 if k == hit else 0.3 / (n - 1) for k in range(n)])
        return ScoreResult(rows, Usage(len(request.items), 0), 0.01)


def test_local_model_scores_only_the_siblings(tmp_path: Path) -> None:
    df = _data(12)
    provider = PathScores(dict(zip(df["text"], df["label"], strict=True)))
    opts = LabelOptions(
        labels=_tree(tmp_path).to_dict(), label_col=None, batch_size=4, store=str(tmp_path / "s.sqlite")
    )
    out = Labeler(opts, provider=provider, progress=False).label(df).frame
    assert out["pred_label"].tolist() == df["label"].tolist()
    assert {tuple(r) for r in provider.requests} == {
        ("sci", "rec", "misc"), ("space", "med"), ("autos", "sport"), ("hockey", "baseball")
    }  # fmt: skip
    depth = df["label"].str.count("/") + 1
    assert out["pred_prob"].tolist() == pytest.approx((0.7**depth).tolist())
    # pred_probs: the last stage's leaves with their path probabilities
    row = df.index[df["label"] == "sci/space"][0]
    assert json.loads(out["pred_probs"][row]) == pytest.approx({"sci/space": 0.49, "sci/med": 0.21})


def test_dry_run_shows_the_top_level_stage(tmp_path: Path) -> None:
    df = _data(12)
    opts = LabelOptions(
        labels=_tree(tmp_path).to_dict(), label_col=None, batch_size=4, store=str(tmp_path / "s.sqlite")
    )
    est = Labeler(opts, provider=FakeChatProvider(), progress=False).dry_run(df)
    labels, _ = parse_prompt(est.prompt.split("[user]\n", 1)[1])
    assert labels == ["sci", "rec", "misc"] and est.requests == 3
    assert any("top-level stage" in n for n in est.notes)
    flat = Labeler(opts.model_copy(update={"tree_mode": "flat"}), provider=FakeChatProvider(), progress=False)
    assert parse_prompt(flat.dry_run(df).prompt.split("[user]\n", 1)[1])[0] == LEAVES


def test_cli_labels_with_a_tree_file_and_evaluates_every_level(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from promptclf.cli import main
    from promptclf.testing.answers import PromptAnswers
    from promptclf.testing.fake_server import FakeServer, Responder

    df = _data(12)
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    (tmp_path / "tree.yaml").write_text(TREE_YAML)
    answers = PromptAnswers(tree_answer(dict(zip(df["text"], df["label"], strict=True))))
    env = {"OPENAI_API_KEY": "sk-test", "PROMPTCLF_STORE": str(tmp_path / "s.sqlite")}
    with FakeServer(Responder(answers)) as server:
        for mode in ("hierarchy", "flat"):
            out = tmp_path / f"{mode}.csv"
            args = ["label", str(src), "-o", str(out), "--labels", str(tmp_path / "tree.yaml"), "--tree-mode", mode]
            args += ["--base-url", server.base_url, "--model", "m", "--batch-size", "6"]
            res = CliRunner().invoke(main, args, env=env)
            assert res.exit_code == 0, res.output
            assert "tree: level 1 100.0%, level 2 100.0%, level 3 100.0%" in res.output
            assert pd.read_csv(out)["pred_label"].tolist() == df["label"].tolist()
            ev = CliRunner().invoke(main, ["eval", str(out), "--gold-col", "label", "--n-boot", "0"])
            assert ev.exit_code == 0 and "3 (leaf)" in ev.output
    # hierarchy: 2 top-level batches of 6, then sci (4 rows), rec (6 rows), rec/sport (4 rows), one each; flat: 2
    assert answers.requests == 2 + 1 + 1 + 1 + 2


@pytest.mark.slow
def test_local_model_labels_a_tree_stage_by_stage(tmp_path: Path) -> None:
    """SmolLM2-135M, in process: each stage scores only one node's children; every row reaches a leaf,
    its pred_prob the product of its stages' (= its leaf's entry in pred_probs)."""
    from promptclf.data.tables import bbc_sample

    df = bbc_sample(6, seed=1)[["text", "label"]].assign(text=lambda d: d["text"].str[:300])
    tree = [
        {"name": "economy", "children": [{"name": "business"}, {"name": "tech"}]},
        {"name": "society", "children": [{"name": "politics"}, {"name": "sport"}, {"name": "entertainment"}]},
    ]
    opts = LabelOptions(  # type: ignore[call-arg]
        provider="local", labels=tree, label_col=None, batch_size=3, store=str(tmp_path / "s.sqlite")
    )
    provider = opts.provider_spec().build()
    asked: list[list[str]] = []
    score = provider.score  # type: ignore[union-attr]

    def recording(request):  # type: ignore[no-untyped-def]
        asked.append(list(request.labels))
        return score(request)

    provider.score = recording  # type: ignore[union-attr,method-assign]
    out = Labeler(opts, provider=provider, progress=False).label(df).frame
    assert set(out["pred_status"]) == {"ok"}
    leaves = {"economy/business", "economy/tech", "society/politics", "society/sport", "society/entertainment"}
    assert set(out["pred_label"]) <= leaves
    stages = {("economy", "society"), ("business", "tech"), ("politics", "sport", "entertainment")}
    assert {tuple(x) for x in asked} <= stages and ("economy", "society") in {tuple(x) for x in asked}
    for label, p, probs in zip(out["pred_label"], out["pred_prob"], out["pred_probs"], strict=True):
        dist = json.loads(probs)
        assert 0 < p <= 1 and dist[label] == pytest.approx(p, abs=1e-5) and sum(dist.values()) <= 1 + 1e-6
