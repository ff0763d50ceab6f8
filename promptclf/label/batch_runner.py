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
import sys
import time
from typing import Any

from ..errors import ConfigError
from ..providers.batch_api import (
    DIALECTS,
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
from .jobs import Engine, Job, RowResult, Task
from .prompts import PromptBuilder

MAX_WAVES = 3  # batch rounds for unanswered lines before the rest goes synchronously


class BatchRunner:
    """Labels ``job``'s rows through the provider's batch API, writing ``job.results``."""

    def __init__(self, engine: Engine, job: Job, prompts: PromptBuilder, progress: bool = True) -> None:
        if engine.provider_name not in DIALECTS:
            raise ConfigError(
                f"--batch-api needs a provider with a batch endpoint (openai or together), not {engine.provider_name!r}; "
                "pass --provider openai or together, or drop --batch-api"
            )
        self.engine = engine
        self.job = job
        self.options = o = engine.options
        self.progress = progress
        self.chat = ChatRunner(engine, job, prompts)

        def on_retry(exc: BaseException, attempt: int, sleep: float) -> None:
            with engine.stats.lock:
                engine.stats.transport_retries += 1

        self.client = BatchClient(
            engine.provider_name,
            getattr(engine.provider, "base_url", None),
            timeout_s=max(o.timeout_s, 120.0),  # file transfers take longer than one request
            max_retries=o.max_retries,
            retry_max_wait_s=o.retry_max_wait_s,
            on_retry=on_retry,
            breaker=self.chat.breaker,  # one breaker for the batch endpoints and the synchronous re-asks
        )
        self.ledger = BatchLedger(engine.store)

    # -- the waves ----------------------------------------------------------------------------
    def run(self, bar: Any) -> None:
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
                    sync += self._finish(task, outcome, bar)
            pending = [r.task for r in reqs]
            if not reqs or (wave and len(reqs) < o.batch_min_requests):
                break
            pending = self._run_wave(reqs, bar, sync)
        sync += pending
        if sync:
            self._say(f"{len(sync)} request(s) left after the batch go synchronously (re-asks and unanswered lines)")
            chat.run(bar, sync)

    def _finish(self, task: Task, outcome: dict[str, Any], bar: Any) -> list[Task]:
        """Apply one request's outcome to its rows; its validation re-asks (for the synchronous path)."""
        self.engine.tick(bar, self.chat._apply_outcome(task, outcome))
        return self.chat._reask_tasks(task, outcome)

    def _run_wave(self, reqs: list[ChatRequest], bar: Any, sync: list[Task]) -> list[Task]:
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
        statuses = self._poll(subs, bar)
        leftover: list[Task] = []
        for sub in subs:
            leftover += self._collect(sub, statuses[sub.sub_id], by_key, bar, sync)
        return leftover

    # -- submitting -----------------------------------------------------------------------------
    def _line(self, key: str, req: ChatRequest) -> dict[str, Any]:
        eng = self.engine
        provider = eng.provider
        top = None if getattr(provider, "logprobs_rejected", None) else getattr(provider, "top_logprobs", None)
        return request_line(
            custom_id(key), eng.model, req.messages, req.schema, req.mode,  # type: ignore[arg-type]
            req.max_tokens, self.options.temperature, self.client.dialect.cap_field, top,
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
        eng = self.engine
        base = getattr(eng.provider, "base_url", None)
        # Recorded before the upload: a run killed from here on finds it and never submits twice.
        sub = self.ledger.new(eng.provider_name, eng.model, base, eng.run_id, {k: custom_id(k) for k, _ in lines})
        file_id = self.client.upload(f"promptclf-{sub.sub_id}.jsonl", b"".join(line for _, line in lines))
        self.ledger.update(sub.sub_id, input_file_id=file_id, status="uploaded")
        st = self.client.create(file_id, {"promptclf_submission": sub.sub_id})
        sub = self.ledger.update(sub.sub_id, batch_id=st.id, status=st.status)
        self._say(f"submitted batch {st.id} ({len(lines):,} requests, input file {file_id})")
        return sub

    def _resume(self, sub: Submission) -> Submission | None:
        """A live submission from an earlier run, brought to a batch id; None if it never got uploaded."""
        if sub.batch_id:
            self._say(f"resuming batch {sub.batch_id} ({sub.n_requests:,} requests, status {sub.status})")
            return sub
        if not sub.input_file_id:
            # Killed before the upload finished: no batch can exist, so submit its requests afresh.
            self.ledger.update(sub.sub_id, collected=1, status="abandoned")
            return None
        # Killed between creating the batch and recording it: find it by its input file.
        st = self.client.find_by_input(sub.input_file_id)
        if st is None:
            st = self.client.create(sub.input_file_id, {"promptclf_submission": sub.sub_id})
        self._say(f"resuming batch {st.id} ({sub.n_requests:,} requests)")
        return self.ledger.update(sub.sub_id, batch_id=st.id, status=st.status)

    # -- polling --------------------------------------------------------------------------------
    def _poll(self, subs: list[Submission], bar: Any) -> dict[str, BatchStatus]:
        """Poll every batch until it is done, showing the batches' own request counts."""
        counter = None
        if bar is not None:
            from tqdm import tqdm

            total = sum(s.n_requests for s in subs)
            counter = tqdm(total=total, unit="req", desc="batch", file=sys.stderr, position=1, leave=False)
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
        self, sub: Submission, st: BatchStatus, by_key: dict[str, list[ChatRequest]], bar: Any, sync: list[Task]
    ) -> list[Task]:
        """Read a finished batch into the store and the job; the tasks it left unanswered."""
        eng, chat = self.engine, self.chat
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
                    sync += self._finish(r.task, outcome, bar)
            elif st.status == "failed":
                reason = f"batch {st.id} failed: {failure}; rerun to submit a new batch, or drop --batch-api"
                eng.store.log(key, eng.run_id, eng.provider_name, eng.model, "error", reason[:500])
                with eng.stats.lock:
                    eng.stats.failed_requests += 1
                for r in reqs:
                    for row in r.task.rows:
                        self.job.results[row] = RowResult(status="error", reason=reason, request=key[:16])
                    eng.tick(bar, len(r.task.rows))
            else:
                why = ln.error if ln is not None else f"the batch ended {st.status} before answering it"
                eng.store.log(key, eng.run_id, eng.provider_name, eng.model, "error", f"batch {st.id}: {why}"[:500])
                with eng.stats.lock:
                    eng.stats.transport_retries += 1
                leftover += [r.task for r in reqs]
        if foreign:
            self._say(f"warning: batch {st.id} answered {foreign} request(s) this job no longer has; not cached")
        self.ledger.update(
            sub.sub_id, status=st.status, collected=1, output_file_id=st.output_file_id,
            error_file_id=st.error_file_id, error=failure if st.status == "failed" else None,
        )  # fmt: skip
        if st.status != "completed":
            self._say(
                f"batch {st.id} ended {st.status}: {len(leftover)} request(s) unanswered"
                + (f" ({failure})" if st.errors else "")
            )
        return leftover

    def _say(self, msg: str) -> None:
        if self.progress:
            print(f"promptclf: {msg}", file=sys.stderr)


def custom_id(key: str) -> str:
    """A line's custom_id: its request key, shortened (128 bits stay unique within a job)."""
    return "r" + key[:31]
