"""The dry run: the first rendered prompt, its token count and the estimated cost of a whole job.

Nothing is sent. For the local (scoring) model the counts are exact: the shared prefix is counted
once per distinct prompt, each item with its tail and every label's tokens. For chat providers
each batch is rendered with its own shots and counted with the provider's estimate; the common
head of the first requests is the prefix a provider's prompt cache can serve.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import pandas as pd

from ..errors import InputError
from ..pricing.prices import Price
from ..providers import Provider
from ..providers.base import Usage
from .chat_runner import chat_mode, format_instructions
from .jobs import Job, clip_text
from .options import LabelOptions
from .prompt_cache import estimate, static_prefix
from .prompts import Item, PromptBuilder
from .scoring_runner import CONTENT_FREE, score_groups


class Planner(Protocol):
    """What the dry run uses of the :class:`~promptclf.label.labeler.Labeler` (so this module never imports it)."""

    options: LabelOptions
    provider_name: str
    model: str
    price: Price
    prompts: PromptBuilder | None

    @property
    def provider(self) -> Provider: ...

    def prepare(self, df: pd.DataFrame, examples: pd.DataFrame | None = None, source: str = "input") -> Job: ...


def dry_run(
    labeler: Planner, df: pd.DataFrame, examples: pd.DataFrame | None = None, source: str = "input"
) -> dict[str, Any]:
    """Render the first prompt, count its tokens and estimate the whole job. Sends nothing."""
    job = labeler.prepare(df, examples, source)
    assert labeler.prompts is not None
    o = labeler.options
    n = len(job.todo)
    if n == 0:
        raise InputError(f"{source}: no row to label (every row is a shot or has an empty text)")
    provider_kind = "scoring" if labeler.provider_name == "local" else "chat"
    count = labeler.provider.count_tokens
    if provider_kind == "scoring":
        groups = score_groups(job, labeler.prompts, o.batch_size)
        parts = groups[0][0]
        system, prefix, suffix = parts.system, parts.prefix, parts.suffix
        first = job.texts[groups[0][1][0]]
        prompt = f"[system]\n{system}\n\n[user]\n{prefix}{clip_text(first, o.max_chars)}{suffix}"
        cap = getattr(labeler.provider, "max_item_tokens", None) or math.inf  # the local model cuts long items
        item_tokens = int(sum(min(count(clip_text(job.texts[i], o.max_chars)), cap) for i in job.todo))
        # The shared prefix is encoded once and its cache reused for every batch; each item
        # adds its own tokens, the suffix, and every label's tokens (scored side by side).
        # Similar shots give texts their own prefixes: each distinct one is encoded once.
        layout = getattr(labeler.provider, "layout_tokens", None)
        heads: dict[str, int] = {}
        for p, _ in groups:
            if p.prefix not in heads:
                heads[p.prefix] = layout(system, p.prefix, suffix)[0] if layout else count(system + p.prefix)
        tail = layout(system, prefix, suffix)[1] if layout else count(suffix)
        per_item = tail + sum(count(name) for name in job.labels.names)
        prompt_tokens = sum(heads.values()) + item_tokens + n * per_item
        completion_tokens = 0
        requests = len(groups)
        if o.calibrate:  # one more request: the content-free inputs through the same prompt
            prompt_tokens += sum(count(cf) + per_item for cf in CONTENT_FREE)
            requests += 1
    else:
        fmt = format_instructions(chat_mode(o, labeler.provider), job.labels)
        batches = [job.todo[i : i + o.batch_size] for i in range(0, n, o.batch_size)]
        prompt_tokens = 0
        prompt = ""
        firsts = []  # the first requests' messages: their common head is the cacheable prefix
        for b, rows in enumerate(batches):
            msgs = labeler.prompts.batch_messages(
                [Item(k + 1, job.texts[r]) for k, r in enumerate(rows)],
                format_instructions=fmt,
                shots=job.shots_for(rows) if job.similar is not None else None,
            )
            prompt_tokens += sum(count(m["content"]) for m in msgs)
            if b < 3:
                firsts.append(msgs)
            if b == 0:
                prompt = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in msgs)
        completion_tokens = n * 12
        requests = len(batches)
    prefix = static_prefix(firsts) if provider_kind == "chat" else ""
    approx = "" if provider_kind == "scoring" else "≈"
    price_est = estimate(
        labeler.price, Usage(prompt_tokens, completion_tokens), requests, count(prefix) if prefix else 0,
        batch=o.batch_api, count_note=lambda t: f"{approx}{t:,}",
    )  # fmt: skip
    cost = price_est.pop("est_cost_usd")
    return {
        **price_est,  # prefix_tokens, est_cached_prompt_tokens, est_cache_saving_usd, notes
        "provider": labeler.provider_name,
        "model": labeler.model,
        "rows": len(job.results),
        "items": n,
        "shots": len(job.shots),
        "skipped": sum(1 for r in job.results if r.status == "error"),
        "requests": requests,
        "prompt": prompt,
        "first_prompt_tokens": count(prompt),
        "est_prompt_tokens": prompt_tokens,
        "est_completion_tokens": completion_tokens,
        "est_cost_usd": cost,
        "price_known": labeler.price.known,
        "tokens_exact": provider_kind == "scoring",
    }
