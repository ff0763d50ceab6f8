"""Prompt caching in the cost: the static prefix every request of a job opens with, and what
a provider's prompt cache saves on it.

Providers bill prompt tokens that repeat a recently seen prefix at a discount (OpenAI: half
price or less for a prefix of at least 1,024 tokens, cached in steps of 128). A job's
requests all open with the same system message and the same user-message head (label list,
instructions, few-shot examples) before the first item, so from the second request on that
prefix can be served from the cache. The chat runner keeps it byte-identical (re-ask notes
come after the items); the measured cached count comes back in each response's usage
(``Usage.cached_prompt_tokens``) and is priced at the table's ``cached_input`` rate. This
module estimates it before a run, for ``--dry-run``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..pricing.prices import Price
from ..providers.base import Usage


def static_prefix(requests: Sequence[list[dict[str, str]]]) -> str:
    """The text every one of ``requests`` (chat messages) opens with, as one string.

    The system messages must be equal for the user message's common head to count: a
    provider's cache matches the whole prompt from its first token.
    """
    if not requests:
        return ""
    first = requests[0]
    head = "".join(m["content"] for m in first[:-1])
    if any("".join(m["content"] for m in r[:-1]) != head or len(r) != len(first) for r in requests[1:]):
        return ""
    user = os.path.commonprefix([r[-1]["content"] for r in requests]) if len(requests) > 1 else first[-1]["content"]
    return head + user


@dataclass
class CacheEstimate:
    """A job's estimated cost, and what the provider's prompt cache would save of it."""

    est_cost_usd: float  # at the job's prices (batch prices with --batch-api), without the cache
    prefix_tokens: int  # the static prefix every request opens with
    est_cached_prompt_tokens: int  # prompt tokens the cache could serve (an upper bound)
    est_cache_saving_usd: float
    est_cost_cached_usd: float
    notes: list[str] = field(default_factory=list)  # the batch price and the cache saving, in words


def estimate(
    price: Price,
    usage: Usage,
    requests: int,
    prefix_tokens: int,
    batch: bool,
    count_note: Callable[[int], str] = lambda n: f"{n:,}",
) -> CacheEstimate:
    """The job's estimated cost with and without the provider's prompt cache (and batch price).

    ``usage``: the job's estimated tokens; ``prefix_tokens``: its static prefix. Every request
    after the first is assumed to find the prefix cached (an upper bound: requests sent before
    the first one finished miss it).
    """
    cacheable = price.cacheable_tokens(prefix_tokens)
    inp, cached_rate, _ = price.rates(batch)
    cached = cacheable * max(0, requests - 1) if cached_rate < inp else 0
    full = price.cost(usage, batch=batch)
    saving = cached * (inp - cached_rate) / 1e6
    notes = []
    if batch:
        sync = price.cost(usage)
        if price.batch_known:
            notes.append(f"batch API: ${full:.4f} at batch prices (${sync:.4f} sent one request at a time)")
        else:
            notes.append("batch API: this model's batch price is not in the price table; priced as synchronous")
    if cached:
        notes.append(
            f"prompt cache: static prefix {count_note(prefix_tokens)} tokens, {count_note(cacheable)} cacheable; "
            f"up to {count_note(cached)} cached prompt tokens over {requests - 1:,} requests save ${saving:.4f} "
            f"(${full - saving:.4f} with the cache)"
        )
    elif prefix_tokens and requests > 1:
        if not cacheable:
            why = f"under the {price.cache_min_tokens:,}-token minimum"
        elif batch and price.batch_known:
            why = "no batch_cached_input price for this model in the price table"
        else:
            why = "no cached_input price for this model in the price table"
        notes.append(f"prompt cache: static prefix {count_note(prefix_tokens)} tokens; no saving ({why})")
    return CacheEstimate(full, prefix_tokens, cached, saving, full - saving, notes)
