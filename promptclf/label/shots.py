"""Similar-example shots (``--shot-selection similar``): the labeled examples nearest to the texts.

A *pool* of labeled examples is embedded with the bundled all-MiniLM-L6-v2
(:mod:`promptclf.embeddings`, cached in the store) together with the texts to label, and:

* the texts are put in an order where similar ones sit next to each other (:func:`cluster_order`),
  so when the chat runner cuts that order into batches each request holds similar texts;
* each request gets, for every class, the ``--shots K`` pool examples nearest to its texts
  (:meth:`SimilarShots.for_rows`: nearest to the batch's centroid, which is the same as the
  highest mean cosine similarity to its texts); a one-text request gets that text's own nearest.

Why K per class rather than the nearest K overall: the prompt stays label-balanced, so the
model sees every label next to an example that resembles the text (the contrast it has to
draw at a class boundary) and a majority class cannot fill the prompt; the nearest examples
still decide which example of each class is shown. The shots are listed least similar first,
so the most similar example sits next to the texts.

An example whose text is identical to a text in the request is never shown with it: it would
hand the model the answer (the same text labeled in the pool, or a duplicate row).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..embeddings import embed, text_key
from .prompts import Shot

if TYPE_CHECKING:
    from ..store import Store


@dataclass
class SimilarShots:
    """A pool of labeled examples and the embeddings to pick the nearest of each class."""

    pool: list[Shot]
    pool_vecs: np.ndarray  # (len(pool), d), L2-normalised
    row_vecs: dict[int, np.ndarray]  # input row -> its text's embedding (rows to label only)
    per_class: int
    labels: list[str]  # label names, in label-set order
    row_keys: dict[int, str] = field(default_factory=dict)  # input row -> sha256 of its text
    _by_class: dict[str, np.ndarray] = field(init=False, repr=False)
    _pool_keys: dict[str, list[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_class = {
            name: np.array([i for i, s in enumerate(self.pool) if s.label == name], dtype=np.int64)
            for name in self.labels
        }
        self._pool_keys = {}
        for i, s in enumerate(self.pool):
            self._pool_keys.setdefault(text_key(s.text), []).append(i)

    def vectors(self, rows: Sequence[int]) -> np.ndarray:
        """The embeddings of ``rows`` (rows to label), shape ``(len(rows), d)``."""
        return np.stack([self.row_vecs[r] for r in rows])

    def for_rows(self, rows: Sequence[int]) -> list[Shot]:
        """The shots of one request holding ``rows``: per class, the K pool examples nearest to the rows' centroid."""
        if not rows:
            return []
        centre = self.vectors(rows).mean(axis=0)
        norm = float(np.linalg.norm(centre))
        centre = centre / norm if norm > 0 else self.row_vecs[rows[0]]
        return self._pick(self.pool_vecs @ centre, self._excluded(rows))

    def for_each(self, rows: Sequence[int]) -> list[list[Shot]]:
        """Each row's own shots (the local scoring provider: one text per prompt)."""
        out: list[list[Shot]] = []
        step = max(1, 2**22 // max(1, len(self.pool)))  # bounded memory with a large --examples pool
        for s in range(0, len(rows), step):
            chunk = rows[s : s + step]
            sims = self.vectors(chunk) @ self.pool_vecs.T
            out.extend(self._pick(sims[k], self._excluded([r])) for k, r in enumerate(chunk))
        return out

    def _excluded(self, rows: Sequence[int]) -> set[int]:
        """Pool examples whose text is identical to a text of ``rows``."""
        out: set[int] = set()
        for r in rows:
            out.update(self._pool_keys.get(self.row_keys.get(r, ""), ()))
        return out

    def _pick(self, sims: np.ndarray, excluded: set[int]) -> list[Shot]:
        chosen: list[tuple[float, int]] = []
        for name in self.labels:
            idx = self._by_class[name]
            if excluded:
                idx = np.array([i for i in idx if i not in excluded], dtype=np.int64)
            if not len(idx):
                continue
            # Most similar first; equal similarity: earlier pool example first (deterministic).
            best = idx[np.argsort(-sims[idx], kind="stable")[: self.per_class]]
            chosen.extend((float(sims[i]), int(i)) for i in best)
        chosen.sort(key=lambda t: (t[0], -t[1]))  # least similar first: the nearest sits next to the texts
        return [self.pool[i] for _, i in chosen]


def build_similar(
    pool: list[Shot],
    texts: Sequence[str],
    rows: Sequence[int],
    per_class: int,
    labels: list[str],
    store: Store | None = None,
    progress: bool = False,
) -> SimilarShots:
    """Embed the pool and the texts of ``rows`` (one call, so one progress bar and one cache pass)."""
    vecs = embed([s.text for s in pool] + [texts[r] for r in rows], store=store, progress=progress)
    pool_vecs, item_vecs = vecs[: len(pool)], vecs[len(pool) :]
    return SimilarShots(
        pool,
        pool_vecs,
        {r: item_vecs[k] for k, r in enumerate(rows)},
        per_class,
        labels,
        {r: text_key(texts[r]) for r in rows},
    )


def _top_direction(x: np.ndarray, iters: int = 30) -> np.ndarray:
    """The first principal direction of centred ``x`` by power iteration (deterministic start)."""
    v = x[int(np.argmax((x * x).sum(axis=1)))].astype(np.float64)
    for _ in range(iters):
        w = x.T @ (x @ v)
        n = float(np.linalg.norm(w))
        if n == 0.0:
            break
        w /= n
        if float(np.abs(w - v).max()) < 1e-6:
            v = w
            break
        v = w
    return v


def cluster_order(vecs: np.ndarray, size: int) -> list[int]:
    """An order of the rows of ``vecs`` in which each run of ``size`` consecutive rows is a group of similar ones.

    Recursive balanced bisection: split the rows at the median of their projection on the
    first principal direction, at a multiple of ``size`` so every group but the last is full,
    and recurse until a group fits in one batch. O(n log(n / size) d), deterministic, and the
    groups are exactly the batches (k-means would give similar groups of unequal sizes that
    would have to be cut or merged into batches).
    """
    n = len(vecs)
    out: list[int] = []
    x_all = np.asarray(vecs, dtype=np.float64)

    def split(idx: np.ndarray) -> None:
        if len(idx) <= size:
            out.extend(int(i) for i in idx)
            return
        x = x_all[idx] - x_all[idx].mean(axis=0)
        proj = x @ _top_direction(x)
        order = idx[np.argsort(proj, kind="stable")]
        left = math.ceil(math.ceil(len(idx) / size) / 2) * size
        split(order[:left])
        split(order[left:])

    if n:
        split(np.arange(n))
    return out
