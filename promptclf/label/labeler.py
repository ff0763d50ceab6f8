"""The labeling engine: rows in, every row back out with a label or the reason it has none.

Flow: validate columns and the label set and pick few-shot examples (those rows are never
scored; :mod:`promptclf.label.jobs`) → send the items through the provider's runner: numbered
batches to a chat provider, concurrently, with transport retries and validation re-asks
(:mod:`promptclf.label.chat_runner`), or batches scored label by label by a scoring provider
(:mod:`promptclf.label.scoring_runner`) → write statuses. Every successful response is cached in
the SQLite store first, so an interrupted run resumes without paying twice. This module keeps
the :class:`Labeler` (setup, progress, accounting, dry run, summary) and :func:`label_file`.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import AuthenticationError, ConfigError, InputError, Interrupted, ProviderUnavailableError
from ..pricing.prices import Price, load_prices, price_for
from ..providers import Provider, make_provider, resolve_provider
from ..providers.base import Usage
from ..runs import Calibration, Collapse, LabelRun, LabelSummary, RunUsage
from ..store import Store
from .breaker import UNSENT, UNSENT_REASON
from .chat_runner import ChatRunner
from .confidence import probs_cell
from .jobs import Job, RowResult, Stats, Tally, Task, prepare_job, prompt_builder
from .options import CALIBRATE_NEEDS_SCORING, LabelOptions
from .prompts import PromptBuilder
from .scoring_runner import run_scoring
from .stream import INTERRUPTED, INTERRUPTED_REASON, label_stream

# Re-exported: these records lived here before the runners had their own modules.
__all__ = ["Job", "Labeler", "RowResult", "Stats", "Task", "label_file"]

OUT_COLS = ["pred_label", "pred_prob", "pred_probs", "pred_status", "pred_reason", "pred_request"]


class Labeler:
    """Label a DataFrame with an LLM. ``Labeler(LabelOptions(...)).label(df)`` returns a copy
    of ``df`` with the ``pred_*`` columns of docs/ARCHITECTURE.md."""

    def __init__(
        self,
        options: LabelOptions | None = None,
        provider: Provider | None = None,
        store: Store | None = None,
        progress: bool = True,
        run_id: str | None = None,
    ) -> None:
        self.options = options or LabelOptions()
        self.provider_name, self.model = (
            (provider.name, provider.model) if provider else resolve_provider(self.options, announce=progress)
        )
        self._provider = provider
        self._store = store
        self._init_lock = threading.Lock()  # worker threads may be the first to touch provider/store
        self.progress = progress
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.stats = Stats()
        self.price: Price = price_for(self.provider_name, self.model, load_prices(self.options.prices))
        self.job: Job | None = None
        self.prompts: PromptBuilder | None = None
        self.wall_s = 0.0
        self.calibration: dict[str, Any] | None = None  # what --calibrate divided by (scoring runner)

    # -- setup ------------------------------------------------------------------------------
    @property
    def provider(self) -> Provider:
        with self._init_lock:
            if self._provider is None:
                self._provider = make_provider(self.options, announce=False)
            return self._provider

    @property
    def store(self) -> Store:
        with self._init_lock:
            if self._store is None:
                self._store = Store(self.options.store_path())
            return self._store

    def prepare(self, df: pd.DataFrame, examples: pd.DataFrame | None = None, source: str = "input") -> Job:
        """Validate ``df`` against the options and decide shots and items. No request is sent."""
        self.check_provider()
        self.job = prepare_job(self.options, df, examples, source, store=self.store, progress=self.progress)
        self.prompts = prompt_builder(self.options, self.job)
        return self.job

    def check_provider(self) -> None:
        """Refuse options the provider cannot honour, before any work (with --provider auto the
        provider is only known now)."""
        kind = (
            self._provider.kind
            if self._provider is not None
            else ("scoring" if self.provider_name == "local" else "chat")
        )
        if self.options.calibrate and kind != "scoring":
            raise ConfigError(f"{CALIBRATE_NEEDS_SCORING} (provider {self.provider_name} is a chat provider)")
        if self.options.batch_api and self.provider_name not in ("openai", "together"):
            raise ConfigError(
                f"--batch-api needs a provider with a batch endpoint (openai or together), not {self.provider_name!r} "
                "(with --provider auto: set TOGETHER_API_KEY or OPENAI_API_KEY, or pass --provider); or drop --batch-api"
            )

    def load_provider(self) -> None:
        """Load a local model now, before any progress bar: a model that cannot load then fails with
        its one-line error alone, not under a bar stuck at 0%."""
        if self.provider_name == "local":
            getattr(self.provider, "load", lambda: None)()

    # -- running ----------------------------------------------------------------------------
    def label(self, df: pd.DataFrame, examples: pd.DataFrame | None = None, source: str = "input") -> pd.DataFrame:
        """Label every row of ``df``; returns a copy with the ``pred_*`` columns.

        On Ctrl-C raises :class:`Interrupted` whose ``partial`` attribute holds the frame with
        unfinished rows marked ``error`` (rerun to resume from the store).
        """
        job = self.prepare(df, examples, source)
        for w in job.warnings:
            self._say(f"warning: {w}")
        start = time.perf_counter()
        prompts = self.prompts
        assert prompts is not None
        self.load_provider()
        bar = self._progress_bar(len(job.todo))
        try:
            self.run_job(job, prompts, bar)
        except KeyboardInterrupt:
            self._finish_unlabeled(job, INTERRUPTED_REASON)
            exc = Interrupted(INTERRUPTED)
            exc.partial = self._frame(df, job)  # type: ignore[attr-defined]
            raise exc from None
        except AuthenticationError as err:
            self._finish_unlabeled(job, f"not labeled: {err}")
            err.partial = self._frame(df, job)  # type: ignore[attr-defined]
            raise
        except ProviderUnavailableError as err:
            # Left unsent, not error: the provider was down, rerunning the same command resumes them.
            self._finish_unlabeled(job, UNSENT_REASON, UNSENT)
            err.partial = self._frame(df, job)  # type: ignore[attr-defined]
            raise
        finally:
            self.wall_s = time.perf_counter() - start
            if bar is not None:
                bar.close()
        return self._frame(df, job)

    def run_job(self, job: Job, prompts: PromptBuilder, bar: Any) -> None:
        """Send ``job``'s rows through the provider's runner, writing ``job.results``
        (:meth:`label` for a frame; :mod:`promptclf.label.stream` once per chunk of a file)."""
        if self.options.batch_api:  # refuses a provider with no batch endpoint before touching it
            from .batch_runner import BatchRunner

            BatchRunner(self, job, prompts, progress=self.progress).run(bar)
        elif self.provider.kind == "scoring":
            self.calibration = run_scoring(self, job, prompts, bar)
        else:
            ChatRunner(self, job, prompts).run(bar)

    def _frame(self, df: pd.DataFrame, job: Job) -> pd.DataFrame:
        out = df.copy()
        out["pred_label"] = [r.label for r in job.results]
        out["pred_prob"] = [round(r.prob, 6) if r.prob is not None else None for r in job.results]
        out["pred_probs"] = [probs_cell(r.probs) for r in job.results]
        out["pred_status"] = [r.status for r in job.results]
        out["pred_reason"] = [r.reason for r in job.results]
        out["pred_request"] = [r.request for r in job.results]
        return out

    def _finish_unlabeled(self, job: Job, reason: str, status: str = "error") -> None:
        for r in job.results:
            if not r.status:
                r.status, r.reason = status, reason

    def _say(self, msg: str) -> None:
        if self.progress:
            print(f"promptclf: {msg}", file=sys.stderr)

    def _progress_bar(self, total: int) -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, unit="row", file=sys.stderr, dynamic_ncols=True, mininterval=0.5, desc="labeling")

    def tick(self, bar: Any, n: int) -> None:
        """Advance the progress bar by ``n`` finished rows."""
        if bar is not None and n:
            bar.update(n)
            bar.set_postfix_str(f"spent ${self.stats.cost_usd:.4f}", refresh=False)

    def account(self, usage: Usage, latency: float, cached: bool, batch: bool = False) -> tuple[float, float]:
        """Count one response (fetched now or from the store; ``batch``: through the provider's
        batch API, priced at its batch rates); returns (list cost, latency)."""
        # A job run with --batch-api is listed at batch prices, responses from the store included.
        cost = self.price.cost(usage, batch=batch or (cached and self.options.batch_api))
        with self.stats.lock:
            self.stats.requests += 1
            self.stats.prompt_tokens += usage.prompt_tokens
            self.stats.completion_tokens += usage.completion_tokens
            self.stats.cached_prompt_tokens += usage.cached_prompt_tokens
            if batch and not cached:
                self.stats.batch_requests += 1
            self.stats.list_cost_usd += cost
            # A cached response keeps the latency it had when it was fetched, so the speed
            # of a resumed or cached rerun is still the provider's, not the cache's.
            self.stats.latencies.append(latency)
            if cached:
                self.stats.cached_requests += 1
            else:
                self.stats.cost_usd += cost
        return cost, latency

    # -- dry run ----------------------------------------------------------------------------
    def dry_run(self, df: pd.DataFrame, examples: pd.DataFrame | None = None, source: str = "input") -> dict[str, Any]:
        """Render the first prompt, count its tokens and estimate the whole job. Sends nothing
        (:func:`promptclf.label.dry_run.dry_run`)."""
        from .dry_run import dry_run

        return dry_run(self, df, examples, source)

    # -- summary ----------------------------------------------------------------------------
    def _items_per_s(self, n_items: int) -> float:
        """Throughput of the provider: wall time when everything was fetched now; when some
        responses came from the store, their recorded latencies (spread over the concurrency)."""
        if not self.stats.cached_requests:
            return n_items / self.wall_s if self.wall_s else 0.0
        conc = 1 if self.provider.kind == "scoring" else min(self.options.concurrency, max(1, self.stats.requests))
        busy = sum(self.stats.latencies) / conc
        return n_items / busy if busy else 0.0

    def summary(self, labeled: pd.DataFrame | None = None, tally: Tally | None = None) -> LabelSummary:
        """Counts, coverage, accuracy on gold rows that were not shots, usage, cost, time.

        ``tally``: the rows' labels and statuses kept across the chunks of a streamed run
        (:mod:`promptclf.label.stream`); default: those of the last labeled frame.
        """
        if tally is None:
            assert self.job is not None
            tally = Tally.of_job(self.job)
        labels = tally.labels
        statuses = dict(Counter(tally.status).most_common())
        n_items = sum(1 for st in tally.status if st != "shot")
        ok = statuses.get("ok", 0)
        metrics = None
        if tally.gold is not None and any(tally.gold):
            from ..eval.metrics import evaluate

            metrics = evaluate(tally.gold, tally.pred, labels.names, status=tally.status)
        lat = self.stats.latencies
        from ..eval.metrics import collapse_check

        # Gold or not: one label for nearly every item is worth a warning either way.
        gold = [(labels.normalize(g) or g) if g else "" for g in tally.gold] if tally.gold is not None else None
        collapse = collapse_check(tally.pred, gold, tally.status)
        return LabelSummary(
            provider=self.provider_name,
            model=self.model,
            labels=labels.names,
            n_rows=len(tally.status),
            n_items=n_items,
            n_shots=tally.n_shots,
            statuses=statuses,
            coverage=ok / n_items if n_items else 0.0,
            rerun_rows=tally.rerun,
            usage=RunUsage(**self.stats.as_dict()),
            cost_usd=self.stats.cost_usd,
            cost_per_1k=1000 * self.stats.list_cost_usd / n_items if n_items else 0.0,
            price_known=self.price.known,
            wall_s=self.wall_s,
            items_per_s=self._items_per_s(n_items),
            latency_s_median=statistics.median(lat) if lat else None,
            metrics=metrics,
            collapse=Collapse(**collapse) if collapse else None,
            calibration=Calibration(**self.calibration) if self.calibration else None,
        )


def default_output(source: str | Path, split: str | None = None) -> Path:
    """Where ``promptclf label SOURCE`` writes without ``-o``: beside a file or dataset folder,
    in the current folder for a dataset name."""
    from ..data.tables import is_dataset_source

    src = Path(source)
    tail = f".{split.replace('/', '_')}" if split else ""
    if src.is_dir():
        return src.with_name(f"{src.name}{tail}.labeled.csv")
    if is_dataset_source(src):
        return Path(f"{str(source).replace('/', '__')}{tail}.labeled.csv")
    return src.with_name(src.stem + ".labeled.csv")


def label_file(
    input_path: str | Path,
    output: str | Path | None = None,
    options: LabelOptions | None = None,
    name: str | None = None,
    progress: bool = True,
    provider: Provider | None = None,
    split: str | None = None,
    save_dataset: str | Path | None = None,
) -> LabelRun:
    """Label a file end to end: read, label, write the labeled file and its run folder.

    ``input_path`` is a table file, a ``save_to_disk`` folder or a Hugging Face dataset name
    (``split`` picks the split). The file is read, labeled and written in chunks of
    ``options.chunk_rows`` rows (:mod:`promptclf.label.stream`), so memory stays flat and a
    killed run leaves its finished chunks on disk. ``save_dataset``: also write the labeled
    rows as a dataset folder (``save_to_disk``) with ``pred_label`` as a ClassLabel.

    Returns the run record (also saved as ``run.json``; ``run_dir`` is its folder). If the run is interrupted or the
    key is rejected, every row is still written (the ones not labeled marked ``error``)
    before the exception propagates.
    """
    from ..data.tables import read_table
    from ..runs import label_paths

    opts = options or LabelOptions()
    examples = read_table(opts.examples) if opts.examples else None
    out_file, run_dir = label_paths(output or default_output(input_path, split))
    src = Path(input_path)
    if src.is_file() and out_file.exists() and out_file.resolve() == src.resolve():
        raise InputError(f"-o {output} is the input file; write the labeled rows to another file")
    labeler = Labeler(opts, provider=provider, progress=progress)
    # A provider batch job takes the whole file at once: chunks would wait on each other's batch.
    chunk_rows = opts.chunk_rows if not opts.batch_api else 1 << 62
    try:
        tally = label_stream(labeler, input_path, out_file, examples, split, chunk_rows, save_dataset)
    except (Interrupted, AuthenticationError, ProviderUnavailableError):
        if out_file.exists():
            print(f"promptclf: partial output written to {out_file}", file=sys.stderr)
        raise
    summary = labeler.summary(tally=tally)
    assert labeler.prompts is not None
    run = LabelRun(
        name=name or run_dir.name.removesuffix(".run"),
        input=str(input_path),
        split=split,
        output=str(out_file.resolve()),
        dataset=str(Path(save_dataset).resolve()) if save_dataset is not None else None,
        gold_col=opts.label_col if tally.gold is not None else None,
        run_id=labeler.run_id,
        store=str(opts.store_path()),
        options=opts.model_dump(mode="json"),
        **summary.model_dump(),
    )
    files = {
        "prompt.j2": labeler.prompts.sources["score" if labeler.provider.kind == "scoring" else "batch"],
        "system.j2": labeler.prompts.sources["system"],
        "labels.json": json.dumps(tally.labels.to_dict(), indent=2),
    }
    run.save(run_dir, files)
    run.run_dir = run_dir.resolve()
    return run
