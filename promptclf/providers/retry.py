"""Transport retries: the first of the two retry layers, kept apart from validation re-asks.

Retries 429, 5xx, timeouts and dropped connections (``TransientProviderError``) with
exponential backoff and full jitter, waits what a 429's Retry-After asks for, and never
retries a bad key (``AuthenticationError``) or a request the server rejected as invalid.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ..errors import TransientProviderError

T = TypeVar("T")


def _wait(max_wait: float) -> Callable[[RetryCallState], float]:
    jitter = wait_random_exponential(multiplier=0.5, max=max_wait)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientProviderError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), max_wait)
        return jitter(state)

    return wait


def call_with_retries(
    fn: Callable[[], T],
    max_retries: int,
    max_wait_s: float = 60.0,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Call ``fn``; on TransientProviderError retry up to ``max_retries`` times, then re-raise.

    ``sleep`` waits between attempts (default ``time.sleep``); a circuit breaker passes one that
    ends, and raises, as soon as it trips (:mod:`promptclf.providers.breaker`).
    """

    def before_sleep(state: RetryCallState) -> None:
        if on_retry and state.outcome is not None and state.next_action is not None:
            on_retry(state.outcome.exception(), state.attempt_number, state.next_action.sleep)  # type: ignore[arg-type]

    retrying = Retrying(
        retry=retry_if_exception_type(TransientProviderError),
        stop=stop_after_attempt(max_retries + 1),
        wait=_wait(max_wait_s),
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep or time.sleep,
    )
    return retrying(fn)
