"""The training loop of :mod:`promptclf.distill.run`: HF Trainer with LoRA / QLoRA / full fine-tuning.

Kept apart from the data and run-folder logic so that importing :mod:`promptclf.distill.run`
(options, recipes) never pulls in torch.
"""

from __future__ import annotations

import json
import resource
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, cast

from ..errors import Interrupted, TrainingError, require
from . import distributed
from .models import (
    PromptParts,
    StudentSpec,
    default_targets,
    device_and_dtype,
    encode_cls,
    encode_lm_train,
    is_causal,
    load_base,
    load_config,
    load_tokenizer,
    quiet_transformers,
    resolve_student,
)
from .options import DistillData, DistillOptions, estimate_steps
from .soft import SoftCollator, soft_dataset, soft_trainer_class

log = distributed.main_logger(__name__)  # under torchrun, one copy of each message


def _fmt_s(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _macro_f1(y_true: list[int], y_pred: list[int], n_labels: int) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "macro_f1": float(f1_score(y_true, y_pred, labels=list(range(n_labels)), average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }


def ordinal_eval(outputs: Any, label_ids: Any, scores: list[float], regression: bool) -> dict[str, float]:
    """Validation of an ordinal student: macro-F1 and accuracy of its labels, MAE and within-one of its scores.

    Regression: ``outputs`` are scores and ``label_ids`` the target scores (the label is the nearest);
    classification: ``outputs`` are logits and ``label_ids`` label ids (the score is the expected one)."""
    import numpy as np

    from .ordinal import expected_scores, nearest_index, validation_figures

    out = np.asarray(outputs, dtype=np.float64)
    if regression:
        score = out.reshape(-1)
        pred, true = nearest_index(score, scores), nearest_index(np.asarray(label_ids), scores)
    else:
        z = np.exp(out - out.max(-1, keepdims=True))
        score = expected_scores(z / z.sum(-1, keepdims=True), scores)
        pred, true = out.argmax(-1), np.asarray(label_ids, dtype=int)
    m = _macro_f1(true.tolist(), pred.tolist(), len(scores))
    fig = validation_figures(score, pred.tolist(), true.tolist(), scores)
    return {**m, "mae": fig["mae"], "within_one": fig["within_one"]}


def _callbacks(out: Path, total_steps: int, stop_flag: threading.Event, times: dict[str, float]):
    """Progress on stderr + train_log.jsonl, cumulative training time per checkpoint, Ctrl-C → save and stop.

    Under torchrun only rank 0 writes and prints; Ctrl-C on any rank stops every rank at the same step.
    """
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            self.t0 = time.perf_counter()
            self.step0 = state.global_step
            if self.step0:
                log.info(f"resumed at step {self.step0}/{state.max_steps}")

        def elapsed(self) -> float:
            return times["before"] + time.perf_counter() - self.t0

        def on_log(self, args, state, control, logs=None, **kw):  # type: ignore[no-untyped-def]
            if not state.is_world_process_zero:
                return
            logs = dict(logs or {})
            logs.update(step=state.global_step, epoch=round(state.epoch or 0.0, 3), elapsed_s=round(self.elapsed(), 1))
            with open(out / "train_log.jsonl", "a") as f:
                f.write(json.dumps(logs) + "\n")
            done = state.global_step - self.step0
            rate = (time.perf_counter() - self.t0) / done if done else 0.0
            eta = rate * (state.max_steps - state.global_step)
            if "loss" in logs:
                log.info(
                    f"step {state.global_step}/{state.max_steps} epoch {logs['epoch']:.2f} "
                    f"loss {logs['loss']:.4f} elapsed {_fmt_s(self.elapsed())} eta {_fmt_s(eta)}"
                )
            elif "eval_macro_f1" in logs:
                ordinal = (
                    f" MAE {logs['eval_mae']:.4f} within-one {logs.get('eval_within_one', float('nan')):.4f}"
                    if "eval_mae" in logs
                    else ""
                )
                log.info(
                    f"validation at step {state.global_step}: macro-F1 {logs['eval_macro_f1']:.4f} "
                    f"accuracy {logs.get('eval_accuracy', float('nan')):.4f}{ordinal}"
                )

        def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            # Every rank must stop after the same step, or the others would wait forever in the next
            # gradient all-reduce: one small all-reduce per step when there are several.
            if distributed.any_rank(stop_flag.is_set()):
                stop_flag.set()
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_save(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            # Remember cumulative training time per checkpoint, so a resumed run reports the total.
            if not state.is_world_process_zero:
                return
            path = out / "train_time.json"
            saved = json.loads(path.read_text()) if path.exists() else {}
            saved[str(state.global_step)] = round(self.elapsed(), 3)
            path.write_text(json.dumps(saved))

    return [Progress()]


class _SigintToFlag:
    """First Ctrl-C: finish the step, save a checkpoint, stop. Second Ctrl-C: stop now."""

    def __init__(self, flag: threading.Event):
        self.flag = flag
        self.old: Any = None

    def __enter__(self) -> _SigintToFlag:
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):  # type: ignore[no-untyped-def]
        # Under torchrun the workers sit in sessions of their own: a Ctrl-C reaches torchrun, which
        # forwards one SIGINT to each and waits 30 s before killing them; the ranks then agree on
        # the step to stop after (see Progress.on_step_end).
        if self.flag.is_set():
            raise KeyboardInterrupt
        self.flag.set()
        log.info("Ctrl-C: saving a checkpoint after this step (Ctrl-C again to abort without saving)")

    def __exit__(self, *exc: object) -> None:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is KiB on Linux: the whole process's peak resident memory
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was completely written (a kill mid-save leaves a partial one)."""
    if not folder.is_dir():
        return None
    cands = [p for p in folder.glob("checkpoint-*") if p.name.rsplit("-", 1)[-1].isdigit()]
    for p in sorted(cands, key=lambda p: int(p.name.rsplit("-", 1)[-1]), reverse=True):
        # trainer_state.json is written after the weights, optimizer and scheduler states
        if (p / "trainer_state.json").exists() and (p / "optimizer.pt").exists():
            return str(p)
        log.info(f"ignoring incomplete checkpoint {p}")
    return None


def build_trainable(
    o: DistillOptions, labels: list[str], data: DistillData | None = None
) -> tuple[Any, Any, StudentSpec, bool]:
    """Resolve the student, load tokenizer and base, wrap with LoRA/QLoRA → (model, tokenizer, spec, causal).

    ``data`` carries an ordinal scale (and the regression head's targets) when there is one."""
    import torch

    require("peft", "distill", "LoRA distillation") if o.method != "full" else None
    path = resolve_student(o.student)
    config = load_config(path)
    causal = is_causal(config)
    if o.head == "lm" and not causal:
        raise TrainingError(
            f"--head lm needs a causal LM; {o.student!r} is a {config.model_type} encoder: use --head cls"
        )
    device, _ = device_and_dtype()
    if o.method == "qlora" and device == "cpu":
        if not o.allow_cpu:
            raise TrainingError(
                "--method qlora needs a CUDA GPU (none found): 4-bit training on CPU is 10-100x slower. "
                "Use --method lora with a small student, or pass --allow-cpu to run it on CPU anyway"
            )
        log.info("warning: QLoRA on CPU (--allow-cpu): bitsandbytes NF4 with float32 compute; expect it to be slow")
    spec = StudentSpec(
        base=o.student,
        base_path=path,
        method=o.method,
        head=o.head,
        labels=labels,
        max_length=o.max_length,
        lm_prompt=o.lm_prompt,
        scores=data.scores if data is not None else None,
        ordinal_head=data.ordinal_head if data is not None else None,
        multi_label=data.multi_label if data is not None else False,
    )
    tok = load_tokenizer(path, causal)
    with quiet_transformers():
        torch.manual_seed(o.seed)  # the new head's initial weights
        model = load_base(spec, path, config, tok)
        if spec.regression and data is not None and data.train_score:
            _start_at_mean(model, sum(data.train_score) / len(data.train_score))
        return _wrap(model, tok, spec, causal, config, o)


def _start_at_mean(model: Any, mean: float) -> None:
    """A regression head starts at the mean target: its first steps learn the text, not the offset."""
    import torch

    head = getattr(model, "classifier", None) or getattr(model, "score", None)
    bias = getattr(head, "bias", None) if isinstance(head, torch.nn.Linear) else None
    if bias is not None:
        with torch.no_grad():
            bias.fill_(mean)


def _wrap(model: Any, tok: Any, spec: StudentSpec, causal: bool, config: Any, o: DistillOptions):
    """Gradient checkpointing, k-bit preparation and the LoRA adapter."""
    gc = o.gradient_checkpointing if o.gradient_checkpointing is not None else causal
    if o.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gc, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    elif gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if o.method == "lora":
            model.enable_input_require_grads()  # frozen embeddings + checkpointing need grads on the inputs
    if causal:
        model.config.use_cache = False
    if o.method in ("lora", "qlora"):
        from peft import LoraConfig, TaskType, get_peft_model

        targets = o.target_modules or default_targets(config)
        cfg = LoraConfig(
            task_type=TaskType.CAUSAL_LM if o.head == "lm" else TaskType.SEQ_CLS,
            r=o.lora_r,
            lora_alpha=o.lora_alpha,
            lora_dropout=o.lora_dropout,
            target_modules=targets,
            # SEQ_CLS already saves classifier/score; BERT's pooler feeds the head, so train it too.
            modules_to_save=["pooler"] if o.head == "cls" and config.model_type == "bert" else None,
        )
        try:
            model = get_peft_model(model, cfg)
        except ValueError as exc:
            raise TrainingError(f"LoRA target modules {targets} do not fit {config.model_type}: {exc}") from exc
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in model.parameters())
        log.info(f"LoRA r={o.lora_r} on {targets}: {n_train:,} trainable of {n_all:,} parameters")
    return model, tok, spec, causal


def _best_metric(data: DistillData, o: DistillOptions) -> str:
    """What picks the best checkpoint (and stops early): an ordinal student's validation MAE; a multi-label
    student's validation BCE loss, which needs no threshold (at 0.5 a rare label may never be predicted early on,
    leaving F1 at 0 for every checkpoint); else validation macro-F1."""
    if data.scores is not None and o.head == "cls":
        return "mae"
    return "loss" if data.multi_label else "macro_f1"


def train(data: DistillData, o: DistillOptions, out: Path) -> dict[str, Any]:
    """Fine-tune and save the student into ``out``; returns the ``train`` block of run.json."""
    import torch

    require("accelerate", "distill", "training with the HF Trainer")
    from transformers import (
        DataCollatorForSeq2Seq,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    if o.threads:
        torch.set_num_threads(o.threads)
    set_seed(o.seed)
    model, tok, spec, causal = build_trainable(o, data.labels, data)
    device, _ = device_and_dtype()

    dynamic = o.padding == "dynamic"
    pad: dict[str, Any] = {"padding": True} if dynamic else {"padding": "max_length", "max_length": o.max_length}
    if o.head == "lm":
        parts = PromptParts.build(tok, o.lm_prompt, data.labels)
        enc = encode_lm_train(tok, parts, data.train_texts, data.train_y, o.max_length)
        train_ds = [{k: enc[k][i] for k in enc} for i in range(len(data.train_texts))]
        collator = DataCollatorForSeq2Seq(tok, label_pad_token_id=-100, **pad)
        eval_ds = train_ds[:1]  # evaluation scores label words itself (see _LMTrainer.evaluate)
    else:
        enc = encode_cls(tok, data.train_texts, o.max_length)
        # The regression head's targets are scores (floats, MSE); every other head's are label ids.
        # The regression head's targets are scores (floats, MSE); a multi-label head's a float per label (BCE,
        # soft or 0/1); every other head's are label ids.
        train_y: list[Any] = data.train_score if spec.regression and data.train_score else data.train_y
        val_y: list[Any] = data.val_score if spec.regression and data.val_score else data.val_y
        if data.multi_label:
            train_y, val_y = data.train_targets or [], data.val_targets or []
        train_ds = [{"input_ids": enc["input_ids"][i], "labels": y} for i, y in enumerate(train_y)]
        venc = encode_cls(tok, data.val_texts, o.max_length)
        eval_ds = [{"input_ids": venc["input_ids"][i], "labels": y} for i, y in enumerate(val_y)]
        collator = DataCollatorWithPadding(tok, **pad)  # type: ignore[assignment]
        parts = None
        if data.train_soft is not None:  # --soft: teacher distributions where rows have one (distill_soft)
            train_ds = soft_dataset(enc["input_ids"], data.train_y, data.train_soft, len(data.labels))
            collator = SoftCollator(collator)  # type: ignore[assignment]

    world = distributed.world_size()
    total = estimate_steps(len(train_ds), o, world)
    strategy = "steps" if o.eval_steps else "epoch"
    on_gpu = device == "cuda"
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=o.epochs,
        max_steps=o.max_steps or -1,
        per_device_train_batch_size=o.batch_size,
        per_device_eval_batch_size=o.eval_batch_size,
        gradient_accumulation_steps=o.grad_accum,
        learning_rate=o.lr(),
        weight_decay=o.weight_decay,
        warmup_steps=int(round(o.warmup_ratio * total)),
        lr_scheduler_type="linear",
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=o.eval_steps,
        save_steps=o.eval_steps,  # type: ignore[arg-type]
        save_total_limit=2,
        load_best_model_at_end=True,
        # An ordinal student keeps the checkpoint with the smallest validation MAE (both heads alike).
        metric_for_best_model=_best_metric(data, o),
        greater_is_better=_best_metric(data, o) == "macro_f1",
        logging_steps=o.logging_steps,
        report_to=[],
        disable_tqdm=True,
        train_sampling_strategy="group_by_length" if dynamic else "random",
        seed=o.seed,
        data_seed=o.seed,
        use_cpu=not on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        label_names=["labels"],
        dataloader_num_workers=0,
        save_only_model=False,
        remove_unused_columns=data.train_soft is None,  # keep soft_targets/soft_mask for the soft loss
        # torchrun: gloo on CPU, NCCL on GPUs. Every trainable parameter (LoRA, head, pooler) takes part
        # in each forward pass, so DDP need not search for unused ones (which breaks checkpointing).
        ddp_backend=distributed.backend() if world > 1 else None,
        ddp_find_unused_parameters=False if world > 1 else None,
    )

    def compute_metrics(ev: Any) -> dict[str, float]:
        logits = ev.predictions[0] if isinstance(ev.predictions, tuple) else ev.predictions
        if data.scores is not None:
            return ordinal_eval(logits, ev.label_ids, data.scores, spec.regression)
        if data.multi_label:
            from .multilabel import validation_metrics

            return validation_metrics(logits, ev.label_ids)
        return _macro_f1(list(ev.label_ids), list(logits.argmax(-1)), len(data.labels))

    stop = threading.Event()
    times_path = out / "train_time.json"
    # Rank 0 picks the checkpoint, so that every rank resumes from the same step (another rank could
    # otherwise see a checkpoint rank 0 was still writing when it was killed, or none at all).
    last = distributed.broadcast(_last_complete_checkpoint(out / "checkpoints") if distributed.is_main() else None)
    before = 0.0
    if last:
        step = last.rsplit("-", 1)[-1]
        before = float(json.loads(times_path.read_text()).get(step, 0.0)) if times_path.exists() else 0.0
        log.info(f"resuming from {last}")
    times = {"before": before}
    callbacks = _callbacks(out, total, stop, times)
    if o.patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=o.patience))

    trainer_cls: type[Trainer] = Trainer
    extra: dict[str, Any] = {}
    if o.head == "lm":
        trainer_cls = _lm_trainer_class()
        extra = {"val_texts": data.val_texts, "val_y": data.val_y, "parts": parts, "spec": spec}
    else:
        extra = {"compute_metrics": compute_metrics}
        if data.train_soft is not None:
            trainer_cls = soft_trainer_class(o.temperature)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=tok,
        callbacks=callbacks,
        **extra,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout; Progress uses stderr
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ranks = (
        f" x {world} processes (batch {o.batch_size}/process, {o.batch_size * o.grad_accum * world} per step)"
        if world > 1
        else ""
    )
    log.info(f"training {spec.base} ({o.method}, {o.head} head) on {device}{ranks}: {total} steps, lr {o.lr():g}")
    t0 = time.perf_counter()
    step0 = 0
    with _SigintToFlag(stop), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # transformers v6 renames, not ours to fix
        if last:
            step0 = int(last.rsplit("-", 1)[-1])
        trainer.train(resume_from_checkpoint=last)
    session_s = time.perf_counter() - t0
    state = trainer.state
    distributed.barrier()  # every rank has loaded the best checkpoint before rank 0 saves and later deletes them
    if stop.is_set():
        raise Interrupted(
            f"training stopped at step {state.global_step}/{state.max_steps}; checkpoint saved in "
            f"{out / 'checkpoints'}; rerun the same command to resume"
        )
    peak = _peak_memory_mb(device)
    examples = (state.global_step - step0) * o.batch_size * o.grad_accum * world
    if not distributed.is_main():  # rank 0 saves the student (every replica holds the same weights)
        del trainer, model
        return {}
    model = cast(Any, trainer.model)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "student.json").write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    losses = [r["loss"] for r in state.log_history if "loss" in r]
    result = {
        "time_s": round(before + session_s, 2),
        "session_time_s": round(session_s, 2),
        "resumed_from_step": step0 or None,
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 3),
        "best_checkpoint_step": int(state.best_model_checkpoint.rsplit("-", 1)[-1])
        if state.best_model_checkpoint
        else None,
        # The metric the best checkpoint was picked by: MAE for an ordinal student, else macro-F1.
        "best_val_macro_f1": state.best_metric if args.metric_for_best_model == "macro_f1" else None,
        "best_val_mae": state.best_metric if args.metric_for_best_model == "mae" else None,
        "best_val_loss": state.best_metric if args.metric_for_best_model == "loss" else None,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "examples_per_s": round(examples / session_s, 2) if session_s > 0 else None,
        "peak_memory_mb": round(peak, 1),
        "device": device,
        "threads": torch.get_num_threads(),
        "processes": world,
        "effective_batch_size": o.batch_size * o.grad_accum * world,
        "n_train": len(data.train_texts),
        "n_val": len(data.val_texts),
    }
    # Predictions of the in-memory model, to check that the saved student reloads to the same outputs.
    from ..predict.student import Student

    model.eval()
    result["val_probs_in_memory"] = Student(model, tok, spec, device).predict_proba(
        data.val_texts, batch_size=o.eval_batch_size
    )
    del trainer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def _lm_trainer_class() -> type:
    """A Trainer whose evaluation scores each label word on the validation texts (LM head)."""
    import torch
    from transformers import Trainer

    from .models import score_lm

    class LMTrainer(Trainer):
        def __init__(self, *args: Any, val_texts: list[str], val_y: list[int], parts: Any, spec: Any, **kw: Any):
            super().__init__(*args, **kw)
            self._val = (val_texts, val_y, parts, spec)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):  # type: ignore[no-untyped-def]
            texts, y, parts, spec = self._val
            assert self.model is not None
            was_training = self.model.training
            self.model.eval()
            preds: list[int] = []
            bs = max(1, self.args.per_device_eval_batch_size // max(1, len(parts.answers)))
            # Under torchrun each rank scores every world-th text and all ranks gather the lot, so that
            # every rank computes the same metric (and early stopping stops them all at the same step).
            rank, world = distributed.rank(), distributed.world_size()
            mine = list(range(rank, len(texts), world))
            with torch.inference_mode():
                for i in range(0, len(mine), bs):
                    chunk = [texts[j] for j in mine[i : i + bs]]
                    scores = score_lm(self.model, self.processing_class, parts, chunk, spec.max_length)
                    preds.extend(scores.argmax(-1).tolist())
            if world > 1:
                merged = [0] * len(texts)
                for r, part in enumerate(distributed.all_gather(preds)):
                    for j, pred in zip(range(r, len(texts), world), part, strict=True):
                        merged[j] = pred
                preds = merged
            if was_training:
                self.model.train()
            m = _macro_f1(y, preds, len(spec.labels))
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in m.items()}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    return LMTrainer
