"""--shot-selection similar: nearest examples per class, pools that are never scored, similar
texts batched together with their own shots (chat), and every text its own shots (local model).

Embeddings are the real bundled all-MiniLM-L6-v2 on short BBC News texts; the chat path runs
against the real llama.cpp server (through the recording proxy), the local path on SmolLM2.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from promptclf.data.tables import bbc_sample
from promptclf.errors import ConfigError
from promptclf.label.chat_runner import chat_mode, format_instructions
from promptclf.label.jobs import Job, clip_text, prompt_builder
from promptclf.label.labeler import Labeler
from promptclf.label.options import LabelOptions
from promptclf.label.prompts import Item, Shot, clip, select_shots
from promptclf.label.stream import prepare_job
from promptclf.store import Store


@pytest.fixture(scope="module")
def news() -> pd.DataFrame:
    """60 BBC News articles, cut to their first 300 characters (title and lead): cheap to embed and prompt."""
    df = bbc_sample(60, seed=3)[["text", "label"]].reset_index(drop=True)
    df["text"] = df["text"].str.slice(0, 300)
    return df


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One store for the module, so each text is embedded once across tests."""
    return str(tmp_path_factory.mktemp("similar") / "store.sqlite")


def _opts(store_path: str, **kw: object) -> LabelOptions:
    base: dict[str, object] = {
        "shots": 2,
        "shot_selection": "similar",
        "shot_pool": 4,
        "batch_size": 5,
        "store": store_path,
    }
    return LabelOptions.build(**(base | kw))


def _job(df: pd.DataFrame, o: LabelOptions, examples: pd.DataFrame | None = None) -> Job:
    return prepare_job(o, df, examples, store=Store(o.store_path()))


def _sims(job: Job, rows: list[int], shots: list[Shot]) -> np.ndarray:
    """Cosine similarity of each shot to the centroid of ``rows``."""
    assert job.similar is not None
    centre = job.similar.vectors(rows).mean(axis=0)
    centre /= np.linalg.norm(centre)
    index = {id(s): i for i, s in enumerate(job.similar.pool)}
    return np.array([job.similar.pool_vecs[index[id(s)]] @ centre for s in shots])


def test_nearest_shots_are_k_per_class_and_nearer_than_random(news: pd.DataFrame, store_path: str) -> None:
    job = _job(news, _opts(store_path))
    sim = job.similar
    assert sim is not None
    names = job.labels.names
    picked, _ = select_shots([s.text for s in sim.pool], [s.label for s in sim.pool], 2, job.labels, seed=0)
    rand = [sim.pool[s.row] for s in picked]  # type: ignore[index]  # what random selection shows every text
    near_sims, rand_sims, nearest_right = [], [], 0
    for r in job.todo:
        shots = sim.for_each([r])[0]
        assert sorted(s.label for s in shots) == sorted(names * 2)  # K per class: label-balanced
        sims = _sims(job, [r], shots)
        assert np.all(np.diff(sims) >= -1e-6)  # least similar first, the nearest next to the text
        for name in names:
            chosen = {id(s) for s in shots if s.label == name}
            others = [s for s in sim.pool if s.label == name and id(s) not in chosen]
            worst_chosen = min(sims[k] for k, s in enumerate(shots) if s.label == name)
            assert worst_chosen >= max(_sims(job, [r], others)) - 1e-6  # no nearer example of the class left out
        near_sims.append(sims.mean())
        rand_sims.append(_sims(job, [r], rand).mean())
        nearest_right += shots[-1].label == job.gold[r]  # type: ignore[index]
    assert np.mean(near_sims) > np.mean(rand_sims) + 0.03
    # The single nearest example mostly has the text's own label (chance: 20%): similarity means something.
    assert nearest_right / len(job.todo) >= 0.6


def test_pool_rows_are_marked_shot_and_never_scored(news: pd.DataFrame, store_path: str) -> None:
    df = news.copy()
    df.loc[50:, "label"] = ""  # rows without a label: always scored, never in the pool
    job = _job(df, _opts(store_path))
    pool_rows = {s.row for s in job.shots}
    assert len(job.shots) == 4 * 5 and all(r is not None and r < 50 for r in pool_rows)
    assert all(job.results[r].status == "shot" for r in pool_rows)  # type: ignore[index]
    assert pool_rows.isdisjoint(job.todo)
    assert set(range(50, 60)) <= set(job.todo)
    assert sorted(job.todo) == sorted(set(range(60)) - pool_rows)  # every other row is labeled, once
    for start in range(0, len(job.todo), 5):
        rows = job.todo[start : start + 5]
        assert {s.row for s in job.shots_for(rows)}.isdisjoint(rows)
    # seeded: the same pool again, another one with another seed
    assert {s.row for s in _job(df, _opts(store_path)).shots} == pool_rows
    assert {s.row for s in _job(df, _opts(store_path, seed=1)).shots} != pool_rows


def test_an_example_identical_to_a_text_is_never_its_shot(news: pd.DataFrame, store_path: str) -> None:
    examples = news.iloc[:40].reset_index(drop=True)
    df = news.iloc[20:60].reset_index(drop=True)  # its first 20 texts are also examples
    job = _job(df, _opts(store_path), examples)
    assert len(job.shots) == 40  # with --examples the whole file is the pool
    assert all(r.status != "shot" for r in job.results)  # and no input row is set aside
    for r in job.todo:
        assert df["text"][r] not in {s.text for s in job.similar.for_each([r])[0]}  # type: ignore[union-attr]
    for start in range(0, len(job.todo), 5):
        rows = job.todo[start : start + 5]
        assert {df["text"][r] for r in rows}.isdisjoint(s.text for s in job.shots_for(rows))


def test_chat_batches_group_similar_texts_with_their_own_shots(news: pd.DataFrame, store_path: str) -> None:
    job = _job(news, _opts(store_path))
    sim = job.similar
    assert sim is not None
    gold = job.gold
    assert gold is not None
    assert sorted(job.todo) == sorted(r for r in range(60) if job.results[r].status != "shot")

    def batches(order: list[int]) -> list[list[int]]:
        return [order[i : i + 5] for i in range(0, len(order), 5)]

    def same_label(order: list[int]) -> float:
        return float(np.mean([gold[a] == gold[b] for b_ in batches(order) for a in b_ for b in b_ if a != b]))

    def cohesion(order: list[int]) -> float:
        return float(np.mean([(sim.vectors(b) @ sim.vectors(b).T).mean() for b in batches(order)]))

    input_order = sorted(job.todo)
    assert cohesion(job.todo) > cohesion(input_order) + 0.05
    assert same_label(job.todo) > same_label(input_order) + 0.2
    shot_sets = set()
    for rows in batches(job.todo):
        shots = job.shots_for(rows)
        shot_sets.add(tuple(id(s) for s in shots))
        sims = _sims(job, rows, shots)
        for name in job.labels.names:
            chosen = {id(s) for s in shots if s.label == name}
            rest = [s for s in sim.pool if s.label == name and id(s) not in chosen]
            assert min(sims[k] for k, s in enumerate(shots) if s.label == name) >= max(_sims(job, rows, rest)) - 1e-6
    assert len(shot_sets) > 1  # requests differ in their shots


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="--shot-pool 2 is smaller than --shots 3"):
        LabelOptions.build(shots=3, shot_selection="similar", shot_pool=2)
    assert LabelOptions.build(shots=3, shot_pool=2).shot_selection == "random"  # the pool only matters for similar


def test_dry_run_shows_the_first_request_with_its_own_shots(
    news: pd.DataFrame, store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # nothing is sent
    lab = Labeler(_opts(store_path, provider="openai"), progress=False)
    est = lab.dry_run(news)
    job, prompts = lab.job, lab.prompts
    assert job is not None and prompts is not None and job.similar is not None
    fmt = format_instructions(chat_mode(lab.options, lab.provider), job.labels)
    batches = [job.todo[i : i + 5] for i in range(0, len(job.todo), 5)]
    msgs = [
        prompts.batch_messages(
            [Item(k + 1, job.texts[r]) for k, r in enumerate(rows)], format_instructions=fmt, shots=job.shots_for(rows)
        )
        for rows in batches
    ]
    assert est.prompt == "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in msgs[0])
    assert _shot_block(msgs[0][1]["content"]) == [(clip(s.text, 400), s.label) for s in job.shots_for(batches[0])]
    count = lab.provider.count_tokens
    assert est.est_prompt_tokens == sum(count(m["content"]) for ms in msgs for m in ms)
    assert (est.requests, est.shots, est.items) == (len(batches), 20, 40)


def test_cli_dry_run_with_similar_shots(
    news: pd.DataFrame, store_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from promptclf.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # nothing is sent
    src = tmp_path / "news.csv"
    news.to_csv(src, index=False)
    args = ["label", str(src), "--provider", "openai", "--shots", "2", "--shot-selection", "similar"]
    res = CliRunner().invoke(main, [*args, "--shot-pool", "4", "--batch-size", "5", "--store", store_path, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "# rows 60: 40 to label, 20 pool examples (2 per class per prompt, the nearest)" in res.output
    assert "8 requests" in res.output
    assert res.output.count("Label: ") == 10  # the first request's 2 x 5 nearest examples
    res = CliRunner().invoke(main, [*args, "--shot-pool", "1", "--dry-run"])
    assert res.exit_code != 0 and "--shot-pool 1 is smaller than --shots 2" in res.output


@pytest.mark.slow
def test_local_dry_run_counts_a_prefix_per_text(news: pd.DataFrame, store_path: str) -> None:
    def estimate(selection: str) -> tuple[dict, Labeler]:
        lab = Labeler(_opts(store_path, provider="local", shot_selection=selection), progress=False)
        return lab.dry_run(news), lab

    rand, _ = estimate("random")
    near, lab = estimate("similar")
    job = lab.job
    assert job is not None and job.similar is not None
    first = job.similar.for_each(job.todo[:1])[0]
    assert all(clip(s.text, 400) in near.prompt for s in first)
    # random: 2 rows per class are shots, one prefix for the whole job; similar: a pool of 4 per class,
    # one prefix per text (no two texts here have the same shots)
    assert (near.items, rand.items) == (40, 50)
    assert near.requests == 40 and rand.requests == 10
    assert near.est_prompt_tokens / 40 > 3 * rand.est_prompt_tokens / 50


def _shot_block(user: str) -> list[tuple[str, str]]:
    """The (text, label) examples rendered in a batch prompt."""
    block = user.split("Examples of correctly labeled texts:", 1)[1].split("Texts to classify:", 1)[0]
    return re.findall(r"Text: (.*?)\nLabel: (\S+)", block, flags=re.S)


@pytest.mark.server
def test_chat_requests_through_a_server_carry_their_batch_shots(
    news: pd.DataFrame, store_path: str, fault_proxy, tmp_path: Path
) -> None:
    df = news.groupby("label").head(4).reset_index(drop=True)  # 4 per class, 2 of them go to the pool
    o = _opts(
        store_path,
        provider="openai",
        model="smollm2",
        base_url=fault_proxy.base_url,
        shots=1,
        shot_pool=2,
        batch_size=5,
        concurrency=2,
        max_reasks=0,  # two requests, no re-asks: a 135M model on a busy CPU is slow
        max_chars=200,
        shot_max_chars=120,
        max_tokens=80,
        timeout_s=120.0,
        no_cache=True,
    )
    labeler = Labeler(o, progress=False)
    out = labeler.label(df).frame
    job, prompts = labeler.job, labeler.prompts
    assert job is not None and prompts is not None
    # every row back in its own place, pool rows marked, the rest answered or explained
    assert list(out["text"]) == list(df["text"])
    assert (out["pred_status"] == "shot").sum() == 10
    assert set(out["pred_status"]) <= {"ok", "shot", "empty", "invalid", "error"}
    assert (out.loc[out["pred_status"] != "shot", "pred_request"].str.len() > 0).all()
    sent = [r.body["messages"] for r in fault_proxy.chat_records() if r.body]
    sent_users = [next(m["content"] for m in msgs if m["role"] == "user") for msgs in sent]
    # each first-round request is the cluster batch with the shots nearest to it
    fmt = format_instructions(chat_mode(o, labeler.provider), job.labels)
    for start in range(0, len(job.todo), 5):
        rows = job.todo[start : start + 5]
        items = [Item(k + 1, job.texts[r]) for k, r in enumerate(rows)]
        shots = job.shots_for(rows)
        expected = prompts.batch_messages(items, format_instructions=fmt, shots=shots)[1]["content"]
        assert expected in sent_users
        assert _shot_block(expected) == [(clip(s.text, 120), s.label) for s in shots]
    assert len({tuple(_shot_block(u)) for u in sent_users}) > 1


@pytest.mark.slow
def test_local_model_gives_every_text_its_own_shots(news: pd.DataFrame, store_path: str) -> None:
    from promptclf.providers.local.provider import LocalProvider

    class Recording(LocalProvider):
        def __init__(self) -> None:
            super().__init__(threads=1)
            self.requests: list[object] = []

        def score(self, request):  # type: ignore[no-untyped-def]
            self.requests.append(request)
            return super().score(request)

    df = news.groupby("label").head(4).reset_index(drop=True)  # 4 per class, 2 of them go to the pool
    copy = pd.DataFrame({"text": [news["text"][59]] * 2, "label": ["", ""]})  # unlabeled: scored, same shots
    df = pd.concat([df, copy], ignore_index=True)
    o = _opts(store_path, provider="local", shots=1, shot_pool=2, batch_size=4, max_chars=200, shot_max_chars=100)
    provider = Recording()
    labeler = Labeler(o, provider=provider, progress=False)
    out = labeler.label(df).frame
    job = labeler.job
    assert job is not None and job.similar is not None
    assert list(out["text"]) == list(df["text"])
    assert set(out.loc[job.todo, "pred_status"]) == {"ok"}
    assert (out["pred_status"] == "shot").sum() == 10
    parts_of: dict[str, set[str]] = {}
    for req in provider.requests:
        for item in req.items:  # type: ignore[attr-defined]
            parts_of.setdefault(item, set()).add(req.prefix)  # type: ignore[attr-defined]
    prompts = prompt_builder(o, job)
    per_row = job.similar.for_each(job.todo)
    for r, shots in zip(job.todo, per_row, strict=True):
        want = prompts.score_parts(shots).prefix
        assert parts_of[clip_text(job.texts[r], 200)] == {want}  # scored behind its own nearest examples
        assert all(f"Label: {s.label}" in want and clip(s.text, 100) in want for s in shots)
    assert len({tuple(map(id, s)) for s in per_row}) > 1  # texts do get different examples
    # texts with identical shots share one request (and the prefix cache); the rest have their own
    assert sum(len(req.items) for req in provider.requests) == len(job.todo)  # type: ignore[attr-defined]
    copies = [req for req in provider.requests if news["text"][59][:200] in req.items]  # type: ignore[attr-defined]
    assert len(copies) == 1 and len(copies[0].items) == 2  # type: ignore[attr-defined]
    assert len({req.prefix for req in provider.requests}) == len(provider.requests)  # type: ignore[attr-defined]
