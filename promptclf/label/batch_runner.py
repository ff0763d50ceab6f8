"""The batch runner (``--batch-api``): a job's requests sent as one provider batch, at the batch price.

The requests are the chat runner's own (:meth:`ChatRunner.build_request`: same prompts, same
schema, same store keys), written as JSONL lines, uploaded and submitted as a batch
(:mod:`promptclf.providers.batch_api`), polled with a progress bar showing the batch's own counts, and
read back from the output and error files. Each successful line is parsed, validated and
cached exactly like a synchronous response (:meth:`ChatRunner.record_result`), so a later or
resumed run pays nothing twice; the ledger (:mod:`promptclf.label.batch_store`) keeps the batch and
file ids, so a run killed while polling resumes by polling the same batch.

What happens to the items a batch did not settle:

* **validation re-asks** (items left out, duplicated or given an off-list label) go through
  the normal synchronous path with the chat runner's smaller re-ask batches: they are a few
  percent of a job, each re-ask round would otherwise wait up to the batch window (24 h),
  and up to ``--max-reasks`` rounds follow one another;
* **lines the batch did not answer** (it expired or was cancelled part-way, or a line came
  back with an error) go to a follow-up batch when there are at least
  ``--batch-min-requests`` of them, else synchronously (at most three batch rounds, then
  synchronously);
* a batch that **failed** as a whole (its input was rejected) marks its rows ``error`` with
  the provider's reason: sending them synchronously would silently double the price, so a
  rerun submits a new batch instead (drop ``--batch-api`` to go synchronous).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from ..providers.base import ChatProvider
from ..providers.batch_api import (
    MAX_BYTES,
    MAX_LINES,
    BatchClient,
    BatchStatus,
    LineResult,
    parse_lines,
    request_line,
)
from .batch_store import BatchLedger, Submission
from .chat_runner import ChatRequest, ChatRunner
from .context import RunContext
from .jobs import Job, RowResult, Task
from .prompts import PromptBuilder

log = logging.getLogger(__name__)

MAX_WAVES = 3  # batch rounds for unanswered lines before the rest goes synchronously


class BatchRunner:
    """Labels ``job``'s rows through the context's provider's batch API, writing ``job.results``
    (the engine checks first that the provider has a batch endpoint: ``ChatProvider.batch_api``)."""

    def __init__(self, ctx: RunContext[ChatProvider], job: Job, prompts: PromptBuilder) -> None:
        self.ctx = ctx
        self.job = job
        self.options = o = ctx.options
        self.chat = ChatRunner(ctx, job, prompts)

        def on_retry(exc: BaseException, attempt: int, sleep: float) -> None:
            ctx.meter.add("transport_retries")

        self.client = BatchClient(
            ctx.provider.name,
            ctx.provider.base_url,
            timeout_s=max(o.timeout_s, 120.0),  # file transfers take longer than one request
            max_retries=o.max_retries,
            retry_max_wait_s=o.retry_max_wait_s,
            on_retry=on_retry,
            breaker=self.chat.breaker,  # one breaker for the batch endpoints and the synchronous re-asks
        )
        self.ledger = BatchLedger(ctx.store)

    # -- the waves ----------------------------------------------------------------------------
    def run(self) -> None:
        o, chat = self.options, self.chat
        self.client.check_supported()
        sync: list[Task] = []  # validation re-asks (and small leftovers) for the synchronous path
        pending = chat.first_tasks()
        for wave in range(MAX_WAVES):
            reqs: list[ChatRequest] = []
            for task in pending:
                req = chat.build_request(task)
                outcome = chat.cached_outcome(req)
                if outcome is None:
                    reqs.append(req)
                else:
                    sync += chat.finish(task, outcome)
            pending = [r.task for r in reqs]
            if not reqs or (wave and len(reqs) < o.batch_min_requests):
                break
            pending = self._run_wave(reqs, sync)
        sync += pending
        if sync:
            log.info("%s request(s) left after the batch go synchronously (re-asks and unanswered lines)", len(sync))
            chat.run(sync)

    def _run_wave(self, reqs: list[ChatRequest], sync: list[Task]) -> list[Task]:
        """Send ``reqs`` as batches (or resume the live batches that hold them); the tasks left unanswered."""
        by_key: dict[str, list[ChatRequest]] = {}
        for r in reqs:
            by_key.setdefault(r.key, []).append(r)
        subs: list[Submission] = []
        covered: set[str] = set()
        for sub_id, keys in self.ledger.live_for(list(by_key)).items():
            sub = self._resume(self.ledger.get(sub_id))
            if sub is not None:
                subs.append(sub)
                covered.update(keys)
        fresh = [k for k in by_key if k not in covered]
        for chunk in self._chunks(fresh, by_key):
            subs.append(self._submit(chunk, by_key))
        statuses = self._poll(subs)
        leftover: list[Task] = []
        for sub in subs:
            leftover += self._collect(sub, statuses[sub.sub_id], by_key, sync)
        return leftover

    # -- submitting -----------------------------------------------------------------------------
    def _line(self, key: str, req: ChatRequest) -> dict[str, Any]:
        ctx = self.ctx
        return request_line(
            custom_id(key), ctx.spec.model, req.messages, req.schema, req.mode,
            req.max_tokens, self.options.temperature, self.client.dialect.cap_field, ctx.provider.top_logprobs,
        )  # fmt: skip

    def _chunks(self, keys: list[str], by_key: dict[str, list[ChatRequest]]) -> list[list[tuple[str, bytes]]]:
        """``keys`` as encoded lines, cut into batches under the provider's size limits."""
        chunks: list[list[tuple[str, bytes]]] = []
        size = 0
        for key in keys:
            line = json.dumps(self._line(key, by_key[key][0]), ensure_ascii=False).encode("utf-8") + b"\n"
            if not chunks or len(chunks[-1]) >= MAX_LINES or size + len(line) > MAX_BYTES:
                chunks.append([])
                size = 0
            chunks[-1].append((key, line))
            size += len(line)
        return chunks

    def _submit(self, lines: list[tuple[str, bytes]], by_key: dict[str, list[ChatRequest]]) -> Submission:
        ctx = self.ctx
        # Recorded before the upload: a run killed from here on finds it and never submits twice.
        ids = {k: custom_id(k) for k, _ in lines}
        sub = self.ledger.new(ctx.spec.name, ctx.spec.model, ctx.provider.base_url, ctx.run_id, ids)
        file_id = self.client.upload(f"promptclf-{sub.sub_id}.jsonl", b"".join(line for _, line in lines))
        self.ledger.update(sub.sub_id, input_file_id=file_id, status="uploaded")
        st = self.client.create(file_id, {"promptclf_submission": sub.sub_id})
        sub = self.ledger.update(sub.sub_id, batch_id=st.id, status=st.status)
        log.info("submitted batch %s (%s requests, input file %s)", st.id, f"{len(lines):,}", file_id)
        return sub

    def _resume(self, sub: Submission) -> Submission | None:
        """A live submission from an earlier run, brought to a batch id; None if it never got uploaded."""
        if sub.batch_id:
            log.info("resuming batch %s (%s requests, status %s)", sub.batch_id, f"{sub.n_requests:,}", sub.status)
            return sub
        if not sub.input_file_id:
            # Killed before the upload finished: no batch can exist, so submit its requests afresh.
            self.ledger.update(sub.sub_id, collected=1, status="abandoned")
            return None
        # Killed between creating the batch and recording it: find it by its input file.
        st = self.client.find_by_input(sub.input_file_id)
        if st is None:
            st = self.client.create(sub.input_file_id, {"promptclf_submission": sub.sub_id})
        log.info("resuming batch %s (%s requests)", st.id, f"{sub.n_requests:,}")
        return self.ledger.update(sub.sub_id, batch_id=st.id, status=st.status)

    # -- polling --------------------------------------------------------------------------------
    def _poll(self, subs: list[Submission]) -> dict[str, BatchStatus]:
        """Poll every batch until it is done, showing the batches' own request counts."""
        counter = self.ctx.meter.counter(sum(s.n_requests for s in subs), "req", "batch")
        last: dict[str, BatchStatus] = {}
        try:
            while True:
                for sub in subs:
                    if sub.sub_id in last and last[sub.sub_id].done:
                        continue
                    assert sub.batch_id is not None
                    st = self.client.retrieve(sub.batch_id, sub.n_requests)
                    if sub.sub_id not in last or last[sub.sub_id].status != st.status:
                        self.ledger.update(sub.sub_id, status=st.status)
                    last[sub.sub_id] = st
                if counter is not None:
                    counter.n = sum(s.completed + s.failed for s in last.values())
                    failed = sum(s.failed for s in last.values())
                    states = ", ".join(sorted({s.status for s in last.values()}))
                    counter.set_postfix_str(f"{states}; {failed:,} failed", refresh=False)
                    counter.refresh()
                if all(s.done for s in last.values()):
                    return last
                time.sleep(self.options.poll_interval_s)
        finally:
            if counter is not None:
                counter.close()

    # -- collecting -----------------------------------------------------------------------------
    def _collect(
        self, sub: Submission, st: BatchStatus, by_key: dict[str, list[ChatRequest]], sync: list[Task]
    ) -> list[Task]:
        """Read a finished batch into the store and the job; the tasks it left unanswered."""
        ctx, chat = self.ctx, self.chat
        lines: list[LineResult] = []
        for file_id in (st.output_file_id, st.error_file_id):
            if file_id:
                lines += parse_lines(self.client.content(file_id))
        ids = self.ledger.requests(sub.sub_id)
        results: dict[str, LineResult] = {}
        for line in lines:  # in whatever order the provider wrote them; matched by custom_id
            k = ids.get(line.custom_id)
            if k is not None and (k not in results or results[k].result is None):
                results[k] = line
        leftover: list[Task] = []
        foreign = 0
        failure = "; ".join(st.errors) or "no reason given"
        for key in ids.values():
            reqs = by_key.get(key)
            ln = results.get(key)
            if not reqs:
                foreign += ln is not None and ln.result is not None
                continue
            if ln is not None and ln.result is not None:
                outcome = chat.record_result(reqs[0], ln.result, batch=True)
                for r in reqs:
                    sync += chat.finish(r.task, outcome)
            elif st.status == "failed":
                reason = f"batch {st.id} failed: {failure}; rerun to submit a new batch, or drop --batch-api"
                ctx.log(key, "error", reason[:500])
                ctx.meter.add("failed_requests")
                for r in reqs:
                    for row in r.task.rows:
                        self.job.results[row] = RowResult(status="error", reason=reason, request=key[:16])
                    ctx.meter.tick(len(r.task.rows))
            else:
                why = ln.error if ln is not None else f"the batch ended {st.status} before answering it"
                ctx.log(key, "error", f"batch {st.id}: {why}"[:500])
                ctx.meter.add("transport_retries")
                leftover += [r.task for r in reqs]
        if foreign:
            log.warning("batch %s answered %s request(s) this job no longer has; not cached", st.id, foreign)
        self.ledger.update(
            sub.sub_id, status=st.status, collected=1, output_file_id=st.output_file_id,
            error_file_id=st.error_file_id, error=failure if st.status == "failed" else None,
        )  # fmt: skip
        if st.status != "completed":
            log.info(
                "batch %s ended %s: %s request(s) unanswered%s",
                st.id,
                st.status,
                len(leftover),
                f" ({failure})" if st.errors else "",
            )
        return leftover


def custom_id(key: str) -> str:
    """A line's custom_id: its request key, shortened (128 bits stay unique within a job)."""
    return "r" + key[:31]
