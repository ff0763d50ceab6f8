"""The store caches only successes; the transport-retry layer honours Retry-After and never retries a bad key."""

from __future__ import annotations

import time

import pytest

from promptclf.errors import AuthenticationError, TransientProviderError
from promptclf.providers.retry import call_with_retries
from promptclf.store import Store, request_key


def test_store_round_trip_and_attempt_log(tmp_path):
    s = Store(tmp_path / "s.sqlite")
    key = request_key({"b": 1, "a": [1, 2]})
    assert key == request_key({"a": [1, 2], "b": 1})
    assert s.get(key) is None
    s.log(key, "run1", "openai", "m", "error", "HTTP 500")
    assert s.get(key) is None  # an error is logged, never cached
    s.put(key, "openai", "m", {"x": 1}, '{"items": []}', 10, 2, 0.5, 0.001)
    got = s.get(key)
    assert got is not None and got.prompt_tokens == 10 and got.cost_usd == pytest.approx(0.001)
    assert [a["outcome"] for a in s.attempts("run1")] == ["error"]
    s.close()
    assert Store(tmp_path / "s.sqlite").get(key) is not None  # persisted


def test_many_openers_of_a_new_store_at_once(tmp_path):
    """Worker threads (or several runs) opening the same fresh store together must not see 'database is locked'.

    Before the fix this failed in a few of every hundred trials: one connection switching a
    new file to WAL while another was creating the tables.
    """
    import threading

    for trial in range(150):
        path = tmp_path / f"fresh{trial}" / "store.sqlite"
        errors: list[BaseException] = []

        def open_store(i: int, path=path, errors=errors) -> None:
            try:
                store = Store(path)
                store.get("missing")
                store.log(f"k{i}", "run", "p", "m", "ok")
            except BaseException as exc:  # noqa: BLE001 - collected and reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_store, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, f"trial {trial}: {errors}"
        assert len(Store(path).attempts()) == 4


def test_transient_errors_are_retried_then_succeed():
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise TransientProviderError("HTTP 500")
        return "ok"

    retries = []
    assert call_with_retries(flaky, max_retries=5, max_wait_s=0.05, on_retry=lambda e, n, s: retries.append(n)) == "ok"
    assert len(calls) == 3 and retries == [1, 2]


def test_retry_after_is_honoured():
    calls = []

    def limited():
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise TransientProviderError("429", retry_after=0.6, status=429)
        return "ok"

    call_with_retries(limited, max_retries=2, max_wait_s=5)
    assert calls[1] - calls[0] >= 0.55


def test_gives_up_after_max_retries_and_never_retries_a_bad_key():
    n = []

    def down():
        n.append(1)
        raise TransientProviderError("HTTP 503")

    with pytest.raises(TransientProviderError):
        call_with_retries(down, max_retries=2, max_wait_s=0.01)
    assert len(n) == 3
    m = []

    def bad_key():
        m.append(1)
        raise AuthenticationError("check OPENAI_API_KEY")

    with pytest.raises(AuthenticationError):
        call_with_retries(bad_key, max_retries=5, max_wait_s=0.01)
    assert len(m) == 1
