"""The dry run: the first rendered prompt, its token count and the estimated cost of a whole job.

Nothing is sent. For the local (scoring) model the counts are exact: the shared prefix is counted
once per distinct prompt, each item with its tail and every label's tokens. For chat providers
each batch is rendered with its own shots and counted with the provider's estimate; the common
head of the first requests is the prefix a provider's prompt cache can serve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InputError
from ..providers.base import ChatProvider, Provider, ScoringProvider, Usage
from .chat_runner import chat_mode, format_instructions
from .context import RunContext
from .jobs import Job, clip_text
from .prompt_cache import CacheEstimate, estimate, static_prefix
from .prompts import Item, PromptBuilder
from .scoring_runner import CONTENT_FREE, YES_NO, score_groups


@dataclass
class DryRun:
    """What ``--dry-run`` shows: the first prompt, the job's size and its estimated tokens and cost."""

    provider: str
    model: str
    rows: int
    items: int  # rows to label
    shots: int  # examples (similar shots: the pool)
    skipped: int  # rows with an empty or too long text
    requests: int
    prompt: str  # the first request, rendered
    first_prompt_tokens: int
    est_prompt_tokens: int
    est_completion_tokens: int
    tokens_exact: bool  # the local model's own tokenizer; else an estimate
    price_known: bool
    cache: CacheEstimate  # the cost, and what a prompt cache and the batch price change
    labels_listed: float | None = None  # --candidates: the mean labels a request lists (None: every label)
    n_labels: int = 0  # the label set's size
    scope: str = ""  # what the counts cover when not the whole job (a label tree's top-level stage)

    @property
    def est_cost_usd(self) -> float:
        return self.cache.est_cost_usd

    @property
    def notes(self) -> list[str]:
        """The batch price and the prompt-cache saving, in words (and the counts' scope)."""
        return [*([self.scope] if self.scope else []), *self.cache.notes]


@dataclass
class _Counts:
    prompt: str
    prompt_tokens: int
    completion_tokens: int
    requests: int
    prefix: str  # the static prefix a chat provider's prompt cache can serve
    listed: list[int] = field(default_factory=list)  # --candidates: the labels each request lists


def _scoring_counts(ctx: RunContext[ScoringProvider], job: Job, prompts: PromptBuilder) -> _Counts:
    """Exact counts for the local model: the shared prefix once per distinct prompt, each item
    with its tail and every label's tokens (scored side by side)."""
    o, provider = ctx.options, ctx.provider
    count = provider.count_tokens
    groups = score_groups(job, prompts, o.batch_size)
    parts = groups[0].parts
    system, prefix, suffix = parts.system, parts.prefix, parts.suffix
    first = job.texts[groups[0].rows[0]]
    prompt = f"[system]\n{system}\n\n[user]\n{prefix}{clip_text(first, o.max_chars)}{suffix}"
    cap = provider.max_item_tokens or math.inf  # the local model cuts long items
    item_tokens = int(sum(min(count(clip_text(job.texts[i], o.max_chars)), cap) for i in job.todo))
    # Similar shots and --candidates give texts their own prefixes: each distinct one is encoded once.
    # Every item is scored against the labels of its prompt (all, or its candidates).
    heads: dict[str, int] = {}
    answers: dict[str, int] = {}  # prefix -> tokens of the labels it scores
    label_tokens = 0
    for g in groups:
        if g.parts.prefix not in heads:
            heads[g.parts.prefix] = provider.layout_tokens(system, g.parts.prefix, suffix)[0]
            answers[g.parts.prefix] = sum(count(name) for name in g.names)
        label_tokens += len(g.rows) * answers[g.parts.prefix]
    tail = provider.layout_tokens(system, prefix, suffix)[1]
    prompt_tokens = sum(heads.values()) + item_tokens + len(job.todo) * tail + label_tokens
    requests = len(groups)
    listed = [len(g.names) for g in groups] if job.candidates is not None else []
    if o.calibrate:  # the content-free inputs through each distinct prompt, one more request each
        prompt_tokens += sum(sum(count(cf) + tail + a for cf in CONTENT_FREE) for a in answers.values())
        requests += len(answers)
    return _Counts(prompt, prompt_tokens, 0, requests, "", listed)


def _multi_scoring_counts(ctx: RunContext[ScoringProvider], job: Job, prompts: PromptBuilder) -> _Counts:
    """Exact counts for the local model in a multi-label run: every label's yes/no prompt, its prefix
    once, each item with its tail and the two answers, per label."""
    o, provider = ctx.options, ctx.provider
    count = provider.count_tokens
    parts = [prompts.label_score_parts(lab) for lab in job.labels]
    first = job.texts[job.todo[0]]
    p0 = parts[0]
    prompt = f"[system]\n{p0.system}\n\n[user]\n{p0.prefix}{clip_text(first, o.max_chars)}{p0.suffix}"
    cap = provider.max_item_tokens or math.inf
    tokens = {i: int(min(count(clip_text(job.texts[i], o.max_chars)), cap)) for i in job.todo}
    answers = sum(count(a) for a in YES_NO)
    batches = [job.todo[s : s + o.batch_size] for s in range(0, len(job.todo), o.batch_size)]
    cands = job.candidates
    prompt_tokens = requests = 0
    for lab, p in zip(job.labels, parts, strict=True):
        # --candidates: a label is asked about only for the rows it is a candidate of.
        asked = [[i for i in b if cands is None or lab.name in cands.by_row[i]] for b in batches]
        head, tail = provider.layout_tokens(p.system, p.prefix, p.suffix)
        rows = [i for b in asked for i in b]
        prompt_tokens += (head if rows else 0) + sum(tokens[i] for i in rows) + len(rows) * (tail + answers)
        requests += sum(1 for b in asked if b)
        if o.calibrate:  # the content-free inputs through this label's prompt
            prompt_tokens += sum(count(cf) + tail + answers for cf in CONTENT_FREE)
            requests += 1
    return _Counts(prompt, prompt_tokens, 0, requests, "")


def _chat_counts(ctx: RunContext[ChatProvider], job: Job, prompts: PromptBuilder) -> _Counts:
    """Estimated counts for a chat provider: each batch rendered with its own shots."""
    o, count = ctx.options, ctx.provider.count_tokens
    fmt = format_instructions(chat_mode(o, ctx.provider), job.labels)
    batches = [job.todo[i : i + o.batch_size] for i in range(0, len(job.todo), o.batch_size)]
    prompt_tokens = 0
    prompt = ""
    firsts = []  # the first requests' messages: their common head is the cacheable prefix
    listed: list[int] = []
    for b, rows in enumerate(batches):
        shots, shown = job.request_view(rows)  # --candidates: the request's own labels
        msgs = prompts.batch_messages(
            [Item(k + 1, job.texts[r]) for k, r in enumerate(rows)],
            format_instructions=fmt if shown is None else format_instructions(chat_mode(o, ctx.provider), shown),
            shots=shots,
            labels=shown,
        )
        prompt_tokens += sum(count(m["content"]) for m in msgs)
        if b < 3:
            firsts.append(msgs)
        if shown is not None:
            listed.append(len(shown))
        if b == 0:
            prompt = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in msgs)
    return _Counts(prompt, prompt_tokens, len(job.todo) * 12, len(batches), static_prefix(firsts), listed)


def dry_run(ctx: RunContext[Provider], job: Job, prompts: PromptBuilder, source: str = "input") -> DryRun:
    """Render the first prompt, count its tokens and estimate the whole job. Sends nothing."""
    if not job.todo:
        raise InputError(f"{source}: no row to label (every row is a shot or has an empty text)")
    provider, o, price = ctx.provider, ctx.options, ctx.meter.price
    scope = ""
    if job.labels.tree is not None and o.tree_mode == "hierarchy":
        from .hierarchy import TREE_DRY_RUN, top_stage

        job, prompts = top_stage(o, job)
        scope = TREE_DRY_RUN
    exact = provider.kind == "scoring"
    if provider.kind == "scoring" and job.labels.multi_label:
        c = _multi_scoring_counts(ctx.using(provider), job, prompts)
    elif provider.kind == "scoring":
        c = _scoring_counts(ctx.using(provider), job, prompts)
    else:
        c = _chat_counts(ctx.using(provider), job, prompts)
    count = provider.count_tokens
    approx = "" if exact else "≈"
    cache = estimate(
        price, Usage(c.prompt_tokens, c.completion_tokens), c.requests, count(c.prefix) if c.prefix else 0,
        batch=o.batch_api, count_note=lambda t: f"{approx}{t:,}",
    )  # fmt: skip
    return DryRun(
        provider=ctx.spec.name,
        model=ctx.spec.model,
        rows=len(job.results),
        items=len(job.todo),
        shots=len(job.shots),
        skipped=sum(1 for r in job.results if r.status == "error"),
        requests=c.requests,
        prompt=c.prompt,
        first_prompt_tokens=count(c.prompt),
        est_prompt_tokens=c.prompt_tokens,
        est_completion_tokens=c.completion_tokens,
        tokens_exact=exact,
        price_known=price.known,
        cache=cache,
        labels_listed=sum(c.listed) / len(c.listed) if c.listed else None,
        n_labels=len(job.labels),
        scope=scope,
    )
