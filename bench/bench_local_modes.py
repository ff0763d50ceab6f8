"""Local labeling, two ways, same model (SmolLM2-135M-Instruct), same items, same prompt text:

* log-likelihood scoring in process (``--provider local``: every label scored, prefix KV reused);
* grammar-constrained JSON generation by llama.cpp's server (``--base-url``: json_object + schema,
  one item per request, like a hosted provider would be asked).

Prints accuracy against gold and items/second for each, so the default can be chosen by
measurement. Needs ``pip install 'promptclf[server]'``.

    python bench/bench_local_modes.py [--items 40] [--shots 0] [--max-chars 600]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--max-chars", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from servers import LlamaServer  # tests/servers.py: starts llama_cpp.server on a free port

    from promptclf.data.tables import bbc_sample
    from promptclf.label.labeler import Labeler
    from promptclf.label.options import LabelOptions

    n_pool = a.items + (5 * a.shots if a.shots else 0)
    df = bbc_sample(n_pool, seed=a.seed)[["text", "label"]]
    work = Path(tempfile.mkdtemp(prefix="bench-local-"))
    common = {"shots": a.shots, "max_chars": a.max_chars, "shot_max_chars": 200, "seed": a.seed, "no_cache": True}
    results = []

    t0 = time.perf_counter()
    lab = Labeler(LabelOptions(provider="local", store=str(work / "s1.sqlite"), **common), progress=False)  # type: ignore[arg-type]
    lab.provider.load()
    load_s = time.perf_counter() - t0
    s = lab.label(df).summary
    results.append(("log-likelihood, in process", s, load_s))

    with LlamaServer() as server:
        os.environ.setdefault("OPENAI_API_KEY", "sk-local")
        opts = LabelOptions(
            provider="openai",
            model="smollm2",
            base_url=server.base_url,
            batch_size=1,
            concurrency=1,
            timeout_s=300,
            store=str(work / "s2.sqlite"),
            **common,  # type: ignore[arg-type]
        )
        lab2 = Labeler(opts, progress=False)
        results.append(("grammar-constrained JSON, llama.cpp", lab2.label(df).summary, 0.0))

    print(f"BBC News, {a.items} items scored, {a.shots} shots per class, items cut to {a.max_chars} chars")
    print(f"{'mode':40s} {'accuracy':>9s} {'macro-F1':>9s} {'coverage':>9s} {'items/s':>8s}")
    for name, s, _ in results:
        m = s.metrics or {}
        print(f"{name:40s} {m['accuracy']:9.1%} {m['macro_f1']:9.3f} {s.coverage:9.1%} {s.items_per_s:8.2f}")
    print(f"(local model load: {results[0][2]:.1f}s, not counted in items/s)")


if __name__ == "__main__":
    main()
