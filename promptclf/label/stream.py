"""Labeling a table of any size: read it in chunks, label each chunk, hand it on.

Every run goes through :func:`label_stream`: a file from :func:`promptclf.label.labeler.label_file`
(its :class:`TableChunks`), and a frame in memory from :meth:`Labeler.label` (one chunk, ``[df]``),
so both have one planning path and one interrupt path:

1. **scan** — one pass keeping only each row's gold label and whether it has a usable text:
   the label set and the shots are chosen from the whole input
   (:func:`promptclf.label.jobs.plan_stream`); a second pass reads the shot rows' texts when the
   shots come from the input;
2. **chunks** — each chunk of rows becomes a job (:func:`promptclf.label.jobs.chunk_job`) labeled by
   the runner for the provider's kind (:func:`run_job`), then appended to the output in input
   order (:class:`promptclf.data.writers.TableWriter`; rows used as shots are written with status
   ``shot``), or kept in memory, and counted in a :class:`~promptclf.label.jobs.Tally` for the summary.

Every response is in the store before its chunk is written, so a run killed at any point
leaves the finished chunks on disk and its rerun gets the finished requests from the store:
nothing is paid twice. On Ctrl-C or a rejected key, the rest of the input is still written,
with the unlabeled rows marked ``error`` (no row is ever dropped), before the error propagates
(with the rows in memory as its ``partial``); when the circuit breaker trips
(:mod:`promptclf.providers.breaker`) they are marked ``unsent``, which a rerun sends again. Everything the run uses comes in its
:class:`~promptclf.label.context.RunContext`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.tables import cell_text, check_columns, iter_table
from ..data.writers import DatasetWriter, TableWriter
from ..errors import AuthenticationError, ConfigError, Interrupted, PromptclfError, ProviderUnavailableError
from ..providers.base import Provider
from ..runs import Calibration
from ..store import Store
from .confidence import probs_cell
from .context import RunContext
from .dispatch import run_runner
from .hierarchy import run_hierarchy
from .jobs import Job, StreamPlan, Tally, chunk_job, chunk_texts, plan_stream, prompt_builder
from .options import LabelOptions
from .prompts import PromptBuilder

log = logging.getLogger(__name__)

# What a run says of rows it did not get to label.
INTERRUPTED = "interrupted; finished requests are saved; rerun the same command to resume"
INTERRUPTED_REASON = "not labeled: run interrupted; rerun the same command to resume"
UNSENT = "unsent"  # the status of rows a run stopped by the circuit breaker never got an answer for
UNSENT_REASON = "not labeled: the provider stopped answering (see the run's error); rerun the same command to resume"


@dataclass
class TableChunks:
    """A table file, ``save_to_disk`` folder or dataset name, read ``chunk_rows`` rows at a time.
    Iterable more than once (every pass reads it again), like ``[df]`` for a frame in memory."""

    source: str | Path
    chunk_rows: int = 10_000
    split: str | None = None

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return iter_table(self.source, self.chunk_rows, self.split)


@dataclass
class Scan:
    """What the first pass keeps of the input: small per-row facts, never the texts."""

    columns: list[str]
    gold: list[str] | None  # stripped gold labels (interned), when the label column exists
    has_text: list[bool]
    n_rows: int
    n_bad: int  # rows that will get status error (empty or too long text)


def scan(chunks: Iterable[pd.DataFrame], o: LabelOptions, source: str) -> Scan:
    """One pass over ``chunks`` keeping the gold labels and which rows have a usable text."""
    columns: list[str] = []
    gold: list[str] | None = None
    has_text: list[bool] = []
    n_bad = 0
    for chunk in chunks:
        if not columns:
            columns = list(chunk.columns)
            check_columns(chunk, o.text_cols, source, "--text-col")
            if o.label_col is not None and o.label_col in chunk.columns:
                gold = []
        if gold is not None and o.label_col is not None:
            gold.extend(sys.intern(cell_text(v).strip()) for v in chunk[o.label_col].tolist())
        for text in chunk_texts(chunk, o.text_cols):
            usable = bool(text.strip())
            has_text.append(usable)
            n_bad += not usable or len(text) > o.max_item_chars
    return Scan(columns, gold, has_text, len(has_text), n_bad)


def _fill_shot_texts(chunks: Iterable[pd.DataFrame], o: LabelOptions, plan: StreamPlan) -> None:
    """Replace the plan's placeholder shot texts by the texts of their rows (one more pass)."""
    wanted = {s.row for s in plan.shots if s.row is not None}
    if not wanted:
        return
    found: dict[int, str] = {}
    for offset, chunk in _offsets(chunks):
        rows = sorted(r - offset for r in wanted if offset <= r < offset + len(chunk))
        if rows:
            texts = chunk_texts(chunk.iloc[rows], o.text_cols)
            found.update({offset + r: t for r, t in zip(rows, texts, strict=True)})
        if len(found) == len(wanted):
            break
    plan.shots[:] = [replace(s, text=found[s.row]) if s.row is not None else s for s in plan.shots]


def _offsets(chunks: Iterable[pd.DataFrame]) -> Iterator[tuple[int, pd.DataFrame]]:
    offset = 0
    for chunk in chunks:
        yield offset, chunk
        offset += len(chunk)


def plan_input(
    chunks: Iterable[pd.DataFrame], o: LabelOptions, examples: pd.DataFrame | None, source: str
) -> tuple[Scan, StreamPlan]:
    """Scan the input and decide, once for all of it, the label set and the shots (texts filled in)."""
    facts = scan(chunks, o, source)
    plan = plan_stream(o, facts.columns, facts.gold, facts.has_text, examples, source)
    _fill_shot_texts(chunks, o, plan)
    return facts, plan


def prepare_job(
    o: LabelOptions,
    df: pd.DataFrame,
    examples: pd.DataFrame | None = None,
    source: str = "input",
    store: Store | None = None,
    progress: bool = False,
) -> Job:
    """The job ``df`` is as one chunk: validated, shots and items decided. No request is sent.

    With ``--shot-selection similar`` the pool and the texts to label are embedded (cached in
    ``store``) and the rows to label are put in an order where similar texts are next to each
    other, cut into batches of ``batch_size`` (results still go back to their own rows).
    """
    facts, plan = plan_input([df], o, examples, source)
    return chunk_job(o, df, 0, plan, facts.gold, store, progress)


def labeled_frame(df: pd.DataFrame, job: Job) -> pd.DataFrame:
    """A copy of ``df`` with the ``pred_*`` columns of ``job``'s results."""
    out = df.copy()
    out["pred_label"] = [r.label for r in job.results]
    # Numbers (NaN where unknown) in every chunk, so Parquet/Arrow chunks share one type.
    out["pred_prob"] = np.asarray([round(r.prob, 6) if r.prob is not None else np.nan for r in job.results], "float64")
    out["pred_probs"] = [probs_cell(r.probs) for r in job.results]
    if job.labels.multi_label:  # the label set as a JSON list ("[]": none applies); empty when not labeled
        out["pred_labels"] = [
            json.dumps(r.labels, ensure_ascii=False) if r.labels is not None else "" for r in job.results
        ]
    if job.labels.ordinal:  # the expected score where the answer's probabilities are known, else the label's
        sc = [job.labels.expected_score(r.probs, r.label) if r.label else None for r in job.results]
        out["pred_score"] = np.asarray([round(v, 4) if v is not None else np.nan for v in sc], "float64")
    if job.candidates is not None:  # --candidates: each row's own K nearest labels, nearest first
        by_row = job.candidates.by_row
        out["pred_candidates"] = [
            json.dumps(by_row[i], ensure_ascii=False) if i in by_row else "" for i in range(len(out))
        ]
    out["pred_status"] = [r.status for r in job.results]
    out["pred_reason"] = [r.reason for r in job.results]
    out["pred_request"] = [r.request for r in job.results]
    return out


def run_job(ctx: RunContext[Provider], job: Job, prompts: PromptBuilder) -> Calibration | None:
    """Label ``job``'s rows with the runner for the provider's kind (``--batch-api``: the batch runner);
    returns what ``--calibrate`` divided by, for a scoring provider."""
    if job.labels.tree is not None and ctx.options.tree_mode == "hierarchy":
        return run_hierarchy(ctx, job)  # stage by stage, each with its own prompts
    return run_runner(ctx, job, prompts)


@dataclass
class Streamed:
    """What a finished run leaves for its summary."""

    tally: Tally
    job: Job | None = None  # the last chunk's
    prompts: PromptBuilder | None = None
    calibration: Calibration | None = None
    wall_s: float = 0.0
    frames: list[pd.DataFrame] = field(default_factory=list)  # the labeled chunks, when not written to a file

    def frame(self) -> pd.DataFrame:
        """The labeled rows kept in memory, in input order."""
        return self.frames[0] if len(self.frames) == 1 else pd.concat(self.frames) if self.frames else pd.DataFrame()


def label_stream(
    ctx: RunContext[Provider],
    chunks: Iterable[pd.DataFrame],
    examples: pd.DataFrame | None = None,
    source: str = "input",
    out_file: str | Path | None = None,
    dataset_dir: str | Path | None = None,
) -> Streamed:
    """Label ``chunks`` one after another, appending each finished one to ``out_file`` (and to a
    ``save_to_disk`` dataset in ``dataset_dir``, ``pred_label`` as a ClassLabel), or keeping them
    in memory without ``out_file``.

    Raises :class:`Interrupted` (Ctrl-C) or :class:`AuthenticationError` once every row is written,
    the rows it did not get to marked ``error``; kept in memory, they are its ``partial``.
    """
    o = ctx.options
    facts, plan = plan_input(chunks, o, examples, source)
    del facts.has_text[:]  # not needed any more: keep the process small for the long part
    if plan.labels.multi_label and dataset_dir is not None:
        raise ConfigError(
            "--save-dataset writes pred_label as a ClassLabel (one label per row); with --multi-label drop "
            "--save-dataset and read pred_labels (a JSON list) from the labeled file"
        )
    for w in plan.warnings:
        log.warning("%s", w)
    out = Streamed(Tally(plan.labels, len(plan.shots), facts.gold))
    writer = TableWriter(out_file) if out_file is not None else None
    dataset = DatasetWriter(dataset_dir, "pred_label", plan.labels.names) if dataset_dir is not None else None
    start = time.perf_counter()  # the model's load counts in wall_s
    ctx.provider.load()  # before the bar: a model that cannot load fails with its one line alone
    ctx.meter.start(facts.n_rows - len(plan.shot_rows) - facts.n_bad)
    stopped: PromptclfError | None = None
    reason, status = "", "error"
    try:
        for offset, chunk in _offsets(chunks):
            job = chunk_job(o, chunk, offset, plan, facts.gold, ctx.store, ctx.meter.progress, embed=stopped is None)
            out.job = job
            if out.prompts is None:
                out.prompts = prompt_builder(o, job)
            if stopped is None:
                try:
                    out.calibration = run_job(ctx, job, out.prompts)
                except KeyboardInterrupt:
                    stopped, reason = Interrupted(INTERRUPTED), INTERRUPTED_REASON
                except AuthenticationError as err:
                    stopped, reason = err, f"not labeled: {err}"
                except ProviderUnavailableError as err:
                    # Unsent, not error: the provider was down; rerunning the same command resumes them.
                    stopped, reason, status = err, UNSENT_REASON, UNSENT
            if stopped is not None:
                job.mark_unlabeled(reason, status)
            frame = labeled_frame(chunk, job)
            if writer is not None:
                writer.write(frame)
            else:
                out.frames.append(frame)
            if dataset is not None:
                dataset.write(frame)
            out.tally.add(job)
    except BaseException:
        if writer is not None:
            writer.abort()  # the chunks written so far stay
        if dataset is not None:
            dataset.abort()
        raise
    finally:
        out.wall_s = time.perf_counter() - start
        ctx.meter.close()
    if writer is not None:
        writer.close()  # every row is written, labeled or marked error
    if stopped is not None:
        if dataset is not None:
            dataset.abort()
        if isinstance(stopped, ProviderUnavailableError):
            stopped.args = (f"{stopped} ({out.tally.status.count(UNSENT):,} rows left {UNSENT})",)
        if writer is None:
            stopped.partial = out.frame()
        raise stopped
    if dataset is not None:
        dataset.close()
    return out
