"""The chat runner: numbered batches sent to a chat provider, parsed, and re-asked.

Items are packed into numbered batches and sent concurrently, within rate limits, through
the transport-retry layer (:mod:`promptclf.providers.retry`); each response is parsed and validated
(:mod:`promptclf.label.schema`); the items a response left out, duplicated or mislabelled are
re-asked in smaller batches (the second, separate retry layer). Every successful response is
cached in the store first, so an interrupted run resumes without paying twice. The runner gets
everything it uses in its :class:`~promptclf.label.context.RunContext`: it counts through the
context's meter and never calls back into the engine.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from ..errors import AuthenticationError, ProviderError, ProviderUnavailableError, ResponseFormatError
from ..labels import LabelSet
from ..providers.base import ChatProvider, ChatResult, StructuredMode, Usage
from ..providers.breaker import CircuitBreaker
from ..providers.retry import call_with_retries
from ..store import request_key
from .confidence import Confidence, compact_logprobs, item_confidence, set_confidence
from .context import RunContext
from .jobs import Job, RowResult, Task
from .options import LabelOptions
from .prompts import Item, PromptBuilder
from .schema import ParsedBatch, format_instructions_for, parse_response, response_schema, schema_for_batch


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
class ChatRequest:
    """One request, built: what is sent for ``task`` and the store key it is cached under."""

    task: Task
    ids: list[int]  # item ids in the prompt, 1..n
    messages: list[dict[str, str]]
    schema: dict[str, Any]
    mode: StructuredMode
    max_tokens: int
    payload: dict[str, Any]  # what the key hashes (no secret)
    key: str


@dataclass
class Outcome:
    """What became of one request: its answer parsed (``parsed``, with each item's ``conf``idence),
    or an ``error`` (failed after every transport retry), or a ``format_error`` (paid for but unusable)."""

    key: str
    parsed: ParsedBatch | None = None
    conf: dict[int, Confidence] | None = None
    error: str | None = None
    format_error: str | None = None


def chat_mode(options: LabelOptions, provider: ChatProvider) -> StructuredMode:
    """The structured-output mode: the one asked for, else the provider's default."""
    if options.structured != "auto":
        return options.structured
    return provider.default_mode()


def format_instructions(mode: StructuredMode, labels: LabelSet) -> str | None:
    """The JSON shape spelled out in the prompt, for servers with no structured-output mode."""
    return format_instructions_for(labels) if mode == "prompt" else None


class ChatRunner:
    """Labels ``job``'s rows through the context's chat provider, writing ``job.results``."""

    def __init__(self, ctx: RunContext[ChatProvider], job: Job, prompts: PromptBuilder) -> None:
        self.ctx = ctx
        self.job = job
        self.prompts = prompts
        self.options = ctx.options
        self.mode = chat_mode(self.options, ctx.provider)
        self.schema = response_schema(job.labels)
        self._schemas: dict[tuple[str, ...], dict[str, Any]] = {}  # --candidates: the enum of each shown set
        self._schema_lock = threading.Lock()
        self.limiter = RateLimiter(self.options.rpm, self.options.tpm)
        o = self.options
        self.breaker = CircuitBreaker.for_provider(ctx.provider, o.breaker_failures, o.breaker_window_s)

    def first_tasks(self) -> list[Task]:
        """The job's rows to label, in batches of ``batch_size``."""
        o, job = self.options, self.job
        return [Task(job.todo[i : i + o.batch_size]) for i in range(0, len(job.todo), o.batch_size)]

    def run(self, tasks: list[Task] | None = None) -> None:
        """Send ``tasks`` (default: the whole job) and their re-asks, writing ``job.results``."""
        o = self.options
        tasks = self.first_tasks() if tasks is None else tasks
        executor = ThreadPoolExecutor(max_workers=o.concurrency, thread_name_prefix="promptclf")
        pending: dict[Future[Outcome | None], Task] = {}
        # Set on a rejected key, a tripped breaker or an interrupt. Workers check it before sending, because a
        # worker that just failed picks the next queued task before the main thread can cancel it.
        stop = threading.Event()

        def run_task(task: Task) -> Outcome | None:
            if stop.is_set():
                return None  # never sent; the run is ending
            try:
                return self._do_task(task)
            except (AuthenticationError, ProviderUnavailableError):
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
                    outcome = fut.result()  # a rejected key or a tripped breaker propagates: no point going on
                    if outcome is None:
                        continue  # skipped after a stop; the error that stopped the run follows
                    for follow in self.finish(task, outcome):
                        submit(follow)
        finally:
            stop.set()
            for fut in pending:
                fut.cancel()
            executor.shutdown(wait=False, cancel_futures=True)

    def finish(self, task: Task, outcome: Outcome) -> list[Task]:
        """Apply one request's outcome to its rows (counting the finished ones on the meter); its
        validation re-asks. The batch runner finishes its answers the same way."""
        self.ctx.meter.tick(self.apply_outcome(task, outcome))
        return self.reask_tasks(task, outcome)

    def _do_task(self, task: Task) -> Outcome:
        """Runs in a worker thread: one request (from cache or the provider), parsed."""
        o, ctx = self.options, self.ctx
        req = self.build_request(task)
        outcome = self.cached_outcome(req)
        if outcome is not None:
            return outcome
        key, messages, schema, mode, max_tokens = req.key, req.messages, req.schema, req.mode, req.max_tokens
        provider = ctx.provider
        self.limiter.acquire(sum(provider.count_tokens(m["content"]) for m in messages) + max_tokens)

        def on_retry(exc: BaseException, attempt: int, sleep: float) -> None:
            ctx.meter.add("transport_retries")
            ctx.log(key, "error", f"{exc} (retrying in {sleep:.1f}s)")

        breaker = self.breaker
        try:
            result = call_with_retries(
                lambda: breaker.call(lambda: provider.complete(messages, schema, mode, max_tokens)),
                o.max_retries,
                o.retry_max_wait_s,
                on_retry,
                sleep=breaker.sleep,
            )
        except (AuthenticationError, ProviderUnavailableError):
            raise
        except ProviderError as exc:
            breaker.exhausted(exc)  # raises if the provider is down rather than this request failing
            ctx.meter.add("failed_requests")
            ctx.log(key, "error", str(exc))
            return Outcome(key, error=f"request failed after {o.max_retries} retries: {exc}")
        return self.record_result(req, result)

    def build_request(self, task: Task) -> ChatRequest:
        """The request for ``task``: messages, schema, token cap, and the store key.

        Shared with the batch runner (:mod:`promptclf.label.batch_runner`), so a batch line is the
        same request, with the same key, as the synchronous one. The system message and the
        user message up to the first item are the same bytes for every request of a job
        (re-asks put their note after the items), so providers can cache that prefix.
        """
        o, job, ctx = self.options, self.job, self.ctx
        items = [Item(k + 1, job.texts[row]) for k, row in enumerate(task.rows)]
        feedback = None
        if task.round:
            # A re-ask must not be the same prompt as before (it would get the same answer,
            # or the cached one): say what went wrong and which attempt this is.
            feedback = f"attempt {task.round + 1}: an earlier answer left texts out or used a label not in the list."
            bad = [f"[{k + 1}] '{task.previous[row]}'" for k, row in enumerate(task.rows) if row in task.previous]
            if bad:
                feedback += f" Earlier answers {', '.join(bad)} are not labels from the list."
        # Similar-example shots: this request's own examples (nearest to its rows); --candidates: its
        # own labels. Both are part of the messages and of the store key.
        shots, shown = job.request_view(task.rows)
        listed = shown if shown is not None else job.labels
        if feedback is not None:
            if job.labels.multi_label:
                feedback += (
                    f" Give one entry per text, with a list of labels taken only from: {', '.join(listed.names)}."
                )
            else:
                feedback += f" Give one entry per text, with exactly one of: {', '.join(listed.names)}."
        mode = self.mode
        fmt = format_instructions(mode, listed)
        messages = self.prompts.batch_messages(
            items, feedback=feedback, format_instructions=fmt, shots=shots, labels=shown
        )
        schema = schema_for_batch(self._schema_of(shown), len(items), strict=mode == "json_schema")
        longest = max(len(n) for n in job.labels.names)
        # Multi-label: room for a few labels per item (a list, with its quotes and commas).
        per_label = longest // 2 + (3 if job.labels.multi_label else 0)
        per_item = 16 + per_label * (min(len(job.labels), 8) if job.labels.multi_label else 1)
        max_tokens = o.max_tokens or 32 + len(items) * per_item
        payload = {
            "provider": ctx.spec.name,
            "model": ctx.spec.model,
            "base_url": ctx.provider.base_url,
            "messages": messages,
            "schema": schema,
            "mode": mode,
            "temperature": o.temperature,
            "max_tokens": max_tokens,
        }
        return ChatRequest(
            task, [it.id for it in items], messages, schema, mode, max_tokens, payload, request_key(payload)
        )

    def _schema_of(self, shown: LabelSet | None) -> dict[str, Any]:
        """The response schema whose enum is ``shown`` (None: the whole set). Answers are still parsed
        against the whole set, so a label the request did not list is accepted."""
        if shown is None:
            return self.schema
        key = tuple(shown.names)
        with self._schema_lock:
            if key not in self._schemas:
                self._schemas[key] = response_schema(shown)
            return self._schemas[key]

    def cached_outcome(self, req: ChatRequest) -> Outcome | None:
        """The stored response for ``req``, counted and parsed; None when there is none (or --no-cache)."""
        ctx = self.ctx
        cached = None if self.options.no_cache else ctx.store.get(req.key)
        if cached is None:
            return None
        usage = Usage(cached.prompt_tokens, cached.completion_tokens, cached.cached_prompt_tokens)
        ctx.meter.account(usage, cached.latency_s, True)
        ctx.log(req.key, "cached")
        parsed = parse_response(cached.response, req.ids, self.job.labels)
        # The stored logprobs give the same label probabilities the fresh answer gave.
        return Outcome(req.key, parsed, self._confidence(cached.response, cached.logprobs, parsed))

    def record_result(self, req: ChatRequest, result: ChatResult, batch: bool = False) -> Outcome:
        """Count, parse and store a response the provider just sent (``batch``: through its batch API)."""
        ctx, key = self.ctx, req.key
        u, latency = result.usage, result.latency_s
        cost = ctx.meter.account(u, latency, False, batch=batch)
        try:
            parsed = parse_response(result.text, req.ids, self.job.labels)
        except ResponseFormatError as exc:
            # Paid for but unusable: logged with its cost, never cached, items re-asked.
            ctx.log(key, "error", str(exc)[:500], u, latency, cost)
            return Outcome(key, format_error=str(exc))
        logprobs = compact_logprobs(result.text, result.logprobs)
        ctx.save(key, req.payload, result.text, u, latency, cost, logprobs)
        return Outcome(key, parsed, self._confidence(result.text, logprobs, parsed))

    def _confidence(
        self, text: str, logprobs: list[dict[str, Any]] | None, parsed: ParsedBatch
    ) -> dict[int, Confidence]:
        """Each answered item's confidence from the answer's token logprobs (per chosen label when multi-label)."""
        if self.job.labels.multi_label:
            return set_confidence(text, logprobs, parsed.sets, self.job.labels)
        return item_confidence(text, logprobs, parsed.labels, self.job.labels)

    def apply_outcome(self, task: Task, outcome: Outcome) -> int:
        """Write final results for items that are done; return how many rows finished."""
        job = self.job
        key = outcome.key[:16]
        finished = 0
        last_round = task.round >= self.options.max_reasks
        if outcome.error is not None:
            for row in task.rows:
                job.results[row] = RowResult(status="error", reason=outcome.error, request=key)
            return len(task.rows)
        if outcome.parsed is None:  # a format error
            if last_round:
                for row in task.rows:
                    job.results[row] = RowResult(
                        status="empty", reason=f"no usable answer after {task.round} re-asks: {str(outcome.format_error)[:200]}",
                        request=key,
                    )  # fmt: skip
                return len(task.rows)
            return 0
        parsed = outcome.parsed
        conf = outcome.conf or {}
        if job.candidates is not None:
            answered = [x for k in parsed.labels for x in (parsed.sets[k] if k in parsed.sets else [parsed.labels[k]])]
            job.candidates.stats.count(job.candidates.shown(task.rows), answered)
        for k, row in enumerate(task.rows, start=1):
            if k in parsed.labels:
                c = conf.get(k)  # matched by item id, so reordered answers keep each row's own
                job.results[row] = RowResult(
                    parsed.labels[k], c.prob if c else None, "ok", "", key, c.probs if c else None, parsed.sets.get(k)
                )
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

    def reask_tasks(self, task: Task, outcome: Outcome) -> list[Task]:
        """Validation re-asks: the items still unanswered, in batches half the size of the last."""
        o = self.options
        if outcome.error is not None or task.round >= o.max_reasks:
            return []
        if outcome.parsed is None:  # a format error: every item again
            retry_rows = list(task.rows)
            previous: dict[int, str] = {}
        else:
            parsed = outcome.parsed
            retry_rows = [row for k, row in enumerate(task.rows, start=1) if k in parsed.retry_ids]
            previous = {row: parsed.invalid[k] for k, row in enumerate(task.rows, start=1) if k in parsed.invalid}
        if not retry_rows:
            return []
        nxt = task.round + 1
        size = 1 if nxt >= o.max_reasks else max(1, min(len(task.rows) // 2, len(retry_rows)))
        size = min(size, max(1, o.batch_size >> nxt))
        self.ctx.meter.add("reasks", len(retry_rows))
        return [
            Task(retry_rows[i : i + size], nxt, {r: previous[r] for r in retry_rows[i : i + size] if r in previous})
            for i in range(0, len(retry_rows), size)
        ]
