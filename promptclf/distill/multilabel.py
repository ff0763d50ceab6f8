"""Multi-label students: zero or more labels per text, a sigmoid per label, thresholds tuned on validation.

A student is multi-label when the teacher's label run was (its ``labels.json`` beside the labeled file
says ``"multi_label": true``) or when ``distill --multi-label`` says so (a file without a run).

* **Targets.** The teacher's label set per row, read from ``pred_labels`` (a JSON list; with another
  ``--label-col``, JSON lists or ``;``-separated names); ``[]`` is a valid answer (no label applies) and
  trains every label towards 0; an empty cell is no answer and the row is skipped. With ``--soft`` a
  label's target is the teacher's probability for it in ``pred_probs`` where the row gives one (a local
  model gives every label's P(yes); a chat model the chosen labels'), and 0/1 elsewhere.
* **Head and loss.** The classification head (``--head cls``: MiniLM/BERT with LoRA or full fine-tuning,
  or a causal LM's sequence-classification head with LoRA/QLoRA) with one logit per label and transformers'
  ``multi_label_classification`` loss: binary cross-entropy with logits, which takes soft targets as
  they are. ``--head lm`` answers with one label word, so it is refused.
* **Thresholds.** Tuned per label on the validation split (:mod:`.thresholds`), stored in ``student.json``
  and ``run.json["multi_label"]``, used by everything that predicts.
* **Figures.** :func:`promptclf.eval.multilabel.multilabel_metrics` on the gold test rows (micro-, macro-,
  sample-F1, subset accuracy, Hamming loss, with CIs): the student's, and the teacher's on the same rows.

The gold and teacher cells of a :class:`~.options.DistillData` are JSON lists here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.tables import cell_text, check_columns, read_table, write_table
from ..errors import ConfigError, InputError, TrainingError
from ..labels import LabelSet, split_labels
from .distributed import main_logger
from .options import DistillData, DistillOptions
from .record import Evaluated
from .thresholds import DEFAULT_THRESHOLD, decide, label_sets, multilabel_columns, tune_thresholds

log = main_logger(__name__)  # under torchrun, one copy of each message

NOT_FITTED = "not fitted: a multi-label student's sigmoids are cut at per-label thresholds tuned on validation"


def _saved_set(input_path: str | Path) -> LabelSet | None:
    from ..eval.metrics import labels_beside

    return labels_beside(input_path) if Path(str(input_path)).is_file() else None


def is_multi_label(input_path: str | Path, o: DistillOptions) -> bool:
    """Whether ``distill`` trains a multi-label student: ``--multi-label``, or a multi-label teacher run."""
    if o.multi_label:
        return True
    saved = _saved_set(input_path)
    return saved is not None and saved.multi_label


def check_options(o: DistillOptions, where: str) -> None:
    """Refuse what a multi-label student cannot do, with the fix."""
    if o.head == "lm":
        raise ConfigError(
            f"{where} is multi-label, and --head lm answers with one label word per text, so it cannot give a "
            "label set; use --head cls (the classification head works on the same causal LM, with --method lora "
            "or qlora)"
        )
    if o.ordinal or ("ordinal_head" in o.model_fields_set and o.ordinal_head == "regression"):
        raise ConfigError(f"{where} is multi-label: leave out --ordinal/--ordinal-head (a scale gives one grade)")
    if o.fallback_col or o.corrections:
        raise ConfigError(
            f"{where} is multi-label: --fallback-col and --corrections take one label per row; use --exclude "
            "QUEUE to leave the doubted rows out of training instead"
        )


def _is_blank(cell: object) -> bool:
    return cell_text(cell).strip().lower() in ("", "nan", "none")


def _sets(cells: list[object], labels: LabelSet, where: str) -> list[list[str] | None]:
    """Each cell's label set (None for a blank cell: no answer); a name off the set is bad input."""
    out: list[list[str] | None] = []
    for i, cell in enumerate(cells):
        if _is_blank(cell):
            out.append(None)
            continue
        known, bad = labels.normalize_all(cell)
        if bad:
            raise InputError(
                f"{where} row {i + 2}: label(s) {', '.join(map(repr, bad[:5]))} not in the label set "
                f"({', '.join(labels.names)}); fix the cell, or add the label to the run's labels"
            )
        out.append(known)
    return out


def _label_set(input_path: str | Path, cells: list[object]) -> LabelSet:
    """The run's multi-label set, or (``--multi-label`` on a file without a run) the labels its cells name."""
    saved = _saved_set(input_path)
    if saved is not None:
        return saved.as_multi_label()
    names = sorted({x for c in cells if not _is_blank(c) for x in split_labels(c)})
    if not names:
        raise InputError(f"{input_path}: no labels in the label column; a multi-label student needs some")
    return LabelSet.from_names(names, multi_label=True)


def _targets(df: Any, rows: list[int], sets: list[list[str] | None], labels: list[str], o: DistillOptions, where: str):
    """Per row and label the training target: 0/1, or with --soft the teacher's probability where given."""
    from ..label.confidence import parse_pred_probs

    index = {n: j for j, n in enumerate(labels)}
    out: list[list[float]] = []
    soft_rows = 0
    for i in rows:
        hard = [0.0] * len(labels)
        for name in sets[i] or []:
            hard[index[name]] = 1.0
        probs = parse_pred_probs(df[o.probs_col].iat[i], f"{where} row {i + 2}") if o.soft else None
        if probs:
            soft_rows += 1
            hard = [min(1.0, max(0.0, float(probs[n]))) if n in probs else h for n, h in zip(labels, hard, strict=True)]
        out.append(hard)
    return out, soft_rows


def prepare_multilabel_data(input_path: str | Path, o: DistillOptions) -> DistillData:
    """Read a multi-label labeled file and split it: gold test rows (held out), validation, training."""
    df = read_table(input_path, split=o.split)
    check_options(o, str(input_path))
    teacher_col = "pred_labels" if o.label_col == "pred_label" and "pred_labels" in df.columns else o.label_col
    src_col, src_opt = (
        (teacher_col, "--label-col") if o.train_on == "teacher" else (o.gold_col or "label", "--gold-col")
    )
    check_columns(df, [o.text_col], input_path, "--text-col")
    check_columns(df, [src_col], input_path, src_opt)
    if o.soft:
        check_columns(df, [o.probs_col], input_path, "--probs-col (label with a provider that gives pred_probs)")
    texts = [cell_text(v) for v in df[o.text_col]]
    labels = _label_set(input_path, df[src_col].tolist())
    where = f"{input_path} ({src_col!r})"
    y = _sets(df[src_col].tolist(), labels, where)
    status_ok = [True] * len(df)
    if o.train_on == "teacher" and o.status_col in df.columns:
        status_ok = [cell_text(s).strip().lower() == "ok" for s in df[o.status_col]]
    teacher: list[list[str] | None] | None = None
    if teacher_col in df.columns:
        teacher = (
            y if src_col == teacher_col else _sets(df[teacher_col].tolist(), labels, f"{input_path} ({teacher_col!r})")
        )
        if o.status_col in df.columns:
            ok = [cell_text(s).strip().lower() == "ok" for s in df[o.status_col]]
            teacher = [t if k else None for t, k in zip(teacher, ok, strict=True)]
    counts = {"input_rows": len(df), "not_ok": sum(1 for k in status_ok if not k)}
    usable = [k and s is not None and bool(t.strip()) for k, s, t in zip(status_ok, y, texts, strict=True)]
    counts["no_label"] = sum(1 for k, u in zip(status_ok, usable, strict=True) if k and not u)

    test_texts: list[str] = []
    test_gold: list[list[str]] = []
    test_teacher: list[list[str] | None] | None = None
    in_test = [False] * len(df)
    if o.eval_file:
        ev = read_table(o.eval_file, split=o.eval_split)
        gcol = o.gold_col or "label"
        check_columns(ev, [o.text_col, gcol], o.eval_file, "--text-col/--gold-col")
        ev_texts = [cell_text(v) for v in ev[o.text_col]]
        ev_gold = _sets(ev[gcol].tolist(), labels, f"{o.eval_file} ({gcol!r})")
        keep = [i for i, g in enumerate(ev_gold) if g is not None and ev_texts[i].strip()]
        test_texts = [ev_texts[i] for i in keep]
        test_gold = [ev_gold[i] or [] for i in keep]
        seen = set(test_texts)  # the same text in both files would leak: it is not trained on
        in_test = [t in seen for t in texts]
    elif o.gold_col and o.gold_col in df.columns and o.test_fraction > 0:
        gold = _sets(df[o.gold_col].tolist(), labels, f"{input_path} ({o.gold_col!r})")
        cand = [i for i, g in enumerate(gold) if g is not None and texts[i].strip()]
        rng = np.random.default_rng(o.seed)
        n_test = int(round(o.test_fraction * len(cand)))
        test_idx = sorted(rng.permutation(cand)[:n_test].tolist()) if n_test else []
        for i in test_idx:
            in_test[i] = True
        test_texts = [texts[i] for i in test_idx]
        test_gold = [gold[i] or [] for i in test_idx]
        if teacher is not None:
            test_teacher = [teacher[i] for i in test_idx]
    counts["held_out_for_test"] = sum(1 for u, t in zip(usable, in_test, strict=True) if u and t)
    pool = [i for i, (u, t) in enumerate(zip(usable, in_test, strict=True)) if u and not t]
    if o.exclude:
        ex = read_table(o.exclude)
        check_columns(ex, [o.text_col], o.exclude, "--text-col")
        drop = {cell_text(v) for v in ex[o.text_col]}
        counts["excluded"] = sum(1 for i in pool if texts[i] in drop)
        pool = [i for i in pool if texts[i] not in drop]
    if len(pool) < 2:
        raise TrainingError(f"{where}: {len(pool)} rows to train on; a student needs more; {counts}")
    rng = np.random.default_rng(o.seed + 1)
    order = rng.permutation(len(pool)).tolist()
    n_val = max(1, int(round(o.val_fraction * len(pool))))
    va, tr = sorted(pool[p] for p in order[:n_val]), sorted(pool[p] for p in order[n_val:])
    names = labels.names
    train_targets, soft_rows = _targets(df, tr, y, names, o, str(input_path))
    val_targets, _ = _targets(df, va, y, names, o.model_copy(update={"soft": False}), str(input_path))
    pos = np.asarray(train_targets).sum(0) if train_targets else np.zeros(len(names))
    if not pos.any():
        raise TrainingError(f"{where}: no training row has any label; a multi-label student needs positive rows")
    unseen = [n for n, c in zip(names, pos, strict=True) if c == 0]
    if unseen:
        log.warning(
            f"{where}: label(s) {', '.join(map(repr, unseen))} are in no training row: trained towards 0 only, "
            "so the student will rarely predict them; add rows that have them to fix"
        )
    counts.update(train_rows=len(tr), val_rows=len(va), test_rows=len(test_texts))
    if o.soft:
        counts["soft_rows"] = soft_rows
    return DistillData(
        labels=names,
        train_texts=[texts[i] for i in tr],
        train_y=[],
        val_texts=[texts[i] for i in va],
        val_y=[],
        test_texts=test_texts,
        test_gold=[json.dumps(g, ensure_ascii=False) for g in test_gold],
        test_teacher=[json.dumps(t, ensure_ascii=False) if t is not None else "" for t in test_teacher]
        if test_teacher is not None
        else None,
        counts=counts,
        multi_label=True,
        train_targets=train_targets,
        val_targets=val_targets,
    )


# --- training-time validation (the Trainer's compute_metrics) -------------------------------------


def validation_metrics(logits: Any, label_ids: Any) -> dict[str, float]:
    """Macro-F1 (picks the best checkpoint), micro-F1 and subset accuracy at 0.5 on the validation rows."""
    from sklearn.metrics import f1_score

    from .thresholds import sigmoid

    pred = np.asarray(sigmoid(logits)) >= DEFAULT_THRESHOLD
    true = np.asarray(label_ids) >= 0.5
    return {
        "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(true, pred, average="micro", zero_division=0)),
        "accuracy": float((pred == true).all(1).mean()) if len(true) else 0.0,
    }


# --- the finished student ------------------------------------------------------------------------

HEADLINE = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss")


def _cells(sets: list[list[str]]) -> list[str]:
    return [json.dumps(s, ensure_ascii=False) for s in sets]


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": m.get("n_scored")}
    for k in HEADLINE:
        out[k] = None if m.get(k) is None else round(float(m[k]), 6)
        if m.get(f"{k}_ci"):
            out[f"{k}_ci"] = [round(float(v), 6) for v in m[f"{k}_ci"]]
    return out


def evaluate_multilabel(student: Any, data: DistillData, o: DistillOptions, tr: dict[str, Any], out: Path) -> Evaluated:
    """Tune the thresholds on validation (saved into ``student.json``), score the gold test rows (the student's
    and the teacher's sets), write predictions.csv; the figures for ``run.json``."""
    import pandas as pd

    from ..eval.multilabel import multilabel_metrics

    labels = LabelSet.from_names(data.labels, multi_label=True)
    bs = o.eval_batch_size
    val_probs = student.predict_proba(data.val_texts, batch_size=bs)
    mem = tr.pop("val_probs_in_memory", None)
    if mem is not None:  # same inputs through the trained model and the reloaded one: a check on saving
        tr["reload_max_abs_diff"] = float(abs(mem - val_probs).max()) if len(val_probs) else 0.0
        tr["reload_same_labels"] = bool((decide(mem, None) == decide(val_probs, None)).all())
    val_true = (
        np.asarray(data.val_targets or [], dtype=np.float64).reshape(len(data.val_texts), len(data.labels)) >= 0.5
    )
    if o.thresholds == "fixed":
        thresholds, untuned = [DEFAULT_THRESHOLD] * len(data.labels), list[str]()
    else:
        thresholds, untuned = tune_thresholds(val_probs, val_true, data.labels)
    student.spec.thresholds = thresholds  # predictions.csv and every later predict use them
    (out / "student.json").write_text(json.dumps(student.spec.to_dict(), indent=2) + "\n")
    if untuned:
        log.warning(
            f"label(s) {', '.join(map(repr, untuned))} have no positive validation row: their threshold stays "
            f"{DEFAULT_THRESHOLD}; more rows (or a larger --val-fraction) would let them be tuned"
        )
    val_cells = _cells([[n for n, v in zip(data.labels, row, strict=True) if v] for row in val_true])
    metrics_val = multilabel_metrics(
        val_cells, _cells(label_sets(val_probs, thresholds, data.labels)), labels, n_boot=0, where="validation"
    )
    val_half = multilabel_metrics(
        val_cells, _cells(label_sets(val_probs, None, data.labels)), labels, n_boot=0, where="validation"
    )
    log.info(
        f"per-label thresholds ({o.thresholds}) on {len(val_true)} validation rows: "
        + ", ".join(f"{n} {t:.3f}" for n, t in zip(data.labels, thresholds, strict=True))
        + f"; validation micro-F1 {val_half['micro_f1'] or 0:.4f} at 0.5 -> {metrics_val['micro_f1'] or 0:.4f} tuned"
    )

    timed = data.test_texts or data.val_texts
    t0 = time.perf_counter()
    probs = student.predict_proba(timed, batch_size=bs)
    infer_s = time.perf_counter() - t0

    block: dict[str, Any] = {
        "thresholds": dict(zip(data.labels, thresholds, strict=True)),
        "tuned_on": "validation" if o.thresholds == "tuned" else "not tuned: --thresholds fixed (0.5)",
        "n_validation": len(val_true),
        "untuned": untuned,  # no positive validation row: left at 0.5
        "soft": o.soft,
        "validation": {  # against the teacher's labels, on the rows the thresholds were tuned on
            "micro_f1": metrics_val["micro_f1"], "macro_f1": metrics_val["macro_f1"],
            "micro_f1_at_0_5": val_half["micro_f1"], "macro_f1_at_0_5": val_half["macro_f1"],
        },
    }  # fmt: skip
    metrics = None
    agreement: float | None = None
    agreement_on = None
    if data.test_texts:
        sets = label_sets(probs, thresholds, data.labels)
        where = f"gold column {o.gold_col!r}"
        metrics = multilabel_metrics(data.test_gold, _cells(sets), labels, n_boot=1000, seed=o.seed, where=where)
        half = multilabel_metrics(data.test_gold, _cells(label_sets(probs, None, data.labels)), labels, n_boot=0)
        block["test_at_0_5"] = {"micro_f1": half["micro_f1"], "macro_f1": half["macro_f1"]}
        frame: dict[str, list[Any]] = {"text": data.test_texts, "gold": data.test_gold}
        if data.test_teacher is not None:
            frame["teacher"] = data.test_teacher
            have = [i for i, t in enumerate(data.test_teacher) if t]
            if have:
                gold_t = [data.test_gold[i] for i in have]
                teach = [data.test_teacher[i] for i in have]
                mine = [_cells(sets)[i] for i in have]
                # The teacher's own figures on the same gold rows: what the student is measured against.
                block["teacher_on_test"] = _headline(
                    multilabel_metrics(gold_t, teach, labels, n_boot=1000, seed=o.seed, where=where)
                )
                block["student_vs_teacher_micro_f1"] = multilabel_metrics(teach, mine, labels, n_boot=0)["micro_f1"]
                agreement = sum(a == b for a, b in zip(teach, mine, strict=True)) / len(have)
                agreement_on = "test"
        cols = multilabel_columns(probs, thresholds, data.labels)
        frame["pred_labels"], frame["pred_probs"] = cols["pred_labels"], cols["pred_probs"]
        write_table(pd.DataFrame(frame), out / "predictions.csv")
    if agreement is None and o.train_on == "teacher":
        agreement, agreement_on = metrics_val["subset_accuracy"], "validation"
    scaling = {"temperature": 1.0, "fitted_on": NOT_FITTED, "n": 0}
    return Evaluated(
        infer_s, len(timed), metrics, metrics_val, agreement, agreement_on, scaling, {"multi_label": block}
    )


def summary_lines(run: Any) -> list[str]:
    """The ``distill`` summary of a multi-label student (``run`` a DistillRun)."""
    ml = run.multi_label or {}
    m = run.metrics or {}
    lines = []
    if m.get("n_scored"):
        lines.append(
            f"gold test ({m['n_scored']} rows): micro-F1 {m['micro_f1']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
            f"sample-F1 {m['samples_f1']:.4f}  subset accuracy {m['subset_accuracy']:.4f}  "
            f"Hamming loss {m['hamming_loss']:.4f}"
        )
    t = ml.get("teacher_on_test")
    if t and t.get("n"):
        lines.append(
            f"teacher on the same {t['n']} rows: micro-F1 {t['micro_f1']:.4f}  macro-F1 {t['macro_f1']:.4f}  "
            f"Hamming loss {t['hamming_loss']:.4f}"
        )
    th = ml.get("thresholds") or {}
    if th:
        note = f" ({', '.join(ml['untuned'])} left at 0.5: no positive validation row)" if ml.get("untuned") else ""
        how = f"tuned on {ml.get('n_validation', 0)} validation rows" if ml.get("tuned_on") == "validation" else "fixed"
        lines.append(
            f"per-label thresholds ({how}; predict applies them): "
            + ", ".join(f"{k} {v:.3f}" for k, v in th.items())
            + note
        )
    return lines
