"""Student models: resolve a student name, build it for training, load it back for prediction.

Shared by :mod:`promptclf.distill.run` (training) and :mod:`promptclf.predict.student` (inference), so
a model is built the same way in both places: the same 4-bit config, the same prompt for
the LM head, the same tokenisation and truncation.

Three shapes of student:

* ``cls`` head on an encoder (MiniLM, BERT, ...) or a causal LM: ``AutoModelForSequenceClassification``
  with a new head and a label map; LoRA (head trainable via ``modules_to_save``) or full fine-tuning.
* ``cls`` head with QLoRA: the same on a 4-bit NF4 base.
* ``lm`` head (causal LMs only): keep the LM head, train the model to answer with the label
  word after a prompt, predict by scoring each label's log-likelihood. Always a valid label.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, TrainingError, require
from ..providers.local.packing import answer_logprobs, fed_tokens, packed_layout
from .distributed import local_rank

MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")

# LoRA target modules by model family: attention projections (BERT: query/value is the
# usual small-and-good choice; decoder LMs: all four attention projections).
DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta-v2": ["query_proj", "value_proj"],
    "mpnet": ["q", "v"],
    "modernbert": ["Wqkv"],
}
DECODER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]

DEFAULT_LM_PROMPT = "Classify the text into one of these labels: {labels}.\n\nText: {text}\n\nLabel:"


# bitsandbytes on an AVX512-BF16 CPU tries to fetch an optional faster kernel from the hub and
# logs a warning when it cannot; the built-in fallback is used and is correct.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence expected loading chatter: the 'newly initialized head' report, progress bars, deprecations."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def resolve_student(spec: str | None) -> str:
    """A local folder for ``spec`` (path, hub id in the local cache, or the bundled MiniLM).

    Hub ids not in the local cache are returned as-is when downloads are allowed, and
    refused with the reason when ``HF_HUB_OFFLINE`` is set.
    """
    if spec is None or spec.strip().lower() in MINILM_ALIASES:
        from ..resources import minilm_path

        return str(minilm_path())
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise InputError(f"student {spec!r}: the folder has no config.json, so it is not a transformers model")
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or os.sep + os.sep in spec:
        raise InputError(f"student {spec!r}: no such folder")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(spec, local_files_only=True)
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        raise InputError(
            f"student {spec!r} could not be found locally (not a folder, not in the Hugging Face cache); "
            "downloading it from the hub needs network and HF_HUB_OFFLINE is set. "
            "Pass a local model folder with --student, or unset HF_HUB_OFFLINE on a machine with network."
        )
    return spec


def load_config(path: str) -> Any:
    """The model config, with a clear error when it cannot be read or downloaded."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"student {path!r} could not be found locally or downloaded from the hub "
            f"(hub downloads need network): {str(exc).splitlines()[0]}"
        ) from exc


def is_causal(config: Any) -> bool:
    """True for decoder-only LMs (Llama, Qwen, Mistral, Gemma, SmolLM, GPT-2, ...)."""
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return True
    if config.model_type in DEFAULT_TARGETS:
        return False
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    # BERT-like models also have a causal-LM class; an encoder is one with a masked-LM class.
    mt = config.model_type
    return mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def default_targets(config: Any) -> list[str]:
    """LoRA target modules for this family (attention projections)."""
    if config.model_type in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[config.model_type]
    return DECODER_TARGETS


def device_and_dtype() -> tuple[str, Any]:
    """``("cuda", bfloat16)`` on a GPU, ``("cpu", float32)`` otherwise (bnb NF4 on CPU computes in float32)."""
    import torch

    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return "cuda", dtype
    return "cpu", torch.float32


@dataclass
class StudentSpec:
    """What it takes to rebuild a student: saved as ``student.json`` in the run folder."""

    base: str  # as given (``minilm``, a path or a hub id); resolved again on load
    base_path: str  # where it was found at training time
    method: str  # lora | full | qlora
    head: str  # cls | lm
    labels: list[str]
    max_length: int
    lm_prompt: str = DEFAULT_LM_PROMPT
    # Ordinal students: each label's value on the scale, and the head (classification | regression);
    # None for a plain label set (and for student folders from before ordinal students).
    scores: list[float] | None = None
    ordinal_head: str | None = None
    # Multi-label students: a sigmoid per label (BCE), and the per-label thresholds tuned on validation
    # (written once training is done; None until then, and for single-label students).
    multi_label: bool = False
    thresholds: list[float] | None = None

    @property
    def regression(self) -> bool:
        """One output trained on the score (``--ordinal-head regression``) instead of one per label."""
        return self.ordinal_head == "regression"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def bnb_config(head: str) -> Any:
    """4-bit NF4 with double quantisation; compute in bfloat16 on GPU, float32 on CPU."""
    require("bitsandbytes", "distill", "QLoRA")
    from transformers import BitsAndBytesConfig

    _, dtype = device_and_dtype()
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        # The new classification head must stay a trainable full-precision layer.
        llm_int8_skip_modules=["score", "classifier"] if head == "cls" else None,
    )


def load_tokenizer(path: str, causal: bool) -> Any:
    """The student's tokenizer; causal LMs get ``pad = eos`` when they have no pad token."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # transformers, tokenizers, sentencepiece: each fails its own way
        raise InputError(
            f"student {path!r}: cannot load its tokenizer: {' '.join(str(exc).split())[:300]} "
            f"({type(exc).__name__}); the folder needs the tokenizer files (tokenizer.json or tokenizer.model, "
            "tokenizer_config.json) next to config.json"
        ) from exc
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise TrainingError(f"student {path!r}: the tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    if causal:
        tok.padding_side = "right"
    return tok


def load_base(spec: StudentSpec, path: str, config: Any, tokenizer: Any) -> Any:
    """The base model with a fresh head (cls) or its LM head (lm), quantised for QLoRA."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    device, dtype = device_and_dtype()
    kwargs: dict[str, Any] = {}
    if spec.method == "qlora":
        kwargs["quantization_config"] = bnb_config(spec.head)
        # Under torchrun each rank loads its own 4-bit copy onto its own GPU (LOCAL_RANK), not all onto GPU 0.
        kwargs["device_map"] = {"": local_rank() if device == "cuda" else device}
        kwargs["dtype"] = dtype
    try:
        if spec.head == "lm":
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        elif spec.regression:  # one output, MSE on the score (problem_type regression)
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=1, problem_type="regression", id2label={0: "score"}, label2id={"score": 0}, **kwargs
            )
        else:
            if spec.multi_label:  # independent sigmoids, BCE-with-logits loss (transformers' multi-label type)
                kwargs["problem_type"] = "multi_label_classification"
            model = AutoModelForSequenceClassification.from_pretrained(
                path,
                num_labels=len(spec.labels),
                id2label=dict(enumerate(spec.labels)),
                label2id={lab: i for i, lab in enumerate(spec.labels)},
                **kwargs,
            )
    except (OSError, ValueError) as exc:
        raise InputError(f"student {spec.base!r}: could not load the model from {path}: {exc}") from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


# --- LM-head prompt: encode for training and for scoring ----------------------------------------


@dataclass
class PromptParts:
    """Token ids around the item text, and each label's answer ids (label word + eos)."""

    prefix: list[int]
    suffix: list[int]
    answers: list[list[int]]

    @classmethod
    def build(cls, tokenizer: Any, template: str, labels: list[str]) -> PromptParts:
        if "{text}" not in template:
            raise InputError("the LM prompt must contain {text} (and may contain {labels})")
        head, tail = template.split("{text}", 1)
        lab_list = ", ".join(labels)
        prefix = tokenizer(head.replace("{labels}", lab_list), add_special_tokens=True)["input_ids"]
        suffix = tokenizer(tail.replace("{labels}", lab_list), add_special_tokens=False)["input_ids"]
        # Some tokenizers append eos to every encoding; the prefix must not end with one.
        if tokenizer.eos_token_id is not None and prefix and prefix[-1] == tokenizer.eos_token_id:
            prefix = prefix[:-1]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        answers = [tokenizer(" " + lab, add_special_tokens=False)["input_ids"] + eos for lab in labels]
        return cls(prefix, suffix, answers)

    def context(self, tokenizer: Any, text: str, max_length: int) -> list[int]:
        """prefix + text (truncated so the longest answer still fits in max_length) + suffix."""
        room = max_length - len(self.prefix) - len(self.suffix) - max(len(a) for a in self.answers)
        if room < 1:
            raise InputError(f"--max-length {max_length} is too short for the LM prompt; raise it")
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=room)["input_ids"]
        return self.prefix + ids[:room] + self.suffix


def encode_cls(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, list[list[int]]]:
    """Token ids for the classification head, truncated to ``max_length`` (no padding: the collator pads)."""
    return tokenizer(texts, truncation=True, max_length=max_length)


def encode_lm_train(tokenizer: Any, parts: PromptParts, texts: list[str], label_ids: list[int], max_length: int):
    """Training examples for the LM head: loss only on the answer tokens (labels -100 elsewhere)."""
    out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for text, y in zip(texts, label_ids, strict=True):
        ctx = parts.context(tokenizer, text, max_length)
        ans = parts.answers[y]
        out["input_ids"].append(ctx + ans)
        out["attention_mask"].append([1] * (len(ctx) + len(ans)))
        out["labels"].append([-100] * len(ctx) + ans)
    return out


def score_lm(model: Any, tokenizer: Any, parts: PromptParts, texts: list[str], max_length: int) -> Any:
    """Log-likelihood of each label's answer after each text's prompt → (n_texts, n_labels) log-probs.

    One sequence per text: the prompt, then every label's answer tokens (all but the last)
    packed side by side, under a 4-D mask that lets each label see the prompt and its own
    earlier tokens only, with position ids that restart after the prompt for every label.
    Each label is scored exactly as if it were the only answer, but the prompt runs once per
    text instead of once per (text, label). Sequences are left-padded so the label tokens
    line up at the end, and only those positions' logits are computed (``logits_to_keep``).
    """
    import torch

    impl = getattr(getattr(model, "config", None), "_attn_implementation", None) or "eager"
    if impl not in ("sdpa", "eager"):
        return _score_lm_unpacked(model, tokenizer, parts, texts, max_length)
    answers = parts.answers
    fed = fed_tokens(answers)
    keep = len(fed) + 1  # the prompt's last position predicts every answer's first token
    ctxs = [parts.context(tokenizer, text, max_length) for text in texts]
    width = max(len(c) for c in ctxs) + len(fed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(texts), width), pad, dtype=torch.long)
    pos = torch.zeros((len(texts), width), dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(texts), 1, 1)  # padding sees itself: no NaN rows
    for b, ctx in enumerate(ctxs):
        off = width - len(ctx) - len(fed)  # left padding
        block, positions = packed_layout(len(ctx), answers)
        ids[b, off:] = torch.tensor(ctx + fed)
        pos[b, off:] = torch.tensor(positions)
        allowed[b, off:, off:] = block
    device = next(model.parameters()).device
    # SDPA takes a boolean mask whatever the query's dtype (bf16 under QLoRA on a GPU); eager
    # attention adds the mask to its scores, so it gets an additive float one.
    mask = allowed[:, None]
    if impl == "eager":
        mask = torch.zeros(mask.shape).masked_fill_(~mask, torch.finfo(torch.float32).min)
    ids, pos, mask = ids.to(device), pos.to(device), mask.to(device)
    try:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep).logits
    except TypeError:  # models without logits_to_keep
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    logp = torch.log_softmax(logits[:, -keep:, :].float(), dim=-1)
    return answer_logprobs(logp, answers).cpu()


def _score_lm_unpacked(model: Any, tokenizer: Any, parts: PromptParts, texts: list[str], max_length: int) -> Any:
    """:func:`score_lm` with one sequence per (text, label) and a plain 2-D mask, for attention
    implementations that take no custom 4-D mask (flash-attention).

    Sequences are left-padded so every answer ends at the last position; only the last few
    positions' logits are computed (``logits_to_keep``), which keeps memory small for large
    vocabularies. Position ids follow the attention mask, so padding changes nothing.
    """
    import torch

    n_lab = len(parts.answers)
    keep = max(len(a) for a in parts.answers) + 1
    seqs: list[list[int]] = []
    for text in texts:
        ctx = parts.context(tokenizer, text, max_length)
        seqs.extend(ctx + ans for ans in parts.answers)
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    device = next(model.parameters()).device
    ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    try:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep).logits
    except TypeError:  # models without logits_to_keep
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    logits = logits[:, -keep:, :].float()
    logp = torch.log_softmax(logits, dim=-1)
    scores = torch.empty(len(seqs), dtype=torch.float32)
    for i in range(len(seqs)):
        ans = parts.answers[i % n_lab]
        # answer token j sits at position width-len(ans)+j, predicted by the logits one step earlier
        start = keep - 1 - len(ans)
        tgt = torch.tensor(ans, device=logp.device)
        scores[i] = logp[i, start : start + len(ans)].gather(-1, tgt[:, None]).sum().cpu()
    return scores.view(len(texts), n_lab)
