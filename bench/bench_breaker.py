"""The circuit breaker at its defaults: how fast a run stops against a dead provider, and that a
flaky one does not trip it.

Four runs of ``label_file`` on 2,000 short rows (batches of 10, concurrency 4, default retries,
breaker at its defaults unless ``--window``/``--failures`` say otherwise):

1. ``--base-url`` on a 127.0.0.1 port where nothing listens: seconds until it stops, rows ``unsent``;
2. the same command against a live server on that port: rows labeled, and how often the server
   saw each row (each exactly once is the promise);
3. a server answering HTTP 500 to everything: seconds until it stops, requests it received;
4. a server answering 500 to one request in six (about 17%): it must finish with every row ``ok``.

The servers are the small OpenAI-compatible server of tests/test_breaker.py (instant answers).

    python bench/bench_breaker.py            # writes bench/results/breaker.txt too
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_breaker import Server, dead_port  # noqa: E402

from promptclf.errors import ProviderUnavailableError  # noqa: E402
from promptclf.label.labeler import label_file  # noqa: E402
from promptclf.label.options import LabelOptions  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--window", type=float, default=None, help="breaker window (default: the option's default)")
    ap.add_argument("--failures", type=int, default=None, help="breaker count (default: the option's default)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "breaker.txt"))
    a = ap.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-key")
    lines: list[str] = []

    def say(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    tmp = Path(tempfile.mkdtemp(prefix="bench_breaker_"))
    src = tmp / "rows.csv"
    pd.DataFrame({"text": [f"row {i} about thing {i * 7 % 13}" for i in range(a.rows)]}).to_csv(src, index=False)

    def opts(url: str, store: str) -> LabelOptions:
        kw: dict[str, object] = {
            "provider": "openai", "model": "m", "base_url": url, "labels": [{"name": n} for n in ("alpha", "beta", "gamma")],
            "label_col": None, "top_logprobs": 0, "max_reasks": 0, "store": str(tmp / store),
        }  # fmt: skip
        if a.window is not None:
            kw["breaker_window_s"] = a.window
        if a.failures is not None:
            kw["breaker_failures"] = a.failures
        return LabelOptions(**kw)  # type: ignore[arg-type]

    o0 = opts("http://x", "x.sqlite")
    say(f"# bench_breaker: {a.rows:,} rows, batch {o0.batch_size}, concurrency {o0.concurrency}, "
        f"max_retries {o0.max_retries}, breaker {o0.breaker_failures} failures / {o0.breaker_window_s:g} s; "
        f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip

    # 1. dead URL, then 2. the same command against a live server on that port
    port = dead_port()
    o = opts(f"http://127.0.0.1:{port}/v1", "dead.sqlite")
    # The SDK import (LangChain, openai) is timed apart: seconds under a high load, and not the breaker's.
    t = time.perf_counter()
    from promptclf.providers import make_provider

    make_provider(o, announce=False)
    say(f"SDK import and client setup: {time.perf_counter() - t:.1f} s (not in the times below)")
    t = time.perf_counter()
    try:
        label_file(src, tmp / "dead.csv", o, progress=False)
        say("dead URL: did NOT stop")
    except ProviderUnavailableError as exc:
        df = pd.read_csv(tmp / "dead.csv", keep_default_na=False)
        say(f"dead URL: stopped after {time.perf_counter() - t:.1f} s; "
            f"statuses {dict(df['pred_status'].value_counts())}; message: {exc}")  # fmt: skip
    live = Server(port=port)
    t = time.perf_counter()
    try:
        run = label_file(src, tmp / "dead.csv", o, progress=False)
    finally:
        live.stop()
    seen = sorted(set(live.items.values()))
    say(
        f"rerun against a live server: {run.statuses} in {time.perf_counter() - t:.1f} s; "
        f"{len(live.items):,} distinct rows received, times each: {seen}"
    )

    # 3. a server answering 500 to everything
    broken = Server(fail_every=1)
    t = time.perf_counter()
    try:
        label_file(src, tmp / "broken.csv", opts(broken.base_url, "broken.sqlite"), progress=False)
        say("500 to everything: did NOT stop")
    except ProviderUnavailableError:
        df = pd.read_csv(tmp / "broken.csv", keep_default_na=False)
        say(
            f"500 to everything: stopped after {time.perf_counter() - t:.1f} s, {broken.requests} requests "
            f"received; statuses {dict(df['pred_status'].value_counts())}"
        )
    finally:
        broken.stop()

    # 4. a flaky server: one request in six answered 500
    flaky = Server(fail_every=6)
    t = time.perf_counter()
    try:
        run = label_file(src, tmp / "flaky.csv", opts(flaky.base_url, "flaky.sqlite"), progress=False)
        say(
            f"flaky (1 in 6 = 17% answered 500): finished {run.statuses} in {time.perf_counter() - t:.1f} s, "
            f"{run.usage.transport_retries} transport retries, {flaky.requests} requests received"
        )
    except ProviderUnavailableError as exc:
        say(f"flaky: TRIPPED (wrong): {exc}")
    finally:
        flaky.stop()
    say(f"# load average after: {os.getloadavg()[0]:.1f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
