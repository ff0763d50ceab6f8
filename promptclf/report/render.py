"""Rendering the comparison report: the run table's cells, the self-contained HTML page and the Markdown.

:mod:`promptclf.report.build` loads the runs and computes the rows, break-even volumes and verdict;
this module only turns those plain dicts into text (and checks a page renders offline with
headless Chromium, :func:`screenshot`). It never reads run folders.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from .scores import score_tables

# A student's ``teacher`` when it learned from the gold labels rather than an LLM run.
GOLD = "gold"


# --- formatting ------------------------------------------------------------------------------


def fmt_pct(v: float | None, digits: int = 1) -> str:
    """A share as a percentage (``–`` when unknown)."""
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def fmt_usd(v: float | None) -> str:
    """Dollars with precision that suits the amount (``–`` when unknown)."""
    if v is None:
        return "–"
    if v == 0:
        return "$0"
    if v >= 100:
        return f"${v:,.0f}"
    if v >= 0.1:
        return f"${v:,.2f}"
    return f"${v:.2g}"


def fmt_share(x: float) -> str:
    """A ratio as a percentage with sensible precision: 0.3%, 12%, 0.0041%."""
    p = 100 * x
    return f"{p:.0f}%" if p >= 10 else f"{p:.2g}%"


def fmt_times(x: float) -> str:
    """A ratio as ``12×`` or ``1.5×``."""
    return f"{x:.0f}×" if x >= 10 else f"{x:.1f}×"


def _agreement_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Students with a recorded agreement with an LLM teacher (a gold-trained student has no teacher)."""
    return [r for r in rows if r["teacher_agreement"] is not None and r["teacher"] != GOLD]


def _teacher_name(r: dict[str, Any]) -> str:
    """The teacher a student is compared with: in the report, else the one it recorded."""
    return str(r["teacher"] or (r.get("teacher_record") or {}).get("name") or "–")


def _ci_text(ci: list[float] | None) -> str:
    return "" if not ci else f"±{100 * (ci[1] - ci[0]) / 2:.1f}"


def _provider_model(r: dict[str, Any]) -> str:
    return " / ".join(str(x) for x in (r["provider"], r["model"]) if x) or "–"


def fmt_cost(r: dict[str, Any]) -> str:
    """A row's cost per 1,000 items; a free local model says so."""
    if r["cost_per_1k"] == 0 and r["cost_is_local"]:
        return "$0 (local)"
    if r["cost_per_1k"] is None and r.get("cost_missing"):
        return "unknown"
    basis = str(r.get("cost_basis") or "")
    # A label run priced by machine time says so; a student's cost is always its machine time.
    return fmt_usd(r["cost_per_1k"]) + (f" ({basis})" if r["kind"] != "distill" and basis.startswith("machine") else "")


def _latency(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.2f} s" if v >= 0.1 else f"{1000 * v:.2g} ms"


def fmt_speed(v: float | None) -> str:
    """Items per second with precision that suits its size."""
    return "–" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.2f}" if v < 10 else f"{v:.1f}")


TABLE_COLUMNS = [
    ("name", "run"),
    ("description", "kind"),
    ("provider_model", "provider / model"),
    ("accuracy", "accuracy (95% CI)"),
    ("macro_f1", "macro-F1"),
    ("coverage", "coverage"),
    ("cost_per_1k", "$ / 1k items"),
    ("compute_cost_per_1k", "compute $ / 1k"),
    ("items_per_s", "items/s"),
    ("latency_s_median", "latency (median)"),
    ("train_cost_usd", "training cost"),
]


def _table_columns(hourly: float | None) -> list[tuple[str, str]]:
    """The run table's columns; compute cost per 1k items only when there is an hourly price."""
    return [c for c in TABLE_COLUMNS if c[0] != "compute_cost_per_1k" or hourly]


def _label_cost(r: dict[str, Any]) -> str:
    """A student's recorded teacher's cost to label its training set, beside its training cost."""
    if not r.get("teacher_record"):
        return ""
    v = r.get("teacher_label_cost_usd")
    return f" + {fmt_usd(v)} teacher labels" if v is not None else " + teacher labels (cost unknown)"


def table_cells(r: dict[str, Any]) -> dict[str, str]:
    """The text of each table cell for one run (shared by HTML and Markdown, checked by the tests)."""
    acc = fmt_pct(r["accuracy"])
    if r["accuracy_ci"]:
        acc += f" {_ci_text(r['accuracy_ci'])}"
    return {
        "name": r["name"],
        "description": r["description"],
        "provider_model": _provider_model(r),
        "accuracy": acc,
        "macro_f1": fmt_pct(r["macro_f1"]),
        "coverage": fmt_pct(r["coverage"]),
        "cost_per_1k": fmt_cost(r),
        "compute_cost_per_1k": fmt_usd(r["compute_cost_per_1k"]),
        "items_per_s": "cached" if r.get("cached_share") else fmt_speed(r["items_per_s"]),
        "latency_s_median": _latency(r["latency_s_median"]),
        "train_cost_usd": "–" if r["kind"] != "distill" else fmt_usd(r["train_cost_usd"]) + _label_cost(r),
    }


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:1.6rem;margin:0 0 4px}h2{font-size:1.15rem;margin:32px 0 10px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
.sub{color:#5b6473;font-size:.9rem;margin:0 0 18px}
.verdict{background:#fff;border-left:4px solid #0072B2;padding:12px 18px;border-radius:4px;box-shadow:0 1px 2px #0001}
.verdict li{margin:4px 0}
.scroll{overflow-x:auto;background:#fff;border-radius:4px;box-shadow:0 1px 2px #0001}
table{border-collapse:collapse;width:100%;font-size:.86rem}
th,td{padding:6px 8px;border-bottom:1px solid #eceff3;text-align:right;white-space:nowrap}
th{background:#eef1f5;font-weight:600;white-space:normal;vertical-align:bottom}
td.t,th.t{text-align:left}
td.w{white-space:normal;min-width:9em}
tr.distill td{background:#f7fbf7}
figure{margin:0;background:#fff;padding:10px;border-radius:4px;box-shadow:0 1px 2px #0001}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:.82rem;color:#5b6473;margin-top:6px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px}
.note{font-size:.82rem;color:#5b6473}
code{background:#eef1f5;padding:1px 4px;border-radius:3px}
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _esc(v: object) -> str:
    return html.escape(str(v), quote=True)


def render_html(
    title: str,
    created: str,
    rows: list[dict[str, Any]],
    breakeven: list[dict[str, Any]],
    lines: list[str],
    images: dict[str, Path],
    hourly: float | None,
) -> str:
    """The self-contained HTML page: verdict, run table, figures inlined as data URIs, break-even, agreement."""
    e = _esc
    cols = _table_columns(hourly)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{e(title)}</h1><p class='sub'>{len(rows)} runs · generated {e(created)} by promptclf</p>",
        "<h2>Verdict</h2><ul class='verdict'>",
        *[f"<li>{e(x)}</li>" for x in lines],
        "</ul><h2>Runs</h2><div class='scroll'><table id='runs'><thead><tr>",
        *[f"<th class='{'t' if k in ('name', 'description', 'provider_model') else ''}'>{e(h)}</th>" for k, h in cols],
        "</tr></thead><tbody>",
    ]
    for r in rows:
        cells = table_cells(r)
        parts.append(f"<tr class='{e(r['kind'])}' data-run='{e(r['name'])}'>")
        for k, _ in cols:
            raw = r.get(k)
            attr = f" data-value='{e(json.dumps(raw))}'" if isinstance(raw, (int, float)) else ""
            cls = {"name": " class='t'", "description": " class='t w'", "provider_model": " class='t w'"}.get(k, "")
            parts.append(f"<td data-col='{e(k)}'{cls}{attr}>{e(cells[k])}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    notes = [
        "Accuracy and macro-F1 are on rows with gold labels (few-shot example rows excluded); "
        "± is half the bootstrap 95% interval. Rows without a valid answer count as wrong; coverage is the share with one.",
        "$ / 1k items is the list-price cost of classifying 1,000 items; for students it is inference only, "
        "and training cost is shown separately.",
    ]
    if any(r.get("cached_share") for r in rows):
        notes.append(
            "items/s 'cached': the run reused stored responses, so its speed was not measured; rerun with --no-cache."
        )
    if hourly:
        notes.append(f"compute $ / 1k prices each run's measured throughput at ${hourly:g} per machine-hour.")
    parts.append("".join(f"<p class='note'>{e(n)}</p>" for n in notes))

    def fig(key: str, caption: str) -> None:
        if key in images:
            parts.append(
                f"<figure><img alt='{e(caption)}' src='{_data_uri(images[key])}'><figcaption>{e(caption)}</figcaption></figure>"
            )

    parts.append("<h2>Accuracy vs cost</h2>")
    fig("accuracy_vs_cost", "Accuracy against cost per 1,000 items (log scale); $0 runs sit at the left edge.")
    for key in (k for k in images if k.startswith("cascade:")):
        parts.append(f"<h2>Cascade: {e(key.split(':', 1)[1])}</h2>")
        fig(key, "Student first, LLM below the threshold: accuracy against cost per 1,000 items at each threshold.")
    if "throughput" in images:
        parts.append("<h2>Throughput</h2>")
        fig("throughput", "Items classified per second, as measured in each run.")
    if breakeven:
        parts.append("<h2>Break-even</h2><div class='scroll'><table id='breakeven'><thead><tr>")
        heads = ["student", "vs LLM run", "LLM $/1k", "student $/1k", "training cost", "pays off after", "basis"]
        parts += [f"<th class='{'t' if i < 2 else ''}'>{e(h)}</th>" for i, h in enumerate(heads)]
        parts.append("</tr></thead><tbody>")
        for b in breakeven:
            vals = [
                b["student"],
                b["llm"],
                fmt_usd(b["llm_cost_per_1k"]),
                fmt_usd(b["student_cost_per_1k"]),
                fmt_usd(b["student_fixed_cost"]),
                b["when"],
                b["basis"],
            ]
            parts.append(
                "<tr>"
                + "".join(f"<td class='{'t' if i < 2 else ''}'>{e(v)}</td>" for i, v in enumerate(vals))
                + "</tr>"
            )
        parts.append("</tbody></table></div>")
        parts.append(
            "<p class='note'>Items after which the student's training cost plus its per-item cost is below the "
            "LLM's per-item cost.</p>"
        )
    agree = _agreement_rows(rows)
    if agree:
        parts.append("<h2>Teacher–student agreement</h2><div class='scroll'><table id='agreement'><thead><tr>")
        parts.append(
            "<th class='t'>student</th><th class='t'>teacher</th><th class='t'>measured on</th><th>agreement</th>"
            "</tr></thead><tbody>"
        )
        for r in agree:
            parts.append(
                f"<tr><td class='t'>{e(r['name'])}</td><td class='t'>{e(_teacher_name(r))}</td>"
                f"<td class='t'>{e(r['teacher_agreement_on'] or 'test')} items</td>"
                f"<td data-value='{e(json.dumps(r['teacher_agreement']))}'>{e(fmt_pct(r['teacher_agreement']))}</td></tr>"
            )
        parts.append("</tbody></table></div>")
    for t in score_tables(rows):
        parts.append(f"<h2>{e(t.title)}</h2><div class='scroll'><table id='{e(t.key)}'><thead><tr>")
        parts += [f"<th class='{'t' if i == 0 else ''}'>{e(h)}</th>" for i, h in enumerate(t.heads)]
        parts.append("</tr></thead><tbody>")
        for line in t.lines:
            tds = "".join(f"<td class='{'t' if i == 0 else ''}'>{e(v)}</td>" for i, v in enumerate(line))
            parts.append(f"<tr>{tds}</tr>")
        parts.append(f"</tbody></table></div><p class='note'>{e(t.note)}</p>")
        if t.figure:
            fig(t.figure, t.caption)
    if "per_class_f1" in images:
        parts.append("<h2>F1 per class</h2>")
        fig("per_class_f1", "F1 of each class, one bar per run.")
    conf_keys = [k for k in images if k.startswith("confusion:")]
    if conf_keys:
        parts.append(
            "<h2>Confusion matrices</h2><p class='note'>Rows are gold labels, columns predictions; "
            "(none) counts rows without a valid answer. Shading is the share of the row.</p><div class='grid'>"
        )
        for k in conf_keys:
            fig(k, k.split(":", 1)[1])
        parts.append("</div>")
    parts.append("<h2>Run folders</h2><ul class='note'>")
    parts += [f"<li><b>{e(r['name'])}</b>: <code>{e(r['path'])}</code></li>" for r in rows]
    parts.append("</ul></main></body></html>")
    return "\n".join(parts)


def render_markdown(
    title: str,
    created: str,
    rows: list[dict[str, Any]],
    breakeven: list[dict[str, Any]],
    lines: list[str],
    images: dict[str, Path],
    hourly: float | None,
) -> str:
    """The Markdown report; figures are linked as the PNG files written beside it."""

    def md(v: str) -> str:
        return v.replace("|", "\\|")

    cols = _table_columns(hourly)
    out = [f"# {title}", "", f"{len(rows)} runs · generated {created} by promptclf", "", "## Verdict", ""]
    out += [f"- {x}" for x in lines]
    out += ["", "## Runs", "", "| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = table_cells(r)
        out.append("| " + " | ".join(md(cells[k]) for k, _ in cols) + " |")
    for key, heading in (("accuracy_vs_cost", "Accuracy vs cost"), ("throughput", "Throughput")):
        if key in images:
            out += ["", f"## {heading}", "", f"![{heading}]({images[key].name})"]
    for key in (k for k in images if k.startswith("cascade:")):
        out += ["", f"## Cascade: {key.split(':', 1)[1]}", "", f"![cascade]({images[key].name})"]
    if breakeven:
        out += ["", "## Break-even", "", "| student | vs LLM run | pays off after | basis |", "|---|---|---|---|"]
        for b in breakeven:
            out.append(f"| {md(b['student'])} | {md(b['llm'])} | {md(b['when'])} | {md(b['basis'])} |")
    agree = _agreement_rows(rows)
    if agree:
        out += ["", "## Teacher–student agreement", ""]
        out += [f"- {r['name']} vs {_teacher_name(r)}: {fmt_pct(r['teacher_agreement'])}" for r in agree]
    for t in score_tables(rows):
        out += ["", f"## {t.title}", "", "| " + " | ".join(t.heads) + " |", "|" + "---|" * len(t.heads)]
        out += ["| " + " | ".join(md(v) for v in line) + " |" for line in t.lines]
        if t.figure and t.figure in images:
            out += ["", f"![{t.title}]({images[t.figure].name})"]
    if "per_class_f1" in images:
        out += ["", "## F1 per class", "", f"![F1 per class]({images['per_class_f1'].name})"]
    conf_keys = [k for k in images if k.startswith("confusion:")]
    if conf_keys:
        out += ["", "## Confusion matrices", ""]
        out += [f"![{k.split(':', 1)[1]}]({images[k].name})" for k in conf_keys]
    return "\n".join(out) + "\n"


def find_chromium() -> str | None:
    """Path of a Chromium binary (Debian's ``chromium`` package), or None."""
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def screenshot(html_path: str | Path, png: str | Path, width: int = 1280, height: int = 2000) -> Path:
    """Render ``html_path`` in headless Chromium to ``png``: how to check a report renders offline.

    The flags keep Chromium from reaching out to the network (it has none here) and from
    touching the user's profile.
    """
    import os
    import subprocess
    import tempfile

    from ..errors import MissingDependencyError

    chromium = find_chromium()
    if chromium is None:
        raise MissingDependencyError("a screenshot needs Chromium: apt-get install -y chromium")
    png = Path(png)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--screenshot={png.resolve()}",
                f"--window-size={width},{height}",
                Path(html_path).resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
            env={**os.environ, "HOME": profile},
        )
    return png
