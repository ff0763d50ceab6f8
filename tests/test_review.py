"""``promptclf review`` and training on its results: real MiniLM embeddings on BBC News with injected label errors.

Runtime on 2 CPU cores: about a minute (one embedding pass of 240 articles, cached in the test store,
plus one MiniLM run of a few steps).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.data.tables import BBC_TOPICS, bbc_sample, read_table, write_table
from promptclf.distill.options import DistillOptions
from promptclf.distill.run import prepare_data
from promptclf.errors import ConfigError, InputError
from promptclf.review.options import ReviewOptions, top_count
from promptclf.review.queue import (
    QUEUE_COLUMNS,
    fold_ids,
    neighbour_share,
    oof_proba,
    review,
    write_review,
)

TOPICS = sorted(BBC_TOPICS)
N_ROWS = 240
ERROR_RATE = 0.15


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embeddings cache for the module, so the 240 articles are embedded once."""
    return str(tmp_path_factory.mktemp("review-store") / "store.sqlite")


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BBC rows with an LLM label that is wrong (another topic) on ~15% of rows, 4 rows not ok.

    Half the rows carry a confidence (pred_prob): lower on the injected errors, as a real model's
    is, but noisy; the other half have none, which the review must treat as neutral.
    """
    df = bbc_sample(N_ROWS, seed=5)[["id", "text", "label"]].copy()
    rng = random.Random(5)
    pred, prob, status, injected = [], [], [], []
    for i, gold in enumerate(df["label"]):
        wrong = rng.random() < ERROR_RATE
        pred.append(rng.choice([t for t in TOPICS if t != gold]) if wrong else gold)
        injected.append(wrong)
        conf = rng.uniform(0.3, 0.8) if wrong else rng.uniform(0.5, 1.0)
        prob.append(f"{conf:.3f}" if i % 2 == 0 else "")
        status.append("ok")
    for i in (3, 50, 100, 150):  # rows the LLM failed on: no label, never ranked, counted
        pred[i], prob[i], status[i], injected[i] = "", "", "error", False
    df["pred_label"], df["pred_prob"], df["pred_status"] = pred, prob, status
    df["pred_probs"] = ""
    df["injected"] = injected
    return write_table(df, tmp_path_factory.mktemp("review") / "labeled.csv")


@pytest.fixture(scope="module")
def result(labeled: Path, store: str):
    return review(labeled, ReviewOptions.build(gold_col="label", top="24", store=store), progress=False)


@pytest.mark.slow
def test_flagged_rows_are_enriched_for_injected_errors(labeled: Path, result) -> None:
    df = read_table(labeled)
    g = result.summary["gold"]
    ok = df["pred_status"] == "ok"
    base = float((df.loc[ok, "label"] != df.loc[ok, "pred_label"]).mean())
    assert g["error_rate"] == pytest.approx(base, abs=1e-4) and 0.08 < base < 0.25
    at10 = g["at"]["10%"]
    assert at10["k"] == 24  # ceil(10% of 236 ranked rows)
    # Random-topic errors on news articles: both embedding signals should catch most of them.
    assert at10["precision"] >= 3 * base, g
    queue = result.queue
    flagged_injected = df["injected"].iloc[queue["review_row"].tolist()].map(lambda v: v == "True").mean()
    assert flagged_injected >= 3 * base
    # Each embedding signal alone beats the base rate by far; the noisy confidence is weaker but useful.
    by = g["by_signal_at_10%"]
    assert by["student"]["precision"] >= 2 * base and by["neighbours"]["precision"] >= 2 * base
    # The suggested label of a flagged injected error is mostly its gold label.
    hits = queue[queue["pred_label"] != queue["label"]]
    assert (hits["suggested_label"] == hits["label"]).mean() >= 0.7


def test_queue_csv_columns_and_order(labeled: Path, result, tmp_path: Path) -> None:
    out = write_review(result, tmp_path / "queue.csv")
    q = pd.read_csv(out, keep_default_na=False)
    assert list(q.columns[: len(QUEUE_COLUMNS)]) == QUEUE_COLUMNS
    src = read_table(labeled)
    assert set(src.columns) <= set(q.columns)  # every input column is kept for the person
    assert len(q) == 24 and q["review_rank"].tolist() == list(range(1, 25))
    assert (q["review_score"].diff().dropna() <= 0).all()
    assert (q["corrected"] == "").all()
    assert q["review_reasons"].str.len().min() > 0 and set(q["suggested_label"]) <= set(TOPICS)
    # review_row points back at the input row
    for _, r in q.iterrows():
        assert src["text"].iat[int(r["review_row"])] == r["text"]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["n_ranked"] == N_ROWS - 4 and summary["not_ranked"]["not_ok"] == 4
    assert summary["signals"]["confidence"] == N_ROWS // 2 - 3  # even rows, less the failed rows 50, 100, 150


def test_missing_confidence_is_neutral(result) -> None:
    """A row without a confidence is scored by its other signals, their weights renormalised over them."""
    w = result.summary["weights"]["weights"]
    assert abs(sum(w.values()) - 1) < 1e-3
    r = result.ranked
    no_conf = r["doubt_confidence"].isna()
    assert no_conf.any() and (~no_conf).any()
    both = r[no_conf]
    ws, wn = w["student"], w["neighbours"]
    if ws + wn > 0:
        want2 = (ws * both["doubt_student"] + wn * both["doubt_neighbours"]) / (ws + wn)
    else:
        want2 = (both["doubt_student"] + both["doubt_neighbours"]) / 2
    assert np.allclose(both["review_score"], want2, atol=1e-3)
    three = r[~no_conf]
    want3 = sum(w[k] * three[f"doubt_{k}"] for k in ("confidence", "student", "neighbours"))
    assert np.allclose(three["review_score"], want3, atol=1e-3)


def test_equal_weights_option_is_the_plain_mean(labeled: Path, store: str) -> None:
    res = review(labeled, ReviewOptions.build(weights="equal", store=store), progress=False)
    assert res.summary["weights"]["method"] == "equal"
    three = res.ranked[res.ranked["doubt_confidence"].notna()]
    mean3 = (three["doubt_confidence"] + three["doubt_student"] + three["doubt_neighbours"]) / 3
    assert np.allclose(three["review_score"], mean3, atol=1e-3)


def test_pred_probs_gives_the_confidence(tmp_path: Path, store: str) -> None:
    df = bbc_sample(40, seed=1)[["text", "label"]].copy()
    df["pred_label"] = df["label"]
    df["pred_prob"] = "0.9"
    df["pred_probs"] = [json.dumps({lab: 0.25, "other": 0.75}) for lab in df["label"]]
    df.loc[0, "pred_probs"] = ""  # falls back to pred_prob
    path = write_table(df, tmp_path / "l.csv")
    res = review(path, ReviewOptions.build(store=store, folds=2, neighbours=3), progress=False)
    conf = res.ranked.set_index("review_row")["doubt_confidence"]
    assert conf[0] == pytest.approx(0.1) and conf[1] == pytest.approx(0.75)
    df.loc[2, "pred_probs"] = "{not json"
    write_table(df, path)
    with pytest.raises(InputError, match="row 4: pred_probs is not a JSON object"):
        review(path, ReviewOptions.build(store=store, folds=2), progress=False)


def test_rereview_keeps_a_persons_corrections(labeled: Path, result, store: str, tmp_path: Path) -> None:
    again = result.ranked.copy()  # a file that went through a review: review columns, a correction
    again.loc[0, "corrected"] = again.loc[0, "label"]
    path = write_table(again, tmp_path / "again.csv")
    res = review(path, ReviewOptions.build(store=store, top="5"), progress=False)
    r = res.ranked
    assert list(r.columns[: len(QUEUE_COLUMNS)]) == QUEUE_COLUMNS and r.columns.is_unique
    row = r[r["text"] == again.loc[0, "text"]].iloc[0]
    assert row["corrected"] == again.loc[0, "label"]
    assert (r["corrected"] != "").sum() == 1


def test_out_of_fold_by_construction(labeled: Path, store: str) -> None:
    """A row's own label never reaches its prediction: change it and its out-of-fold probabilities stay the same."""
    from promptclf.embeddings import embed
    from promptclf.store import Store

    df = read_table(labeled)
    df = df[df["pred_status"] == "ok"].reset_index(drop=True)
    texts = df["text"].tolist()
    st = Store(store)
    x = embed(texts, store=st)
    st.close()
    y = np.array([TOPICS.index(v) for v in df["pred_label"]])
    folds = fold_ids(texts, 5, seed=0)
    # Folds come from the texts only: the labels play no part in them.
    assert (fold_ids(texts, 5, seed=0) == folds).all() and len(set(folds.tolist())) == 5
    before = oof_proba(x, y, len(TOPICS), folds)
    share0 = neighbour_share(x, y, len(TOPICS), texts, k=10)
    for i in (0, 7, 42):
        y2 = y.copy()
        y2[i] = (y[i] + 1) % len(TOPICS)
        after = oof_proba(x, y2, len(TOPICS), folds)
        same_fold = folds == folds[i]
        assert np.array_equal(after[same_fold], before[same_fold])  # the row and its fold: untouched
        assert not np.allclose(after[~same_fold], before[~same_fold])  # the label did train the other folds
        share1 = neighbour_share(x, y2, len(TOPICS), texts, k=10)
        assert np.array_equal(share1[i], share0[i])  # its own label never votes for it


def test_duplicate_texts_share_a_fold_and_never_vote() -> None:
    texts = ["a", "b", "a", "c", "d", "a", "e", "f"]
    folds = fold_ids(texts, 3, seed=1)
    assert folds[0] == folds[2] == folds[5]
    x = np.eye(8, dtype=np.float32)
    x[2] = x[5] = x[0]  # copies embed identically
    y = np.array([0, 1, 1, 1, 0, 1, 0, 1])
    share = neighbour_share(x, y, 2, texts, k=3)
    # Row 0's copies (rows 2 and 5, labeled 1) are left out; its neighbours are other texts.
    assert share.shape == (8, 2) and np.allclose(share.sum(1), 1.0)


def test_top_parsing() -> None:
    assert top_count("10%", 236) == 24 and top_count("0.1", 236) == 24 and top_count("25", 236) == 25
    assert top_count("500", 236) == 236 and top_count("1%", 10) == 1
    for bad in ("0", "-3", "abc", "150%", "0.0"):
        with pytest.raises(ConfigError, match="--top"):
            ReviewOptions.build(top=bad)


def test_too_few_rows_is_a_clear_error(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": ["x y", "z w", "q r"], "pred_label": ["a", "b", "a"]})
    path = write_table(df, tmp_path / "few.csv")
    with pytest.raises(InputError, match="needs at least 10 rows"):
        review(path, ReviewOptions.build(no_cache=True), progress=False)
    with pytest.raises(InputError, match="--label-col"):
        review(path, ReviewOptions.build(label_col="nope", no_cache=True), progress=False)


def test_cli_prints_precision_and_writes_queue(labeled: Path, store: str, tmp_path: Path) -> None:
    out = tmp_path / "q.csv"
    res = CliRunner().invoke(
        main, ["review", str(labeled), "-o", str(out), "--gold-col", "label", "--top", "10%", "--store", store]
    )
    assert res.exit_code == 0, res.output
    assert "precision at 10% (k=24)" in res.stdout and "error rate" in res.stdout
    assert "weights (fitted): confidence " in res.stdout and "equal weights, precision at 10%" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == str(out)
    assert len(pd.read_csv(out)) == 24


# --- distill on the review's results ------------------------------------------------------------


def _filled_queue(result, tmp_path: Path) -> Path:
    """The queue with `corrected` filled from gold, as a person would (only where the LLM was wrong)."""
    q = result.queue.copy()
    q["corrected"] = [g if g != p else "" for g, p in zip(q["label"], q["pred_label"], strict=True)]
    return write_table(q, tmp_path / "checked.csv")


def test_distill_data_with_corrections_and_exclusions(labeled: Path, result, tmp_path: Path) -> None:
    checked = _filled_queue(result, tmp_path)
    q = read_table(checked)
    fixed = dict(zip(q["text"], q["corrected"], strict=True))
    fixed = {t: c for t, c in fixed.items() if c}
    assert fixed
    base = dict(test_fraction=0.0, gold_col="label")
    plain = prepare_data(labeled, DistillOptions.build(**base))
    corr = prepare_data(labeled, DistillOptions.build(**base, corrections=str(checked)))
    assert corr.counts["corrected"] == len(fixed)
    seen = 0
    for texts, ys in ((corr.train_texts, corr.train_y), (corr.val_texts, corr.val_y)):
        for t, y in zip(texts, ys, strict=True):
            if t in fixed:
                assert corr.labels[y] == fixed[t]
                seen += 1
    assert seen == len(fixed)
    ex = prepare_data(labeled, DistillOptions.build(**base, exclude=str(checked)))
    assert ex.counts["excluded"] == len(q)
    kept = set(ex.train_texts) | set(ex.val_texts)
    assert not kept & set(q["text"])
    assert len(kept) == len(plain.train_texts) + len(plain.val_texts) - len(q)


def test_label_col_with_fallback(labeled: Path, tmp_path: Path) -> None:
    df = read_table(labeled)
    df["corrected"] = ""
    df.loc[3, "corrected"] = df.loc[3, "label"]  # a row the LLM failed on, labeled by a person: trained on
    other = next(t for t in TOPICS if t != df.loc[5, "pred_label"])
    df.loc[5, "corrected"] = other  # a person's label wins over the LLM's
    path = write_table(df, tmp_path / "with_corrected.csv")
    o = DistillOptions.build(label_col="corrected", fallback_col="pred_label", test_fraction=0.0)
    d = prepare_data(path, o)
    assert d.counts["corrected"] == 2 and d.counts["not_ok"] == 3
    pairs = dict(zip(d.train_texts + d.val_texts, [d.labels[y] for y in d.train_y + d.val_y], strict=True))
    assert pairs[df.loc[3, "text"]] == df.loc[3, "label"] and pairs[df.loc[5, "text"]] == other
    assert df.loc[50, "text"] not in pairs  # not ok and no person's label: not trained on
    n_ok = int((df["pred_status"] == "ok").sum())
    assert len(pairs) == n_ok + 1
    with pytest.raises(InputError, match="--fallback-col"):
        prepare_data(path, DistillOptions.build(label_col="corrected", fallback_col="nope", test_fraction=0.0))


def test_distill_cli_trains_on_corrected_queue(labeled: Path, result, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    checked = _filled_queue(result, tmp_path)
    out = tmp_path / "student"
    res = CliRunner().invoke(
        main,
        [
            "distill", str(labeled), "-o", str(out), "--corrections", str(checked), "--exclude", str(checked),
            "--max-steps", "2", "--max-length", "32", "--test-fraction", "0", "--patience", "0", "--batch-size", "8",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert run["options"]["corrections"] == str(checked) and run["options"]["exclude"] == str(checked)
    assert run["data"]["excluded"] == len(read_table(checked))
