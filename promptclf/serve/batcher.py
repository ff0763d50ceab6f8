"""Micro-batching: concurrent requests share one forward pass.

Each request puts its texts on an asyncio queue with a future and awaits it. One collector task takes
the first waiting request, lets others join it for up to ``max_wait_ms`` (none when more are already
queued) until ``max_batch`` texts are gathered, runs the model on the whole batch in one worker thread
(the event loop keeps accepting requests meanwhile), and hands each request its own rows. A request is
never split: one with more texts than ``max_batch`` runs alone (the model batches it internally).
Requests that arrive while the model runs are the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More texts are waiting than ``max_queue`` allows: the caller should retry shortly."""


class Stopped(Exception):
    """The batcher is not running (not started yet, or shutting down)."""


@dataclass
class BatchStats:
    """Counts since start: requests and texts answered, model passes, the largest batch, failed passes."""

    requests: int = 0
    texts: int = 0
    batches: int = 0
    largest_batch: int = 0
    failures: int = 0
    model_s: float = 0.0


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future[Any]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """``await batcher.submit(texts)`` -> that request's rows of ``predict(all texts of the batch)``.

    ``predict(texts) -> array (len(texts), n)`` runs in one worker thread, one batch at a time.
    Use ``async with batcher:`` (or ``start()`` / ``stop()``) inside the event loop that serves requests.
    """

    def __init__(
        self,
        predict: Callable[[list[str]], Any],
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        max_queue: int = 4096,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_ms) / 1000
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Item] | None = None
        self._queued_texts = 0  # texts waiting (not yet in a batch): what max_queue bounds
        self.in_model = 0  # texts in the batch the model is running now
        self._held: _Item | None = None  # taken off the queue but too big for the batch being built
        self._task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def waiting(self) -> int:
        """Texts queued and not yet in a batch."""
        return self._queued_texts

    async def start(self) -> None:
        if self.running:
            return
        self._queue = asyncio.Queue()
        # One thread: the model runs one batch at a time and torch uses its own threads inside it.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptclf-model")
        self._task = asyncio.create_task(self._collect(), name="promptclf-batcher")

    async def stop(self) -> None:
        """Stop collecting; requests still waiting get :class:`Stopped` (the server answers them 503)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pending = [self._held] if self._held else []
        self._held = None
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for item in pending:
            if not item.future.done():
                item.future.set_exception(Stopped("the server is shutting down"))
        self._queued_texts = 0
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def __aenter__(self) -> MicroBatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def submit(self, texts: list[str]) -> Any:
        """The model's rows for ``texts`` (an array, one row per text, in order), batched with other requests."""
        if not self.running or self._queue is None:
            raise Stopped("the model is not running")
        if self._queued_texts + len(texts) > self.max_queue:
            raise QueueFull(f"{self._queued_texts} texts are already waiting (--max-queue {self.max_queue})")
        item = _Item(list(texts), asyncio.get_running_loop().create_future())
        self._queued_texts += len(item.texts)
        self._queue.put_nowait(item)
        return await item.future

    async def _next(self, timeout: float | None) -> _Item | None:
        """The held-over request, else the next queued one (waiting up to ``timeout`` s; None: forever)."""
        if self._held is not None:
            item, self._held = self._held, None
            return item
        assert self._queue is not None
        if timeout is None:
            return await self._queue.get()
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _gather(self) -> list[_Item]:
        """One batch: the first request, then others until max_batch texts or max_wait after the first."""
        first = await self._next(None)
        assert first is not None
        batch, size = [first], len(first.texts)
        deadline = time.perf_counter() + self.max_wait_s
        while size < self.max_batch:
            item = await self._next(deadline - time.perf_counter())
            if item is None:
                break
            if size + len(item.texts) > self.max_batch:
                self._held = item  # first in the next batch, so order is kept
                break
            batch.append(item)
            size += len(item.texts)
        self._queued_texts -= size
        return batch

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [it for it in batch if not it.future.done()]  # a client that went away needs no answer
            if not live:
                continue
            texts = [t for it in live for t in it.texts]
            t0 = time.perf_counter()
            self.in_model = len(texts)
            try:
                rows = await loop.run_in_executor(self._pool, self.predict, texts)
            except asyncio.CancelledError:
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(Stopped("the server is shutting down"))
                raise
            except Exception as exc:  # the model failed on this batch: each of its requests gets the error
                self.in_model = 0
                self.stats.failures += 1
                log.error("the model failed on a batch of %d texts: %s (%s)", len(texts), exc, type(exc).__name__)
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(exc)
                continue
            self.in_model = 0
            self.stats.model_s += time.perf_counter() - t0
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
            start = 0
            for it in live:
                part = rows[start : start + len(it.texts)]
                start += len(it.texts)
                if not it.future.done():
                    it.future.set_result(part)
                    self.stats.requests += 1
                    self.stats.texts += len(it.texts)
            log.debug(
                "batch of %d texts from %d requests in %.1f ms",
                len(texts),
                len(live),
                1000 * (time.perf_counter() - t0),
            )
