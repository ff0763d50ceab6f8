"""Predictions of one shard gathered as they come back, then written as one Parquet shard, atomically.

Nothing here imports Ray. :class:`ShardTally` takes prediction batches in any order, a row more than
once included (a retried task sends its rows again: the row index makes that harmless), and says
when every row of the shard is in. :func:`write_shard` then reads the input shard again, chunk by
chunk, adds ``pred_label`` and ``pred_prob`` (and ``pred_score``, ``prob_<label>``) to every row in input order, and
writes the output through a temporary file renamed into place, with a :class:`~.shards.ShardStamp`
in the footer so a rerun can tell the shard is finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.tables import iter_table
from ..data.writers import TableWriter
from ..distill.thresholds import multilabel_columns
from ..errors import InputError
from .shards import STAMP_KEY, ShardStamp


class ShardTally:
    """One shard's predictions: ``add`` rows as they arrive, ``finish`` with the row count the reader saw."""

    def __init__(self, n_labels: int, class_probs: bool = False) -> None:
        self.n_labels = n_labels
        self.label = np.full(0, -1, dtype=np.int32)
        self.prob = np.zeros(0, dtype=np.float32)
        self.score = np.zeros(0, dtype=np.float64)  # an ordinal student's score (NaN for others)
        self.probs: np.ndarray | None = np.zeros((0, n_labels), dtype=np.float32) if class_probs else None
        self.filled = 0  # distinct rows predicted
        self.total: int | None = None  # rows in the shard, once its reader has read it all
        self.error: str | None = None

    def _grow(self, size: int) -> None:
        if size <= len(self.label):
            return
        size = max(size, 2 * len(self.label))
        self.label = np.concatenate([self.label, np.full(size - len(self.label), -1, dtype=np.int32)])
        self.prob = np.concatenate([self.prob, np.zeros(size - len(self.prob), dtype=np.float32)])
        self.score = np.concatenate([self.score, np.full(size - len(self.score), np.nan, dtype=np.float64)])
        if self.probs is not None:
            pad = np.zeros((size - len(self.probs), self.n_labels), dtype=np.float32)
            self.probs = np.concatenate([self.probs, pad])

    def add(
        self,
        rows: np.ndarray,
        label: np.ndarray,
        prob: np.ndarray,
        probs: np.ndarray | None = None,
        score: np.ndarray | None = None,
    ) -> int:
        """Record predictions for row indices ``rows``; returns how many of them were new."""
        if len(rows) == 0:
            return 0
        rows = np.asarray(rows, dtype=np.int64)
        self._grow(int(rows.max()) + 1)
        new = int(np.count_nonzero(self.label[np.unique(rows)] < 0))
        self.label[rows] = label
        self.prob[rows] = prob
        if score is not None:
            self.score[rows] = score
        if self.probs is not None and probs is not None:
            self.probs[rows] = probs
        self.filled += new
        return new

    def finish(self, total: int) -> None:
        self.total = int(total)

    def fail(self, error: str) -> None:
        self.error = error

    @property
    def complete(self) -> bool:
        """Every row ``0 .. total-1`` predicted, and none beyond."""
        return self.error is None and self.total is not None and self.filled == self.total and self._in_range()

    def _in_range(self) -> bool:
        return self.total is not None and not bool(np.any(self.label[self.total :] >= 0))

    def arrays(self) -> dict[str, Any]:
        """The predictions cut to the shard's rows (for :func:`write_shard`)."""
        n = self.total or 0
        return {
            "label": self.label[:n],
            "prob": self.prob[:n],
            "probs": None if self.probs is None else self.probs[:n],
            "score": self.score[:n],
        }


def write_shard(
    source: str | Path,
    out_path: str | Path,
    stamp: ShardStamp,
    labels: list[str],
    label: np.ndarray,
    prob: np.ndarray,
    probs: np.ndarray | None = None,
    chunk_rows: int = 8192,
    score: np.ndarray | None = None,
    thresholds: list[float] | None = None,
    prob_columns: bool = True,
) -> int:
    """Write ``source``'s rows, all its columns, in order, plus the predictions, to ``out_path``.

    The output appears only whole (temporary file, flushed, renamed). If ``source`` no longer has
    exactly ``len(label)`` rows (it changed since it was read), nothing is written and an InputError
    names the shard. ``score`` (an ordinal student's, NaN for none) adds ``pred_score`` when any row has one.
    ``thresholds`` (a multi-label student's; ``probs`` then holds every label's probability) writes the
    label sets as ``predict`` does (``pred_labels``, ``pred_label``, ``pred_probs``) instead of ``pred_prob``;
    ``prob_columns`` says whether ``probs`` also go out as ``prob_<label>`` columns (``--probs``).
    Returns the rows written.
    """
    out_path = Path(out_path)
    n = len(label)
    if score is not None and not bool(np.isfinite(score).any()):
        score = None
    writer = TableWriter(out_path, metadata={STAMP_KEY: stamp.model_dump_json()})
    offset = 0
    try:
        for chunk in iter_table(source, chunk_rows):
            end = offset + len(chunk)
            if end > n:
                raise InputError(
                    f"{stamp.source}: has more rows than when it was read ({n:,}); rerun to predict it again"
                )
            if thresholds is not None and probs is not None:
                for col, values in multilabel_columns(probs[offset:end], thresholds, labels).items():
                    chunk[col] = values
            else:
                chunk["pred_label"] = [labels[j] for j in label[offset:end]]
                chunk["pred_prob"] = np.round(prob[offset:end].astype(np.float64), 6)
            if score is not None:
                chunk["pred_score"] = np.round(score[offset:end], 6)
            if probs is not None and prob_columns:
                for j, lab in enumerate(labels):
                    chunk[f"prob_{lab}"] = np.round(probs[offset:end, j].astype(np.float64), 6)
            writer.write(chunk)
            offset = end
        if offset != n:
            raise InputError(
                f"{stamp.source}: has {offset:,} rows now, {n:,} when it was read; rerun to predict it again"
            )
        writer.close()
    except BaseException:
        writer.abort()  # the output stays absent (or as it was)
        raise
    return offset
