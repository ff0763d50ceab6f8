"""A circuit breaker: a run stops sending at once when the provider is down, instead of retrying
every row, one backoff at a time, until each ends as ``error``.

It counts the failures that say nothing is answering: a failed connection (refused, reset) or a
5xx response. Any success resets the count; 429s, timeouts and requests the server answered (even
with a 4xx or an unusable body) neither count nor reset it, since the server is there. It trips when

* at least ``failures`` such failures came in a row, across all worker threads, **and**
* either the first of them is ``window_s`` seconds old, or one request ran out of its transport
  retries during the streak (its own backoff already waited that long; for the batch API's
  sequential client the count needed is at most that request's attempts, though at least 3).

So a server restart or a short network blip (shorter than the window) is ridden out by the
transport retries, a flaky server (some answers fail, some succeed) never trips it, and a dead
URL stops a run after about ``window_s`` seconds whatever its size. Once tripped, every later call
and every backoff sleep (:meth:`CircuitBreaker.sleep`, woken at once) raises
:class:`~promptclf.errors.ProviderUnavailableError`, whose one line names the provider and URL and
what to check. The labeling runners leave the rows not labeled yet as ``unsent`` (not ``error``), so
rerunning the same command resumes them; what was answered is in the store and not paid twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import ProviderConnectionError, ProviderError, ProviderUnavailableError, TransientProviderError
from .base import ProviderBase

T = TypeVar("T")


def counts_as_down(exc: BaseException) -> bool:
    """Whether ``exc`` says nothing is answering: a failed connection or a 5xx."""
    if isinstance(exc, ProviderConnectionError):
        return True
    return isinstance(exc, TransientProviderError) and exc.status is not None and exc.status >= 500


class CircuitBreaker:
    """Shared by a run's worker threads: :meth:`call` each attempt through it, :meth:`sleep` between
    attempts, :meth:`exhausted` when a request runs out of retries. ``target`` names what is
    called (``openai at http://127.0.0.1:8000/v1``); ``hint`` says what to check."""

    def __init__(
        self,
        failures: int = 10,
        window_s: float = 10.0,
        target: str = "the provider",
        hint: str = "check that the server is up and reachable",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = max(1, failures)
        self.window_s = window_s
        self.target = target
        self.hint = hint
        self._clock = clock
        self._lock = threading.Lock()
        self._streak = 0
        self._since: float | None = None  # when the current streak began
        self._open = threading.Event()
        self.reason = ""  # the one line said on tripping

    @classmethod
    def for_provider(cls, provider: ProviderBase, failures: int = 10, window_s: float = 10.0) -> CircuitBreaker:
        """The breaker of a run: ``failures`` in a row over ``window_s`` seconds trip it; its target
        is the provider's name and base URL."""
        name, url = provider.name, provider.base_url
        if url:
            target = f"{name} at {url}"
            hint = "check that the server is running and that --base-url points at it"
        else:
            target = name
            hint = f"check your network and {name}'s status page"
        return cls(failures, window_s, target, hint)

    @property
    def tripped(self) -> bool:
        return self._open.is_set()

    def error(self) -> ProviderUnavailableError:
        return ProviderUnavailableError(self.reason or f"{self.target} is not answering; {self.hint}")

    def check(self) -> None:
        """Raise :class:`ProviderUnavailableError` once tripped."""
        if self._open.is_set():
            raise self.error()

    def record_success(self) -> None:
        with self._lock:
            self._streak, self._since = 0, None

    def record_failure(self, exc: BaseException) -> bool:
        """Count ``exc`` if it says the provider is down; True once tripped."""
        if not counts_as_down(exc):
            return self.tripped
        with self._lock:
            now = self._clock()
            if self._streak == 0:
                self._since = now
            self._streak += 1
            if self._since is not None and now - self._since >= self.window_s:
                self._trip_if_due(exc)
        return self.tripped

    def exhausted(self, exc: BaseException, attempts: int | None = None) -> None:
        """A request ran out of transport retries on ``exc`` after ``attempts`` attempts (already
        counted by :meth:`call`). Its backoff has waited long enough, so the window is not waited
        for. ``attempts``: given by a sequential client (the batch API's), which never has more
        failures in a row than one request's attempts: then those (at least 3) are enough."""
        if counts_as_down(exc):
            with self._lock:
                self._trip_if_due(exc, min(self.failures, max(3, attempts)) if attempts else None)
        self.check()

    def _trip_if_due(self, exc: BaseException, needed: int | None = None) -> None:
        # Called with the lock held.
        if self._open.is_set() or self._streak < (needed or self.failures):
            return
        age = self._clock() - self._since if self._since is not None else 0.0
        self.reason = (
            f"stopped sending: {self.target} failed {self._streak} times in a row over {age:.0f}s with "
            f"no success (last: {exc}); {self.hint}, then rerun the same command to resume"
        )
        self._open.set()

    def call(self, fn: Callable[[], T]) -> T:
        """One attempt: refused once tripped; its outcome counted."""
        self.check()
        try:
            result = fn()
        except TransientProviderError as exc:
            if self.record_failure(exc):
                raise self.error() from exc
            raise
        except ProviderError:
            raise  # the server answered (4xx, unusable body): neither up nor down news
        self.record_success()
        return result

    def sleep(self, seconds: float) -> None:
        """A transport-retry backoff that ends at once when the breaker trips (then raises)."""
        self._open.wait(seconds)
        self.check()
