"""Labeling a file of any size: read it in chunks, label each chunk, append it to the output.

:func:`promptclf.label.labeler.label_file` runs every file through here, so a run of hours never
holds the whole table and its results until the end:

1. **scan** — one pass keeping only each row's gold label and whether it has a usable text:
   the label set and the shots are chosen from the whole file, with the same seeded selection
   as an in-memory run (:func:`promptclf.label.jobs.plan_stream`); a second pass reads the shot rows'
   texts when the shots come from the input;
2. **chunks** — each chunk of ``chunk_rows`` rows becomes a job (:func:`promptclf.label.jobs.chunk_job`)
   labeled through the engine's runner (:meth:`Labeler.run_job`), then appended to the output
   in input order (:class:`promptclf.data.writers.TableWriter`; rows used as shots are written with
   status ``shot``) and counted in a :class:`~promptclf.label.jobs.Tally` for the summary.

Every response is in the store before its chunk is written, so a run killed at any point
leaves the finished chunks on disk and its rerun gets the finished requests from the store:
nothing is paid twice. On Ctrl-C or a rejected key, the rest of the file is still written,
with the unlabeled rows marked ``error`` (no row is ever dropped), before the error propagates;
when the circuit breaker trips (:mod:`promptclf.label.breaker`) they are marked ``unsent``.
This module drives a :class:`~promptclf.label.labeler.Labeler` it is handed and never imports it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.tables import cell_text, check_columns, iter_table
from ..data.writers import DatasetWriter, TableWriter
from ..errors import AuthenticationError, Interrupted, ProviderUnavailableError
from .breaker import UNSENT, UNSENT_REASON
from .jobs import StreamPlan, Tally, chunk_job, chunk_texts, plan_stream, prompt_builder

# What a streamed run says of rows it did not get to label (the same words as Labeler.label).
INTERRUPTED = "interrupted; finished requests are saved; rerun the same command to resume"
INTERRUPTED_REASON = "not labeled: run interrupted; rerun the same command to resume"


@dataclass
class Scan:
    """What the first pass keeps of a file: small per-row facts, never the texts."""

    columns: list[str]
    gold: list[str] | None  # stripped gold labels (interned), when the label column exists
    has_text: list[bool]
    n_rows: int
    n_bad: int  # rows that will get status error (empty or too long text)


def scan(source: str | Path, o: Any, split: str | None, chunk_rows: int) -> Scan:
    """One pass over ``source`` keeping the gold labels and which rows have a usable text."""
    columns: list[str] = []
    gold: list[str] | None = None
    has_text: list[bool] = []
    n_bad = 0
    for chunk in iter_table(source, chunk_rows, split):
        if not columns:
            columns = list(chunk.columns)
            check_columns(chunk, o.text_cols, source, "--text-col")
            if o.label_col is not None and o.label_col in chunk.columns:
                gold = []
        if gold is not None:
            gold.extend(sys.intern(cell_text(v).strip()) for v in chunk[o.label_col].tolist())
        for text in chunk_texts(chunk, o.text_cols):
            usable = bool(text.strip())
            has_text.append(usable)
            n_bad += not usable or len(text) > o.max_item_chars
    return Scan(columns, gold, has_text, len(has_text), n_bad)


def _fill_shot_texts(source: str | Path, o: Any, split: str | None, chunk_rows: int, plan: StreamPlan) -> None:
    """Replace the plan's placeholder shot texts by the texts of their rows (one more pass)."""
    wanted = {s.row for s in plan.shots if s.row is not None}
    if not wanted:
        return
    found: dict[int, str] = {}
    offset = 0
    for chunk in iter_table(source, chunk_rows, split):
        rows = [r - offset for r in wanted if offset <= r < offset + len(chunk)]
        if rows:
            texts = chunk_texts(chunk.iloc[sorted(rows)], o.text_cols)
            found.update({offset + r: t for r, t in zip(sorted(rows), texts, strict=True)})
        offset += len(chunk)
        if len(found) == len(wanted):
            break
    plan.shots[:] = [replace(s, text=found[s.row]) if s.row is not None else s for s in plan.shots]


def _chunks(source: str | Path, chunk_rows: int, split: str | None) -> Iterator[tuple[int, pd.DataFrame]]:
    offset = 0
    for chunk in iter_table(source, chunk_rows, split):
        yield offset, chunk
        offset += len(chunk)


def label_stream(
    labeler: Any,
    source: str | Path,
    out_file: str | Path,
    examples: pd.DataFrame | None = None,
    split: str | None = None,
    chunk_rows: int = 10_000,
    dataset_dir: str | Path | None = None,
) -> Tally:
    """Label ``source`` chunk by chunk with ``labeler`` (a :class:`~promptclf.label.labeler.Labeler`),
    appending each finished chunk to ``out_file`` (and to a ``save_to_disk`` dataset in
    ``dataset_dir``, ``pred_label`` as a ClassLabel). Returns the tally for the summary; sets
    ``labeler.wall_s``, ``labeler.job`` (the last chunk's) and ``labeler.prompts``."""
    o = labeler.options
    labeler.check_provider()
    facts = scan(source, o, split, chunk_rows)
    plan = plan_stream(o, facts.columns, facts.gold, facts.has_text, examples, str(source))
    _fill_shot_texts(source, o, split, chunk_rows, plan)
    del facts.has_text[:]  # not needed any more: keep the process small for the long part
    for w in plan.warnings:
        labeler._say(f"warning: {w}")
    tally = Tally(plan.labels, len(plan.shots), facts.gold)
    writer = TableWriter(out_file)
    dataset = DatasetWriter(dataset_dir, "pred_label", plan.labels.names) if dataset_dir is not None else None
    start = time.perf_counter()  # the model's load counts in wall_s, as it did when the first chunk loaded it
    labeler.load_provider()
    bar = labeler._progress_bar(facts.n_rows - len(plan.shot_rows) - facts.n_bad)
    stopped: BaseException | None = None
    reason, status = "", "error"
    try:
        for offset, chunk in _chunks(source, chunk_rows, split):
            job = chunk_job(o, chunk, offset, plan, facts.gold, labeler.store, labeler.progress, embed=stopped is None)
            labeler.job = job
            if labeler.prompts is None:
                labeler.prompts = prompt_builder(o, job)
            if stopped is None:
                try:
                    labeler.run_job(job, labeler.prompts, bar)
                except KeyboardInterrupt:
                    stopped, reason = Interrupted(INTERRUPTED), INTERRUPTED_REASON
                except AuthenticationError as err:
                    stopped, reason = err, f"not labeled: {err}"
                except ProviderUnavailableError as err:
                    # Unsent, not error: the provider was down; rerunning the same command resumes them.
                    stopped, reason, status = err, UNSENT_REASON, UNSENT
            if stopped is not None:
                labeler._finish_unlabeled(job, reason, status)
            frame = labeler._frame(chunk, job)
            # Numbers (NaN where unknown) in every chunk, so Parquet/Arrow chunks share one type.
            frame["pred_prob"] = pd.to_numeric(frame["pred_prob"], errors="coerce").astype("float64")
            writer.write(frame)
            if dataset is not None:
                dataset.write(frame)
            tally.add(job)
    except BaseException as exc:
        writer.__exit__(type(exc), exc, exc.__traceback__)  # the chunks written so far stay
        if dataset is not None:
            dataset.abort()
        raise
    finally:
        labeler.wall_s = time.perf_counter() - start
        if bar is not None:
            bar.close()
        flush = getattr(labeler.store, "flush", None)
        if flush is not None:
            flush()  # attempts logged since the last commit
    writer.close()  # every row is written, labeled or marked error
    if stopped is not None:
        if dataset is not None:
            dataset.abort()
        if isinstance(stopped, ProviderUnavailableError):
            stopped.args = (f"{stopped} ({tally.status.count(UNSENT):,} rows left {UNSENT})",)
        raise stopped
    if dataset is not None:
        dataset.close()
    return tally
