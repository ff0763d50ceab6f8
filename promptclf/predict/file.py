"""``predict`` on a file: every row through a student (run or export folder), read and written in chunks."""

from __future__ import annotations

import itertools
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ..data.tables import cell_text, check_columns
from ..distill.thresholds import multilabel_columns
from ..errors import InputError
from .loader import default_text_col, load_predictor

log = logging.getLogger(__name__)


def predict_file(
    run_dir: str | Path,
    input_path: str | Path,
    output: str | Path,
    text_col: str | None = None,
    batch_size: int = 32,
    merge: bool = False,
    class_probs: bool = False,
    dtype: str = "float32",
    split: str | None = None,
    chunk_rows: int = 8192,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every row of ``input_path`` and write it with ``pred_label``, ``pred_prob`` (and ``prob_<label>``);
    an ordinal student adds ``pred_score`` (its regression output, or the expected score). A multi-label
    student writes ``pred_labels`` (JSON list), ``pred_label`` (the set joined with ';') and ``pred_probs``
    (every label's probability) instead of ``pred_prob``.

    The input is read and the output written chunk by chunk (``chunk_rows`` rows; Parquet by
    row groups), so memory stays flat for any number of rows; the output keeps the input order.
    ``input_path`` may be a file, a ``save_to_disk`` folder or a dataset name (``split``).
    """
    from ..data.tables import count_rows, iter_table
    from ..data.writers import TableWriter

    run = Path(run_dir)
    text_col = text_col or default_text_col(run)
    if Path(output).exists() and Path(input_path).exists() and Path(output).resolve() == Path(input_path).resolve():
        raise InputError(f"-o {output} is the input file; write the predictions to another file")
    total = count_rows(input_path, split)
    chunks = iter_table(input_path, chunk_rows, split)
    first = next(chunks)  # bad input fails before the model loads
    check_columns(first, [text_col], input_path, "--text-col")
    student = load_predictor(run, merge=merge, dtype=dtype)
    multi_label = bool(getattr(student, "multi_label", False))
    log.info("%s rows with %s on %s", f"{total:,}", run, student.device)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="row", desc="predicting", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    t0 = time.perf_counter()
    rows = 0
    try:
        with TableWriter(output) as writer:
            for chunk in itertools.chain([first], chunks):
                check_columns(chunk, [text_col], input_path, "--text-col")
                texts = [cell_text(v) for v in chunk[text_col]]
                probs, scores = predict_scored(student, texts, batch_size, bar.update if bar else None)
                if multi_label:  # the label set (pred_labels, pred_label ';'-joined) and every label's pred_probs
                    for col, values in multilabel_columns(probs, student.thresholds, student.labels).items():
                        chunk[col] = values
                else:
                    best = probs.argmax(-1)
                    chunk["pred_label"] = [student.labels[j] for j in best]
                    chunk["pred_prob"] = [round(float(probs[i, j]), 6) for i, j in enumerate(best)]
                if scores is not None:  # an ordinal student: its score beside the label
                    chunk["pred_score"] = [round(float(v), 6) for v in scores]
                if class_probs:
                    for j, lab in enumerate(student.labels):
                        chunk[f"prob_{lab}"] = probs[:, j].round(6)
                writer.write(chunk)
                rows += len(chunk)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    return {"rows": rows, "wall_s": round(wall, 3), "items_per_s": round(rows / wall, 2) if wall else None}


def predict_scored(student: Any, texts: list[str], batch_size: int, on_batch: Any = None) -> tuple[Any, Any]:
    """(probabilities, scores or None): an ordinal PyTorch student's score comes from the same pass."""
    if getattr(student, "scores", None) is not None and hasattr(student, "predict_with_scores"):
        return student.predict_with_scores(texts, batch_size=batch_size, on_batch=on_batch)
    return student.predict_proba(texts, batch_size=batch_size, on_batch=on_batch), None
