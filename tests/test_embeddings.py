"""promptclf.embeddings: the bundled all-MiniLM-L6-v2, the store cache, and nearest neighbours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from promptclf import embeddings
from promptclf.embeddings import DEFAULT_MODEL, embed, knn, text_key
from promptclf.store import Store

TEXTS = [
    "Shares fell sharply on Wall Street as investors worried about interest rates.",
    "The stock market dropped today after the central bank raised rates.",
    "The striker scored twice as United won the cup final.",
    "A new smartphone chip promises longer battery life.",
]


def test_vectors_are_normalised_float32_and_similar_texts_are_nearer() -> None:
    v = embed(TEXTS)
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    # the two market texts are nearer to each other than either is to the football or the phone text
    assert sims[0, 1] > 0.5
    assert sims[0, 1] > max(sims[0, 2], sims[0, 3], sims[1, 2], sims[1, 3]) + 0.2
    idx, top = knn(v[0], v[1:], k=3)
    assert idx[0] == 0 and top[0] == pytest.approx(sims[0, 1], abs=1e-5)


def test_order_and_batching_do_not_change_vectors() -> None:
    a = embed(TEXTS, batch_size=1)
    b = embed(list(reversed(TEXTS)), batch_size=64)[::-1]
    assert np.allclose(a, b, atol=1e-5)


def test_store_cache_avoids_recompute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "s.sqlite")
    computed: list[str] = []
    real = embeddings._encode

    def counting(texts: list[str], source: str, batch_size: int, progress: bool) -> np.ndarray:
        computed.extend(texts)
        return real(texts, source, batch_size, progress)

    monkeypatch.setattr(embeddings, "_encode", counting)
    first = embed([TEXTS[0], TEXTS[1], TEXTS[0]], store=store)
    assert computed == [TEXTS[0], TEXTS[1]]  # the duplicate is computed once
    computed.clear()
    again = embed([TEXTS[1], TEXTS[2], TEXTS[0]], store=store)
    assert computed == [TEXTS[2]]  # only the new text
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[2], first[0])  # bit-for-bit from the blob
    # a new store object on the same file (a later run) still hits
    computed.clear()
    embed(TEXTS[:3], store=Store(tmp_path / "s.sqlite"))
    assert computed == []


def test_cache_key_includes_the_model(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    vec = np.arange(4, dtype=np.float32)
    store.put_embeddings("other-model", {text_key("x"): vec})
    assert store.get_embeddings(DEFAULT_MODEL, [text_key("x")]) == {}
    got = store.get_embeddings("other-model", [text_key("x"), text_key("y")])
    assert list(got) == [text_key("x")] and np.array_equal(got[text_key("x")], vec)


def test_empty_input() -> None:
    assert embed([]).shape[0] == 0


def test_knn_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(200, 16)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    q = pool[:7] + 0.05 * rng.normal(size=(7, 16)).astype(np.float32)
    idx, sims = knn(q, pool, k=5)
    assert idx.shape == (7, 5) and sims.shape == (7, 5)
    full = q @ pool.T
    for r in range(7):
        assert list(idx[r]) == list(np.argsort(-full[r], kind="stable")[:5])
        assert idx[r, 0] == r  # each query's own (perturbed) vector is nearest
        assert np.all(np.diff(sims[r]) <= 0)
    # k over the pool size is capped; a 1-D query gives 1-D results
    i1, s1 = knn(pool[3], pool[:4], k=10)
    assert i1.shape == (4,) and i1[0] == 3


def test_knn_rejects_mismatched_dimensions() -> None:
    with pytest.raises(ValueError, match="do not match"):
        knn(np.zeros(3, dtype=np.float32), np.zeros((5, 4), dtype=np.float32), 2)
