"""Student-first cascade: ``promptclf label INPUT --student RUN --threshold T|auto``.

1. The student (a distill run folder, or a ``promptclf export`` folder on ONNX Runtime) predicts every row. Rows whose top probability is at least
   the threshold keep its label (``pred_source`` = ``student``); rows it is less sure of, and rows
   whose text is empty or too long, are written to ``llm_input.csv`` in the run folder.
2. That file goes through the normal labeling path (:func:`promptclf.label.labeler.label_file`,
   any provider, ``--batch-api`` included) into the run folder's ``llm/`` run, with the label set
   fixed to the student's (or ``--labels``), so every class can be answered.
3. Both are merged back in input order into the labeled file (``pred_source`` = ``llm`` where the
   LLM gave a label, empty where the row has none; ``student_label``/``student_prob``: the student's
   answer on every row, kept or not), and ``run.json`` gets a :class:`CascadeStats`.

``--threshold auto`` picks the smallest threshold whose cascade agrees with the teacher's labels on
the student's validation rows (``validation.csv`` of the distill run) at ``--target-agreement``
(:func:`promptclf.eval.cascade.pick_threshold`); if none does, every row goes to the LLM, with a
warning. A rerun writes the same ``llm_input.csv`` (the student is deterministic), so the LLM's
requests come from the store: nothing is paid twice.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.tables import iter_table, read_table
from ..data.writers import DatasetWriter, TableWriter
from ..errors import AuthenticationError, InputError, Interrupted, ProviderUnavailableError
from ..eval.cascade import VALIDATION_FILE, pick_threshold, validation_path
from ..label.confidence import probs_cell
from ..label.jobs import chunk_texts
from ..label.labeler import Labeler, default_output, label_file
from ..label.options import LabelOptions
from ..label.stream import TableChunks
from ..labels import LabelSet
from ..providers.base import Provider
from ..runs import CascadeStats, Collapse, LabelRun, ThresholdChoice, label_paths
from .loader import Predictor, load_predictor

log = logging.getLogger(__name__)

ROW_COL = "__cascade_row"  # the input row of each line of llm_input.csv
PRED_COLS = ["pred_label", "pred_prob", "pred_probs", "pred_status", "pred_reason", "pred_request"]


def student_label_set(student_labels: list[str], opts: LabelOptions) -> LabelSet:
    """The run's label set: ``--labels`` when given (it must name the student's labels, no more, no fewer),
    else the student's. Raises :class:`InputError` saying which labels differ."""
    if not opts.labels:
        return LabelSet.from_names(student_labels)
    labels = LabelSet.from_dict(opts.labels)
    mapped = {s: labels.normalize(s) for s in student_labels}
    only_student = sorted(s for s, m in mapped.items() if m is None)
    only_given = sorted(set(labels.names) - {m for m in mapped.values() if m})
    if only_student or only_given:
        parts = [f"only the student has {only_student}" if only_student else "", f"only --labels has {only_given}"]
        raise InputError(
            f"--student {opts.student}: its labels differ from --labels: "
            + "; ".join(p for p in parts if p and not p.endswith("[]"))
            + ": pass --labels with the student's labels (or aliases for them), or distill a student on these labels"
        )
    return labels


def choose_threshold(student: Predictor, opts: LabelOptions) -> tuple[float | None, ThresholdChoice | None]:
    """The threshold of this run (None: the student keeps no row) and, for ``auto``, how it was chosen."""
    threshold, target = opts.cascade_threshold()
    if threshold != "auto":
        return float(threshold), None
    path = validation_path(str(opts.student))
    if path is None:
        raise InputError(f"--student {opts.student}: no {VALIDATION_FILE} for --threshold auto; pass --threshold 0.9")
    val = read_table(path)
    if "text" not in val.columns or "label" not in val.columns:
        raise InputError(f"{path}: expected columns text and label; distill it again")
    source = str(val["label_source"].iloc[0]) if "label_source" in val.columns and len(val) else "teacher"
    probs = student.predict_proba(val["text"].tolist())
    best = probs.argmax(-1)
    agrees = [student.labels[j] == str(g).strip() for j, g in zip(best, val["label"].tolist(), strict=True)]
    pick = pick_threshold(probs.max(-1), agrees, target)
    choice = ThresholdChoice(
        target_agreement=target,
        met=pick.met,
        n=pick.n,
        label_source=source,
        agreement=pick.agreement,
        coverage=pick.coverage,
        student_agreement=pick.student_agreement,
    )
    if pick.n * (1.0 - target) < 1.0:
        log.warning(
            "--threshold auto: %d validation rows are too few to measure %.1f%% agreement (one disagreement is "
            "already %.1f%%; %d rows at least): the threshold is a rough guess; distill with more rows or a larger "
            "--val-fraction, or pass --threshold",
            pick.n,
            100 * target,
            100 / max(1, pick.n),
            int(np.ceil(1.0 / (1.0 - target))) if target < 1 else pick.n,
        )
    if not pick.met:
        log.warning(
            "--threshold auto: no threshold keeps the cascade at %.1f%% agreement with the %s labels on the "
            "student's %d validation rows, so every row goes to the LLM; lower --target-agreement or pass --threshold",
            100 * target,
            source,
            pick.n,
        )
    else:
        log.info(
            "--threshold auto: %.4f (the student keeps %.1f%% of %d validation rows, cascade agreement %.1f%%)",
            pick.threshold,
            100 * (pick.coverage or 0.0),
            pick.n,
            100 * (pick.agreement or 0.0),
        )
    return pick.threshold, choice


@dataclass
class _Split:
    """The student's pass over the input: per row, whether it keeps the row, its label and probabilities."""

    keep: np.ndarray  # bool
    usable: np.ndarray  # bool: the row has a text the student could read (others go to the LLM path's error)
    best: np.ndarray  # index into the student's labels
    probs: np.ndarray  # (rows, labels) float32
    has_gold: bool
    student_s: float


def _split_input(
    chunks: TableChunks, opts: LabelOptions, student: Predictor, threshold: float | None, llm_in: Path, progress: bool
) -> _Split:
    """Predict every row with the student and write the rows it does not keep to ``llm_in``."""
    keep_parts, best_parts, prob_parts, usable_parts = [], [], [], []
    has_gold = False
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="row", desc="student", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    t0 = time.perf_counter()
    offset = 0
    try:
        with TableWriter(llm_in) as writer:
            for chunk in chunks:
                texts = chunk_texts(chunk, opts.text_cols)
                usable = np.array([bool(t.strip()) and len(t) <= opts.max_item_chars for t in texts], dtype=bool)
                probs = np.zeros((len(texts), len(student.labels)), dtype=np.float32)
                idx = np.flatnonzero(usable)
                if len(idx):
                    probs[idx] = student.predict_proba([texts[i] for i in idx])
                top = probs.max(-1)
                keep = usable & (top >= threshold) if threshold is not None else np.zeros(len(texts), dtype=bool)
                has_gold = has_gold or (opts.label_col is not None and opts.label_col in chunk.columns)
                cols = [c for c in dict.fromkeys([*opts.text_cols, opts.label_col or ""]) if c in chunk.columns]
                sent = chunk.loc[~keep, cols].copy()
                sent.insert(0, ROW_COL, np.flatnonzero(~keep) + offset)
                if len(sent):
                    writer.write(sent)
                keep_parts.append(keep)
                usable_parts.append(usable)
                best_parts.append(probs.argmax(-1))
                prob_parts.append(probs)
                offset += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return _Split(
        keep=np.concatenate(keep_parts),
        usable=np.concatenate(usable_parts),
        best=np.concatenate(best_parts),
        probs=np.concatenate(prob_parts),
        has_gold=has_gold,
        student_s=time.perf_counter() - t0,
    )


class _Rows:
    """Rows pulled in order from a stream of frames, ``k`` at a time."""

    def __init__(self, frames: Iterator[pd.DataFrame]) -> None:
        self.frames = frames
        self.buf = pd.DataFrame()

    def take(self, k: int) -> pd.DataFrame:
        parts = []
        while k > 0:
            if self.buf.empty:
                self.buf = next(self.frames, pd.DataFrame())
                if self.buf.empty:
                    raise InputError("the LLM's labeled rows end early; delete the run folder and rerun")
            part, self.buf = self.buf.iloc[:k], self.buf.iloc[k:]
            parts.append(part)
            k -= len(part)
        return pd.concat(parts) if parts else pd.DataFrame(columns=[ROW_COL, *PRED_COLS])


@dataclass
class _Merged:
    """Per row of the merged output: label, status, source, gold (normalised)."""

    pred: list[str]
    status: list[str]
    source: list[str]
    gold: list[str] | None
    rerun: int


def _merge(
    chunks: TableChunks,
    split: _Split,
    llm_out: Path | None,
    labels: LabelSet,
    student: Predictor,
    opts: LabelOptions,
    out_file: Path,
    dataset_dir: Path | None,
) -> _Merged:
    """Write the labeled file: the student's rows and the LLM's, in input order, each with ``pred_source``."""
    names = [labels.normalize(s) or s for s in student.labels]
    rows = _Rows(iter_table(llm_out, 10_000) if llm_out is not None else iter([]))
    merged = _Merged([], [], [], [] if split.has_gold else None, 0)
    writer = TableWriter(out_file)
    dataset = DatasetWriter(dataset_dir, "pred_label", labels.names) if dataset_dir is not None else None
    offset = 0
    for chunk in chunks:
        n = len(chunk)
        keep = split.keep[offset : offset + n]
        best, probs = split.best[offset : offset + n], split.probs[offset : offset + n]
        frame = chunk.copy()
        label = np.array([names[j] for j in best], dtype=object)
        prob = probs.max(-1).astype("float64").round(6)
        cols = {
            "pred_label": label.copy(),  # the LLM's rows are filled in below; label and prob stay the student's
            "pred_prob": prob.copy(),
            "pred_probs": np.array(
                [probs_cell(dict(zip(names, map(float, p), strict=True))) for p in probs], dtype=object
            ),
            "pred_status": np.full(n, "ok", dtype=object),
            "pred_reason": np.full(n, "", dtype=object),
            "pred_request": np.full(n, "", dtype=object),
        }
        sent = np.flatnonzero(~keep)
        llm = rows.take(len(sent)) if len(sent) else None
        if llm is not None:
            got = pd.to_numeric(llm[ROW_COL]).to_numpy()
            if not np.array_equal(got, sent + offset):
                raise InputError("the LLM's labeled rows do not match llm_input.csv; delete the run folder and rerun")
            for c in PRED_COLS:
                vals = pd.to_numeric(llm[c], errors="coerce") if c == "pred_prob" else llm[c].astype(str)
                cols[c][sent] = vals.to_numpy()
        source = np.where(keep, "student", np.where(cols["pred_label"] != "", "llm", "")).astype(object)
        source[~keep & (cols["pred_status"] != "ok")] = ""
        for c, v in cols.items():
            frame[c] = v if c != "pred_prob" else np.asarray(v, dtype="float64")
        frame["pred_source"] = source
        # The student's answer on every row it could read, kept or not: the accuracy-cost frontier of the report.
        usable = split.usable[offset : offset + n]
        frame["student_label"] = np.where(usable, label, "").astype(object)
        frame["student_prob"] = np.where(usable, prob, np.nan)
        writer.write(frame)
        if dataset is not None:
            dataset.write(frame)
        merged.pred += [str(v) for v in cols["pred_label"]]
        merged.status += [str(v) for v in cols["pred_status"]]
        merged.source += [str(v) for v in source]
        merged.rerun += int(sum(s in ("error", "unsent") for s in cols["pred_status"]))
        if merged.gold is not None and opts.label_col in chunk.columns:
            merged.gold += [
                (labels.normalize(g) or str(g).strip()) if str(g).strip() else "" for g in chunk[opts.label_col]
            ]
        offset += n
    writer.close()
    if dataset is not None:
        dataset.close()
    return merged


def _saving(
    llm: LabelRun | None,
    n_items: int,
    n_student: int,
    opts: LabelOptions,
    kept_texts: list[str],
    provider: Provider | None,
) -> tuple[float | None, float | None, float | None, str]:
    """(LLM list cost per 1,000 rows sent, LLM-only cost, saving, basis in words); ``opts``: the LLM part's."""
    if llm is not None and llm.n_items and llm.price_known:
        per_1k = llm.cost_per_1k
        basis = (
            f"measured: ${per_1k:.4f} per 1,000 rows at list price on the {llm.n_items:,} rows the LLM labeled, "
            f"times every row"
        )
        return per_1k, per_1k * n_items / 1000, per_1k * n_student / 1000, basis
    if llm is not None and not llm.price_known:
        return None, None, None, "unknown: the LLM's model is not in the price table; add it with --prices"
    # No row went to the LLM: estimate its price from a dry run (tokens, price table) on rows the student kept.
    sample = pd.DataFrame({"text": kept_texts[:200]})
    try:
        dry_opts = opts.model_copy(update={"text_cols": ["text"], "label_col": None})
        est = Labeler(dry_opts, provider=provider, progress=False).dry_run(sample)
    except Exception as exc:  # an estimate only: never fail a finished run over it
        return None, None, None, f"unknown: no row went to the LLM and its price could not be estimated ({exc})"
    if not est.price_known or not est.items:
        return None, None, None, "unknown: no row went to the LLM and its model is not in the price table"
    per_1k = 1000 * est.est_cost_usd / est.items
    basis = f"price table: no row went to the LLM; a dry run's token estimate on {est.items} rows the student kept"
    return per_1k, per_1k * n_items / 1000, per_1k * n_student / 1000, basis


def cascade_file(
    input_path: str | Path,
    output: str | Path | None = None,
    options: LabelOptions | None = None,
    name: str | None = None,
    progress: bool = True,
    provider: Provider | None = None,
    split: str | None = None,
    save_dataset: str | Path | None = None,
) -> LabelRun:
    """Label a file student first (``options.student``), the LLM for the rest; returns the run record
    (``run.json``, its ``cascade`` field saying who labeled what and what it saved).

    Arguments as :func:`promptclf.label.labeler.label_file`. If the LLM's part is interrupted, the
    labeled file is still written whole (the LLM's unfinished rows marked) before the error propagates.
    """
    from ..eval.metrics import collapse_check, evaluate

    opts = options or LabelOptions()
    if opts.student is None:
        raise InputError("cascade_file needs options.student (a distill run folder); use label_file without one")
    t0 = time.perf_counter()
    out_file, run_dir = label_paths(output or default_output(input_path, split))
    src = Path(input_path)
    if src.is_file() and out_file.exists() and out_file.resolve() == src.resolve():
        raise InputError(f"-o {output} is the input file; write the labeled rows to another file")
    student = load_predictor(opts.student)  # a distill run folder, or an export folder (ONNX Runtime)
    labels = student_label_set(student.labels, opts)
    threshold, choice = choose_threshold(student, opts)
    chunks = TableChunks(input_path, opts.chunk_rows, split)
    run_dir.mkdir(parents=True, exist_ok=True)
    llm_in = run_dir / "llm_input.csv"
    if opts.label_col:
        _check_gold(chunks, opts.label_col, labels, opts.student)
    parts = _split_input(chunks, opts, student, threshold, llm_in, progress)
    n_rows, n_student = len(parts.keep), int(parts.keep.sum())
    llm_rec: LabelRun | None = None
    llm_out: Path | None = None
    sub = opts.model_copy(
        update={
            "student": None,
            "threshold": None,
            "target_agreement": None,
            "labels": labels.to_dict(),
            "label_col": opts.label_col if parts.has_gold else None,
        }
    )
    stopped: BaseException | None = None
    if n_rows - n_student:
        try:
            llm_rec = label_file(
                llm_in, run_dir / "llm", sub, name=f"{run_dir.name}-llm", progress=progress, provider=provider
            )
            llm_out = llm_rec.output_path()
        except (Interrupted, AuthenticationError, ProviderUnavailableError) as err:
            stopped, llm_out = err, run_dir / "llm" / "labeled.csv"
            if not llm_out.exists():
                raise
    else:
        llm_in.unlink(missing_ok=True)
    merged = _merge(
        chunks, parts, llm_out, labels, student, opts, out_file, Path(save_dataset) if save_dataset else None
    )
    if stopped is not None:
        log.info("partial output written to %s", out_file)
        raise stopped
    statuses = dict(Counter(merged.status).most_common())
    n_items = n_rows - statuses.get("shot", 0)
    scored = [i for i, s in enumerate(merged.status) if s != "shot"]
    metrics = None
    if merged.gold is not None and any(merged.gold):
        metrics = evaluate(
            [merged.gold[i] for i in scored], [merged.pred[i] for i in scored], labels.names,
            status=[merged.status[i] for i in scored],
        )  # fmt: skip
    collapse = collapse_check(merged.pred, merged.gold, merged.status)
    kept_texts = _kept_texts(chunks, opts, parts.keep) if llm_rec is None and n_student else []
    per_1k_sent, llm_only, saved, basis = _saving(llm_rec, n_items, n_student, sub, kept_texts, provider)
    spec = opts.provider_spec() if llm_rec is None and provider is None else None
    llm_list_cost = (llm_rec.cost_per_1k * llm_rec.n_items / 1000) if llm_rec is not None else 0.0
    stats = CascadeStats(
        student=str(Path(opts.student).resolve()),
        threshold=threshold,
        threshold_mode="auto" if choice is not None else "fixed",
        auto=choice,
        n_rows=n_rows,
        n_student=n_student,
        n_llm=n_rows - n_student,
        share_student=n_student / n_rows if n_rows else 0.0,
        share_llm=(n_rows - n_student) / n_rows if n_rows else 0.0,
        llm_run=str(run_dir / "llm") if llm_rec is not None else None,
        llm_cost_usd=llm_rec.cost_usd if llm_rec is not None else 0.0,
        llm_cost_per_1k_sent=per_1k_sent,
        llm_only_cost_usd=llm_only,
        saved_usd=saved,
        saving_basis=basis,
        student_s=round(parts.student_s, 3),
    )
    wall = time.perf_counter() - t0
    run = LabelRun(
        name=name or run_dir.name.removesuffix(".run"),
        input=str(input_path),
        split=split,
        output=str(out_file.resolve()),
        dataset=str(Path(save_dataset).resolve()) if save_dataset is not None else None,
        gold_col=opts.label_col if merged.gold is not None else None,
        run_id=llm_rec.run_id if llm_rec is not None else None,
        store=str(opts.store_path()),
        options=opts.model_dump(mode="json"),
        provider=llm_rec.provider if llm_rec is not None else (spec.name if spec else getattr(provider, "name", "")),
        model=llm_rec.model if llm_rec is not None else (spec.model if spec else getattr(provider, "model", "")),
        labels=labels.names,
        n_rows=n_rows,
        n_items=n_items,
        n_shots=llm_rec.n_shots if llm_rec is not None else 0,
        statuses=statuses,
        coverage=statuses.get("ok", 0) / n_items if n_items else 0.0,
        rerun_rows=merged.rerun,
        usage=llm_rec.usage if llm_rec is not None else LabelRun().usage,
        cost_usd=stats.llm_cost_usd,
        cost_per_1k=1000 * llm_list_cost / n_items if n_items else 0.0,
        price_known=llm_rec.price_known if llm_rec is not None else per_1k_sent is not None,
        wall_s=round(wall, 3),
        items_per_s=n_items / wall if wall else 0.0,
        latency_s_median=llm_rec.latency_s_median if llm_rec is not None else None,
        metrics=metrics,
        collapse=Collapse(**collapse) if collapse else None,
        cascade=stats,
    )
    run.save(run_dir, {"labels.json": _labels_json(labels)})
    run.run_dir = run_dir.resolve()
    return run


def _check_gold(chunks: TableChunks, label_col: str, labels: LabelSet, student: object) -> None:
    """Gold labels the student's label set does not know would be silently scored wrong: refuse them."""
    unknown: set[str] = set()
    for chunk in chunks:
        if label_col in chunk.columns:
            unknown |= {str(g).strip() for g in chunk[label_col] if str(g).strip() and labels.normalize(g) is None}
    if unknown:
        raise InputError(
            f"--label-col {label_col!r} has labels the student does not know: {sorted(unknown)[:10]} (the student "
            f"{student} has {labels.names}); distill a student on these labels, or pass --label-col to another column"
        )


def _kept_texts(chunks: TableChunks, opts: LabelOptions, keep: np.ndarray, limit: int = 200) -> list[str]:
    """Up to ``limit`` texts of rows the student kept (the dry run's sample when none went to the LLM)."""
    out: list[str] = []
    offset = 0
    for chunk in chunks:
        texts = chunk_texts(chunk, opts.text_cols)
        out += [t for i, t in enumerate(texts) if keep[offset + i]]
        offset += len(chunk)
        if len(out) >= limit:
            break
    return out[:limit]


def _labels_json(labels: LabelSet) -> str:
    import json

    return json.dumps(labels.to_dict(), indent=2)
