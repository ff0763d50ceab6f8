"""The labeling engine: rows in, every row back out with a label or the reason it has none.

Flow: validate columns and the label set → pick few-shot examples (those rows are never
scored) → pack items into numbered batches → send them concurrently, within rate limits,
through the transport-retry layer → parse and validate each response → re-ask the items a
response left out, duplicated or mislabelled in smaller batches (the second, separate retry
layer) → write statuses. Every successful response is cached in the SQLite store first, so
an interrupted run resumes without paying twice.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .data import cell_text, check_columns
from .errors import AuthenticationError, InputError, Interrupted, ProviderError, ResponseFormatError
from .labels import LabelSet, infer_labels
from .options import LabelOptions
from .pricing import Price, load_prices, price_for
from .prompts import Item, PromptBuilder, Shot, select_shots
from .providers import Provider, make_provider, resolve_provider
from .providers.base import ScoreRequest, Usage
from .retry import call_with_retries
from .schema import FORMAT_INSTRUCTIONS, parse_response, response_schema, schema_for_batch
from .store import Store, request_key

OUT_COLS = ["pred_label", "pred_prob", "pred_status", "pred_reason", "pred_request"]


@dataclass
class RowResult:
    label: str = ""
    prob: float | None = None
    status: str = ""  # ok | empty | invalid | error | shot
    reason: str = ""
    request: str = ""


@dataclass
class Stats:
    """What a run sent, received and spent. ``cost_usd`` is money spent now; ``list_cost_usd``
    also prices cached responses, which is what the job costs per item at list price."""

    requests: int = 0
    cached_requests: int = 0
    failed_requests: int = 0
    reasks: int = 0
    transport_retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    list_cost_usd: float = 0.0
    latencies: list[float] = field(default_factory=list)  # every response's own latency, cached ones included
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "cached_requests": self.cached_requests,
            "failed_requests": self.failed_requests,
            "reasks": self.reasks,
            "transport_retries": self.transport_retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits shared by all worker threads."""

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        self.rpm, self.tpm = rpm, tpm
        self._lock = threading.Lock()
        self._req_free_at = 0.0
        self._tok_free_at = 0.0

    def acquire(self, tokens: int) -> None:
        if not self.rpm and not self.tpm:
            return
        with self._lock:
            now = time.monotonic()
            start = now
            if self.rpm:
                start = max(start, self._req_free_at)
                self._req_free_at = start + 60.0 / self.rpm
            if self.tpm:
                start = max(start, self._tok_free_at)
                self._tok_free_at = start + 60.0 * tokens / self.tpm
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@dataclass
class Task:
    rows: list[int]  # row positions in the input frame, in item-id order
    round: int = 0
    previous: dict[int, str] = field(default_factory=dict)  # row -> off-list answer from the last round


@dataclass
class Job:
    """A validated labeling job: what will be sent, decided before any request."""

    texts: list[str]
    results: list[RowResult]
    todo: list[int]  # rows to label
    gold: list[str] | None
    labels: LabelSet
    shots: list[Shot]
    warnings: list[str]


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
        o = self.options
        check_columns(df, o.text_cols, source, "--text-col")
        has_gold = o.label_col is not None and o.label_col in df.columns
        gold = [cell_text(v).strip() for v in df[o.label_col]] if has_gold and o.label_col else None

        if o.labels:
            labels = LabelSet.from_dict(o.labels)
        elif gold is not None and any(gold):
            labels = infer_labels(gold)
        else:
            hint = f"column {o.label_col!r} is absent" if not has_gold else f"column {o.label_col!r} is empty"
            raise InputError(
                f"{source}: no label set: pass --labels (e.g. --labels 'a,b,c' or a file), or --label-col naming a "
                f"column with example labels ({hint}; the file has: {', '.join(map(repr, df.columns))})"
            )
        if gold is not None and o.labels:
            unknown = sorted({g for g in gold if g and labels.normalize(g) is None})
            if unknown:
                raise InputError(
                    f"{source}: column {o.label_col!r} has labels that are not in --labels: {', '.join(map(repr, unknown[:10]))}; "
                    f"add them to --labels (or as aliases), or point --label-col elsewhere"
                )

        texts = [self._row_text(df, i) for i in range(len(df))]
        results = [RowResult() for _ in range(len(df))]
        warnings: list[str] = []
        shots: list[Shot] = []
        if o.shots:
            if examples is not None:
                label_col = o.label_col or "label"
                check_columns(examples, [*o.text_cols, label_col], "--examples", "--text-col/--label-col")
                ex_texts = [self._row_text(examples, i) for i in range(len(examples))]
                shots, warnings = select_shots(
                    ex_texts, [cell_text(v) for v in examples[label_col]], o.shots, labels, o.seed
                )
                shots = [Shot(s.text, s.label, None) for s in shots]
            elif gold is not None:
                shots, warnings = select_shots(texts, gold, o.shots, labels, o.seed)
                for s in shots:
                    results[s.row].status = "shot"  # type: ignore[index]
                    results[s.row].reason = "used as a few-shot example, not scored"  # type: ignore[index]
            else:
                raise InputError(
                    f"--shots {o.shots} needs labeled examples: pass --examples FILE or a --label-col in {source} "
                    f"(the file has: {', '.join(map(repr, df.columns))})"
                )
            if not shots:
                raise InputError(f"--shots {o.shots}: no labeled example matches the label set {labels.names}")

        todo = []
        for i, text in enumerate(texts):
            if results[i].status == "shot":
                continue
            if not text.strip():
                results[i] = RowResult(status="error", reason=f"empty text in {', '.join(o.text_cols)}")
            elif len(text) > o.max_item_chars:
                results[i] = RowResult(
                    status="error",
                    reason=f"text has {len(text):,} characters, over --max-item-chars {o.max_item_chars:,}",
                )
            else:
                todo.append(i)
        self.prompts = PromptBuilder(
            labels,
            shots,
            template=o.template,
            system_template=o.system_template,
            max_chars=o.max_chars,
            shot_max_chars=o.shot_max_chars,
        )
        self.job = Job(texts, results, todo, gold, labels, shots, warnings)
        return self.job

    def _row_text(self, df: pd.DataFrame, i: int) -> str:
        cols = self.options.text_cols
        if len(cols) == 1:
            return cell_text(df[cols[0]].iat[i])
        parts = [(c, cell_text(df[c].iat[i]).strip()) for c in cols]
        return "\n".join(f"{c}: {v}" for c, v in parts if v)

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
        bar = self._progress_bar(len(job.todo))
        try:
            if self.provider.kind == "scoring":
                self._run_scoring(job, bar)
            else:
                self._run_chat(job, bar)
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

    def _tick(self, bar: Any, n: int) -> None:
        if bar is not None and n:
            bar.update(n)
            bar.set_postfix_str(f"spent ${self.stats.cost_usd:.4f}", refresh=False)

    def _account(self, usage: Usage, latency: float, cached: bool) -> tuple[float, float]:
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

    # -- scoring providers (the local model) ------------------------------------------------
    def _run_scoring(self, job: Job, bar: Any) -> None:
        assert self.prompts is not None
        parts = self.prompts.score_parts()
        system, prefix, suffix = parts.system, parts.prefix, parts.suffix
        names = job.labels.names
        provider = self.provider
        size = self.options.batch_size
        # Scores differ when only the answer attends to the examples, so that is part of the key.
        answer_only = parts.examples if getattr(provider, "shot_attention", "full") == "answer" else None
        for start in range(0, len(job.todo), size):
            rows = job.todo[start : start + size]
            items = [_clip_text(job.texts[i], self.options.max_chars) for i in rows]
            payload = {
                "provider": self.provider_name,
                "model": self.model,
                "system": system,
                "prefix": prefix,
                "suffix": suffix,
                "items": items,
                "labels": names,
                "answer_only_examples": answer_only,
            }
            key = request_key(payload)
            cached = None if self.options.no_cache else self.store.get(key)
            if cached is not None:
                probs = json.loads(cached.response)
                self._account(Usage(cached.prompt_tokens, cached.completion_tokens), cached.latency_s, True)
                self.store.log(key, self.run_id, self.provider_name, self.model, "cached")
            else:
                request = ScoreRequest(system, prefix, items, suffix, names, parts.examples)
                result = provider.score(request)  # type: ignore[attr-defined]
                probs = result.probs
                cost, _ = self._account(result.usage, result.latency_s, False)
                self.store.put(
                    key,
                    self.provider_name,
                    self.model,
                    {"items": len(items), "labels": names},
                    json.dumps(probs),
                    result.usage.prompt_tokens,
                    result.usage.completion_tokens,
                    result.latency_s,
                    cost,
                )
                self.store.log(
                    key, self.run_id, self.provider_name, self.model, "ok", None,
                    result.usage.prompt_tokens, result.usage.completion_tokens, result.latency_s, cost,
                )  # fmt: skip
            for row, p in zip(rows, probs, strict=True):
                best = max(range(len(names)), key=lambda k: p[k])
                job.results[row] = RowResult(names[best], float(p[best]), "ok", "", key[:16])
            self._tick(bar, len(rows))

    # -- chat providers ---------------------------------------------------------------------
    def _mode(self) -> str:
        o = self.options
        if o.structured != "auto":
            return o.structured
        return getattr(self.provider, "default_mode", lambda: "json_object")()

    def _run_chat(self, job: Job, bar: Any) -> None:
        o = self.options
        mode = self._mode()
        schema = response_schema(job.labels)
        limiter = RateLimiter(o.rpm, o.tpm)
        tasks = [Task(job.todo[i : i + o.batch_size]) for i in range(0, len(job.todo), o.batch_size)]
        executor = ThreadPoolExecutor(max_workers=o.concurrency, thread_name_prefix="promptclf")
        pending: dict[Future[Any], Task] = {}
        # Set on a rejected key or an interrupt. Workers check it before sending, because a
        # worker that just failed picks the next queued task before the main thread can cancel it.
        stop = threading.Event()

        def run_task(task: Task) -> dict[str, Any] | None:
            if stop.is_set():
                return None  # never sent; the run is ending
            try:
                return self._do_chat_task(task, job, mode, schema, limiter)
            except AuthenticationError:
                stop.set()
                raise

        def submit(task: Task) -> None:
            pending[executor.submit(run_task, task)] = task

        try:
            for t in tasks:
                submit(t)
            while pending:
                done, _ = wait(list(pending), timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = pending.pop(fut)
                    outcome = fut.result()  # AuthenticationError propagates: no point going on
                    if outcome is None:
                        continue  # skipped after a stop; the error that stopped the run follows
                    finished = self._apply_outcome(job, task, outcome)
                    self._tick(bar, finished)
                    for follow in self._reask_tasks(job, task, outcome):
                        submit(follow)
        finally:
            stop.set()
            for fut in pending:
                fut.cancel()
            executor.shutdown(wait=False, cancel_futures=True)

    def _do_chat_task(
        self, task: Task, job: Job, mode: str, schema: dict[str, Any], limiter: RateLimiter
    ) -> dict[str, Any]:
        """Runs in a worker thread: one request (from cache or the provider), parsed."""
        assert self.prompts is not None
        o = self.options
        items = [Item(k + 1, job.texts[row]) for k, row in enumerate(task.rows)]
        feedback = None
        if task.round:
            # A re-ask must not be the same prompt as before (it would get the same answer,
            # or the cached one): say what went wrong and which attempt this is.
            feedback = f"attempt {task.round + 1}: an earlier answer left texts out or used a label not in the list."
            bad = [f"[{k + 1}] '{task.previous[row]}'" for k, row in enumerate(task.rows) if row in task.previous]
            if bad:
                feedback += f" Earlier answers {', '.join(bad)} are not labels from the list."
            feedback += f" Give one entry per text, with exactly one of: {', '.join(job.labels.names)}."
        fmt = _format_instructions(mode, job.labels)
        messages = self.prompts.batch_messages(items, feedback=feedback, format_instructions=fmt)
        schema = schema_for_batch(schema, len(items), strict=mode == "json_schema")
        longest = max(len(n) for n in job.labels.names)
        max_tokens = o.max_tokens or 32 + len(items) * (16 + longest // 2)
        payload = {
            "provider": self.provider_name,
            "model": self.model,
            "base_url": getattr(self.provider, "base_url", None),
            "messages": messages,
            "schema": schema,
            "mode": mode,
            "temperature": o.temperature,
            "max_tokens": max_tokens,
        }
        key = request_key(payload)
        ids = [it.id for it in items]
        cached = None if o.no_cache else self.store.get(key)
        if cached is not None:
            self._account(Usage(cached.prompt_tokens, cached.completion_tokens), cached.latency_s, True)
            self.store.log(key, self.run_id, self.provider_name, self.model, "cached")
            return {"key": key, "parsed": parse_response(cached.response, ids, job.labels)}

        provider = self.provider
        limiter.acquire(sum(provider.count_tokens(m["content"]) for m in messages) + max_tokens)

        def on_retry(exc: BaseException, attempt: int, sleep: float) -> None:
            with self.stats.lock:
                self.stats.transport_retries += 1
            self.store.log(
                key, self.run_id, self.provider_name, self.model, "error", f"{exc} (retrying in {sleep:.1f}s)"
            )

        try:
            result = call_with_retries(
                lambda: provider.complete(messages, schema, mode, max_tokens),  # type: ignore[attr-defined]
                o.max_retries,
                o.retry_max_wait_s,
                on_retry,
            )
        except AuthenticationError:
            raise
        except ProviderError as exc:
            with self.stats.lock:
                self.stats.failed_requests += 1
            self.store.log(key, self.run_id, self.provider_name, self.model, "error", str(exc))
            return {"key": key, "error": f"request failed after {o.max_retries} retries: {exc}"}
        cost, latency = self._account(result.usage, result.latency_s, False)
        try:
            parsed = parse_response(result.text, ids, job.labels)
        except ResponseFormatError as exc:
            # Paid for but unusable: logged with its cost, never cached, items re-asked.
            self.store.log(
                key, self.run_id, self.provider_name, self.model, "error", str(exc)[:500],
                result.usage.prompt_tokens, result.usage.completion_tokens, latency, cost,
            )  # fmt: skip
            return {"key": key, "format_error": str(exc)}
        self.store.put(
            key, self.provider_name, self.model, payload, result.text,
            result.usage.prompt_tokens, result.usage.completion_tokens, latency, cost,
        )  # fmt: skip
        self.store.log(
            key, self.run_id, self.provider_name, self.model, "ok", None,
            result.usage.prompt_tokens, result.usage.completion_tokens, latency, cost,
        )  # fmt: skip
        return {"key": key, "parsed": parsed}

    def _apply_outcome(self, job: Job, task: Task, outcome: dict[str, Any]) -> int:
        """Write final results for items that are done; return how many rows finished."""
        key = outcome["key"][:16]
        finished = 0
        last_round = task.round >= self.options.max_reasks
        if "error" in outcome:
            for row in task.rows:
                job.results[row] = RowResult(status="error", reason=outcome["error"], request=key)
            return len(task.rows)
        if "format_error" in outcome:
            if last_round:
                for row in task.rows:
                    job.results[row] = RowResult(
                        status="empty", reason=f"no usable answer after {task.round} re-asks: {outcome['format_error'][:200]}",
                        request=key,
                    )  # fmt: skip
                return len(task.rows)
            return 0
        parsed = outcome["parsed"]
        for k, row in enumerate(task.rows, start=1):
            if k in parsed.labels:
                job.results[row] = RowResult(parsed.labels[k], None, "ok", "", key)
                finished += 1
            elif last_round:
                if k in parsed.invalid:
                    reason = f"answer {parsed.invalid[k]!r} is not in the label set (after {task.round} re-asks)"
                    job.results[row] = RowResult("", None, "invalid", reason, key)
                elif k in parsed.conflicting:
                    reason = f"the response gave this item two different labels (after {task.round} re-asks)"
                    job.results[row] = RowResult("", None, "empty", reason, key)
                else:
                    reason = f"the response left this item out (after {task.round} re-asks)"
                    job.results[row] = RowResult("", None, "empty", reason, key)
                finished += 1
        return finished

    def _reask_tasks(self, job: Job, task: Task, outcome: dict[str, Any]) -> list[Task]:
        """Validation re-asks: the items still unanswered, in batches half the size of the last."""
        if "error" in outcome or task.round >= self.options.max_reasks:
            return []
        if "format_error" in outcome:
            retry_rows = list(task.rows)
            previous: dict[int, str] = {}
        else:
            parsed = outcome["parsed"]
            retry_rows = [row for k, row in enumerate(task.rows, start=1) if k in parsed.retry_ids]
            previous = {row: parsed.invalid[k] for k, row in enumerate(task.rows, start=1) if k in parsed.invalid}
        if not retry_rows:
            return []
        nxt = task.round + 1
        size = 1 if nxt >= self.options.max_reasks else max(1, min(len(task.rows) // 2, len(retry_rows)))
        size = min(size, max(1, self.options.batch_size >> nxt))
        with self.stats.lock:
            self.stats.reasks += len(retry_rows)
        return [
            Task(retry_rows[i : i + size], nxt, {r: previous[r] for r in retry_rows[i : i + size] if r in previous})
            for i in range(0, len(retry_rows), size)
        ]

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
            prompt = f"[system]\n{system}\n\n[user]\n{prefix}{_clip_text(first, o.max_chars)}{suffix}"
            cap = getattr(self.provider, "max_item_tokens", None) or math.inf  # the local model cuts long items
            item_tokens = int(sum(min(count(_clip_text(job.texts[i], o.max_chars)), cap) for i in job.todo))
            # The shared prefix is encoded once and its cache reused for every batch; each item
            # adds its own tokens, the suffix, and every label's tokens (scored side by side).
            layout = getattr(self.provider, "layout_tokens", None)
            head, tail = layout(system, prefix, suffix) if layout else (count(system + prefix), count(suffix))
            prompt_tokens = head + item_tokens + n * (tail + sum(count(name) for name in job.labels.names))
            completion_tokens = 0
            requests = math.ceil(n / o.batch_size)
        else:
            mode = self._mode()
            fmt = _format_instructions(mode, job.labels)
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


def _format_instructions(mode: str, labels: LabelSet) -> str | None:
    """The JSON shape spelled out in the prompt, for servers with no structured-output mode."""
    return FORMAT_INSTRUCTIONS.format(labels=", ".join(labels.names)) if mode == "prompt" else None


def _clip_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


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
