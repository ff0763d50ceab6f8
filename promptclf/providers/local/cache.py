"""Prefix-cache handling for the local provider: reuse the shared prefix's key/value cache exactly.

The prefix (system prompt, instructions, few-shot examples) is encoded once, with the model's own
default cache and masks, and that cache is never modified afterwards. Each forward pass on top of it
gets a *fork*: a new cache object whose layers point at the prefix's tensors (no copy). Updating a
fork rebinds its own tensors (``torch.cat``), so the prefix stays as it was and nothing needs
cropping. That also covers sliding-window layers (Mistral, Gemma-2/3, Phi-3), whose cache keeps
only the last ``window - 1`` tokens and cannot be cropped back once the window is full
(``DynamicSlidingWindowLayer.crop`` raises), the failure this design replaces.

Two ways to score on top of the prefix, chosen per model by :func:`plan`:

* ``"shared"``: every label's answer packed after the item in one pass, under a custom 4-D mask
  (:mod:`promptclf.providers.local.packing`) built here *per layer type*: full-attention layers see the whole
  prefix; sliding-window layers see the cached keys and the new tokens that lie within the window
  of each query's position, exactly the model's own rule (``masking_utils.sliding_window_overlay``:
  a query at position q sees keys at q - window < k <= q), applied to the positions each label
  would have as the only answer. Several items can share a pass (``rows`` > 1), left-padded, the
  prefix cache broadcast to the batch. Needs eager or SDPA attention (custom masks) and layers that
  are full or sliding attention.
* ``"copy"``: anything else (flash attention, chunked or linear-attention layers, caches of another
  kind): the model's own default masks only. Per item the prefix cache is deep-copied (or, where
  it cannot be copied, the prefix is encoded again), the item runs on it, then the cache is
  repeated once per label and all labels run as a batch. bench/bench_local_arch.py measures what
  this costs against ``"shared"``.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Literal

from .packing import answer_logprobs, fed_tokens, packed_layout

PrefixMode = Literal["auto", "shared", "copy"]
_MASKED_TYPES = {"full_attention", "sliding_attention"}
_CUSTOM_MASK_ATTN = {"eager", "sdpa"}


@dataclass(frozen=True)
class CachePlan:
    """How a model's prefix cache is reused; see the module docstring."""

    mode: Literal["shared", "copy"]
    reason: str  # why "shared" is not possible (empty when it is)
    layer_types: tuple[str, ...]  # the decoder's attention type per layer
    window: int | None  # the sliding window, when some layer has one
    cache_kw: str  # the forward's keyword for the cache: "cache" (transformers >= 5.2x) or "past_key_values"

    @property
    def sliding(self) -> bool:
        return "sliding_attention" in self.layer_types


def plan(lm: Any, requested: PrefixMode = "auto") -> CachePlan:
    """The way to reuse the prefix for model ``lm``: ``"shared"`` when its masks can be built exactly."""
    config = lm.config.get_text_config(decoder=True) if hasattr(lm.config, "get_text_config") else lm.config
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if types is None:
        chunked = getattr(config, "attention_chunk_size", None) is not None
        kind = "sliding_attention" if window is not None else ("chunked_attention" if chunked else "full_attention")
        types = [kind] * int(config.num_hidden_layers)
    types = tuple(str(t) for t in types)
    if "sliding_attention" not in types:
        window = None
    params = inspect.signature(type(lm).forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    reason = ""
    attn = getattr(config, "_attn_implementation", None) or "eager"
    if attn not in _CUSTOM_MASK_ATTN:
        reason = f"{attn} attention takes no custom mask"
    elif set(types) - _MASKED_TYPES:
        reason = f"layer types {sorted(set(types) - _MASKED_TYPES)} have masks of their own"
    elif getattr(config, "use_bidirectional_attention", False):
        reason = "bidirectional attention"
    elif window is not None and not isinstance(window, int):
        reason = f"sliding window {window!r} is not one number"
    if requested == "copy" or (requested == "auto" and reason):
        return CachePlan("copy", reason or "asked for", types, window, cache_kw)
    if requested == "shared" and reason:
        from ...errors import InputError

        raise InputError(f"prefix_mode='shared' is not possible for this model ({reason}); use 'auto' or 'copy'")
    return CachePlan("shared", "", types, window, cache_kw)


def cache_of(out: Any) -> Any:
    """The cache a forward pass returned (``cache`` in transformers 5.2x, ``past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def encode_prefix(lm: Any, p: CachePlan, ids: list[int], positions: list[int] | None = None) -> Any:
    """The model's own cache after running ``ids`` (at ``positions``, default 0..n-1) with its default masks."""
    import torch

    kwargs: dict[str, Any] = {}
    if positions:
        kwargs["position_ids"] = torch.tensor([positions], device=lm.device)
    out = lm(input_ids=torch.tensor([ids], device=lm.device), use_cache=True, logits_to_keep=1, **kwargs)
    return cache_of(out)


def fork(cache: Any, rows: int = 1) -> Any:
    """A cache that starts as ``cache`` (same tensors, broadcast to ``rows``) and grows on its own."""
    out = copy.copy(cache)
    out.layers = []
    for layer in cache.layers:
        twin = copy.copy(layer)
        if rows > 1 and getattr(layer, "keys", None) is not None and layer.keys.numel():
            twin.keys = layer.keys.expand(rows, -1, -1, -1)  # a view; the pass's torch.cat materialises it
            twin.values = layer.values.expand(rows, -1, -1, -1)
        out.layers.append(twin)
    return out


def _held(layer: Any) -> int | None:
    keys = getattr(layer, "keys", None)
    return None if keys is None else int(keys.shape[-2]) if keys.numel() else 0


def mismatch(cache: Any, p: CachePlan) -> str:
    """Why the masks of ``p`` do not fit ``cache`` (empty when they do).

    Every layer of one attention type gets the same mask, so all of them must hold the same
    number of keys (a shared-KV or recurrent layer holds none of its own).
    """
    layers = getattr(cache, "layers", None)
    if layers is None or len(layers) != len(p.layer_types):
        return f"a {type(cache).__name__} without one key/value layer per decoder layer"
    for kind in set(p.layer_types):
        held = {_held(layer) for layer, t in zip(layers, p.layer_types, strict=True) if t == kind}
        if None in held or len(held) != 1:
            return f"{kind} layers of the cache hold different numbers of keys"
    return ""


def cached_length(cache: Any, p: CachePlan, kind: str) -> int:
    """Keys held by the cache's layers of attention type ``kind`` (the same for all of them, see :func:`mismatch`)."""
    return _held(cache.layers[p.layer_types.index(kind)]) or 0


def pass_masks(
    p: CachePlan, cache: Any, start: int, qpos: Any, new_allowed: Any, dtype: Any, cached_visible: Any = None
) -> Any:
    """Additive 4-D masks (rows, 1, q, cached + q) for a pass of new tokens on top of ``cache``.

    ``qpos`` (rows, q): the new tokens' positions; ``new_allowed`` (rows, q, q): which new token
    may see which; ``start``: the position after the last cached token. Cached keys are all
    visible unless ``cached_visible`` (rows, cached) says otherwise (full-attention layers only).
    Returns one tensor when every layer has the same type, else a dict by layer type.
    """
    import torch

    rows, q = qpos.shape
    dev = qpos.device
    masks = {}
    for kind in sorted(set(p.layer_types)):
        sliding = kind == "sliding_attention"
        n_c = cached_length(cache, p, kind)
        if sliding:
            assert p.window is not None
            cpos = torch.arange(start - n_c, start, device=dev)
            seen = (qpos[:, :, None] - cpos[None, None, :]) < p.window
            near = (qpos[:, :, None] - qpos[:, None, :]) < p.window
            allowed = torch.cat([seen, new_allowed & near], dim=2)
        else:
            vis = torch.ones(rows, n_c, dtype=torch.bool, device=dev) if cached_visible is None else cached_visible
            allowed = torch.cat([vis[:, None, :].expand(rows, q, n_c), new_allowed], dim=2)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill_(~allowed, torch.finfo(dtype).min)
        masks[kind] = mask[:, None]
    return next(iter(masks.values())) if len(masks) == 1 else masks


def packed_pass(
    lm: Any,
    p: CachePlan,
    cache: Any,
    start: int,
    ctxs: list[list[int]],
    answers: list[list[int]],
    cached_visible: Any = None,
) -> list[list[float]]:
    """Label probabilities for each context (one row each), all labels packed behind it, in one pass.

    ``cache`` is a fork holding ``start`` positions (rows broadcast already). Rows are left-padded
    so every row's answer tokens sit at the end and ``logits_to_keep`` picks them for all rows;
    padding tokens see the prefix only and nobody sees them.
    """
    import torch

    dev = lm.device
    lab = fed_tokens(answers)
    rows = len(ctxs)
    width = max(len(c) for c in ctxs) + len(lab)
    ids = torch.full((rows, width), ctxs[0][-1] if ctxs[0] else answers[0][0], dtype=torch.long)
    qpos = torch.full((rows, width), start, dtype=torch.long)
    new_allowed = torch.zeros(rows, width, width, dtype=torch.bool)
    for r, ctx in enumerate(ctxs):
        off = width - len(ctx) - len(lab)
        allowed, rel = packed_layout(len(ctx), answers)
        ids[r, off:] = torch.tensor(ctx + lab, dtype=torch.long)
        qpos[r, off:] = start + torch.tensor(rel, dtype=torch.long)
        new_allowed[r, off:, off:] = allowed
    qpos, new_allowed = qpos.to(dev), new_allowed.to(dev)
    mask = pass_masks(p, cache, start, qpos, new_allowed, lm.dtype, cached_visible)
    out = lm(
        input_ids=ids.to(dev),
        position_ids=qpos,
        attention_mask=mask,
        use_cache=True,
        logits_to_keep=len(lab) + 1,  # the last context position and every label token
        **{p.cache_kw: cache},
    )
    score = answer_logprobs(torch.log_softmax(out.logits.float(), dim=-1), answers)
    return torch.softmax(score, dim=-1).tolist()


def default_mask_item(lm: Any, p: CachePlan, cache: Any, ctx: list[int], answers: list[list[int]]) -> list[float]:
    """One item's label probabilities with the model's default masks only, on ``cache`` (consumed).

    The item runs on the cache, then the cache is repeated once per label and every label's
    answer runs as a row of a batch, right-padded (padding comes after every real token, so a
    causal model never attends to it).
    """
    import torch

    dev = lm.device
    out = lm(input_ids=torch.tensor([ctx], device=dev), use_cache=True, logits_to_keep=1, **{p.cache_kw: cache})
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    cache = cache_of(out)
    fed = [a[:-1] for a in answers]
    width = max(len(f) for f in fed)
    scores = [first[a[0]] for a in answers]
    if width:
        ids = torch.tensor([f + [a[-1]] * (width - len(f)) for f, a in zip(fed, answers, strict=True)], device=dev)
        try:
            cache.batch_repeat_interleave(len(answers))
            logits = lm(input_ids=ids, use_cache=True, **{p.cache_kw: cache}).logits
        except (AttributeError, NotImplementedError):  # a cache that cannot be repeated: one copy per label
            logits = torch.cat(
                [lm(input_ids=ids[i : i + 1], **{p.cache_kw: copy.deepcopy(cache)}).logits for i in range(len(fed))]
            )
        logp = torch.log_softmax(logits.float(), dim=-1)
        for i, a in enumerate(answers):
            k = len(a) - 1
            scores[i] = scores[i] + logp[i, torch.arange(k, device=dev), torch.tensor(a[1:], device=dev)].sum()
    return torch.softmax(torch.stack(scores), dim=0).tolist()


__all__ = ["CachePlan", "PrefixMode", "default_mask_item", "encode_prefix", "fork", "mismatch", "packed_pass", "plan"]
