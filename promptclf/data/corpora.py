"""Labeled sets built from corpora that ship inside PyPI packages, for tests, demos and benchmarks.

The BBC News topics live in :mod:`.tables` (``bbc_sample``). Here:

* **VADER's lexicon** (``vaderSentiment`` package, MIT): 7,517 English words, emoticons and slang,
  each rated for sentiment by 10 people on a -4..+4 scale; the file holds every rater's score. It
  gives a sentiment set (:func:`vader_polarity`) and a harder one whose label is the *strength* of
  the sentiment (:func:`vader_intensity`), where sentence embeddings carry little of the answer.
  The texts are single words and short phrases, not sentences: say so beside any figure.
* **A synthetic multi-label set** (:func:`bbc_multilabel`): openings of BBC articles of different
  topics joined into one text, labeled with all their topics: a second, synthetic set beside the real
  multi-label HPO set of :mod:`.taxonomies` (no real multi-label news set ships in a package here).
* **A skewed binary set** (:func:`bbc_skewed`): one BBC topic against the rest, 1:9, standing in
  for spam-like data (no spam corpus ships in a package available here).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .tables import bbc_sample


def vader_lexicon_path() -> Path:
    """``vader_lexicon.txt`` inside the installed ``vaderSentiment`` package (found, not imported)."""
    spec = importlib.util.find_spec("vaderSentiment")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the VADER sets need the vaderSentiment package: pip install vaderSentiment")
    return Path(next(iter(spec.submodule_search_locations))) / "vader_lexicon.txt"


def load_vader() -> pd.DataFrame:
    """Every lexicon entry: ``text``, ``mean`` (of the 10 ratings, -4..+4), ``sd`` and ``ratings`` (JSON list)."""
    rows = []
    for line in vader_lexicon_path().read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 4 or not parts[0].strip():
            continue
        ratings = json.loads(parts[3])
        rows.append({"text": parts[0], "mean": float(parts[1]), "sd": float(parts[2]), "ratings": ratings})
    df = pd.DataFrame(rows).drop_duplicates(subset="text", keep="first")
    return df.reset_index(drop=True)


def _take(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    n = len(df) if n is None else min(n, len(df))
    return df.sample(n=n, random_state=seed).reset_index(drop=True)


def vader_polarity(n: int | None = None, seed: int = 0, min_abs: float = 0.8) -> pd.DataFrame:
    """Sentiment: ``positive`` / ``negative`` entries whose mean rating is at least ``min_abs`` from 0."""
    df = load_vader()
    df = df[df["mean"].abs() >= min_abs].copy()
    df["label"] = np.where(df["mean"] > 0, "positive", "negative")
    return _take(df[["text", "label"]], n, seed)


def vader_intensity(n: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Sentiment strength: ``strong`` (|mean| >= 2.2) against ``mild`` (0.5 <= |mean| <= 1.2), either sign."""
    df = load_vader()
    a = df["mean"].abs()
    df = df[(a >= 2.2) | ((a >= 0.5) & (a <= 1.2))].copy()
    df["label"] = np.where(df["mean"].abs() >= 2.2, "strong", "mild")
    return _take(df[["text", "label"]], n, seed)


def bbc_skewed(n: int = 1000, seed: int = 0, positive: str = "tech", share: float = 0.1) -> pd.DataFrame:
    """A skewed binary set: ``positive`` BBC articles (a ``share`` of ``n``) against ``other`` (every other topic)."""
    b = bbc_sample(None, seed=seed)
    k = round(n * share)
    pos = b[b["label"] == positive]
    neg = b[b["label"] != positive]
    if k > len(pos) or n - k > len(neg):
        raise InputError(f"bbc_skewed: {n} rows at {share:.0%} {positive} needs more articles than ship")
    df = pd.concat([pos.sample(n=k, random_state=seed), neg.sample(n=n - k, random_state=seed)])
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    df["label"] = np.where(df["label"] == positive, positive, "other")
    return df[["text", "label"]]


# VADER's mean rating (-4..+4) cut into five ordered grades; the cuts sit between the lexicon's
# clusters of ratings, not at values tuned to any result.
VADER_GRADES = ((-4.0, -2.0, "0"), (-2.0, -0.6, "1"), (-0.6, 0.6, "2"), (0.6, 2.0, "3"), (2.0, 4.01, "4"))


def vader_ordinal(n: int | None = None, seed: int = 0) -> pd.DataFrame:
    """An ordinal set: each entry graded 0 (very negative) to 4 (very positive) by its mean human rating.

    Columns ``text``, ``label`` (``"0"``..``"4"``) and ``rating`` (the mean of the 10 ratings). The
    grades are ordered by construction, unlike a topic set re-cut into numbers.
    """
    df = load_vader()
    grade = np.full(len(df), "", dtype=object)
    for lo, hi, name in VADER_GRADES:
        grade[(df["mean"] >= lo) & (df["mean"] < hi)] = name
    df["label"], df["rating"] = grade, df["mean"]
    return _take(df[df["label"] != ""][["text", "label", "rating"]], n, seed)


def bbc_multilabel(
    n: int = 300, seed: int = 0, max_labels: int = 3, chars: int = 300, none_share: float = 0.0
) -> pd.DataFrame:
    """A synthetic multi-label set (a second set beside the real HPO one in :mod:`.taxonomies`):
    each row joins the openings of 1..``max_labels`` BBC articles of different topics.

    Columns ``text`` (the articles' first ``chars`` characters each, cut at a word, joined by a space
    into one line) and ``label`` (a JSON list of the topics, in sorted order). Each article is used at most
    once. The labels are ``business``, ``politics``, ``sports`` and ``tech``; ``none_share`` of the rows
    are ``[]`` with the opening of an ``entertainment`` article (a topic left out of the label set), so
    "no label applies" occurs too. Say "synthetic (joined BBC
    articles)" beside any figure measured on it.
    """

    def opening(text: object) -> str:
        words = " ".join(str(text).split())
        return words if len(words) <= chars else words[:chars].rsplit(" ", 1)[0] + " …"

    b = bbc_sample(None, seed=seed)
    rng = np.random.default_rng(seed)
    held_out = "entertainment"  # never a label: the topic of the rows with gold []
    pools: dict[str, list[int]] = {str(t): list(g.index) for t, g in b.groupby("label") if t != held_out}
    topics = sorted(pools)
    others: list[int] = list(b.index[b["label"] == held_out])
    rng.shuffle(others)
    for t in topics:
        rng.shuffle(pools[t])
    rows = []
    for _ in range(n):
        if none_share > 0 and rng.random() < none_share:
            if not others:
                raise InputError(f"bbc_multilabel: {n} rows need more {held_out} articles than ship; ask for fewer")
            rows.append({"text": opening(b.at[others.pop(), "text"]), "label": "[]"})
            continue
        k = int(rng.integers(1, max_labels + 1))
        live = [t for t in topics if pools[t]]
        if len(live) < k:
            raise InputError(f"bbc_multilabel: {n} rows need more articles than ship; ask for fewer")
        chosen = sorted(str(t) for t in rng.choice(live, size=k, replace=False))
        parts = [opening(b.at[pools[t].pop(), "text"]) for t in chosen]
        order = rng.permutation(k)  # the topics' texts in a random order, not the label order
        rows.append({"text": " ".join(parts[j] for j in order), "label": json.dumps(chosen)})
    return pd.DataFrame(rows)
