"""The labeling engine: rows in, every row back out with a label or the reason it has none.

Flow: resolve the provider once (:class:`~promptclf.providers.spec.ProviderSpec`) and refuse
options it cannot honour → plan the input: validate columns and the label set and pick few-shot
examples (those rows are never scored; :mod:`promptclf.label.jobs`) → label it chunk by chunk
(:mod:`promptclf.label.stream`; a frame in memory is one chunk) through the runner for the
provider's kind: numbered batches to a chat provider, concurrently, with transport retries and
validation re-asks (:mod:`promptclf.label.chat_runner`), or batches scored label by label by a
scoring provider (:mod:`promptclf.label.scoring_runner`). Every successful response is cached in
the SQLite store first, so an interrupted run resumes without paying twice. The runners get a
:class:`~promptclf.label.context.RunContext` (provider, store, options, meter) and never call
back into the :class:`Labeler`. This module keeps the :class:`Labeler` (setup, summary, dry run)
and :func:`label_file`.
"""

from __future__ import annotations

import json
import logging
import statistics
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import AuthenticationError, ConfigError, InputError, Interrupted, ProviderUnavailableError
from ..pricing.prices import Price, load_prices, price_for
from ..providers.base import Provider
from ..providers.spec import ProviderSpec
from ..runs import Calibration, Collapse, LabelRun, LabelSummary
from ..store import Store
from .context import RunContext
from .dry_run import DryRun, dry_run
from .jobs import Job, Tally, prompt_builder
from .meter import Meter, Stats
from .options import CALIBRATE_NEEDS_SCORING, LabelOptions
from .prompts import PromptBuilder
from .stream import Streamed, TableChunks, label_stream, prepare_job

log = logging.getLogger(__name__)

STUDENT_NEEDS_CASCADE = (
    "options.student asks for the student-first cascade, which the LLM's labeler alone cannot run: call "
    "promptclf.cascade_file (promptclf.predict.cascade), or drop student"
)


@dataclass
class LabelResult:
    """What :meth:`Labeler.label` returns: the labeled rows and the run's summary."""

    frame: pd.DataFrame  # every input row, in input order, with the pred_* columns (docs/ARCHITECTURE.md)
    summary: LabelSummary  # counts, coverage, accuracy on gold rows, usage, cost, time


class Labeler:
    """Label a DataFrame with an LLM: ``Labeler(LabelOptions(...)).label(df)`` returns a
    :class:`LabelResult` whose ``frame`` is a copy of ``df`` with the ``pred_*`` columns.

    ``provider``: a provider built by the caller (default: the one the options name, built on
    first use); ``store``: the SQLite store (default: the options'); ``progress``: a progress bar
    on stderr.
    """

    def __init__(
        self,
        options: LabelOptions | None = None,
        provider: Provider | None = None,
        store: Store | None = None,
        progress: bool = True,
        run_id: str | None = None,
    ) -> None:
        self.options = options or LabelOptions()
        if self.options.student is not None:
            raise ConfigError(STUDENT_NEEDS_CASCADE)
        if provider is None:
            self.spec = self.options.provider_spec()
            self.spec.announce()
        else:
            self.spec = ProviderSpec.of(provider)
        self._provider = provider
        self._store = store
        self.progress = progress
        self.run_id = run_id or uuid.uuid4().hex[:12]
        price = price_for(self.spec.name, self.spec.model, load_prices(self.options.prices))
        # A job run with --batch-api is listed at batch prices, responses from the store included.
        self.meter = Meter(price, batch_prices=self.options.batch_api, progress=progress)
        self.job: Job | None = None  # the last labeled chunk's job (or the prepared one)
        self.prompts: PromptBuilder | None = None
        self.calibration: Calibration | None = None  # what --calibrate divided by (scoring runner)
        self.wall_s = 0.0
        self._tally: Tally | None = None

    # -- setup ------------------------------------------------------------------------------
    @property
    def provider(self) -> Provider:
        if self._provider is None:
            self._provider = self.spec.build()
        return self._provider

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.options.store_path())
        return self._store

    @property
    def stats(self) -> Stats:
        """What this labeler's runs sent, received and spent so far."""
        return self.meter.stats

    @property
    def price(self) -> Price:
        return self.meter.price

    def check_provider(self, provider: Provider) -> None:
        """Refuse options the provider cannot honour, before any work (with --provider auto the
        provider is only known now)."""
        if self.options.calibrate and provider.kind != "scoring":
            raise ConfigError(f"{CALIBRATE_NEEDS_SCORING} (provider {self.spec.name} is a chat provider)")
        if self.options.batch_api and not (provider.kind == "chat" and provider.batch_api):
            raise ConfigError(
                f"--batch-api needs a provider with a batch endpoint (openai or together), not {self.spec.name!r} "
                "(with --provider auto: set TOGETHER_API_KEY or OPENAI_API_KEY, or pass --provider); or drop --batch-api"
            )

    def context(self) -> RunContext[Provider]:
        """What a run hands its runner: the provider (checked against the options), store, options, meter."""
        provider = self.provider
        self.check_provider(provider)
        return RunContext(self.options, provider, self.spec, self.store, self.meter, self.run_id)

    def prepare(self, df: pd.DataFrame, examples: pd.DataFrame | None = None, source: str = "input") -> Job:
        """Validate ``df`` against the options and decide shots and items. No request is sent."""
        ctx = self.context()
        self.job = prepare_job(self.options, df, examples, source, store=ctx.store, progress=self.progress)
        self.prompts = prompt_builder(self.options, self.job)
        return self.job

    # -- running ----------------------------------------------------------------------------
    def label(self, df: pd.DataFrame, examples: pd.DataFrame | None = None, source: str = "input") -> LabelResult:
        """Label every row of ``df`` (one chunk of :mod:`promptclf.label.stream`).

        On Ctrl-C raises :class:`Interrupted`, on a rejected key :class:`AuthenticationError`, when the
        provider stops answering :class:`ProviderUnavailableError`; their ``partial`` holds the frame
        with the unfinished rows marked ``error`` (``unsent`` for the last; rerun to resume from the store).
        """
        streamed = self.label_chunks([df], examples, source)
        return LabelResult(streamed.frame(), self.summary())

    def label_chunks(
        self,
        chunks: Iterable[pd.DataFrame],
        examples: pd.DataFrame | None = None,
        source: str = "input",
        out_file: str | Path | None = None,
        dataset_dir: str | Path | None = None,
    ) -> Streamed:
        """Label ``chunks`` (re-iterable: a list of frames, or a :class:`TableChunks`), writing them to
        ``out_file`` (and a dataset folder) as they finish, or keeping them in memory without one."""
        streamed = label_stream(self.context(), chunks, examples, source, out_file, dataset_dir)
        self.job, self.prompts, self._tally = streamed.job, streamed.prompts, streamed.tally
        self.calibration, self.wall_s = streamed.calibration, streamed.wall_s
        return streamed

    # -- dry run ----------------------------------------------------------------------------
    def dry_run(self, df: pd.DataFrame, examples: pd.DataFrame | None = None, source: str = "input") -> DryRun:
        """Render the first prompt, count its tokens and estimate the whole job. Sends nothing
        (:func:`promptclf.label.dry_run.dry_run`)."""
        job = self.prepare(df, examples, source)
        assert self.prompts is not None
        return dry_run(self.context(), job, self.prompts, source)

    # -- summary ----------------------------------------------------------------------------
    def _items_per_s(self, n_items: int) -> float:
        """Throughput of the provider: wall time when everything was fetched now; when some
        responses came from the store, their recorded latencies (spread over the concurrency)."""
        stats = self.stats
        if not stats.cached_requests:
            return n_items / self.wall_s if self.wall_s else 0.0
        conc = 1 if self.provider.kind == "scoring" else min(self.options.concurrency, max(1, stats.requests))
        busy = sum(stats.latencies) / conc
        return n_items / busy if busy else 0.0

    def summary(self) -> LabelSummary:
        """The last run's counts, coverage, accuracy on gold rows that were not shots, usage, cost, time."""
        from ..eval.metrics import collapse_check, evaluate

        tally = self._tally
        if tally is None:
            raise ConfigError("no run to summarise yet: call label() first")
        labels = tally.labels
        statuses = dict(Counter(tally.status).most_common())
        n_items = sum(1 for st in tally.status if st != "shot")
        ok = statuses.get("ok", 0)
        metrics = None
        collapse = None
        if labels.multi_label:
            from ..eval.multilabel import multilabel_metrics

            if tally.gold is not None and any(tally.gold):
                metrics = multilabel_metrics(tally.gold, tally.pred, labels, tally.status)
        else:
            if tally.gold is not None and any(tally.gold):
                conf = tally.prob if any(p is not None for p in tally.prob) else None
                metrics = evaluate(tally.gold, tally.pred, labels.names, status=tally.status, confidence=conf)
                if labels.ordinal:
                    from ..eval.ordinal import ordinal_metrics

                    metrics["ordinal"] = ordinal_metrics(
                        tally.gold, tally.pred, labels, status=tally.status, pred_score=tally.score
                    )
            if metrics is not None and labels.tree is not None:
                from ..eval.hierarchy import level_metrics

                metrics["levels"] = level_metrics(tally.gold or [], tally.pred, labels, tally.status)
            # Gold or not: one label for nearly every item is worth a warning either way.
            gold = [(labels.normalize(g) or g) if g else "" for g in tally.gold] if tally.gold is not None else None
            collapse = collapse_check(tally.pred, gold, tally.status)
        stats, lat = self.stats, self.stats.latencies
        candidates = None
        if tally.candidate_stats is not None:
            from ..eval.candidates import candidate_recall

            recall = candidate_recall(tally.gold, tally.candidates, labels, tally.status) if tally.gold else None
            candidates = tally.candidate_stats.as_dict(recall)
        return LabelSummary(
            provider=self.spec.name,
            model=self.spec.model,
            labels=labels.names,
            n_rows=len(tally.status),
            n_items=n_items,
            n_shots=tally.n_shots,
            statuses=statuses,
            coverage=ok / n_items if n_items else 0.0,
            usage=stats.usage(),
            cost_usd=stats.cost_usd,
            cost_per_1k=1000 * stats.list_cost_usd / n_items if n_items else 0.0,
            price_known=self.price.known,
            wall_s=self.wall_s,
            items_per_s=self._items_per_s(n_items),
            latency_s_median=statistics.median(lat) if lat else None,
            metrics=metrics,
            collapse=Collapse(**collapse) if collapse else None,
            calibration=self.calibration,
            rerun_rows=tally.rerun,
            candidates=candidates,
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

    Returns the run record (also saved as ``run.json``; its ``run_dir`` is the folder). If the
    run is interrupted or the key is rejected, every row is still written (the ones not labeled
    marked ``error``) before the exception propagates.
    """
    from ..data.tables import read_table
    from ..runs import label_paths

    opts = options or LabelOptions()
    if opts.student is not None:
        raise ConfigError(STUDENT_NEEDS_CASCADE)
    examples = read_table(opts.examples) if opts.examples else None
    out_file, run_dir = label_paths(output or default_output(input_path, split))
    src = Path(input_path)
    if src.is_file() and out_file.exists() and out_file.resolve() == src.resolve():
        raise InputError(f"-o {output} is the input file; write the labeled rows to another file")
    labeler = Labeler(opts, provider=provider, progress=progress)
    # A provider batch job takes the whole file at once: chunks would wait on each other's batch.
    chunk_rows = opts.chunk_rows if not opts.batch_api else 1 << 62
    chunks = TableChunks(input_path, chunk_rows, split)
    try:
        streamed = labeler.label_chunks(chunks, examples, str(input_path), out_file, save_dataset)
    except (Interrupted, AuthenticationError, ProviderUnavailableError):
        if out_file.exists():
            log.info("partial output written to %s", out_file)
        raise
    assert streamed.prompts is not None
    run = LabelRun(
        name=name or run_dir.name.removesuffix(".run"),
        input=str(input_path),
        split=split,
        output=str(out_file.resolve()),
        dataset=str(Path(save_dataset).resolve()) if save_dataset is not None else None,
        gold_col=opts.label_col if streamed.tally.gold is not None else None,
        run_id=labeler.run_id,
        store=str(opts.store_path()),
        options=opts.model_dump(mode="json"),
        **labeler.summary().model_dump(),
    )
    files = {
        "prompt.j2": streamed.prompts.sources["score" if labeler.provider.kind == "scoring" else "batch"],
        "system.j2": streamed.prompts.sources["system"],
        "labels.json": json.dumps(streamed.tally.labels.file_data(), indent=2),
    }
    run.save(run_dir, files)
    run.run_dir = run_dir.resolve()
    return run
