"""What runs inside Ray's workers: the shard reader (tasks) and the student (one per worker actor).

These are plain functions and classes so Ray pickles them by reference; the workers import
promptclf, so a cluster's nodes need it installed (and the student folder and the shards at the
same paths). Batches are dicts of numpy arrays with these columns:

- read: ``_shard`` (index), ``_row`` (row within the shard), ``_text``, ``_n``, ``_error``.
  After a shard's last row its reader sends one marker row: ``_row = -1``, ``_n`` = the rows it
  read, ``_error`` = why it could not read the shard (empty when it could). A shard that fails sends
  its marker with the error and nothing after it, so one bad shard never stops the others.
- predicted: ``_shard``, ``_row``, ``_n``, ``_error`` as read, ``_label`` (index into the labels,
  -1 on markers), ``_prob``, ``_score`` (an ordinal student's score, NaN otherwise), ``_p<j>`` (every class, with ``--probs``), ``_pid`` and ``_rss_mb``
  (the worker process and its peak resident memory, for the summary). Texts never go back to the driver.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..data.tables import cell_text, check_columns, iter_table
from ..errors import PromptclfError
from .file import predict_scored


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, PromptclfError):
        return text[:500]
    return f"{text[:500]} ({type(exc).__name__})"


def _marker(shard: int, rows: int, error: str) -> dict[str, np.ndarray]:
    return {
        "_shard": np.array([shard], dtype=np.int64),
        "_row": np.array([-1], dtype=np.int64),
        "_text": np.array([""], dtype=object),
        "_n": np.array([rows], dtype=np.int64),
        "_error": np.array([error], dtype=object),
    }


def read_shards(
    batch: dict[str, np.ndarray], paths: dict[int, str], text_col: str, chunk_rows: int
) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data ``map_batches`` function: for each shard index in ``batch``, its texts in chunks, then its marker."""
    for shard in batch["shard"]:
        shard = int(shard)
        path = paths[shard]
        rows = 0
        try:
            for chunk in iter_table(path, chunk_rows):
                check_columns(chunk, [text_col], Path(path).name, "--text-col")
                n = len(chunk)
                yield {
                    "_shard": np.full(n, shard, dtype=np.int64),
                    "_row": np.arange(rows, rows + n, dtype=np.int64),
                    "_text": np.array([cell_text(v) for v in chunk[text_col]], dtype=object),
                    "_n": np.full(n, -1, dtype=np.int64),
                    "_error": np.full(n, "", dtype=object),
                }
                rows += n
        except Exception as exc:  # a corrupt or unreadable shard: reported by name, the others go on
            yield _marker(shard, rows, _one_line(exc))
            continue
        yield _marker(shard, rows, "")


def _peak_rss_mb() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)  # kilobytes on Linux


class ShardPredictor:
    """A Ray Data actor: loads the student once, then predicts every batch it is given."""

    def __init__(
        self, student_dir: str, dtype: str, merge: bool, batch_size: int, class_probs: bool, threads: int
    ) -> None:
        import torch

        from .loader import load_predictor

        if threads > 0:
            torch.set_num_threads(threads)
        self.student = load_predictor(student_dir, merge=merge, dtype=dtype, threads=threads or None)
        self.batch_size = batch_size
        self.class_probs = class_probs
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        rows = batch["_row"]
        real = np.flatnonzero(rows >= 0)
        n, k = len(rows), len(self.student.labels)
        label = np.full(n, -1, dtype=np.int32)
        prob = np.zeros(n, dtype=np.float32)
        probs = np.zeros((n, k), dtype=np.float32)
        score = np.full(n, np.nan, dtype=np.float64)
        if len(real):
            texts = [str(t) for t in batch["_text"][real]]
            p, s = predict_scored(self.student, texts, self.batch_size)
            if s is not None:
                score[real] = s
            best = p.argmax(-1)
            label[real] = best
            prob[real] = p[np.arange(len(real)), best]
            probs[real] = p
        out: dict[str, Any] = {
            "_shard": batch["_shard"],
            "_row": rows,
            "_n": batch["_n"],
            "_error": batch["_error"],
            "_label": label,
            "_prob": prob,
            "_score": score,
            "_pid": np.full(n, self.pid, dtype=np.int64),
            "_rss_mb": np.full(n, _peak_rss_mb(), dtype=np.int64),
        }
        if self.class_probs:
            for j in range(k):
                out[f"_p{j}"] = probs[:, j]
        return out
