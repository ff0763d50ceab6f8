"""Plain-language findings computed from the report's rows: one sentence each, never from a missing figure.

Where a conclusion needs a figure the runs do not have (a price, gold labels, a speed), the
sentence names the missing figure and how to supply it instead of concluding.
"""

from __future__ import annotations

from typing import Any

from ..pricing.costs import round_volume
from .render import GOLD, fmt_cost, fmt_pct, fmt_share, fmt_speed, fmt_times, fmt_usd


def _overlap(a: list[float] | None, b: list[float] | None) -> bool:
    return bool(a and b and a[0] <= b[1] and b[0] <= a[1])


def _gold_lines(rows: list[dict[str, Any]], gold_source: str) -> list[str]:
    """Where the gold came from, and how many of each run's items it covered."""
    parts = []
    for r in rows:
        g = r.get("gold_match") or {}
        if g.get("why"):
            parts.append(f"{r['name']} not scored ({g['why']})")
        elif g.get("matched", 0) < g.get("rows", 0):
            parts.append(f"{r['name']} {g['matched']:,} of {g['rows']:,} items (the rest have no gold row)")
    covered = "; ".join(parts) if parts else "every item of every run has a gold row"
    return [f"Accuracy is scored against the gold file {gold_source}: {covered}."]


def _no_gold(agreements: list[dict[str, Any]]) -> list[str]:
    out = [
        "No run has gold labels to score against, so nothing here says which run is more accurate: pass "
        "'report --gold FILE --gold-col COLUMN' (joined by text, or by a row id with --gold-on) to score them."
    ]
    if agreements:
        out.append(
            "Instead, how often the runs agree: "
            + "; ".join(
                f"{a['a']} and {a['b']} give the same label to {fmt_pct(a['agreement'])} of the {a['n']:,} items "
                "both labeled"
                for a in agreements
            )
            + ". Agreement is not accuracy: two runs can agree and both be wrong."
        )
    return out


def verdict(
    rows: list[dict[str, Any]],
    breakeven: list[dict[str, Any]],
    gold_source: str | None = None,
    agreements: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Plain-language findings computed from the numbers; one sentence each.

    ``gold_source``: the gold file the runs were scored against (``report --gold``); ``agreements``:
    pairwise agreement between runs, shown when no run has gold.
    """
    out: list[str] = _gold_lines(rows, gold_source) if gold_source else []
    llm = [r for r in rows if r["kind"] != "distill" and r["accuracy"] is not None]
    students = [r for r in rows if r["kind"] == "distill" and r["accuracy"] is not None]
    by_name = {r["name"]: r for r in rows}
    # First, because it changes how every other number reads: a run that gave one label to nearly everything.
    out += [f"Warning, {r['name']}: {r['collapse']['message']}" for r in rows if r.get("collapse")]
    if not llm and not students:
        return [*out, *_no_gold(agreements or [])]
    if llm:
        best = max(llm, key=lambda r: r["accuracy"])
        out.append(
            f"Best prompted run: {best['name']}"
            + ("" if best["name"] == best["description"] else f", {best['description']}")
            + f" with {best['model']}: "
            f"{fmt_pct(best['accuracy'])} accuracy, {fmt_pct(best['macro_f1'])} macro-F1, "
            + (
                f"{fmt_cost(best)} per 1,000 items."
                if best["cost_per_1k"] is not None
                else f"cost per 1,000 items unknown (needs {best['cost_missing']})."
            )
        )
        n_labels = len(best["per_class"]) or 0
        if n_labels > 1 and best["accuracy"] < 1.5 / n_labels:
            out.append(
                f"That is close to guessing ({100 / n_labels:.0f}% with {n_labels} labels): {best['model']} is "
                "too weak a teacher here; a larger model (a hosted provider or a bigger local one) should label better."
            )
        # Zero- vs few-shot only within one provider/model: across models the model is the difference.
        for key in dict.fromkeys((r["provider"], r["model"]) for r in llm):
            same = [r for r in llm if (r["provider"], r["model"]) == key]
            zero = [r for r in same if r["description"] == "zero-shot"]
            few = [r for r in same if r["description"].startswith("few-shot")]
            if not (zero and few):
                continue
            z = max(zero, key=lambda r: r["accuracy"])
            f = max(few, key=lambda r: r["accuracy"])
            diff = 100 * (f["accuracy"] - z["accuracy"])
            sig = (
                "the 95% confidence intervals overlap, so this sample does not show a clear difference"
                if _overlap(f["accuracy_ci"], z["accuracy_ci"])
                else "the 95% confidence intervals do not overlap"
            )
            out.append(
                f"With {key[1]}, few-shot examples ({f['name']}) change accuracy by {diff:+.1f} points over "
                f"zero-shot ({z['name']}); {sig}."
            )
    gold_students = [s for s in students if s["teacher"] == GOLD]
    for s in students:
        t = by_name.get(s["teacher"]) if s["teacher"] not in (None, GOLD) else None
        if s["teacher"] == GOLD:
            continue
        rec = s.get("teacher_record")
        if t is None and rec:
            out.append(
                f"The student {s['name']} learned from {rec['name']} ({rec['provider']} / {rec['model']}, "
                f"{rec['prompt']}), whose run folder {rec['run']} is not in this report: add it to compare them."
            )
            continue
        if t is None and llm:
            t = max(llm, key=lambda r: r["accuracy"])
            lead = f"The student {s['name']} (teacher not recorded; compared with the best prompted run {t['name']})"
        elif t is None:
            continue
        else:
            lead = f"The student trained on {t['name']}'s labels ({s['name']})"
        if t.get("accuracy"):
            ratio = s["accuracy"] / t["accuracy"]
            sent = f"{lead} reaches {100 * ratio:.1f}% of its accuracy ({fmt_pct(s['accuracy'])} vs {fmt_pct(t['accuracy'])})"
        else:
            sent = f"{lead} reaches {fmt_pct(s['accuracy'])} accuracy"
        be = next((b for b in breakeven if b["student"] == s["name"] and b["llm"] == t["name"]), None)
        if t["cost_per_1k"] and s["cost_per_1k"] is not None:
            sent += f" at {fmt_share(s['cost_per_1k'] / t['cost_per_1k'])} of its cost per 1,000 items"
        if s["items_per_s"] and t["items_per_s"]:
            r = s["items_per_s"] / t["items_per_s"]
            speed = f"{fmt_times(r)} faster" if r >= 1 else f"{fmt_times(1 / r)} slower"
            sent += f", {speed} ({fmt_speed(s['items_per_s'])} vs {fmt_speed(t['items_per_s'])} items/s)"
        if t.get("cost_is_local"):
            sent += f"; {t['name']} runs a local model with no list price"
        if be and be["status"] == "pays off":
            sent += f"; distilling pays off after {round_volume(be['items'])} items ({be['basis']})"
        elif be and t.get("cost_is_local") and not t["items_per_s"]:
            sent += f"; {t['name']}'s speed was not measured (answers came from the cache), so there is no break-even"
        elif be and be["status"] == "unknown":
            sent += f"; whether distilling pays off cannot be decided: it needs {be['missing']}"
        elif be:
            sent += f"; at these prices ({be['basis']}) distilling never pays off in dollars"
        out.append(sent + ".")
        if rec:
            out.append(_label_cost_sentence(s, t["name"]))
        if s["teacher_agreement"] is not None:
            on = s.get("teacher_agreement_on") or "test"
            out.append(f"{s['name']} agrees with its teacher on {fmt_pct(s['teacher_agreement'])} of {on} items.")
    for g in gold_students:
        sent = f"The ceiling: a student trained on gold labels ({g['name']}) reaches {fmt_pct(g['accuracy'])}"
        peers = [s for s in students if s["teacher"] not in (None, GOLD)]
        if peers:
            p = max(peers, key=lambda r: r["accuracy"])
            sent += f"; the best student on LLM labels ({p['name']}) recovers {100 * p['accuracy'] / g['accuracy']:.1f}% of it"
        out.append(sent + ".")
    return out


def _label_cost_sentence(s: dict[str, Any], teacher: str) -> str:
    """The teacher's cost to label the student's training set beside the student's training cost."""
    rows = s.get("teacher_label_rows") or 0
    if s.get("teacher_label_cost_usd") is not None:
        labels = f"cost {fmt_usd(s['teacher_label_cost_usd'])} ({s['teacher_label_cost_basis']})"
    else:
        missing = s.get("teacher_label_cost_missing") or "a price for the teacher"
        # The teacher's own missing price is said once, in its own sentence above.
        labels = f"has an unknown cost (needs {'a price for ' + teacher if missing.startswith('a price for ' + teacher) else missing})"
    train = (
        f"training {s['name']} cost {fmt_usd(s['train_cost_usd'])}"
        if s["train_cost_usd"] is not None
        else f"{s['name']}'s training cost was not recorded"
    )
    return f"Labeling the {rows:,} rows {s['name']} trained and validated on by {teacher} {labels}; {train}."
