"""--candidates K on a real 262-label set: prompt tokens per item, candidate recall and accuracy.

Data: ICD-10-CM diagnosis titles labelled with their block (``promptclf.data.taxonomies.icd10cm``,
``path=False``: 262 flat labels named by code range, e.g. ``A00-A09``, each described by its official
title, ``Intestinal infectious diseases``); at most 20 titles per block (5,160 rows), of which
``--rows`` (seeded) are labelled. The labels file lists all 262 blocks.

Teachers:

* **simulated teacher** (``promptclf.testing.sim_teacher``, over real HTTP on 127.0.0.1), whose gold
  table is all 5,160 rows, at ``--accuracy`` (its errors near class boundaries). It answers only from
  the labels its prompt lists, as a real LLM would: its own answer when listed, else the most probable
  listed label (``sim_teacher.among_shown``), so a text whose gold label was not shown is answered
  wrongly. Its prompt tokens are its estimate (4.2 characters a token, a Llama-3 tokenizer's rate on
  English). A stand-in for a 70B model: its accuracy is set, not measured.
* **SmolLM2-135M-Instruct** (the local model, in process; exact token counts) on the first
  ``--local`` rows, scoring each text against its own candidates (all 262 labels without K).

For each K in ``--ks`` and all labels: prompt tokens per item, labels listed per request, candidate
recall (gold among the row's own K), shown recall (gold among the labels its request listed: the union
of its batch's candidates; the simulated teacher only), accuracy, answers outside the shown labels,
wall time. Results go to stdout with the load average (and ``--out``).

    python bench/bench_candidates.py [--rows 500] [--ks 5,10,20] [--local 30] [--batch-size 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # promptclf from this checkout

import pandas as pd  # noqa: E402

from promptclf.data.taxonomies import icd10cm, icd10cm_labels_yaml  # noqa: E402
from promptclf.errors import InputError  # noqa: E402
from promptclf.label.labeler import label_file  # noqa: E402
from promptclf.label.options import LabelOptions  # noqa: E402
from promptclf.labels import load_labels_file  # noqa: E402
from promptclf.testing.answers import parse_prompt  # noqa: E402
from promptclf.testing.sim_teacher import SimTeacher, norm  # noqa: E402


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def shown_recall(teacher: SimTeacher, gold: dict[str, str]) -> tuple[float | None, float]:
    """(share of answered items whose gold label was listed in their request, mean labels listed per request),
    read from the requests the teacher's server recorded."""
    hits = n = 0
    listed: list[int] = []
    for rec in teacher.server.chat_records():
        body = rec.body if isinstance(rec.body, dict) else {}
        user = next(
            (str(m.get("content") or "") for m in reversed(body.get("messages") or []) if m["role"] == "user"), ""
        )
        labels, items = parse_prompt(user)
        listed.append(len(labels))
        for _, text in items:
            g = gold.get(norm(text))
            if g is not None:
                hits, n = hits + (g in labels), n + 1
    return (hits / n if n else None), (statistics.mean(listed) if listed else 0.0)


def row(name: str, k: int | None, run: object, extra: dict[str, object]) -> dict[str, object]:
    rec = run  # a LabelRun
    u = rec.usage  # type: ignore[attr-defined]
    m = rec.metrics or {}  # type: ignore[attr-defined]
    c = rec.candidates or {}  # type: ignore[attr-defined]
    n = rec.n_items  # type: ignore[attr-defined]
    return {
        "teacher": name,
        "K": k if k is not None else "all",
        "rows": n,
        "prompt_tokens_per_item": u.prompt_tokens / n if n else 0.0,
        "requests": u.requests,
        "labels_per_request": c.get("mean_shown_labels"),
        "candidate_recall": c.get("candidate_recall"),
        "accuracy": m.get("accuracy"),
        "accuracy_ci": m.get("accuracy_ci"),
        "off_candidate_answers": c.get("off_candidate_answers"),
        "wall_s": rec.wall_s,  # type: ignore[attr-defined]
        **extra,
    }


def edge_share(output: str | None, names: list[str]) -> float | None:
    """Share of answered rows whose label is the first or the last its prompt listed (a position bias)."""
    if output is None:
        return None
    f = pd.read_csv(output, keep_default_na=False)
    f = f[f["pred_status"] == "ok"]
    edges = 0
    for cell, pred in zip(f["pred_candidates"], f["pred_label"], strict=True):
        listed = sorted(json.loads(cell), key=names.index)  # the prompt lists them in label-set order
        edges += pred in (listed[0], listed[-1])
    return edges / len(f) if len(f) else None


def priced(base: dict[str, object], k: int | None, sample: pd.DataFrame) -> dict[str, object]:
    """``--dry-run``'s estimate of the same job at gpt-4o-mini's list prices (a price basis, nothing sent):
    dollars per 1,000 items without and with the provider's prompt cache (its static prefix)."""
    from promptclf.label.labeler import Labeler

    opts = LabelOptions.build(**base, provider="openai", model="gpt-4o-mini", candidates=k)
    est = Labeler(opts, progress=False).dry_run(sample[["text", "label"]])
    per_1k = 1000 / est.items
    return {
        "usd_per_1k_gpt4o_mini": est.cache.est_cost_usd * per_1k,
        "usd_per_1k_gpt4o_mini_cached": est.cache.est_cost_cached_usd * per_1k,
        "static_prefix_tokens": est.cache.prefix_tokens,
    }


def fmt(r: dict[str, object]) -> str:
    def pct(v: object) -> str:
        return f"{100 * float(v):5.1f}%" if isinstance(v, (int, float)) else "    -"

    ci = r.get("accuracy_ci")
    ci_s = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if isinstance(ci, list) else ""
    lpr = r.get("labels_per_request")
    return (
        f"| {r['teacher']} | {r['K']} | {r['rows']} | {float(r['prompt_tokens_per_item']):,.0f} | "  # type: ignore[arg-type]
        f"{lpr if lpr is not None else '262'} | {pct(r.get('candidate_recall'))} | {pct(r.get('shown_recall'))} | "
        f"{pct(r.get('accuracy'))}{ci_s} | {r.get('off_candidate_answers') if r.get('off_candidate_answers') is not None else '-'} | "
        f"{float(r['wall_s']):.1f} |"  # type: ignore[arg-type]
        + (
            f" ${float(r['usd_per_1k_gpt4o_mini']):.4f} / ${float(r['usd_per_1k_gpt4o_mini_cached']):.4f} "  # type: ignore[arg-type]
            f"({r['static_prefix_tokens']}) |"
            if "usd_per_1k_gpt4o_mini" in r
            else " - |"
        )
    )


HEADER = (
    "| teacher | K | rows | prompt tokens / item | labels listed / request | candidate recall | shown recall | "
    "accuracy [95% CI] | answers outside shown | wall s | gpt-4o-mini $/1k items, est.: list / with prompt cache "
    "(static prefix tokens) |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |"
)


def run_hpo(a: argparse.Namespace, work: Path, store: str) -> list[str]:
    """Multi-label with candidates on the HPO set (23 organ systems): a simulated multi-label teacher that gets
    each (text, label) decision it is asked wrong with probability ``--hpo-error`` and can only choose among the
    labels its prompt lists, so a gold label not listed is always missed."""
    from promptclf.data.taxonomies import hpo_labels_yaml, hpo_multilabel
    from promptclf.labels import split_labels
    from promptclf.testing.answers import PromptAnswers, noisy_multi_answer
    from promptclf.testing.fake_server import FakeServer, Responder

    df = hpo_multilabel(a.hpo, seed=a.seed)
    src = work / "hpo.csv"
    df[["text", "label"]].to_csv(src, index=False)
    lab_file = work / "hpo_labels.yaml"
    lab_file.write_text(hpo_labels_yaml())
    labels = load_labels_file(lab_file)
    truth = {t: split_labels(g) for t, g in zip(df["text"], df["label"], strict=True)}
    out = [
        "",
        f"multi-label: HPO definitions, {len(labels)} labels, {len(df)} rows (seed {a.seed}); simulated multi-label "
        f"teacher, per-(text, label) error {a.hpo_error} on the labels it is shown; batch size {a.batch_size}",
        "",
        "| K | prompt tokens / item | labels listed / request | candidate recall (gold pairs) | rows with every gold "
        "label among the K | micro-F1 [95% CI] | subset accuracy |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for k in [*[int(x) for x in a.hpo_ks.split(",")], None]:
        answers = PromptAnswers(multi_answer=noisy_multi_answer(truth, a.hpo_error, seed=a.seed))
        with FakeServer(Responder(answers)) as server:
            opts = LabelOptions.build(
                labels=labels.to_dict(), multi_label=True, label_col="label", batch_size=a.batch_size, store=store,
                no_cache=True, provider="openai", base_url=server.base_url, model="sim-multilabel", concurrency=4,
                candidates=k,
            )  # fmt: skip
            run = label_file(src, work / f"hpo-k{k or 'all'}.csv", opts, progress=False)
        m, c, u = run.metrics or {}, run.candidates or {}, run.usage
        ci = m.get("micro_f1_ci") or [float("nan")] * 2
        pct = lambda v: f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "-"  # noqa: E731
        out.append(
            f"| {k or 'all'} | {u.prompt_tokens / run.n_items:,.0f} | {c.get('mean_shown_labels') or len(labels)} | "
            f"{pct(c.get('candidate_recall'))} | {pct(c.get('candidate_row_recall'))} | {pct(m.get('micro_f1'))} "
            f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] | {pct(m.get('subset_accuracy'))} |"
        )
        print(out[-1], file=sys.stderr, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=500, help="rows labelled by the simulated teacher")
    ap.add_argument("--ks", default="5,10,20")
    ap.add_argument("--local", type=int, default=30, help="rows labelled by SmolLM2 (0: skip)")
    ap.add_argument("--local-ks", default=None, help="K values for SmolLM2 (default: --ks)")
    ap.add_argument(
        "--local-all", action=argparse.BooleanOptionalAction, default=True, help="SmolLM2 with all labels too"
    )
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--accuracy", type=float, default=0.85, help="the simulated teacher's accuracy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "promptclf-bench-candidates"))
    ap.add_argument("--out", default=None, help="also write the table here")
    ap.add_argument("--hpo", type=int, default=0, help="also the multi-label HPO set, this many rows (0: skip)")
    ap.add_argument("--hpo-ks", default="3,5,10")
    ap.add_argument("--hpo-error", type=float, default=0.05)
    ap.add_argument("--skip-icd", action="store_true", help="only the HPO part")
    a = ap.parse_args()
    ks = [int(k) for k in a.ks.split(",") if k.strip()]
    local_ks = [int(k) for k in a.local_ks.split(",")] if a.local_ks else ks
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    store = str(work / "store.sqlite")  # embeddings reused across runs; responses never (no_cache)
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")

    lines = [f"bench_candidates: {load()} at start"]
    print(lines[0], file=sys.stderr, flush=True)
    if a.skip_icd:
        return finish(a, [*lines, *run_hpo(a, work, store), "", f"{load()} at end"])
    full = icd10cm(per_leaf=20, path=False, seed=a.seed)
    labels_file = work / "labels.yaml"
    labels_file.write_text(icd10cm_labels_yaml(full))
    labels = load_labels_file(labels_file)
    sample = full.sample(n=min(a.rows, len(full)), random_state=a.seed).reset_index(drop=True)
    src = work / "input.csv"
    sample[["text", "label"]].to_csv(src, index=False)
    gold = {norm(t): g for t, g in zip(full["text"], full["label"], strict=True)}
    lines.append(
        f"data: ICD-10-CM titles, {len(labels)} labels (blocks), gold table {len(full):,} rows, {len(sample)} labelled "
        f"(seed {a.seed}); batch size {a.batch_size}"
    )
    base = dict(labels=labels.to_dict(), label_col="label", batch_size=a.batch_size, store=store, no_cache=True)

    results: list[dict[str, object]] = []
    t0 = time.perf_counter()
    from promptclf.store import Store

    st = Store(store)
    teacher = SimTeacher(
        full["text"].tolist(), full["label"].tolist(), accuracy=a.accuracy, seed=a.seed, store=st, progress=True
    )
    st.close()
    lines.append(
        f"simulated teacher ready in {time.perf_counter() - t0:.1f}s (accuracy {a.accuracy} over all 262 labels)"
    )
    with teacher:
        for k in [*ks, None]:
            teacher.server.reset()
            opts = LabelOptions.build(
                **base, provider="openai", base_url=teacher.base_url, model="simulated-teacher", concurrency=4,
                candidates=k,
            )  # fmt: skip
            run = label_file(src, work / f"sim-k{k or 'all'}.csv", opts, progress=False)
            rec, mean_listed = shown_recall(teacher, gold)
            r = row("simulated teacher", k, run, {"shown_recall": rec, **priced(base, k, sample)})
            r["labels_per_request"] = r["labels_per_request"] or round(mean_listed, 2)
            results.append(r)
            print(fmt(r), file=sys.stderr, flush=True)

    if a.local:
        src_local = work / "input_local.csv"
        sample.head(a.local)[["text", "label"]].to_csv(src_local, index=False)
        for k in [*local_ks, *([None] if a.local_all else [])]:
            opts = LabelOptions.build(**base, provider="local", candidates=k)
            try:
                run = label_file(src_local, work / f"local-k{k or 'all'}.csv", opts, progress=False)
            except InputError as exc:  # all 262 labels with their titles overflow SmolLM2's context
                lines.append(f"SmolLM2-135M (local), K={k or 'all'}: does not run: {exc}")
                print(lines[-1], file=sys.stderr, flush=True)
                continue
            r = row("SmolLM2-135M (local)", k, run, {"edge_share": edge_share(run.output, labels.names)})
            results.append(r)
            print(fmt(r), file=sys.stderr, flush=True)

    lines += ["", HEADER, *(fmt(r) for r in results)]
    lines += [
        f"{r['teacher']}, K={r['K']}: the answer is the first or last label listed in {100 * float(r['edge_share']):.0f}% "  # type: ignore[arg-type]
        "of rows"
        for r in results
        if r.get("edge_share") is not None
    ]
    if a.hpo:
        lines += run_hpo(a, work, store)
    lines += ["", f"{load()} at end"]
    pd.DataFrame(results).to_json(work / "results.json", orient="records", indent=1)
    return finish(a, lines)


def finish(a: argparse.Namespace, lines: list[str]) -> int:
    """Print the figures (and write them to ``--out``)."""
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
