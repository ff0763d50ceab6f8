"""Render a report in headless Chromium and save a screenshot, to check the layout by eye.

    python bench/screenshot_report.py RUN_DIR... [-o shots/]      # real runs
    python bench/screenshot_report.py                             # synthetic runs (layout only)

Needs Chromium (Debian: ``apt-get install -y chromium``); this script installs nothing.
With no runs given it builds clearly-titled synthetic run folders (random predictions of
known quality) so the layout can be checked without labeling anything. Prints the paths
of the report and the screenshot.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptclf.eval.metrics import evaluate  # noqa: E402
from promptclf.report.build import build_report  # noqa: E402
from promptclf.report.render import screenshot  # noqa: E402

LABELS = ["business", "entertainment", "politics", "sport", "tech"]


def _run(root: Path, name: str, kind: str, quality: float, cost: float, ips: float, **extra: object) -> Path:
    rng = random.Random(name)
    gold = [LABELS[i % len(LABELS)] for i in range(200)]
    pred = [g if rng.random() < quality else rng.choice(LABELS + [""]) for g in gold]
    d = root / name
    d.mkdir(parents=True)
    run = {
        "kind": kind,
        "name": name,
        "provider": extra.pop("provider", "local"),
        "model": extra.pop("model", "SmolLM2-135M-Instruct"),
        "labels": LABELS,
        "gold_col": "label",
        "n_items": len(gold),
        "cost_per_1k": cost,
        "items_per_s": ips,
        "latency_s_median": 1.0 / ips,
        "metrics": evaluate(gold, pred, LABELS),
        **extra,
    }
    (d / "run.json").write_text(json.dumps(run, indent=2))
    return d


def sample_runs(root: Path) -> list[Path]:
    """Synthetic runs covering every section: free local and paid hosted LLMs, students on LLM labels and gold."""
    return [
        _run(root, "zero-shot", "label", 0.55, 0.0, 4.0, options={"shots": 0}),
        _run(root, "few-shot-4", "label", 0.72, 0.0, 2.5, options={"shots": 4}),
        _run(
            root,
            "gpt-4o-mini-few-shot",
            "label",
            0.93,
            0.21,
            30.0,
            options={"shots": 4},
            provider="openai",
            model="gpt-4o-mini",
        ),
        _run(
            root,
            "student-few-shot-4",
            "distill",
            0.7,
            0.00011,
            240.0,
            options={"train_on": "teacher"},
            teacher="few-shot-4",
            teacher_agreement=0.88,
            teacher_agreement_on="test",
            provider="student",
            model="all-MiniLM-L6-v2 (lora, cls head)",
            inference={"items_per_s": 240.0, "cost_per_1k": 0.00011},
            train={"time_s": 95.0, "hourly_price_usd": 0.10, "train_cost_usd": 0.0026},
        ),
        _run(
            root,
            "student-gpt",
            "distill",
            0.9,
            0.00011,
            240.0,
            options={"train_on": "teacher"},
            teacher="gpt-4o-mini-few-shot",
            teacher_agreement=0.95,
            provider="student",
            model="all-MiniLM-L6-v2 (lora, cls head)",
            inference={"items_per_s": 240.0, "cost_per_1k": 0.00011},
            train={"time_s": 95.0, "hourly_price_usd": 0.10, "train_cost_usd": 0.0026},
        ),
        _run(
            root,
            "student-gold",
            "distill",
            0.95,
            0.00011,
            240.0,
            options={"train_on": "gold"},
            provider="student",
            model="all-MiniLM-L6-v2 (lora, cls head)",
            inference={"items_per_s": 240.0, "cost_per_1k": 0.00011},
            train={"time_s": 95.0, "hourly_price_usd": 0.10, "train_cost_usd": 0.0026},
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("-o", "--out", type=Path, default=Path("report-shot"))
    ap.add_argument("--height", type=int, default=2000)
    args = ap.parse_args()
    title = "promptclf: prompting vs fine-tuning"
    runs = args.runs
    if not runs:
        runs = sample_runs(Path(tempfile.mkdtemp(prefix="promptclf-sample-runs-")))
        title = "Layout check (synthetic runs, not measurements)"
    paths = build_report(runs, args.out, title=title)
    png = screenshot(paths["html"], args.out / "screenshot.png", height=args.height)
    print(f"report: {paths['html']}")
    print(f"screenshot: {png}")


if __name__ == "__main__":
    main()
