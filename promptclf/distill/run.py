"""Distillation: fine-tune a small local student on the labels an LLM produced.

``distill(input, out_dir, options)`` reads a labeled file (``promptclf label`` output),
trains on the teacher's ``ok`` labels (or the gold labels with ``train_on="gold"``, the
ceiling), holds out gold rows for evaluation (never trained on), and writes a run folder:
the adapter or model, tokenizer, ``labels.json``, ``options.json``, ``student.json``,
``train_log.jsonl``, ``predictions.csv`` (gold test rows) and ``run.json``.

Training is resumable: checkpoints go to ``OUT/checkpoints``; Ctrl-C saves one and stops,
and rerunning the same command continues from the last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..data.tables import cell_text, check_columns, read_table, stratified_split, write_table
from ..errors import ConfigError, InputError, PromptclfError, TrainingError
from ..labels import LabelSet
from ..runs import DistillRun, parse_run
from . import distributed
from .calibrate import teacher_accuracy, temperature_scaling
from .multilabel import is_multi_label, prepare_multilabel_data
from .options import DistillData, DistillOptions
from .ordinal import apply_scale, gold_figures, plan_scale, scale_of, validate_student
from .record import Evaluated, build_record

# Options that do not change what is trained; a rerun may change them and still resume.
_RESUME_NEUTRAL = {"threads", "hourly_price", "name", "eval_batch_size", "logging_steps", "recipe"}


log = distributed.main_logger(__name__)  # under torchrun, one copy of each message


# --- data --------------------------------------------------------------------------------------


def _clean(series: Any) -> list[str]:
    return [cell_text(v).strip() for v in series]


def prepare_data(input_path: str | Path, o: DistillOptions) -> DistillData:
    """Read the labeled file, pick trainable rows, split train/validation/test (seeded, stratified)."""
    if is_multi_label(input_path, o):  # zero or more labels per text: its own rows, splits and targets
        return prepare_multilabel_data(input_path, o)
    df = read_table(input_path, split=o.split)
    src_col, src_opt = (
        (o.label_col, "--label-col") if o.train_on == "teacher" else (o.gold_col or "label", "--gold-col")
    )
    check_columns(df, [o.text_col], input_path, "--text-col")
    check_columns(df, [src_col], input_path, src_opt)
    teacher_col = o.fallback_col or o.label_col  # the LLM's own labels (with --fallback-col, label_col is a person's)
    if o.train_on == "teacher" and o.fallback_col:
        check_columns(df, [o.fallback_col], input_path, "--fallback-col")
    texts = [cell_text(v) for v in df[o.text_col]]
    y = _clean(df[src_col])
    teacher = _clean(df[teacher_col]) if teacher_col in df.columns else None
    status_ok = [True] * len(df)
    if o.status_col in df.columns:
        status_ok = [s.lower() == "ok" for s in _clean(df[o.status_col])]
    if teacher is not None:
        teacher = [t if ok else "" for t, ok in zip(teacher, status_ok, strict=True)]
    human = [False] * len(df)  # rows whose label a person gave: trusted whatever the LLM's status
    if o.train_on == "teacher":
        y, human = _person_labels(df, texts, y, o, input_path)
    has_text_label = [bool(t.strip()) and bool(lab) for t, lab in zip(texts, y, strict=True)]
    counts = {"input_rows": len(df)}
    if o.train_on == "teacher":
        trusted = [ok or h for ok, h in zip(status_ok, human, strict=True)]
        counts["not_ok"] = sum(1 for t in trusted if not t)
        usable = [u and t for u, t in zip(has_text_label, trusted, strict=True)]
        counts["no_label"] = sum(1 for u, t in zip(has_text_label, trusted, strict=True) if t and not u)
        if o.fallback_col or o.corrections:
            counts["corrected"] = sum(1 for u, h in zip(usable, human, strict=True) if u and h)
    else:
        usable = has_text_label
        counts["no_label"] = sum(1 for u in usable if not u)

    test_texts: list[str] = []
    test_gold: list[str] = []
    test_teacher: list[str] | None = None
    in_test = [False] * len(df)
    if o.eval_file:
        ev = read_table(o.eval_file, split=o.eval_split)
        check_columns(ev, [o.text_col], o.eval_file, "--text-col")
        check_columns(ev, [o.gold_col or "label"], o.eval_file, "--gold-col")
        ev_texts = [cell_text(v) for v in ev[o.text_col]]
        ev_gold = _clean(ev[o.gold_col or "label"])
        keep = [i for i, g in enumerate(ev_gold) if g and ev_texts[i].strip()]
        test_texts = [ev_texts[i] for i in keep]
        test_gold = [ev_gold[i] for i in keep]
        if teacher_col in ev.columns:
            ev_teacher = _clean(ev[teacher_col])
            if o.status_col in ev.columns:
                ev_status = _clean(ev[o.status_col])
                ev_teacher = [t if s.lower() == "ok" else "" for t, s in zip(ev_teacher, ev_status, strict=True)]
            test_teacher = [ev_teacher[i] for i in keep]
        # The same text in the eval file and the training file would leak: drop it from training.
        seen = set(test_texts)
        in_test = [t in seen for t in texts]
    elif o.gold_col and o.gold_col in df.columns and o.test_fraction > 0:
        gold = _clean(df[o.gold_col])
        cand = [i for i, g in enumerate(gold) if g and texts[i].strip()]
        _, test_pos = stratified_split([gold[i] for i in cand], o.test_fraction, seed=o.seed)
        test_idx = [cand[p] for p in test_pos]
        for i in test_idx:
            in_test[i] = True
        test_texts = [texts[i] for i in test_idx]
        test_gold = [gold[i] for i in test_idx]
        if teacher is not None:
            test_teacher = [teacher[i] for i in test_idx]
    counts["held_out_for_test"] = sum(1 for u, t in zip(usable, in_test, strict=True) if u and t)
    pool = [i for i, (u, t) in enumerate(zip(usable, in_test, strict=True)) if u and not t]
    if o.exclude:
        # Flagged rows (a review queue) are left out of training and validation; gold test rows stay.
        ex = read_table(o.exclude)
        check_columns(ex, [o.text_col], o.exclude, "--text-col")
        drop = {cell_text(v) for v in ex[o.text_col]}
        counts["excluded"] = sum(1 for i in pool if texts[i] in drop)
        pool = [i for i in pool if texts[i] not in drop]

    pool_y = [y[i] for i in pool]
    freq: dict[str, int] = {}
    for lab in pool_y:
        freq[lab] = freq.get(lab, 0) + 1
    where = (
        f"{input_path} ({src_col!r}{', status ok' if o.train_on == 'teacher' and o.status_col in df.columns else ''})"
    )
    if not freq:
        raise TrainingError(f"{where}: no rows to train on; {counts}")
    if len(freq) < 2:
        (only, n), *_ = freq.items()
        raise TrainingError(f"{where}: only one class ({only!r}, {n} rows) to train on; a classifier needs two or more")
    few = sorted(lab for lab, n in freq.items() if n < 2)
    if few:
        # A class that drops to one row (often after --exclude) is still trained: refusing would throw
        # away the whole run for one rare class. Its single row goes to training (stratified_split keeps
        # one training row per class), so validation cannot measure it.
        log.warning(
            f"{where}: class(es) {', '.join(repr(lab) for lab in few)} have one training row and no "
            "validation row: trained on it, but validation macro-F1 does not measure them; add rows to fix"
        )
    scale = plan_scale(input_path, o, freq, where)
    labels = scale.names if scale is not None else sorted(freq)
    lab_id = {lab: i for i, lab in enumerate(labels)}
    tr_pos, va_pos = stratified_split(pool_y, o.val_fraction, seed=o.seed + 1)
    if not va_pos:
        raise TrainingError(
            f"{where}: {len(pool)} training rows are too few for a validation split at --val-fraction "
            f"{o.val_fraction}; add rows or raise --val-fraction"
        )
    counts.update(train_rows=len(tr_pos), val_rows=len(va_pos), test_rows=len(test_texts))
    train_soft = None
    if o.soft:
        soft = _soft_targets(df, [pool[p] for p in tr_pos], human, labels, o, input_path)
        train_soft = soft
        counts["soft_rows"] = sum(1 for v in soft if v is not None)
    teacher_confidence = None
    if o.train_on == "teacher" and "pred_prob" in df.columns:  # the LLM's confidence, for temperature scaling
        import pandas as pd

        conf = pd.to_numeric(df["pred_prob"].iloc[[pool[p] for p in tr_pos]], errors="coerce")
        conf = conf[(conf >= 0) & (conf <= 1)]
        teacher_confidence = float(conf.mean()) if len(conf) else None
    data = DistillData(
        labels=labels,
        train_texts=[texts[pool[p]] for p in tr_pos],
        train_y=[lab_id[pool_y[p]] for p in tr_pos],
        val_texts=[texts[pool[p]] for p in va_pos],
        val_y=[lab_id[pool_y[p]] for p in va_pos],
        test_texts=test_texts,
        test_gold=test_gold,
        test_teacher=test_teacher,
        train_soft=train_soft,
        teacher_confidence=teacher_confidence,
        counts=counts,
    )
    return apply_scale(data, scale, o)


def _person_labels(
    df: Any, texts: list[str], y: list[str], o: DistillOptions, input_path: str | Path
) -> tuple[list[str], list[bool]]:
    """Labels a person gave, over the LLM's: ``--label-col X --fallback-col pred_label`` and ``--corrections``.

    Returns the labels to train on and, per row, whether it is a person's label.
    """
    human = [False] * len(y)
    if o.fallback_col:
        fallback = _clean(df[o.fallback_col])
        human = [bool(v) for v in y]
        y = [v or f for v, f in zip(y, fallback, strict=True)]
    elif o.label_col != "pred_label" and "pred_label" in df.columns and sum(map(bool, y)) < len(y) / 2:
        log.warning(
            f"--label-col {o.label_col} is empty on {sum(not v for v in y)} of {len(y)} rows, which are "
            "not trained on; pass --fallback-col pred_label to use the LLM label there"
        )
    if o.corrections:
        cf = read_table(o.corrections)
        check_columns(cf, [o.text_col, "corrected"], o.corrections, "--text-col (a review queue has 'corrected')")
        canonical = {lab.lower(): lab for lab in y if lab}  # "Sports" typed by a person → the label "sports"
        fixes: dict[str, str] = {}
        for t, c in zip(cf[o.text_col], cf["corrected"], strict=True):
            c = cell_text(c).strip()
            if c:
                fixes[cell_text(t)] = canonical.get(c.lower(), c)
        y = list(y)
        matched: set[str] = set()
        for i, t in enumerate(texts):
            if t in fixes:
                y[i], human[i] = fixes[t], True
                matched.add(t)
        log.info(f"{o.corrections}: {len(fixes)} corrected labels, on {sum(human)} rows")
        if len(matched) < len(fixes):
            log.warning(f"{len(fixes) - len(matched)} corrections match no row of {input_path} (matched by text)")
    return y, human


def _soft_targets(
    df: Any, rows: list[int], human: list[bool], labels: list[str], o: DistillOptions, input_path: str | Path
) -> list[list[float] | None]:
    """The teacher's distribution over ``labels`` per row (renormalised), or None: no distribution, or a person's label.

    Mass on labels with no training rows is dropped; labels a provider listed no mass for are 0.
    """
    from ..label.confidence import parse_pred_probs

    check_columns(df, [o.probs_col], input_path, "--probs-col (label with a provider that gives pred_probs)")
    out: list[list[float] | None] = []
    for i in rows:
        probs = None if human[i] else parse_pred_probs(df[o.probs_col].iat[i], f"{input_path} row {i + 2}")
        vec = [probs.get(lab, 0.0) for lab in labels] if probs else None
        total = sum(vec) if vec else 0.0
        out.append([v / total for v in vec] if vec and total > 0 else None)
    return out


# --- metrics -----------------------------------------------------------------------------------


def _evaluate(
    gold: list[str], pred: list[str], labels: list[str], confidence: list[float] | None = None
) -> dict[str, Any]:
    """Metrics over the student's labels plus any gold label it never saw in training; with
    ``confidence`` (the student's calibrated probability of its label) their calibration too."""
    from ..eval.metrics import evaluate

    all_labels = list(labels) + sorted({g for g in gold if g and g not in labels})
    return evaluate(gold, pred, all_labels, status=None, confidence=confidence)


# --- the run -----------------------------------------------------------------------------------


def _tree_levels(
    input_path: str,
    metrics: dict[str, Any] | None,
    test_gold: list[str],
    preds: list[tuple[str, float]],
    metrics_val: dict[str, Any],
    val_true: list[str],
    val_pred: list[str],
) -> None:
    """A teacher that labelled with a label tree (its ``labels.json`` beside the input): the student's
    classes are the leaves (paths), so its accuracy at every level follows from its leaf's path."""
    from ..eval.hierarchy import level_metrics
    from ..eval.metrics import labels_beside

    tree = labels_beside(input_path)
    if tree is None or tree.tree is None:
        return
    if metrics is not None:
        metrics["levels"] = level_metrics(test_gold, [lab for lab, _ in preds], tree)
    metrics_val["levels"] = level_metrics(val_true, val_pred, tree)


def _same_options(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    keys = (set(saved) | set(now)) - _RESUME_NEUTRAL
    # An option a folder's options.json predates (added to DistillOptions later) had its default then.
    defaults = {k: f.default for k, f in DistillOptions.model_fields.items()}
    return sorted(k for k in keys if saved.get(k, defaults.get(k)) != now.get(k))


def distill(input_path: str | Path, out_dir: str | Path, options: DistillOptions, restart: bool = False) -> DistillRun:
    """Train a student on ``input_path`` into ``out_dir`` and return its run record (``run.json``).

    A finished run folder is returned as is (pass ``restart=True`` to train again); an
    unfinished one with the same options resumes from its last checkpoint.

    Under ``torchrun`` every rank calls this: rank 0 checks and writes the run folder, every rank
    prepares the same data and trains one DDP replica, rank 0 evaluates and writes ``run.json``
    while the others wait, and every rank returns it.
    """
    out = Path(out_dir)
    distributed.setup()
    # Rank 0 alone looks at (and, with --restart, clears) the folder; the others follow its verdict,
    # so that no rank reads a folder another is deleting, and an error stops every rank alike.
    verdict = distributed.broadcast(_check_folder(out, options, restart) if distributed.is_main() else None)
    if verdict is not None:
        distributed.teardown()
        if isinstance(verdict, PromptclfError):
            raise verdict
        return _record(verdict, out)

    data = prepare_data(input_path, options)
    _same_data_on_every_rank(data)
    log.info(
        f"{len(data.train_texts)} train / {len(data.val_texts)} validation / {len(data.test_texts)} gold test rows, "
        f"{len(data.labels)} labels; skipped: {data.counts.get('not_ok', 0)} not ok, "
        f"{data.counts['no_label']} without label or text"
    )
    extra = {k: data.counts[k] for k in ("corrected", "excluded", "soft_rows") if k in data.counts}
    if extra:
        log.info(
            ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in extra.items())
            + (f" (T={options.temperature:g})" if options.soft else "")
        )
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        (out / "options.json").write_text(json.dumps(options.model_dump(mode="json"), indent=2) + "\n")
        # An ordinal student's labels.json gives each label its score, as a label run's does.
        labels_json: Any = scale_of(data).to_dict() if data.scores is not None else data.labels
        if data.multi_label:  # as a multi-label label run saves its set, so eval/review/report read it the same way
            labels_json = LabelSet.from_names(data.labels, multi_label=True).file_data()
        (out / "labels.json").write_text(json.dumps(labels_json, indent=2) + "\n")
    distributed.barrier()  # the folder exists before any rank trains into it

    from .train import train

    result = train(data, options, out)
    run = finish_run(out, data, options, result, str(input_path)) if distributed.is_main() else None
    distributed.barrier()  # the other ranks wait for run.json, and leave together
    if run is None:
        run = json.loads((out / "run.json").read_text())
    distributed.teardown()
    return _record(run, out)


def _record(run: dict[str, Any], out: Path) -> DistillRun:
    """The typed record of ``run`` (the dict ``run.json`` holds), its folder attached."""
    rec = parse_run(run, str(out / "run.json"))
    if not isinstance(rec, DistillRun):
        raise InputError(f"{out / 'run.json'}: not a distill run (kind {rec.kind!r})")
    rec.run_dir = out
    return rec


def _same_data_on_every_rank(data: DistillData) -> None:
    """Every rank must train on the same split; a different file or seed on one rank would silently mix runs."""
    if not distributed.is_distributed():
        return
    import hashlib

    fields = (data.labels, data.train_texts, data.train_y, data.val_texts, data.val_y, data.train_soft)
    h = hashlib.sha256(json.dumps([*fields, data.train_targets]).encode()).hexdigest()
    seen = distributed.all_gather(h)
    if len(set(seen)) > 1:
        raise TrainingError(
            f"the ranks prepared different training data (fingerprints {', '.join(x[:8] for x in seen)}): "
            "every rank must read the same input file with the same options"
        )


def _check_folder(out: Path, options: DistillOptions, restart: bool) -> dict[str, Any] | PromptclfError | None:
    """The finished run to return, the error to raise, or None to train (clearing the folder on restart)."""
    try:
        return _check_folder_or_raise(out, options, restart)
    except PromptclfError as exc:
        return exc


def _check_folder_or_raise(out: Path, options: DistillOptions, restart: bool) -> dict[str, Any] | None:
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: exists and is not a folder")
    opts = options.model_dump(mode="json")
    saved_path = out / "options.json"
    if restart and out.exists():
        for name in ("checkpoints", "run.json", "train_time.json", "train_log.jsonl"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    elif saved_path.exists() and ((out / "checkpoints").is_dir() or (out / "run.json").exists()):
        # Only a folder with training progress is protected; one that failed before its first
        # checkpoint (say, QLoRA refused without a GPU) just takes the new options.
        diff = _same_options(json.loads(saved_path.read_text()), opts)
        if diff:
            raise ConfigError(
                f"{out} holds a run with different options ({', '.join(diff)}); "
                "use another -o folder, or --restart to discard it and train anew"
            )
        if (out / "run.json").exists():
            log.info(f"{out} is already finished; returning its run.json (--restart trains again)")
            return json.loads((out / "run.json").read_text())
    return None


def finish_run(out: Path, data: DistillData, o: DistillOptions, tr: dict[str, Any], input_path: str) -> dict[str, Any]:
    """Reload the saved student, evaluate it, write predictions.csv and run.json."""
    from ..predict.student import Student

    student = Student.load(out)
    if data.multi_label:
        from .multilabel import evaluate_multilabel

        ev = evaluate_multilabel(student, data, o, tr, out)
    else:
        ev = _evaluate_single_label(student, data, o, tr, out, input_path)
    run = build_record(out, data, o, tr, input_path, student, ev)
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    ckpt = out / "checkpoints"
    if ckpt.exists():  # the finished student is saved at the top level; checkpoints are only for resuming
        shutil.rmtree(ckpt, ignore_errors=True)
    return run


def _evaluate_single_label(
    student: Any, data: DistillData, o: DistillOptions, tr: dict[str, Any], out: Path, input_path: str
) -> Evaluated:
    """Validation figures, the temperature, the gold test metrics and predictions.csv of a single-label student."""
    import pandas as pd

    from ..eval.calibration import apply_temperature
    from ..eval.cascade import VALIDATION_FILE, validation_frame

    ordinal = validate_student(student, data, o.eval_batch_size) if data.scores is not None else None
    val_probs = student.predict_proba(data.val_texts, batch_size=o.eval_batch_size)
    val_pred = [data.labels[j] for j in val_probs.argmax(-1)]
    mem = tr.pop("val_probs_in_memory", None)
    if mem is not None:
        # Same inputs through the trained model and the reloaded one: a sanity check on saving.
        tr["reload_max_abs_diff"] = float(abs(mem - val_probs).max()) if len(val_probs) else 0.0
        tr["reload_same_labels"] = bool((mem.argmax(-1) == val_probs.argmax(-1)).all())
    val_true = [data.labels[i] for i in data.val_y]
    metrics_val = _evaluate(val_true, val_pred, data.labels)
    scaling: dict[str, Any] = (
        {"temperature": 1.0, "fitted_on": "not fitted: the regression head's spread is sigma", "n": 0}
        if data.ordinal_head == "regression"
        else temperature_scaling(val_probs, data.val_y, *teacher_accuracy(data, o))
    )
    student.temperature = scaling["temperature"]  # predictions.csv and every later predict use it
    # What `label --student --threshold auto` measures the cascade on: texts, labels trained on, calibrated probs.
    calibrated = apply_temperature(val_probs, scaling["temperature"]) if len(data.val_y) else val_probs
    write_table(
        validation_frame(data.val_texts, data.labels, data.val_y, calibrated, o.train_on), out / VALIDATION_FILE
    )

    timed = data.test_texts or data.val_texts
    t0 = time.perf_counter()
    preds = student.predict(timed, batch_size=o.eval_batch_size)
    infer_s = time.perf_counter() - t0

    metrics = None
    agreement: float | None = None
    agreement_on = None
    if data.test_texts:
        test_pred = [lab for lab, _ in preds]
        metrics = _evaluate(data.test_gold, test_pred, data.labels, confidence=[float(p) for _, p in preds])
        frame: dict[str, list[Any]] = {"text": data.test_texts, "gold": data.test_gold}
        if data.test_teacher is not None:
            frame["teacher"] = data.test_teacher
            pairs = [(t, p) for t, p in zip(data.test_teacher, test_pred, strict=True) if t]
            if pairs:
                agreement = sum(t == p for t, p in pairs) / len(pairs)
                agreement_on = "test"
        frame["pred"] = test_pred
        frame["prob"] = [round(p, 6) for _, p in preds]
        if ordinal is not None:
            test_score, ordinal["test"] = gold_figures(student, data, test_pred, o.eval_batch_size)
            frame["pred_score"] = [round(float(v), 6) for v in test_score]
        write_table(pd.DataFrame(frame), out / "predictions.csv")
    if agreement is None and o.train_on == "teacher":
        agreement, agreement_on = metrics_val["accuracy"], "validation"
    _tree_levels(input_path, metrics, data.test_gold, preds, metrics_val, val_true, val_pred)
    return Evaluated(infer_s, len(timed), metrics, metrics_val, agreement, agreement_on, scaling, {"ordinal": ordinal})
