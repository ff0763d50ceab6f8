"""The local provider's scoring behind a shared prefix: the prefix caches it holds and the three ways to score.

:class:`PrefixScorer` keeps the last prefix's cache per slot (never modified; every pass runs on
a :func:`~.local_cache.fork`) and scores items on it: several at a time under custom masks
(``shared``), one at a time in two passes for ``shot_attention="answer"``, or one at a time with
the model's own masks on a copied cache (``copy``). See :mod:`.local_cache` for why each is exact.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from .cache import CachePlan, default_mask_item, encode_prefix, fork, packed_pass
from .layout import Layout

log = logging.getLogger(__name__)


class PrefixScorer:
    """Scores items behind a shared prefix for one loaded model ``lm`` under cache plan ``plan``.

    ``reuse_prefix=False`` encodes the prefix again for every pass (to measure what reuse buys).
    Every method returns the scores and the number of prefix tokens it had to encode.
    """

    def __init__(self, lm: Any, plan: CachePlan, reuse_prefix: bool = True) -> None:
        self.lm = lm
        self.plan = plan
        self.reuse_prefix = reuse_prefix
        # Key/value caches of the last prefix, by slot: (token ids and positions, cache). Never modified.
        self._caches: dict[str, tuple[Any, Any]] = {}
        self._copy_fails = False  # "copy": the cache could not be deep-copied, so the prefix is re-encoded

    def prefix(self, slot: str, ids: list[int], positions: list[int] | None = None) -> tuple[Any, int]:
        """A cache holding exactly ``ids`` (at ``positions``, default 0..n-1) and the tokens encoded to get it.

        Two slots are kept: ``"head"`` (the whole shared prefix) and ``"view"`` (the prefix
        without its few-shot examples, for ``shot_attention="answer"``).
        """
        key = (tuple(ids), tuple(positions) if positions else None)
        held = self._caches.get(slot)
        if self.reuse_prefix and held is not None and held[0] == key:
            return held[1], 0
        self._caches.pop(slot, None)  # free the old cache before building the new one
        cache = encode_prefix(self.lm, self.plan, ids, positions)
        if self.reuse_prefix:
            self._caches[slot] = (key, cache)
        return cache, len(ids)

    def shared(self, items: list[list[int]], lay: Layout, answers: list[list[int]]) -> tuple[list[list[float]], int]:
        """Several items in one pass on a fork of the prefix cache.

        One forward pass runs over each item, the tail and every label's answer tokens (all but
        the last) packed side by side, under a mask that lets each label see the prefix, item and
        tail and its own earlier tokens only, with positions that restart after the tail for
        every label: each label is scored exactly as if it were the only answer (the
        alternative, copying the cache to n_labels rows, copied ~1 GB per item with a 10-shot
        prefix). With several items the prefix cache is broadcast to the rows and the rows are
        left-padded; padding is masked out.
        """
        head, encoded = self.prefix("head", lay.head)
        cache = fork(head, len(items))
        ctxs = [it + lay.tail for it in items]
        return packed_pass(self.lm, self.plan, cache, len(lay.head), ctxs, answers), encoded

    def answer_only(self, item: list[int], lay: Layout, answers: list[list[int]]) -> tuple[list[float], int]:
        """``shot_attention="answer"``: the item encoded without the examples, the answer with them.

        The item runs on a fork of the "view" cache (the head without the examples, at the same
        positions), so its tokens never attend to the examples, the part of the work that grows
        with their length. Its keys and values are then appended to a fork of the head cache and
        the tail and labels run on top of that: the answer sees instructions, examples and item.
        Full-attention layers only (the provider refuses other models).
        """
        import torch

        assert lay.span is not None
        s, e = lay.span
        past = len(lay.head)
        head, encoded = self.prefix("head", lay.head)
        if not item:  # no item tokens to hide from the examples: the exact prompt
            return packed_pass(self.lm, self.plan, fork(head), past, [lay.tail], answers)[0], encoded
        view, enc_view = self.prefix("view", lay.head[:s] + lay.head[e:], [*range(s), *range(e, past)])
        n = len(item)
        view = fork(view)
        dev = self.lm.device
        self.lm(
            input_ids=torch.tensor([item], device=dev),
            position_ids=torch.arange(past, past + n, device=dev)[None],
            use_cache=True,
            logits_to_keep=1,
            **{self.plan.cache_kw: view},
        )
        ext = fork(head)
        for i, layer in enumerate(view.layers):
            ext.update(layer.keys[:, :, -n:], layer.values[:, :, -n:], i)
        row = packed_pass(self.lm, self.plan, ext, past + n, [lay.tail], answers)[0]
        return row, encoded + enc_view

    def copied(self, item: list[int], lay: Layout, answers: list[list[int]]) -> tuple[list[float], int]:
        """One item with the model's default masks on a deep copy of the prefix cache (or a fresh one)."""
        encoded = 0
        cache = None
        if self.reuse_prefix and not self._copy_fails:
            head, encoded = self.prefix("head", lay.head)
            try:
                cache = copy.deepcopy(head)
            except Exception as exc:  # a cache holding something that cannot be copied: re-encode from now on
                log.warning("cannot copy the prefix cache (%s); re-encoding it per item", exc)
                self._copy_fails = True
                self._caches.clear()
        if cache is None:
            cache = encode_prefix(self.lm, self.plan, lay.head)
            encoded += len(lay.head)
        return default_mask_item(self.lm, self.plan, cache, item + lay.tail, answers), encoded


__all__ = ["PrefixScorer"]
