"""The labeling engine: rows in, every row back out with a label or the reason it has none.

Flow: validate columns and the label set and pick few-shot examples (those rows are never
scored; :mod:`promptclf.jobs`) → send the items through the provider's runner: numbered
batches to a chat provider, concurrently, with transport retries and validation re-asks
(:mod:`promptclf.chat_runner`), or batches scored label by label by a scoring provider
(:mod:`promptclf.scoring_runner`) → write statuses. Every successful response is cached in
the SQLite store first, so an interrupted run resumes without paying twice. This module keeps
the :class:`Labeler` (setup, progress, accounting, dry run, summary) and :func:`label_file`.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from .chat_runner import ChatRunner, chat_mode, format_instructions
from .errors import AuthenticationError, InputError, Interrupted
from .jobs import Job, RowResult, Stats, Task, clip_text, prepare_job, prompt_builder
from .options import LabelOptions
from .pricing import Price, load_prices, price_for
from .prompts import Item, PromptBuilder
from .providers import Provider, make_provider, resolve_provider
from .providers.base import Usage
from .scoring_runner import run_scoring
from .store import Store

# Re-exported: these records lived here before the runners had their own modules.
__all__ = ["Job", "Labeler", "RowResult", "Stats", "Task", "label_file"]

OUT_COLS = ["pred_label", "pred_prob", "pred_status", "pred_reason", "pred_request"]


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
        self.job = prepare_job(self.options, df, examples, source)
        self.prompts = prompt_builder(self.options, self.job)
        return self.job

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
        bar = self._progress_bar(len(job.todo))
        try:
            if self.provider.kind == "scoring":
                run_scoring(self, job, prompts, bar)
            else:
                ChatRunner(self, job, prompts).run(bar)
        except KeyboardInterrupt:
            self._finish_unlabeled(job, "not labeled: run interrupted; rerun the same command to resume")
            exc = Interrupted("interrupted; finished requests are saved; rerun the same command to resume")
            exc.partial = self._frame(df, job)  # type: ignore[attr-defined]
            raise exc from None
        except AuthenticationError as err:
            self._finish_unlabeled(job, f"not labeled: {err}")
            err.partial = self._frame(df, job)  # type: ignore[attr-defined]
            raise
        finally:
            self.wall_s = time.perf_counter() - start
            if bar is not None:
                bar.close()
        return self._frame(df, job)

    def _frame(self, df: pd.DataFrame, job: Job) -> pd.DataFrame:
        out = df.copy()
        out["pred_label"] = [r.label for r in job.results]
        out["pred_prob"] = [round(r.prob, 6) if r.prob is not None else None for r in job.results]
        out["pred_status"] = [r.status for r in job.results]
        out["pred_reason"] = [r.reason for r in job.results]
        out["pred_request"] = [r.request for r in job.results]
        return out

    def _finish_unlabeled(self, job: Job, reason: str) -> None:
        for r in job.results:
            if not r.status:
                r.status, r.reason = "error", reason

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

    def account(self, usage: Usage, latency: float, cached: bool) -> tuple[float, float]:
        """Count one response (fetched now or from the store); returns (list cost, latency)."""
        cost = self.price.cost(usage)
        with self.stats.lock:
            self.stats.requests += 1
            self.stats.prompt_tokens += usage.prompt_tokens
            self.stats.completion_tokens += usage.completion_tokens
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
        """Render the first prompt, count its tokens and estimate the whole job. Sends nothing."""
        job = self.prepare(df, examples, source)
        assert self.prompts is not None
        o = self.options
        n = len(job.todo)
        if n == 0:
            raise InputError(f"{source}: no row to label (every row is a shot or has an empty text)")
        provider_kind = "scoring" if self.provider_name == "local" else "chat"
        count = self.provider.count_tokens
        if provider_kind == "scoring":
            parts = self.prompts.score_parts()
            system, prefix, suffix = parts.system, parts.prefix, parts.suffix
            first = job.texts[job.todo[0]]
            prompt = f"[system]\n{system}\n\n[user]\n{prefix}{clip_text(first, o.max_chars)}{suffix}"
            cap = getattr(self.provider, "max_item_tokens", None) or math.inf  # the local model cuts long items
            item_tokens = int(sum(min(count(clip_text(job.texts[i], o.max_chars)), cap) for i in job.todo))
            # The shared prefix is encoded once and its cache reused for every batch; each item
            # adds its own tokens, the suffix, and every label's tokens (scored side by side).
            layout = getattr(self.provider, "layout_tokens", None)
            head, tail = layout(system, prefix, suffix) if layout else (count(system + prefix), count(suffix))
            prompt_tokens = head + item_tokens + n * (tail + sum(count(name) for name in job.labels.names))
            completion_tokens = 0
            requests = math.ceil(n / o.batch_size)
        else:
            fmt = format_instructions(chat_mode(o, self.provider), job.labels)
            batches = [job.todo[i : i + o.batch_size] for i in range(0, n, o.batch_size)]
            prompt_tokens = 0
            prompt = ""
            for b, rows in enumerate(batches):
                msgs = self.prompts.batch_messages(
                    [Item(k + 1, job.texts[r]) for k, r in enumerate(rows)], format_instructions=fmt
                )
                prompt_tokens += sum(count(m["content"]) for m in msgs)
                if b == 0:
                    prompt = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in msgs)
            completion_tokens = n * 12
            requests = len(batches)
        cost = self.price.cost(Usage(prompt_tokens, completion_tokens))
        return {
            "provider": self.provider_name,
            "model": self.model,
            "rows": len(job.results),
            "items": n,
            "shots": len(job.shots),
            "skipped": sum(1 for r in job.results if r.status == "error"),
            "requests": requests,
            "prompt": prompt,
            "first_prompt_tokens": count(prompt),
            "est_prompt_tokens": prompt_tokens,
            "est_completion_tokens": completion_tokens,
            "est_cost_usd": cost,
            "price_known": self.price.known,
            "tokens_exact": provider_kind == "scoring",
        }

    # -- summary ----------------------------------------------------------------------------
    def _items_per_s(self, n_items: int) -> float:
        """Throughput of the provider: wall time when everything was fetched now; when some
        responses came from the store, their recorded latencies (spread over the concurrency)."""
        if not self.stats.cached_requests:
            return n_items / self.wall_s if self.wall_s else 0.0
        conc = 1 if self.provider.kind == "scoring" else min(self.options.concurrency, max(1, self.stats.requests))
        busy = sum(self.stats.latencies) / conc
        return n_items / busy if busy else 0.0

    def summary(self, labeled: pd.DataFrame) -> dict[str, Any]:
        """Counts, coverage, accuracy on gold rows that were not shots, usage, cost, time."""
        assert self.job is not None
        job = self.job
        statuses = pd.Series([r.status for r in job.results]).value_counts().to_dict()
        n_items = sum(1 for r in job.results if r.status != "shot")
        ok = statuses.get("ok", 0)
        metrics = None
        if job.gold is not None and any(job.gold):
            from .metrics import evaluate

            metrics = evaluate(
                job.gold,
                [r.label for r in job.results],
                job.labels.names,
                status=[r.status for r in job.results],
            )
        lat = self.stats.latencies
        return {
            "provider": self.provider_name,
            "model": self.model,
            "labels": job.labels.names,
            "n_rows": len(job.results),
            "n_items": n_items,
            "n_shots": len(job.shots),
            "statuses": statuses,
            "coverage": ok / n_items if n_items else 0.0,
            "usage": self.stats.as_dict(),
            "cost_usd": self.stats.cost_usd,
            "cost_per_1k": 1000 * self.stats.list_cost_usd / n_items if n_items else 0.0,
            "price_known": self.price.known,
            "wall_s": self.wall_s,
            "items_per_s": self._items_per_s(n_items),
            "latency_s_median": statistics.median(lat) if lat else None,
            "metrics": metrics,
        }


def label_file(
    input_path: str | Path,
    output: str | Path | None = None,
    options: LabelOptions | None = None,
    name: str | None = None,
    progress: bool = True,
    provider: Provider | None = None,
) -> dict[str, Any]:
    """Label a file end to end: read, label, write the labeled file and its run folder.

    Returns the run record (also saved as ``run.json``). If the run is interrupted or the
    key is rejected, the rows done so far are still written (the rest marked ``error``)
    before the exception propagates.
    """
    from .data import read_table, write_table
    from .runs import label_paths, write_run

    opts = options or LabelOptions()
    src = Path(input_path)
    df = read_table(src)
    examples = read_table(opts.examples) if opts.examples else None
    out_file, run_dir = label_paths(output or src.with_name(src.stem + ".labeled.csv"))
    labeler = Labeler(opts, provider=provider, progress=progress)
    try:
        labeled = labeler.label(df, examples, source=str(src))
    except (Interrupted, AuthenticationError) as exc:
        partial = getattr(exc, "partial", None)
        if partial is not None:
            write_table(partial, out_file)
            print(f"promptclf: partial output written to {out_file}", file=sys.stderr)
        raise
    write_table(labeled, out_file)
    summary = labeler.summary(labeled)
    assert labeler.prompts is not None
    record = {
        "kind": "label",
        "name": name or run_dir.name.removesuffix(".run"),
        "input": str(src),
        "output": str(out_file.resolve()),
        "gold_col": opts.label_col if labeler.job and labeler.job.gold is not None else None,
        "run_id": labeler.run_id,
        "store": str(opts.store_path()),
        **summary,
    }
    files = {
        "prompt.j2": labeler.prompts.sources["score" if labeler.provider.kind == "scoring" else "batch"],
        "system.j2": labeler.prompts.sources["system"],
        "labels.json": json.dumps(labeler.job.labels.to_dict() if labeler.job else [], indent=2),
    }
    write_run(run_dir, record, opts.model_dump(mode="json"), files)
    record["run_dir"] = str(run_dir.resolve())
    return record
