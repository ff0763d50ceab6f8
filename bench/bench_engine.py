"""Engine throughput: does the labeling engine keep 16 requests in flight?

Setup: llama.cpp's OpenAI-compatible server on SmolLM2 (started here) behind the test suite's
fault proxy, which adds a fixed latency (default 1 s) to every request, like a distant hosted
API. The engine (``promptclf.label.labeler.Labeler``, provider ``openai`` with ``base_url``, the
same ChatOpenAI path as a hosted run) labels N items, one item per request, 16 in flight.

llama.cpp answers one request at a time, so a live run is bounded by the model server, not
by the engine. To measure the engine, the proxy first records the server's real answer to
every request (a warm-up pass), then replays it after the fixed latency in the timed pass:
the server's time drops out and the ideal is exactly ``concurrency / latency`` requests/s.
A live pass (no replay) is also timed, against ``concurrency / (latency + server time)``
and against the server's own serial limit.
Target: replayed rate >= 90% of ideal.

    python bench/bench_engine.py [--items 96] [--concurrency 16] [--latency 1.0] [--no-live]

Figures go to stdout; the engine's progress is off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from servers import LlamaServer  # noqa: E402

from promptclf.testing.fake_server import FakeServer, Upstream  # noqa: E402


def _run(
    proxy: FakeServer, texts: list[str], concurrency: int, store: Path, max_tokens: int | None
) -> dict[str, float]:
    import pandas as pd

    from promptclf.data.tables import BBC_TOPICS
    from promptclf.label.labeler import Labeler
    from promptclf.label.options import LabelOptions
    from promptclf.labels import parse_labels

    opts = LabelOptions(
        provider="openai",
        model="smollm2",
        base_url=proxy.base_url,
        labels=parse_labels(",".join(BBC_TOPICS)).to_dict(),
        label_col=None,
        batch_size=1,
        concurrency=concurrency,
        max_reasks=0,  # one request per item, so the request count is fixed
        max_retries=0,
        max_tokens=max_tokens,
        max_chars=200,
        timeout_s=300,
        store=str(store),
        no_cache=True,
    )
    proxy.reset()
    labeler = Labeler(opts, progress=False)
    out = labeler.label(pd.DataFrame({"text": texts})).frame
    recs = proxy.chat_records()
    # peak number of requests the proxy held at once
    events = sorted([(r.started, 1) for r in recs] + [(r.finished, -1) for r in recs])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    return {
        "requests": labeler.stats.requests,
        "failed": labeler.stats.failed_requests,
        "wall_s": labeler.wall_s,
        "rate": labeler.stats.requests / labeler.wall_s,
        "server_s_median": statistics.median([r.upstream_s for r in recs if r.forwarded] or [0.0]),
        "proxy_s_median": statistics.median([r.finished - r.started for r in recs]),
        "peak_in_flight": peak,
        "ok": int((out["pred_status"] == "ok").sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=96)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency", type=float, default=1.0, help="seconds the proxy adds to every request")
    ap.add_argument("--max-tokens", type=int, default=None, help="completion cap (default: the engine's)")
    ap.add_argument("--no-live", action="store_true", help="skip the live (no replay) pass")
    args = ap.parse_args()

    from promptclf.data.tables import bbc_sample

    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-key")
    texts = [t[:200] for t in bbc_sample(args.items, seed=5)["text"]]
    c, lat = args.concurrency, args.latency
    with tempfile.TemporaryDirectory() as tmp, LlamaServer() as server:
        store = Path(tmp) / "store.sqlite"
        with FakeServer(Upstream(server.root), latency_s=0.0, replay=True) as proxy:
            t0 = time.perf_counter()
            warm = _run(proxy, texts, 1, store, args.max_tokens)  # one at a time: clean server timings
            srv = warm["server_s_median"]
            print(
                f"warm-up (records the server's answers; concurrency 1, no added latency): {warm['requests']} requests "
                f"in {time.perf_counter() - t0:.1f}s; server time {srv:.3f}s/request (median)"
            )
            proxy.latency_s = lat
            rep = _run(proxy, texts, c, store, args.max_tokens)
            ideal = c / lat
            print(
                f"replayed, {lat:.1f}s added latency, concurrency {c}: {rep['requests']} requests in {rep['wall_s']:.2f}s "
                f"= {rep['rate']:.2f} req/s; ideal {ideal:.2f} req/s -> {rep['rate'] / ideal:.1%} of ideal "
                f"({'meets' if rep['rate'] >= 0.9 * ideal else 'misses'} the >= 90% target); "
                f"peak in flight {rep['peak_in_flight']}, median time at proxy {rep['proxy_s_median']:.3f}s, "
                f"failed {rep['failed']}"
            )
        if not args.no_live:
            with FakeServer(Upstream(server.root), latency_s=lat) as proxy:
                live = _run(proxy, texts, c, store, args.max_tokens)
            ideal_live = c / (lat + srv)
            serial = 1 / srv if srv else float("inf")
            bound = min(ideal_live, serial)
            print(
                f"live, {lat:.1f}s added latency, concurrency {c}: {live['rate']:.2f} req/s; "
                f"concurrency/(latency+server time) = {ideal_live:.2f} req/s, but llama.cpp serves one request at a time "
                f"({srv:.3f}s each = {serial:.2f} req/s): {live['rate'] / bound:.1%} of the lower bound {bound:.2f} req/s"
            )


if __name__ == "__main__":
    main()
