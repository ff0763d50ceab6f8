"""The report's figures, drawn with matplotlib's Agg backend (no display needed).

Each function writes one PNG and returns its path, or None when there is nothing to draw.
Inputs are plain rows (dicts) from :mod:`promptclf.report.build`, so the plots never re-read files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# Colours that stay distinguishable for colour-blind readers (Okabe–Ito).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
ZERO_LABEL = "$0 (local)"


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _money(x: float) -> str:
    if x >= 1:
        return f"${x:,.0f}" if x >= 10 else f"${x:.1f}"
    return f"${x:.2g}"


def zero_floor(costs: list[float]) -> float:
    """Where a $0 cost sits on the log axis: a decade below the cheapest paid run (or 1e-4)."""
    paid = [c for c in costs if c and c > 0]
    if not paid:
        return 1e-4
    return 10 ** (math.floor(math.log10(min(paid))) - 1)


def accuracy_vs_cost(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Accuracy (with 95% CI bars) against cost per 1,000 items on a log axis; $0 is clamped to a floor."""
    pts = [r for r in rows if r.get("accuracy") is not None and r.get("cost_per_1k") is not None]
    if not pts:
        return None
    plt = _plt()
    floor = zero_floor([r["cost_per_1k"] for r in pts])
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    markers = {"label": "o", "distill": "s"}
    # Runs at the same point (e.g. two free local runs with equal accuracy) share one label.
    names_at: dict[tuple[float, float], list[str]] = {}
    for r in pts:
        key = (round(r["cost_per_1k"] if r["cost_per_1k"] > 0 else floor, 12), round(100 * r["accuracy"], 6))
        names_at.setdefault(key, []).append(r["name"])
    labelled: set[tuple[float, float]] = set()
    for i, r in enumerate(pts):
        x = r["cost_per_1k"] if r["cost_per_1k"] > 0 else floor
        y = 100 * r["accuracy"]
        key = (round(x, 12), round(y, 6))
        ci = r.get("accuracy_ci")
        yerr = [[y - 100 * ci[0]], [100 * ci[1] - y]] if ci else None
        ax.errorbar(
            x,
            y,
            yerr=yerr,
            fmt=markers.get(r["kind"], "o"),
            color=PALETTE[i % len(PALETTE)],
            ms=8,
            capsize=3,
            label=r["name"],
        )
        if key not in labelled:
            labelled.add(key)
            text = " = ".join(names_at[key])
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(7, 4 + 9 * (i % 2)), fontsize=8.5)
    ax.set_xscale("log")
    xs = [r["cost_per_1k"] if r["cost_per_1k"] > 0 else floor for r in pts]
    lo, hi = min(xs), max(xs)
    ax.set_xlim(lo / 3, max(hi * 10, lo * 100))
    # Ticks: one per decade, with the floor spelled out as $0 so nobody reads it as a price.
    decades = range(int(math.floor(math.log10(lo / 3))), int(math.ceil(math.log10(max(hi * 10, lo * 100)))) + 1)
    ticks = [10.0**d for d in decades if 10.0**d >= lo / 3]
    labels = [ZERO_LABEL if abs(t - floor) < floor * 1e-6 and any(x == floor for x in xs) else _money(t) for t in ticks]
    if any(r["cost_per_1k"] <= 0 for r in pts) and floor not in ticks:
        ticks.append(floor)
        labels.append(ZERO_LABEL)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels)
    ax.minorticks_off()
    ax.set_xlabel("cost per 1,000 items (log scale)")
    ax.set_ylabel("accuracy (%)  — bars: 95% CI")
    ax.set_title("Accuracy vs cost  (circles: prompted LLM, squares: distilled student)", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def per_class_f1(rows: list[dict[str, Any]], labels: list[str], path: Path) -> Path | None:
    """Grouped bars: one group per label, one bar per run."""
    runs = [r for r in rows if r.get("per_class")]
    if not runs or not labels:
        return None
    plt = _plt()
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(min(14, max(7.5, 0.45 * len(labels) * len(runs) + 2)), 4.2), dpi=110)
    for i, r in enumerate(runs):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(labels))]
        ys = [100 * (r["per_class"].get(lab) or {}).get("f1", 0.0) for lab in labels]
        ax.bar(xs, ys, width=width * 0.95, color=PALETTE[i % len(PALETTE)], label=r["name"])
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30 if max(len(lab) for lab in labels) > 8 else 0, ha="right")
    ax.set_ylim(0, 105)
    ax.set_ylabel("F1 (%)")
    ax.set_title("F1 per class", fontsize=10)
    ax.legend(fontsize=8, ncol=min(4, len(runs)), loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def reliability(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Reliability diagram: accuracy against mean confidence per 15-bin, one line per run with a calibration."""
    runs = [r for r in rows if r.get("calibration") and r["calibration"].get("n")]
    if not runs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.6), dpi=110)
    ax.plot([0, 1], [0, 1], color="#9aa3ad", linestyle="--", linewidth=1, label="perfectly calibrated")
    for i, r in enumerate(runs):
        cal = r["calibration"]
        pts = [(b["confidence"], b["accuracy"], b["n"]) for b in cal["bins"] if b["n"]]
        xs, ys, ns = zip(*pts, strict=True) if pts else ((), (), ())
        total = max(1, sum(ns))
        color = PALETTE[i % len(PALETTE)]
        ax.plot(xs, ys, color=color, linewidth=1.4, label=f"{r['name']} (ECE {cal['ece']:.3f}, n={cal['n']})")
        # Marker area follows the bin's share of rows, so a sparse bin does not look like a trend.
        ax.scatter(xs, ys, s=[12 + 400 * n / total for n in ns], color=color, alpha=0.6, linewidths=0)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (mean per bin)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability: is a label given at 90% right 90% of the time?", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def confusion(name: str, conf: dict[str, Any], path: Path) -> Path | None:
    """Heatmap of one run's confusion matrix, shaded by row share, annotated with counts."""
    matrix = conf.get("matrix") or []
    if not matrix:
        return None
    plt = _plt()
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    rows = list(conf["labels"])
    cols = list(conf.get("columns") or (rows if m.shape[1] == len(rows) else [*rows, "(none)"]))
    if len(cols) != m.shape[1]:  # a malformed record: fall back to numbered columns rather than fail
        cols = [str(j) for j in range(m.shape[1])]
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    # Roughly square cells; the long label names need room on the left and bottom.
    side = min(11.0, 1.9 + 0.55 * len(cols))
    fig, ax = plt.subplots(figsize=(side, min(10.0, 1.7 + 0.5 * len(rows))), dpi=110)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    if len(cols) > len(rows):
        ax.axvline(len(rows) - 0.5, color="#888", lw=1, ls="--")  # separates the "(none)" column
    if len(cols) <= 20:
        for i in range(len(rows)):
            for j in range(len(cols)):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{int(m[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=9,
                        color="white" if share[i, j] > 0.55 else "black",
                    )
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=35, ha="right", fontsize=9)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(name, fontsize=11)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def throughput(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Horizontal bars of items per second (log scale): the speed side of prompt vs fine-tune."""
    pts = [r for r in rows if r.get("items_per_s")]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(pts) + 1.2), dpi=110)
    names = [r["name"] for r in pts]
    vals = [r["items_per_s"] for r in pts]
    ax.barh(range(len(pts)), vals, color=[PALETTE[i % len(PALETTE)] for i in range(len(pts))])
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:,.1f}/s", va="center", fontsize=8)
    ax.set_yticks(range(len(pts)))
    ax.set_yticklabels(names, fontsize=8.5)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(min(vals) / 2, max(vals) * 6)
    ax.set_xlabel("items per second (log scale, higher is better)")
    ax.set_title("Throughput", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def cascade_frontier(points: list[dict[str, Any]], path: Path, title: str = "Cascade: student first") -> Path | None:
    """Accuracy against cost per 1,000 items (log scale) of LLM only, student only and the cascade at each
    threshold (a line, from the cheapest threshold to the dearest); ``points`` are
    :class:`promptclf.eval.cascade.FrontierPoint` dicts. $0 is clamped to a floor, as in :func:`accuracy_vs_cost`."""
    pts = [p for p in points if p.get("accuracy") is not None and p.get("cost_per_1k") is not None]
    if not pts:
        return None
    plt = _plt()
    floor = zero_floor([p["cost_per_1k"] for p in pts])

    def x_of(p: dict[str, Any]) -> float:
        return float(p["cost_per_1k"]) if p["cost_per_1k"] > 0 else floor

    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    line = sorted((p for p in pts if p["name"].startswith("cascade")), key=lambda p: p["cost_per_1k"])
    if line:
        ax.plot([x_of(p) for p in line], [100 * p["accuracy"] for p in line], "-o", color=PALETTE[2], ms=5,
                label="cascade (threshold at each point)")  # fmt: skip
        for p in line:
            tag = "auto" if "auto" in p["name"] else f"{p['threshold']:.2f}"
            ax.annotate(tag, (x_of(p), 100 * p["accuracy"]), textcoords="offset points", xytext=(4, -11), fontsize=7.5)
    for p, colour, marker in ((q, PALETTE[0], "o") for q in pts if q["name"] == "LLM only"):
        ax.plot(x_of(p), 100 * p["accuracy"], marker, color=colour, ms=9, label="LLM only")
    for p in (q for q in pts if q["name"] == "student only"):
        ax.plot(x_of(p), 100 * p["accuracy"], "s", color=PALETTE[3], ms=9, label="student only")
    xs = [x_of(p) for p in pts]
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 3, max(xs) * 3)
    if any(p["cost_per_1k"] <= 0 for p in pts):
        ax.annotate(ZERO_LABEL, (floor, ax.get_ylim()[0]), fontsize=8, xytext=(0, 3), textcoords="offset points")
    ax.set_xlabel("cost per 1,000 items (log scale)")
    ax.set_ylabel("accuracy on gold (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
